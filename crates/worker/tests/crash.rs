//! The crash test: a worker process is killed with SIGKILL again and again while it runs jobs;
//! in the end every job has succeeded, and each job's effect exists exactly once.
//!
//! The worker process is this test binary run again with `crash_worker_process` as its only
//! test (an ignored test that is the child's entry point, not a test of its own), on the same
//! SQLite file. Its handler records its effect idempotently, keyed by job id, and counts runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use shop::jobs::{Job, JobQuery, JobService, JobSettings, JobState, NewJob};
use shop::{PageRequest, Store, SystemClock};
use sqlx::SqlitePool;
use store_sqlx::{SqlStore, SqliteSettings};
use tokio_util::sync::CancellationToken;
use worker::{HandlerError, Handlers, JobHandler, QueueSettings, Worker, WorkerSettings};

const DATABASE: &str = "CRASH_TEST_DATABASE";
const JOBS: usize = 100;

fn settings(path: &str) -> SqliteSettings {
    SqliteSettings {
        url: format!("sqlite://{path}"),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        busy_timeout: Duration::from_secs(10),
    }
}

/// Does the "work" (a pause, so kills land mid-job), then records the effect once per job.
struct RecordEffect {
    pool: SqlitePool,
}

#[async_trait]
impl JobHandler for RecordEffect {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let pause = rand::rng().random_range(50..150);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sqlx::query(
            "insert into crash_effects (job_id, runs) values (?, 1) \
             on conflict (job_id) do update set runs = runs + 1",
        )
        .bind(job.id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|error| HandlerError::Transient(error.to_string()))?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the entry point of the crash test's worker process, run by crash_test itself"]
async fn crash_worker_process() {
    let path = std::env::var(DATABASE).expect("run by the crash test");
    let store = SqlStore::sqlite(&settings(&path)).await.unwrap();
    let pool = SqlitePool::connect(&format!("sqlite://{path}")).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let jobs = JobService::new(Arc::clone(&store), Arc::new(SystemClock), JobSettings::default());
    let mut handlers = Handlers::new();
    handlers.register("effect", RecordEffect { pool });
    let settings = WorkerSettings {
        queues: vec![QueueSettings { name: "default".into(), concurrency: 4 }],
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(1),
        maintenance_interval: Duration::from_millis(200),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..WorkerSettings::new(format!("crash-worker-{}", std::process::id()))
    };
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        if let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            terminate.recv().await;
        }
        signal.cancel();
    });
    Worker::new(store, jobs, handlers, settings).run(stop).await;
}

fn spawn_worker(path: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_worker_process", "--nocapture"])
        .env(DATABASE, path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_again_and_again_still_finishes_every_job_once_in_effect() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("crash.db").display().to_string();
    let store = SqlStore::sqlite(&settings(&path)).await.unwrap();
    store.migrate_up().await.unwrap();
    let pool = SqlitePool::connect(&format!("sqlite://{path}")).await.unwrap();
    sqlx::query("create table crash_effects (job_id text primary key not null, runs integer not null)")
        .execute(&pool)
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let jobs = JobService::new(Arc::clone(&store), Arc::new(SystemClock), JobSettings::default());
    for index in 0..JOBS {
        let job = NewJob::new("effect", serde_json::json!({ "index": index }), jobs.now()).max_attempts(100);
        assert!(jobs.enqueue(&job).await.unwrap());
    }

    // Five workers, each SIGKILLed while it is in the middle of jobs.
    for _ in 0..5 {
        let mut child = spawn_worker(&path);
        let lifetime = rand::rng().random_range(300..700);
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        signal(&child, "-KILL");
        child.wait().unwrap();
    }
    // A last one finishes the rest, including the jobs the killed ones held (after their leases
    // expire), then stops gracefully.
    let mut last = spawn_worker(&path);
    let query = JobQuery { page: PageRequest::new(None, Some(100)).unwrap(), ..JobQuery::default() };
    let mut finished = Vec::new();
    for _ in 0..600 {
        finished = jobs.list(&query).await.unwrap().items;
        if finished.iter().all(|job| job.state == JobState::Succeeded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&last, "-TERM");
    assert!(last.wait().unwrap().success());

    assert_eq!(finished.len(), JOBS);
    let unfinished: Vec<_> = finished.iter().filter(|job| job.state != JobState::Succeeded).collect();
    assert!(unfinished.is_empty(), "every job succeeded: {unfinished:?}");
    let effects: Vec<(String, i64)> =
        sqlx::query_as("select job_id, runs from crash_effects").fetch_all(&pool).await.unwrap();
    assert_eq!(effects.len(), JOBS, "one effect per job, none lost, none extra");
    let ids: std::collections::HashSet<String> = finished.iter().map(|job| job.id.to_string()).collect();
    assert!(effects.iter().all(|(id, _)| ids.contains(id)));
    let attempts: u32 = finished.iter().map(|job| job.attempts).sum();
    assert!(
        attempts > JOBS as u32,
        "the kills interrupted jobs, which ran again after their leases expired ({attempts} attempts)"
    );
}
