//! Job-queue benchmark against a real store, with a no-op handler:
//!
//! 1. enqueue: `--jobs` due jobs enqueued by `--enqueuers` concurrent callers (jobs/s);
//! 2. drain: one worker, one queue of `--concurrency` C, batch max(C, 16), polling every 10 ms,
//!    timed from its start until every job has succeeded (jobs/s);
//! 3. latency: jobs enqueued one by one at `--rate` per second for `--seconds` while the worker
//!    idles, each handler recording `now - job.created_at` (p50/p99 in ms), with the worker
//!    polling every `--latency-poll-ms` and, with `--listen` (PostgreSQL), woken by
//!    LISTEN/NOTIFY as `shopkeep` runs it.
//!
//! ```text
//! cargo run --release -p worker --example throughput -- --backend sqlite|postgres --jobs N --concurrency C
//!     [--enqueuers 16] [--rate 200] [--seconds 5] [--latency-poll-ms 10] [--listen]
//!     [--phases drain,latency] [--max-connections 8|10] [--postgres-url postgres://…/postgres]
//! ```
//!
//! SQLite gets a fresh temporary file, PostgreSQL a fresh database (dropped at the end). Prints
//! one JSON line per phase on stdout (`bench/jobs.sh` makes the table); asserts only that every
//! job succeeded. Logs at `error` unless `RUST_LOG` says otherwise, so logging does not distort
//! the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use shop::jobs::{Job, JobService, JobSettings, JobState, NewJob};
use shop::{Clock as _, Store, SystemClock};
use store_sqlx::{PostgresSettings, SqlStore, SqliteSettings, provisioning};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use worker::{HandlerError, Handlers, JobHandler, QueueSettings, Worker, WorkerSettings};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DRAIN_KIND: &str = "bench.drain";
const LATENCY_KIND: &str = "bench.latency";
const QUEUE: &str = "default";
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Longest wait for the last jobs of a phase before giving up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(1_800);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let options = Options::parse(std::env::args().skip(1))?;
    let database = Database::create(&options).await?;
    let outcome = run(&options, &database).await;
    database.remove().await?;
    outcome
}

async fn run(options: &Options, database: &Database) -> Result<(), BoxError> {
    let jobs = JobService::new(Arc::clone(&database.store), Arc::new(SystemClock), JobSettings::default());
    if options.drain {
        enqueue_backlog(options, &jobs).await?;
        drain_backlog(options, database, &jobs).await?;
    }
    if options.latency {
        measure_latency(options, database, &jobs).await?;
    }
    Ok(())
}

/// Enqueues `--jobs` due jobs with `--enqueuers` concurrent callers, one job per transaction.
async fn enqueue_backlog(options: &Options, jobs: &JobService) -> Result<(), BoxError> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut enqueuers = JoinSet::new();
    for _ in 0..options.enqueuers {
        let (jobs, next, total) = (jobs.clone(), Arc::clone(&next), options.jobs);
        enqueuers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return Ok::<(), BoxError>(());
                }
                let job = NewJob::new(DRAIN_KIND, json!({ "n": index }), jobs.now());
                if !jobs.enqueue(&job).await? {
                    return Err(format!("job {index} was not enqueued").into());
                }
            }
        });
    }
    while let Some(enqueuer) = enqueuers.join_next().await {
        enqueuer??;
    }
    let seconds = started.elapsed().as_secs_f64();
    report(json!({
        "phase": "enqueue", "backend": options.backend.name(), "jobs": options.jobs,
        "enqueuers": options.enqueuers, "seconds": seconds, "jobs_per_s": options.jobs as f64 / seconds,
    }));
    Ok(())
}

/// Starts a worker on the backlog and times it until every job has succeeded.
async fn drain_backlog(options: &Options, database: &Database, jobs: &JobService) -> Result<(), BoxError> {
    let progress = Progress::new(options.jobs);
    let mut handlers = Handlers::new();
    handlers.register(DRAIN_KIND, CountCompletions(Arc::clone(&progress)));
    let worker =
        Worker::new(Arc::clone(&database.store), jobs.clone(), handlers, worker_settings(options, DRAIN_POLL_INTERVAL));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    let finished = progress.wait(PHASE_TIMEOUT).await;
    // Stopping lets the last running jobs finish and record their success before `run` returns.
    stop.cancel();
    running.await?;
    let seconds = started.elapsed().as_secs_f64();
    finished?;
    let succeeded = count_in_state(jobs, JobState::Succeeded).await?;
    if succeeded != options.jobs {
        return Err(format!("{succeeded} of {} jobs succeeded", options.jobs).into());
    }
    report(json!({
        "phase": "drain", "backend": options.backend.name(), "jobs": options.jobs,
        "concurrency": options.concurrency, "batch_size": batch_size(options),
        "poll_ms": DRAIN_POLL_INTERVAL.as_millis(), "seconds": seconds, "jobs_per_s": options.jobs as f64 / seconds,
    }));
    Ok(())
}

/// Enqueues at a steady rate while the worker idles; reports how long each job waited to start.
async fn measure_latency(options: &Options, database: &Database, jobs: &JobService) -> Result<(), BoxError> {
    let total = u64::from(options.rate) * options.seconds;
    let progress = Progress::new(total);
    let mut handlers = Handlers::new();
    handlers.register(LATENCY_KIND, RecordLatency(Arc::clone(&progress)));
    let worker = Worker::new(
        Arc::clone(&database.store),
        jobs.clone(),
        handlers,
        worker_settings(options, options.latency_poll_interval),
    );
    let stop = CancellationToken::new();
    let listener = match (&database.postgres_url, options.listen) {
        (Some(url), true) => {
            let wakers = worker.wakers();
            let on_job = move |queue: Option<&str>| match queue {
                Some(queue) => wakers.wake(queue),
                None => wakers.wake_all(),
            };
            Some(tokio::spawn(store_sqlx::listen_for_jobs(url.clone(), on_job, stop.clone())))
        }
        _ => None,
    };
    let running = tokio::spawn(worker.run(stop.clone()));
    // Let the worker's first claim find nothing (and the listener subscribe), so jobs arrive
    // at an idle, polling worker.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Each enqueue is its own task started on the tick, so a slow insert delays only itself and
    // the arrival rate stays what was asked for.
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(options.rate)));
    let mut enqueues = JoinSet::new();
    let started = Instant::now();
    for index in 0..total {
        ticker.tick().await;
        let jobs = jobs.clone();
        enqueues.spawn(async move {
            let job = NewJob::new(LATENCY_KIND, json!({ "n": index }), jobs.now());
            jobs.enqueue(&job).await
        });
    }
    while let Some(enqueue) = enqueues.join_next().await {
        enqueue??;
    }
    let enqueue_seconds = started.elapsed().as_secs_f64();
    let finished = progress.wait(PHASE_TIMEOUT).await;
    stop.cancel();
    running.await?;
    if let Some(listener) = listener {
        listener.await?;
    }
    finished?;

    let mut waits = std::mem::take(&mut *progress.lock_latencies());
    waits.sort_unstable_by(f64::total_cmp);
    report(json!({
        "phase": "latency", "backend": options.backend.name(), "jobs": total,
        "concurrency": options.concurrency, "poll_ms": options.latency_poll_interval.as_millis(),
        "listen": options.listen, "rate_per_s": total as f64 / enqueue_seconds,
        "p50_ms": percentile(&waits, 0.50), "p99_ms": percentile(&waits, 0.99),
        "max_ms": waits.last().copied().unwrap_or_default(),
    }));
    Ok(())
}

fn worker_settings(options: &Options, poll_interval: Duration) -> WorkerSettings {
    WorkerSettings {
        queues: vec![QueueSettings { name: QUEUE.into(), concurrency: options.concurrency }],
        batch_size: batch_size(options),
        poll_interval,
        ..WorkerSettings::new(format!("bench-{}", uuid::Uuid::new_v4().simple()))
    }
}

fn batch_size(options: &Options) -> u32 {
    u32::try_from(options.concurrency.max(16)).unwrap_or(u32::MAX)
}

async fn count_in_state(jobs: &JobService, state: JobState) -> Result<u64, BoxError> {
    let depths = jobs.depths().await?;
    Ok(depths.iter().filter(|depth| depth.queue == QUEUE && depth.state == state).map(|depth| depth.count).sum())
}

/// The nearest-rank percentile of sorted milliseconds.
fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(line: serde_json::Value) {
    println!("{line}");
}

// === Handlers ===

/// Completions of a phase, and the wait of each job (latency phase only).
struct Progress {
    completed: AtomicU64,
    target: u64,
    all_done: Notify,
    latencies_ms: Mutex<Vec<f64>>,
}

impl Progress {
    fn new(target: u64) -> Arc<Self> {
        let capacity = usize::try_from(target).unwrap_or(0).min(1 << 20);
        Arc::new(Self {
            completed: AtomicU64::new(0),
            target,
            all_done: Notify::new(),
            latencies_ms: Mutex::new(Vec::with_capacity(capacity)),
        })
    }

    fn complete_one(&self) {
        if self.completed.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            // `notify_one` keeps the wake-up if nobody waits yet.
            self.all_done.notify_one();
        }
    }

    async fn wait(&self, timeout: Duration) -> Result<(), BoxError> {
        if self.target == 0 {
            return Ok(());
        }
        tokio::time::timeout(timeout, self.all_done.notified()).await.map_err(|_| {
            format!("only {} of {} jobs ran within {timeout:?}", self.completed.load(Ordering::Relaxed), self.target)
                .into()
        })
    }

    fn lock_latencies(&self) -> std::sync::MutexGuard<'_, Vec<f64>> {
        self.latencies_ms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The no-op handler of the drain phase: counts.
struct CountCompletions(Arc<Progress>);

#[async_trait]
impl JobHandler for CountCompletions {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        self.0.complete_one();
        Ok(())
    }
}

/// The no-op handler of the latency phase: records how long the job waited since its enqueue
/// (`created_at` is set from the same clock), then counts.
struct RecordLatency(Arc<Progress>);

#[async_trait]
impl JobHandler for RecordLatency {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let waited = SystemClock.now() - job.created_at;
        self.0.lock_latencies().push(waited.as_seconds_f64() * 1_000.0);
        self.0.complete_one();
        Ok(())
    }
}

// === Setup ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The command line.
#[derive(Debug, Clone)]
struct Options {
    backend: Backend,
    jobs: u64,
    concurrency: usize,
    enqueuers: usize,
    rate: u32,
    seconds: u64,
    latency_poll_interval: Duration,
    listen: bool,
    drain: bool,
    latency: bool,
    max_connections: Option<u32>,
    postgres_url: String,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, BoxError> {
        let mut options = Self {
            backend: Backend::Sqlite,
            jobs: 10_000,
            concurrency: 8,
            enqueuers: 16,
            rate: 200,
            seconds: 5,
            latency_poll_interval: Duration::from_millis(10),
            listen: false,
            drain: true,
            latency: true,
            max_connections: None,
            postgres_url: std::env::var("SHOPKEEP_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        };
        while let Some(flag) = args.next() {
            if flag == "--listen" {
                options.listen = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--backend" => {
                    options.backend = match value.as_str() {
                        "sqlite" => Backend::Sqlite,
                        "postgres" => Backend::Postgres,
                        other => return Err(format!("unknown backend {other:?} (sqlite or postgres)").into()),
                    }
                }
                "--jobs" => options.jobs = value.parse()?,
                "--concurrency" => options.concurrency = value.parse::<usize>()?.max(1),
                "--enqueuers" => options.enqueuers = value.parse::<usize>()?.max(1),
                "--rate" => options.rate = value.parse::<u32>()?.max(1),
                "--seconds" => options.seconds = value.parse()?,
                "--latency-poll-ms" => options.latency_poll_interval = Duration::from_millis(value.parse()?),
                "--phases" => {
                    let phases: Vec<&str> = value.split(',').collect();
                    options.drain = phases.contains(&"drain");
                    options.latency = phases.contains(&"latency");
                }
                "--max-connections" => options.max_connections = Some(value.parse()?),
                "--postgres-url" => options.postgres_url = value,
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        if options.listen && options.backend != Backend::Postgres {
            return Err("--listen needs --backend postgres".into());
        }
        Ok(options)
    }
}

/// A fresh, migrated database of the chosen backend.
struct Database {
    store: Arc<dyn Store>,
    /// PostgreSQL: the database to drop at the end.
    postgres_url: Option<String>,
    /// SQLite: the directory of the database file, removed when dropped.
    _directory: Option<tempfile::TempDir>,
}

impl Database {
    async fn create(options: &Options) -> Result<Self, BoxError> {
        match options.backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir()?;
                let store = SqlStore::sqlite(&SqliteSettings {
                    url: format!("sqlite://{}", directory.path().join("jobs.db").display()),
                    max_connections: options.max_connections.unwrap_or(8),
                    acquire_timeout: Duration::from_secs(30),
                    busy_timeout: Duration::from_secs(5),
                })
                .await?;
                store.migrate_up().await?;
                Ok(Self { store: Arc::new(store), postgres_url: None, _directory: Some(directory) })
            }
            Backend::Postgres => {
                let name = format!("shopkeep_bench_jobs_{}", uuid::Uuid::new_v4().simple());
                let url = match options.postgres_url.rsplit_once('/') {
                    Some((server, _)) if server.len() > "postgres://".len() => format!("{server}/{name}"),
                    _ => return Err(format!("cannot name a database in {:?}", options.postgres_url).into()),
                };
                provisioning::create_database_if_missing(&url).await?;
                let connected = async {
                    let store = SqlStore::postgres(&PostgresSettings {
                        url: url.clone(),
                        // The default of `database.max_connections`.
                        max_connections: options.max_connections.unwrap_or(10),
                        min_connections: 0,
                        acquire_timeout: Duration::from_secs(30),
                        statement_timeout: Duration::from_secs(30),
                        pgbouncer: false,
                    })
                    .await?;
                    store.migrate_up().await?;
                    Ok::<_, BoxError>(store)
                }
                .await;
                match connected {
                    Ok(store) => Ok(Self { store: Arc::new(store), postgres_url: Some(url), _directory: None }),
                    Err(error) => {
                        provisioning::drop_database(&url).await?;
                        Err(error)
                    }
                }
            }
        }
    }

    /// Closes the store and drops the PostgreSQL database (the SQLite directory goes on drop).
    async fn remove(self) -> Result<(), BoxError> {
        let Self { store, postgres_url, _directory } = self;
        drop(store);
        if let Some(url) = postgres_url {
            provisioning::drop_database(&url).await?;
        }
        Ok(())
    }
}
