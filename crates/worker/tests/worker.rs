//! The worker against a real SQLite store: success, retries with backoff, dead-lettering,
//! panics, timeouts, per-queue concurrency, graceful shutdown, lease recovery and recurring jobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use shop::jobs::{Claim, Job, JobQuery, JobService, JobSettings, JobState, NewJob, RecurringJob, Schedule};
use shop::{PageRequest, Store, SystemClock};
use store_sqlx::{SqlStore, SqliteSettings};
use tokio_util::sync::CancellationToken;
use worker::{HandlerError, Handlers, JobHandler, QueueSettings, Worker, WorkerSettings};

struct Fixture {
    store: Arc<dyn Store>,
    jobs: JobService,
    _directory: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let directory = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&SqliteSettings {
        url: format!("sqlite://{}", directory.path().join("jobs.db").display()),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
        busy_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    store.migrate_up().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let jobs = JobService::new(Arc::clone(&store), Arc::new(SystemClock), JobSettings::default());
    Fixture { store, jobs, _directory: directory }
}

fn settings(queues: &[(&str, usize)]) -> WorkerSettings {
    WorkerSettings {
        queues: queues
            .iter()
            .map(|(name, concurrency)| QueueSettings { name: (*name).into(), concurrency: *concurrency })
            .collect(),
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(2),
        job_timeout: Duration::from_secs(5),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(2),
        maintenance_interval: Duration::from_millis(100),
        schedule_tick: Duration::from_millis(100),
        ..WorkerSettings::new(format!("test-worker-{}", uuid::Uuid::new_v4().simple()))
    }
}

fn start(
    fixture: &Fixture,
    handlers: Handlers,
    settings: WorkerSettings,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let worker = Worker::new(Arc::clone(&fixture.store), fixture.jobs.clone(), handlers, settings);
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(worker.run(stop)))
}

async fn job(fixture: &Fixture, kind: &str, payload: serde_json::Value) -> uuid::Uuid {
    let job = NewJob::new(kind, payload, fixture.jobs.now());
    assert!(fixture.jobs.enqueue(&job).await.unwrap());
    job.id
}

/// Waits (up to 10 s) until `condition` holds for the job.
async fn until(fixture: &Fixture, id: uuid::Uuid, condition: impl Fn(&Job) -> bool) -> Job {
    for _ in 0..500 {
        let job = fixture.jobs.find(id).await.unwrap();
        if condition(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never reached the expected state: {:?}", fixture.jobs.find(id).await.unwrap());
}

async fn all_jobs(fixture: &Fixture) -> Vec<Job> {
    let query = JobQuery { page: PageRequest::new(None, Some(100)).unwrap(), ..JobQuery::default() };
    fixture.jobs.list(&query).await.unwrap().items
}

/// Counts runs; fails the first `failures` of them.
#[derive(Clone, Default)]
struct Counting {
    runs: Arc<AtomicUsize>,
    failures: usize,
}

#[async_trait]
impl JobHandler for Counting {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        if run < self.failures { Err(HandlerError::Transient(format!("failure {}", run + 1))) } else { Ok(()) }
    }
}

struct Panicking;

#[async_trait]
impl JobHandler for Panicking {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        if job.payload["panic"] == true {
            panic!("a handler bug");
        }
        Ok(())
    }
}

struct Sleeping;

#[async_trait]
impl JobHandler for Sleeping {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let millis = job.payload["millis"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(())
    }
}

struct Permanent;

#[async_trait]
impl JobHandler for Permanent {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        Err(HandlerError::Permanent("the payload names nothing that exists".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_success() {
    let fixture = fixture().await;
    let counting = Counting::default();
    let mut handlers = Handlers::new();
    handlers.register("count", counting.clone());
    let (stop, worker) = start(&fixture, handlers, settings(&[("default", 4)]));
    let mut ids = Vec::new();
    for index in 0..20 {
        ids.push(job(&fixture, "count", json!({ "index": index })).await);
    }
    for id in ids {
        let done = until(&fixture, id, |job| job.state == JobState::Succeeded).await;
        assert_eq!(done.attempts, 1);
        assert!(done.finished_at.is_some() && done.lease_owner.is_none());
    }
    assert_eq!(counting.runs.load(Ordering::SeqCst), 20);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_then_dead_lettered() {
    let fixture = fixture().await;
    let flaky = Counting { failures: 2, ..Counting::default() };
    let hopeless = Counting { failures: usize::MAX, ..Counting::default() };
    let mut handlers = Handlers::new();
    handlers.register("flaky", flaky.clone()).register("hopeless", hopeless.clone());
    let (stop, worker) = start(&fixture, handlers, settings(&[("default", 2)]));
    let recovers = job(&fixture, "flaky", json!({})).await;
    let dies = NewJob::new("hopeless", json!({}), fixture.jobs.now()).max_attempts(3);
    fixture.jobs.enqueue(&dies).await.unwrap();
    let recovered = until(&fixture, recovers, |job| job.state == JobState::Succeeded).await;
    assert_eq!(recovered.attempts, 3, "two failures, then success");
    let dead = until(&fixture, dies.id, |job| job.state == JobState::Dead).await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_error.as_deref(), Some("failure 3"));
    assert_eq!(hopeless.runs.load(Ordering::SeqCst), 3, "never more than max_attempts");
    // An operator's retry gives it its attempts back.
    let retried = fixture
        .jobs
        .retry(dies.id, &shop::audit::AuditContext::new("ops", None, time::OffsetDateTime::now_utc()))
        .await
        .unwrap();
    assert_eq!((retried.state, retried.attempts), (JobState::Queued, 0));
    until(&fixture, dies.id, |job| job.state == JobState::Dead && job.attempts == 3).await;
    assert_eq!(hopeless.runs.load(Ordering::SeqCst), 6);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_permanent_errors_fail_the_attempt_not_the_worker() {
    let fixture = fixture().await;
    let mut handlers = Handlers::new();
    handlers.register("maybe-panic", Panicking).register("permanent", Permanent);
    let (stop, worker) = start(&fixture, handlers, settings(&[("default", 2)]));
    // A kind this worker has no handler for (a newer version's, mid-deploy) is left alone.
    let unknown = job(&fixture, "newer-kind", json!({})).await;
    let panics = NewJob::new("maybe-panic", json!({ "panic": true }), fixture.jobs.now()).max_attempts(2);
    fixture.jobs.enqueue(&panics).await.unwrap();
    let panicked = until(&fixture, panics.id, |job| job.state == JobState::Dead).await;
    assert_eq!(panicked.attempts, 2);
    assert!(panicked.last_error.unwrap().contains("panicked: a handler bug"));
    let fine = job(&fixture, "maybe-panic", json!({ "panic": false })).await;
    until(&fixture, fine, |job| job.state == JobState::Succeeded).await;
    let permanent = job(&fixture, "permanent", json!({})).await;
    let dead = until(&fixture, permanent, |job| job.state == JobState::Dead).await;
    assert_eq!(dead.attempts, 1, "a permanent failure is not retried");
    stop.cancel();
    worker.await.unwrap();
    let waiting = fixture.jobs.find(unknown).await.unwrap();
    assert_eq!((waiting.state, waiting.attempts), (JobState::Queued, 0), "never claimed: {waiting:?}");
    // A worker that knows the kind runs it.
    let counter = Arc::new(AtomicUsize::new(0));
    let mut newer = Handlers::new();
    newer.register("newer-kind", Counting { runs: Arc::clone(&counter), failures: 0 });
    let (stop, worker) = start(&fixture, newer, settings(&[("default", 1)]));
    let done = until(&fixture, unknown, |job| job.state == JobState::Succeeded).await;
    assert_eq!((done.attempts, counter.load(Ordering::SeqCst)), (1, 1));
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_overruns_its_timeout_fails() {
    let fixture = fixture().await;
    let mut handlers = Handlers::new();
    handlers.register("sleep", Sleeping);
    let settings = WorkerSettings { job_timeout: Duration::from_millis(100), ..settings(&[("default", 1)]) };
    let (stop, worker) = start(&fixture, handlers, settings);
    let slow = NewJob::new("sleep", json!({ "millis": 5_000 }), fixture.jobs.now()).max_attempts(1);
    fixture.jobs.enqueue(&slow).await.unwrap();
    let dead = until(&fixture, slow.id, |job| job.state == JobState::Dead).await;
    assert!(dead.last_error.unwrap().contains("did not finish within"));
    stop.cancel();
    worker.await.unwrap();
}

/// Records the most jobs running at once.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[async_trait]
impl JobHandler for Gauge {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_queue_runs_at_most_its_concurrency() {
    let fixture = fixture().await;
    let mail = Gauge::default();
    let reports = Gauge::default();
    let mut handlers = Handlers::new();
    handlers.register("mail", mail.clone()).register("report", reports.clone());
    let (stop, worker) = start(&fixture, handlers, settings(&[("mail", 3), ("reports", 1)]));
    let mut ids = Vec::new();
    for _ in 0..12 {
        let job = NewJob::new("mail", json!({}), fixture.jobs.now()).queue("mail");
        fixture.jobs.enqueue(&job).await.unwrap();
        ids.push(job.id);
        let job = NewJob::new("report", json!({}), fixture.jobs.now()).queue("reports");
        fixture.jobs.enqueue(&job).await.unwrap();
        ids.push(job.id);
    }
    for id in ids {
        until(&fixture, id, |job| job.state == JobState::Succeeded).await;
    }
    assert_eq!(mail.most.load(Ordering::SeqCst), 3, "the mail queue used all of its 3 slots, never more");
    assert_eq!(reports.most.load(Ordering::SeqCst), 1);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_short_jobs_and_gives_back_the_rest() {
    let fixture = fixture().await;
    let mut handlers = Handlers::new();
    handlers.register("sleep", Sleeping);
    let settings = WorkerSettings { shutdown_timeout: Duration::from_millis(500), ..settings(&[("default", 2)]) };
    let (stop, worker) = start(&fixture, handlers, settings);
    let short = job(&fixture, "sleep", json!({ "millis": 200 })).await;
    let long = job(&fixture, "sleep", json!({ "millis": 60_000 })).await;
    until(&fixture, long, |job| job.state == JobState::Running).await;
    until(&fixture, short, |job| job.state == JobState::Running).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(fixture.jobs.find(short).await.unwrap().state, JobState::Succeeded, "finished within the timeout");
    let given_back = fixture.jobs.find(long).await.unwrap();
    assert_eq!(given_back.state, JobState::Queued, "released for another worker");
    assert_eq!(given_back.attempts, 1);
    assert!(given_back.lease_owner.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_crashed_worker_is_recovered_when_its_lease_expires() {
    let fixture = fixture().await;
    let id = job(&fixture, "count", json!({})).await;
    // A worker that claims and then dies: its lease runs out 200 ms later.
    let now = fixture.jobs.now();
    let claim = Claim {
        queue: "default".into(),
        worker: "crashed-worker".into(),
        limit: 1,
        now,
        lease_until: now + Duration::from_millis(200),
        kinds: None,
    };
    assert_eq!(fixture.store.claim_jobs(&claim).await.unwrap().len(), 1);
    let counting = Counting::default();
    let mut handlers = Handlers::new();
    handlers.register("count", counting.clone());
    let (stop, worker) = start(&fixture, handlers, settings(&[("default", 1)]));
    let done = until(&fixture, id, |job| job.state == JobState::Succeeded).await;
    assert_eq!(done.attempts, 2, "the crashed attempt counts");
    assert_eq!(counting.runs.load(Ordering::SeqCst), 1);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_enqueue_each_occurrence_of_a_recurring_job_once() {
    each_occurrence_once(Schedule::Every(Duration::from_secs(1))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedules_run_each_occurrence_once_too() {
    // Every second, as a cron expression with a seconds field.
    each_occurrence_once(Schedule::Cron(Box::new(shop::jobs::CronSchedule::parse("* * * * * *").unwrap()))).await;
}

async fn each_occurrence_once(schedule: Schedule) {
    let fixture = fixture().await;
    let counting = Counting::default();
    let recurring = RecurringJob {
        name: "tick".into(),
        kind: "count".into(),
        queue: "default".into(),
        schedule,
        payload: json!({}),
    };
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut handlers = Handlers::new();
        handlers.register("count", counting.clone());
        let worker =
            Worker::new(Arc::clone(&fixture.store), fixture.jobs.clone(), handlers, settings(&[("default", 2)]))
                .schedule(recurring.clone());
        let stop = CancellationToken::new();
        workers.push((stop.clone(), tokio::spawn(worker.run(stop))));
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for (stop, worker) in workers {
        stop.cancel();
        worker.await.unwrap();
    }
    let jobs = all_jobs(&fixture).await;
    let keys: std::collections::HashSet<_> = jobs.iter().filter_map(|job| job.unique_key.clone()).collect();
    assert_eq!(keys.len(), jobs.len(), "no occurrence enqueued twice: {jobs:?}");
    assert!((2..=4).contains(&jobs.len()), "one job per second of the run: {}", jobs.len());
    assert_eq!(
        counting.runs.load(Ordering::SeqCst),
        jobs.iter().filter(|job| job.state == JobState::Succeeded).count()
    );
}
