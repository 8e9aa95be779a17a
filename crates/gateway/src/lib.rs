//! `shopkeep gateway`: an L7 reverse proxy in front of N `serve` instances. It balances over a
//! pool (power of two choices over peak-EWMA by default), checks backends' readiness, ejects
//! outliers under a governor, retries idempotent requests on another backend within a budget,
//! sheds load and limits clients at the edge, and changes its pool at run time — add, remove,
//! weigh, drain — over an admin listener, for zero-downtime deploys from the one binary.

#![forbid(unsafe_code)]

mod admin;
pub mod backend;
pub mod balance;
pub mod body;
pub mod config;
pub mod forwarded;
pub mod health;
pub mod pool;
pub mod proxy;
pub mod reload;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use resilience::{Clock, MonotonicClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{BackendConfig, ConfigErrors, GatewayConfig};

use backend::Backend;
use balance::Balancer;
use config::{AdminToken, millis, parse_backend_address};
use health::HealthPolicy;
use pool::{Pool, PoolPolicy};
use proxy::{Proxy, UpstreamClient};

/// What the proxy, the admin listener and the health checkers share.
pub(crate) struct Shared {
    pub pool: Arc<Pool>,
    pub proxy: Arc<Proxy>,
    pub client: UpstreamClient,
    pub health: HealthPolicy,
    pub admin_token: Option<AdminToken>,
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the gateway stops: ends health checkers and the admin listener.
    pub stop: CancellationToken,
    /// Set when shutdown begins: readiness turns 503 so a balancer in front stops sending.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// The public listener's certificate, when it serves TLS.
    pub certificates: Option<Arc<server_tls::Certificates>>,
}

impl Shared {
    /// Starts checking a backend that joined the pool.
    pub fn watch(self: &Arc<Self>, backend: Arc<Backend>) {
        health::spawn_checker(
            Arc::clone(&self.pool),
            self.client.clone(),
            backend,
            self.health.clone(),
            self.stop.clone(),
        );
    }
}

/// A gateway with its listeners bound, ready to run.
pub struct Gateway {
    listener: TcpListener,
    admin_listener: TcpListener,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    drain_delay: Duration,
    workers: usize,
    /// TLS settings for backends reached over HTTPS, for each worker's client.
    upstream_tls: Arc<rustls::ClientConfig>,
    config: GatewayConfig,
}

/// A worker thread: a single-threaded runtime that runs the connections handed to it and
/// their upstream connections (its own client), so a request never hops threads.
struct Worker {
    handle: tokio::runtime::Handle,
    client: UpstreamClient,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    fn start(
        index: usize,
        config: &GatewayConfig,
        tls: &Arc<rustls::ClientConfig>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a gateway worker's runtime")?;
        let handle = runtime.handle().clone();
        // The client's connection tasks are spawned on whichever runtime runs the request that
        // opens them: this worker's, since its requests run here. One client per worker keeps
        // each pooled connection on the thread that uses it.
        let client = {
            let _entered = runtime.enter();
            proxy::upstream_client(config, tls)
        };
        let thread = std::thread::Builder::new()
            .name(format!("gateway-worker-{index}"))
            .spawn(move || runtime.block_on(stop.cancelled()))
            .context("cannot start a gateway worker thread")?;
        Ok(Self { handle, client, thread })
    }
}

impl Gateway {
    /// Checks the configuration, binds both listeners (port 0 picks a free one) and asks every
    /// configured backend once, so that traffic flows from the first request.
    pub async fn build(config: GatewayConfig, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        config.check()?;
        let listen = config.listen_address().map_err(anyhow::Error::msg)?;
        let admin = config.admin_address().map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let admin_listener =
            TcpListener::bind(admin).await.with_context(|| format!("cannot listen on {admin} (admin)"))?;
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let pool =
            Arc::new(Pool::new(Balancer::new(config.balance), PoolPolicy::from_config(&config), Arc::clone(&clock)));
        for backend in &config.backends {
            let authority = parse_backend_address(&backend.address).map_err(anyhow::Error::msg)?;
            let joining = Backend::with_scheme(&backend.name, authority, backend.weight, backend.tls, clock.now());
            pool.add(Arc::new(joining))?;
        }
        let upstream_tls = proxy::upstream_tls(&config)?;
        let client = proxy::upstream_client(&config, &upstream_tls);
        let health = HealthPolicy::from_config(&config.health);
        let mut first_checks = tokio::task::JoinSet::new();
        for backend in pool.backends().iter() {
            let (pool, client, backend, health) =
                (Arc::clone(&pool), client.clone(), Arc::clone(backend), health.clone());
            first_checks.spawn(async move { health::check(&pool, &client, &backend, &health).await });
        }
        while first_checks.join_next().await.is_some() {}
        let certificates = match &config.tls {
            Some(tls) => Some(Arc::new(
                server_tls::Certificates::load(tls.certificate_file.as_ref(), tls.key_file.as_ref())
                    .context("tls: cannot use the certificate")?,
            )),
            None => None,
        };
        let stop = CancellationToken::new();
        let proxy = Arc::new(Proxy::new(&config, Arc::clone(&pool), clock, stop.clone()));
        let shared = Arc::new(Shared {
            pool,
            proxy,
            client,
            health,
            admin_token: config.admin_token.clone(),
            metrics,
            stop,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            certificates,
        });
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            count => count,
        };
        Ok(Self {
            listener,
            admin_listener,
            shared,
            shutdown_grace: millis(config.shutdown_grace_ms),
            drain_delay: millis(config.drain_delay_ms),
            workers,
            upstream_tls,
            config,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn port(&self) -> u16 {
        self.address().port()
    }

    /// A handle that applies a new configuration's pool while the gateway runs (SIGHUP).
    pub fn reloader(&self) -> reload::Reloader {
        reload::Reloader::new(Arc::clone(&self.shared), self.config.clone())
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_listener.local_addr().map(|address| address.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets requests in flight
    /// finish (up to the grace time) and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Gateway { listener, admin_listener, shared, shutdown_grace, drain_delay, workers, upstream_tls, config } =
            self;
        // However this future ends — cancelled, an error, dropped — the tasks and worker
        // threads it started stop with it.
        let _stop_background = shared.stop.clone().drop_guard();
        for backend in shared.pool.backends().iter() {
            shared.watch(Arc::clone(backend));
        }
        let admin = tokio::spawn(admin::serve(admin_listener, Arc::clone(&shared)));
        let sweeper = tokio::spawn(sweep_limits(Arc::clone(&shared)));
        if let (Some(certificates), Some(tls)) = (&shared.certificates, &config.tls) {
            tokio::spawn(Arc::clone(certificates).watch(millis(tls.reload_interval_ms), shared.stop.clone()));
        }
        let acceptor = shared.certificates.as_ref().map(|certificates| certificates.acceptor());
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let workers_stop = CancellationToken::new();
        let _stop_workers = workers_stop.clone().drop_guard();
        let workers: Vec<Worker> = (0..workers)
            .map(|index| Worker::start(index, &config, &upstream_tls, workers_stop.clone()))
            .collect::<anyhow::Result<_>>()?;
        tracing::info!(
            address = %listener.local_addr().map(|address| address.to_string()).unwrap_or_default(),
            backends = shared.pool.backends().len(),
            workers = workers.len(),
            "gateway listening"
        );

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
        builder.http2().timer(TokioTimer::new());
        let serving = Serving { builder, acceptor, scheme };
        let graceful = GracefulShutdown::new();
        let mut next_worker = 0_usize;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: back off, do not spin.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    // Connections go to the workers in turn; each lives on its worker's thread.
                    let worker = &workers[next_worker % workers.len()];
                    next_worker = next_worker.wrapping_add(1);
                    hand_over(worker, (stream, peer), &shared, &serving, &graceful);
                }
                () = shutdown.cancelled() => break,
            }
        }
        shared.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
        if !drain_delay.is_zero() {
            // Readiness is 503 now; keep accepting until a balancer in front has noticed.
            tracing::info!(seconds = drain_delay.as_secs_f64(), "gateway draining: readiness off");
            let until = tokio::time::Instant::now() + drain_delay;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, peer)) = accepted {
                            let _ = stream.set_nodelay(true);
                            let worker = &workers[next_worker % workers.len()];
                            next_worker = next_worker.wrapping_add(1);
                            hand_over(worker, (stream, peer), &shared, &serving, &graceful);
                        }
                    }
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }
        drop(listener);
        tracing::info!(connections = graceful.count(), "gateway stopping: finishing requests in flight");
        if tokio::time::timeout(shutdown_grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("grace time over: closing the remaining connections");
        }
        shared.stop.cancel();
        workers_stop.cancel();
        for worker in workers {
            let joined = tokio::task::spawn_blocking(move || worker.thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("a gateway worker thread panicked");
            }
        }
        let _ = admin.await;
        let _ = sweeper.await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// How accepted connections are served: the HTTP builder, and TLS when configured.
struct Serving {
    builder: auto::Builder<TokioExecutor>,
    acceptor: Option<server_tls::TlsAcceptor>,
    /// `https` with TLS, else `http` (what backends are told in `X-Forwarded-Proto`).
    scheme: &'static str,
}

/// Gives an accepted connection to `worker`: registered with its reactor, TLS handshake (if
/// any) and HTTP there, watched for graceful shutdown.
fn hand_over(
    worker: &Worker,
    (stream, peer): (tokio::net::TcpStream, SocketAddr),
    shared: &Arc<Shared>,
    serving: &Serving,
    graceful: &GracefulShutdown,
) {
    let (acceptor, scheme) = (serving.acceptor.clone(), serving.scheme);
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot hand a connection to a worker");
            return;
        }
    };
    let proxy = Arc::clone(&shared.proxy);
    let client = worker.client.clone();
    let builder = serving.builder.clone();
    let watcher = graceful.watcher();
    worker.handle.spawn(async move {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot register a connection");
                return;
            }
        };
        let service = hyper::service::service_fn(move |request| {
            let (proxy, client) = (Arc::clone(&proxy), client.clone());
            async move { Ok::<_, Infallible>(proxy.handle(&client, request, peer, scheme).await) }
        });
        let result = match acceptor {
            None => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service)).await,
            Some(acceptor) => match server_tls::handshake(&acceptor, stream).await {
                Ok(tls) => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(tls), service)).await,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            },
        };
        if let Err(error) = result {
            tracing::debug!(%peer, error = %error, "client connection ended with an error");
        }
    });
}

/// Forgets idle per-client limiter state every minute.
async fn sweep_limits(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = interval.tick() => shared.proxy.purge_idle_limits(),
            () = shared.stop.cancelled() => return,
        }
    }
}
