//! Redis as the shop's shared cache tier: values with a TTL under the shop's key prefix, fill
//! leases (`SET NX PX`, released only by their holder), and announcements of writes to every
//! instance over pub/sub. Every command is bounded by the Redis timeout and the Redis circuit
//! breaker, so an outage costs a request at most one timeout before the breaker opens.

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use resilience::{CallOutcome, CircuitBreaker};
use shop::cache::{Announcement, Family, SharedTier, TierError, TierEvent};

/// Deletes the lease only while it is still this instance's (it may have expired and been
/// taken by another). KEYS[1]: the lease; ARGV[1]: this instance's id.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// How often the subscription is pinged: a connection that stopped answering is noticed
/// within this plus the timeout.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(1);
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// Settings of the shared tier.
#[derive(Debug, Clone)]
pub struct RedisCacheSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Every command must answer within this, or the read goes to the database.
    pub timeout: Duration,
    /// Prefix of every key and of the announcement channel, so several shops share one Redis.
    pub key_prefix: String,
}

/// The shared tier on Redis.
#[derive(Clone)]
pub struct RedisCache {
    client: redis::Client,
    connection: ConnectionManager,
    breaker: Arc<CircuitBreaker>,
    release: redis::Script,
    timeout: Duration,
    prefix: String,
    channel: String,
    /// This process, so that it ignores its own announcements.
    instance: String,
    subscribed: Arc<AtomicBool>,
}

impl RedisCache {
    /// Prepares the connection without requiring Redis to be up: it connects on first use and
    /// reconnects after failures. `breaker` guards every command (the Redis breaker the rate
    /// limits use too: one Redis, one breaker).
    pub fn new(settings: &RedisCacheSettings, breaker: Arc<CircuitBreaker>) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|error| error.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|error| error.to_string())?;
        Ok(Self {
            client,
            connection,
            breaker,
            release: redis::Script::new(RELEASE),
            timeout: settings.timeout,
            prefix: format!("{}:cache:", settings.key_prefix),
            channel: format!("{}:cache-announcements", settings.key_prefix),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            subscribed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Subscribes to the other instances' announcements in a task of its own until `stop`,
    /// resubscribing with backoff after every loss; what it hears arrives on the receiver.
    pub fn subscribe(&self, stop: impl Future<Output = ()> + Send + 'static) -> tokio::sync::mpsc::Receiver<TierEvent> {
        let (events, receiver) = tokio::sync::mpsc::channel(1024);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop => {}
                () = this.follow(events) => {}
            }
            this.subscribed.store(false, Ordering::Release);
        });
        receiver
    }

    async fn follow(&self, events: tokio::sync::mpsc::Sender<TierEvent>) {
        let mut backoff = RESUBSCRIBE_MIN;
        let mut failures = 0_u32;
        loop {
            match self.open_subscription().await {
                Ok(pubsub) => {
                    backoff = RESUBSCRIBE_MIN;
                    if failures > 0 {
                        tracing::info!(failures, "the shared cache subscription is back; local cache flushed");
                    }
                    failures = 0;
                    self.subscribed.store(true, Ordering::Release);
                    if events.send(TierEvent::Subscribed).await.is_err() {
                        return;
                    }
                    let reason = self.listen(pubsub, &events).await;
                    self.subscribed.store(false, Ordering::Release);
                    tracing::warn!(reason, "the shared cache subscription dropped; local cache flushed, resubscribing");
                    if events.send(TierEvent::Lost).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%error, "cannot subscribe to shared cache announcements; retrying");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
        }
    }

    async fn open_subscription(&self) -> Result<redis::aio::PubSub, String> {
        let open = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), open).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// Forwards announcements until the subscription ends; returns why it ended.
    async fn listen(&self, pubsub: redis::aio::PubSub, events: &tokio::sync::mpsc::Sender<TierEvent>) -> &'static str {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return "the connection closed" };
                    let Some(announcement) = self.parse(message.get_payload_bytes()) else { continue };
                    if events.send(TierEvent::Announced(announcement)).await.is_err() {
                        return "nobody listens";
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return "Redis stopped answering pings";
                    }
                }
            }
        }
    }

    /// `{instance} {family} {stored|-}`; this process's own and malformed ones are skipped.
    fn parse(&self, payload: &[u8]) -> Option<Announcement> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.split(' ');
        let (instance, family, stored) = (parts.next()?, parts.next()?, parts.next()?);
        if instance == self.instance {
            return None;
        }
        let family = match family {
            "catalog" => Family::Catalog,
            "accounts" => Family::Accounts,
            _ => return None,
        };
        let stored = match stored {
            "-" => None,
            number => Some(number.parse().ok()?),
        };
        Some(Announcement { family, stored })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// One command through the breaker, bounded by the timeout.
    async fn call<T>(&self, command: impl Future<Output = redis::RedisResult<T>>) -> Result<T, TierError> {
        let permit = self.breaker.try_acquire().map_err(|rejected| TierError(rejected.to_string()))?;
        let result = match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(TierError(error.to_string())),
            Err(_) => Err(TierError(format!("no answer within {:?}", self.timeout))),
        };
        permit.record(if result.is_ok() { CallOutcome::Success } else { CallOutcome::Failure });
        result
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl SharedTier for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TierError> {
        let mut connection = self.connection.clone();
        self.call(redis::cmd("GET").arg(self.key(key)).query_async(&mut connection)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), TierError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("SET").arg(self.key(key)).arg(value).arg("PX").arg(millis(ttl)).clone();
        self.call(command.query_async::<()>(&mut connection)).await
    }

    async fn lease(&self, key: &str, ttl: Duration) -> Result<bool, TierError> {
        let mut connection = self.connection.clone();
        let command =
            redis::cmd("SET").arg(self.key(key)).arg(&self.instance).arg("NX").arg("PX").arg(millis(ttl)).clone();
        let taken: Option<String> = self.call(command.query_async(&mut connection)).await?;
        Ok(taken.is_some())
    }

    async fn release(&self, key: &str) -> Result<(), TierError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.release.key(self.key(key));
        invocation.arg(&self.instance);
        self.call(invocation.invoke_async::<i64>(&mut connection)).await.map(|_| ())
    }

    async fn announce(&self, announcement: Announcement) -> Result<(), TierError> {
        let stored = announcement.stored.map_or_else(|| "-".to_owned(), |stored| stored.to_string());
        let payload = format!("{} {} {stored}", self.instance, announcement.family.as_str());
        let mut connection = self.connection.clone();
        let command = redis::cmd("PUBLISH").arg(&self.channel).arg(payload).clone();
        self.call(command.query_async::<i64>(&mut connection)).await.map(|_| ())
    }

    async fn check(&self) -> Result<(), TierError> {
        if !self.subscribed.load(Ordering::Acquire) {
            return Err(TierError("not subscribed to the write announcements".into()));
        }
        // Through the breaker: once its wait is over this probe is the call that closes it.
        let mut connection = self.connection.clone();
        let pong: String = self.call(redis::cmd("PING").query_async(&mut connection)).await?;
        if pong == "PONG" { Ok(()) } else { Err(TierError(format!("unexpected answer {pong:?}"))) }
    }
}
