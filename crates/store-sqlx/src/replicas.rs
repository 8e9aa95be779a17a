//! Read replicas (PostgreSQL): catalog and search reads go to a streaming replica while it is
//! proven to hold everything this process knows was written, to the primary otherwise.
//!
//! The proof: every `check_every`, for each replica, read this process's catalog generation,
//! then the primary's WAL position (`pg_current_wal_lsn()`), then the replica's replay position
//! (`pg_last_wal_replay_lsn()`). When the replica has replayed past the primary's position, it
//! holds every transaction committed before that generation was read: it is *fresh* for that
//! generation. A read uses a replica only while (a) the catalog generation is still the one it
//! is fresh for — any write this process made since, or learned of from another instance
//! (announcement, poll), moves the generation on, so the next reads go to the primary until the
//! replica is proven to have it (read-your-writes for staff; no stale value cached under a new
//! generation) — and (b) it was proven fresh within `max_lag`. A replica that fails a read is
//! set aside until its next successful check, and the primary answers the read.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shop::StoreError;
use shop::cache::{Family, Generations};
use sqlx::PgPool;

use crate::exec::{self, Connection, Executor as _};

/// Settings of the replicas of [`crate::SqlStore::with_replicas`].
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// `postgres://…` of each replica.
    pub urls: Vec<String>,
    /// A replica not proven fresh within this is not read from.
    pub max_lag: Duration,
    /// How often each replica's replay position is compared with the primary's.
    pub check_every: Duration,
    /// Connections per replica.
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

pub(crate) struct Replicas {
    members: Vec<Replica>,
    max_lag: Duration,
    check_every: Duration,
    next: AtomicUsize,
}

struct Replica {
    /// `host:port/database`, for logs and metrics (no credentials).
    name: String,
    pool: PgPool,
    state: Mutex<Freshness>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Freshness {
    /// When the replica was last proven to hold everything committed before `generation`.
    proven_at: Option<Instant>,
    generation: u64,
}

/// What the last check of one replica found, for the admin view and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub name: String,
    /// Proven fresh within `max_lag` (reads may go to it while the generation holds).
    pub fresh: bool,
    /// Time since it was last proven fresh; `None` if never.
    pub lag: Option<Duration>,
    /// Fresh, and proven since the last catalog change this process knows of: reads go to it.
    pub serving: bool,
}

impl Replicas {
    pub(crate) fn new(members: Vec<(String, PgPool)>, settings: &ReplicaSettings) -> Self {
        Self {
            members: members
                .into_iter()
                .map(|(name, pool)| Replica { name, pool, state: Mutex::new(Freshness::default()) })
                .collect(),
            max_lag: settings.max_lag,
            check_every: settings.check_every,
            next: AtomicUsize::new(0),
        }
    }

    /// A replica a catalog read may use now, round-robin among the fit ones.
    fn pick(&self, generations: &Generations) -> Option<&Replica> {
        let generation = generations.current(Family::Catalog);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.members.len())
            .map(|offset| &self.members[(start + offset) % self.members.len()])
            .find(|replica| replica.fit(generation, self.max_lag))
    }

    pub(crate) fn statuses(&self, generations: &Generations) -> Vec<ReplicaStatus> {
        let generation = generations.current(Family::Catalog);
        self.members
            .iter()
            .map(|replica| {
                let state = replica.state();
                let lag = state.proven_at.map(|at| at.elapsed());
                ReplicaStatus {
                    name: replica.name.clone(),
                    fresh: lag.is_some_and(|lag| lag <= self.max_lag),
                    lag,
                    serving: replica.fit(generation, self.max_lag),
                }
            })
            .collect()
    }
}

impl Replica {
    fn state(&self) -> Freshness {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, state: Freshness) {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    fn fit(&self, generation: u64, max_lag: Duration) -> bool {
        let state = self.state();
        state.generation == generation && state.proven_at.is_some_and(|at| at.elapsed() <= max_lag)
    }

    /// Not to be read from until a check proves it fresh again.
    fn set_aside(&self) {
        self.set(Freshness::default());
    }
}

/// `X/Y` (hex halves of a WAL position) as one number.
fn parse_lsn(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.trim().split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

impl crate::SqlStore {
    /// Catalog and search reads go to the replicas of `settings` while they are proven fresh
    /// (see the module's documentation); [`crate::SqlStore::follow_replicas`] must run for any
    /// read to reach them. Connections are opened lazily: a replica that is down at start is
    /// only not read from. Each replica is connected to like the primary (`connection`: its
    /// statement timeout and PgBouncer mode), at its own URL.
    pub fn with_replicas(
        mut self,
        connection: &crate::PostgresSettings,
        settings: &ReplicaSettings,
    ) -> anyhow::Result<Self> {
        let mut members = Vec::new();
        for url in &settings.urls {
            let (options, _) = crate::postgres::connect_options(url, connection)?;
            let name =
                format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or(""));
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .min_connections(0)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options);
            members.push((name, pool));
        }
        if !members.is_empty() {
            self.replicas = Some(Arc::new(Replicas::new(members, settings)));
        }
        Ok(self)
    }

    /// Each replica's freshness as last checked (none without replicas).
    pub fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas.as_ref().map(|replicas| replicas.statuses(&self.generations)).unwrap_or_default()
    }

    /// Checks every replica's replay position against the primary's every `check_every` until
    /// `stop`. Without replicas it returns at once.
    pub async fn follow_replicas(&self, stop: impl Future<Output = ()>) {
        let Some(replicas) = self.replicas.clone() else { return };
        let mut interval = tokio::time::interval(replicas.check_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = &mut stop => return,
            }
            for replica in &replicas.members {
                self.check_replica(replica, replicas.max_lag).await;
            }
        }
    }

    async fn check_replica(&self, replica: &Replica, max_lag: Duration) {
        let generation = self.generations.current(Family::Catalog);
        let started = Instant::now();
        let outcome = async {
            let mut primary = self.connection().await?;
            let primary_lsn: String = primary
                .fetch_scalar(exec::sql("select cast(pg_current_wal_lsn() as text)"))
                .await
                .map_err(crate::codec::error("failed to read the primary's WAL position"))?;
            drop(primary);
            let mut conn = self.replica_connection(replica).await?;
            let replayed: Option<String> = conn
                .fetch_optional_scalar(exec::sql("select cast(pg_last_wal_replay_lsn() as text)"))
                .await
                .map_err(crate::codec::error("failed to read the replica's replay position"))?
                .flatten();
            let replayed = replayed.ok_or_else(|| StoreError::other("not a streaming replica (no replay position)"))?;
            match (parse_lsn(&primary_lsn), parse_lsn(&replayed)) {
                (Some(primary), Some(replayed)) => Ok(replayed >= primary),
                _ => Err(StoreError::other(format!("unreadable WAL positions {primary_lsn:?} / {replayed:?}"))),
            }
        };
        match outcome.await {
            Ok(true) => replica.set(Freshness { proven_at: Some(started), generation }),
            Ok(false) => {}
            Err(error) => {
                if replica.state().proven_at.is_some() {
                    tracing::warn!(%error, replica = %replica.name, "replica check failed; reading the primary");
                }
                replica.set_aside();
            }
        }
        let lag = replica.state().proven_at.map_or(f64::INFINITY, |at| at.elapsed().as_secs_f64());
        metrics::gauge!("database_replica_lag_seconds", "replica" => replica.name.clone()).set(lag);
        metrics::gauge!("database_replica_fresh", "replica" => replica.name.clone())
            .set(if lag <= max_lag.as_secs_f64() { 1.0 } else { 0.0 });
    }

    async fn replica_connection(&self, replica: &Replica) -> Result<Connection, StoreError> {
        let conn = replica
            .pool
            .acquire()
            .await
            .map_err(|error| StoreError::other(format!("replica {}: {error}", replica.name)))?;
        Ok(Connection::Postgres(conn, self.pooling.clone()))
    }

    /// Runs a catalog or search read on a fresh replica when there is one, else (and when the
    /// replica fails it) on the primary. Only the adapter's own failures retry on the primary:
    /// a not-found or a conflict is the answer.
    pub(crate) async fn catalog_read<T, F, Fut>(&self, read: F) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        if let Some(replica) = self.replicas.as_ref().and_then(|replicas| replicas.pick(&self.generations)) {
            let answered = match self.replica_connection(replica).await {
                Ok(conn) => read(conn).await,
                Err(error) => Err(error),
            };
            match answered {
                Ok(value) => {
                    metrics::counter!("database_reads_total", "target" => "replica").increment(1);
                    return Ok(value);
                }
                Err(StoreError::Other(error)) => {
                    tracing::warn!(%error, replica = %replica.name, "a replica read failed; reading the primary");
                    replica.set_aside();
                }
                Err(answer) => return Err(answer),
            }
        }
        metrics::counter!("database_reads_total", "target" => "primary").increment(1);
        read(self.connection().await?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_compare_as_numbers() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert!(parse_lsn("1/0").unwrap() > parse_lsn("0/FFFFFFFF").unwrap());
        assert_eq!(parse_lsn("garbage"), None);
    }

    #[tokio::test]
    async fn a_replica_is_fit_only_for_the_generation_it_was_proven_for_and_within_the_lag() {
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let replica = Replica { name: "r".into(), pool, state: Mutex::new(Freshness::default()) };
        let lag = Duration::from_secs(1);
        assert!(!replica.fit(0, lag), "never proven");
        replica.set(Freshness { proven_at: Some(Instant::now()), generation: 3 });
        assert!(replica.fit(3, lag));
        assert!(!replica.fit(4, lag), "a write since the proof");
        replica.set(Freshness { proven_at: Instant::now().checked_sub(Duration::from_secs(2)), generation: 3 });
        assert!(!replica.fit(3, lag), "proven too long ago");
        replica.set_aside();
        assert!(!replica.fit(3, lag));
    }
}
