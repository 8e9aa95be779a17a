//! The worker's loops: one claim loop per queue, the lease heartbeat, maintenance (lease
//! recovery, queue metrics, purging finished jobs) and the recurring-job scheduler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use shop::Store;
use shop::jobs::{Claim, Job, JobFailure, JobService, JobState, NewJob, RecurringJob, retry_delay};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::handler::{HandlerError, Handlers};

/// One queue this worker serves, and how many of its jobs may run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub name: String,
    pub concurrency: usize,
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique per process; leases are held in its name.
    pub worker_id: String,
    pub queues: Vec<QueueSettings>,
    /// Most jobs taken by one claim.
    pub batch_size: u32,
    /// How often an idle queue is polled (a wake-up comes sooner when jobs are enqueued here
    /// or, on PostgreSQL, notified).
    pub poll_interval: Duration,
    /// How long a claim is leased; the heartbeat renews it every third of this.
    pub lease: Duration,
    /// An attempt running longer fails (and its task is stopped).
    pub job_timeout: Duration,
    /// Backoff between attempts: from `retry_base`, doubling, capped at `retry_max`, jittered.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// On shutdown, running jobs get this long to finish; the rest are given back.
    pub shutdown_timeout: Duration,
    /// How often leases are recovered, queue metrics refreshed and finished jobs purged.
    pub maintenance_interval: Duration,
    /// Most finished jobs deleted per state per maintenance round.
    pub purge_batch: u32,
    /// How often due recurring jobs are looked for; each instance adds a random slew of up to
    /// the same again, so instances do not all ask at once.
    pub schedule_tick: Duration,
}

impl WorkerSettings {
    /// Defaults for a worker named `worker_id` serving the `default` queue 8 at a time.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            queues: vec![QueueSettings { name: "default".into(), concurrency: 8 }],
            batch_size: 16,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            job_timeout: Duration::from_secs(300),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3_600),
            shutdown_timeout: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(30),
            purge_batch: 1_000,
            schedule_tick: Duration::from_secs(5),
        }
    }
}

/// Jobs this worker is running: id → queue.
type InFlight = Arc<Mutex<HashMap<Uuid, String>>>;

/// Wakes a worker's idle queue loops when jobs are enqueued (in this process, or announced by
/// the database); cheap to clone. A wake-up for a busy loop is kept until it next waits, so
/// none is lost; polling remains the fallback.
#[derive(Clone, Debug, Default)]
pub struct Wakers {
    by_queue: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    fn new(queues: &[QueueSettings]) -> Self {
        let by_queue = queues.iter().map(|queue| (queue.name.clone(), Arc::new(Notify::new()))).collect();
        Self { by_queue: Arc::new(by_queue) }
    }

    /// Wakes the loop of `queue`, if this worker serves it.
    pub fn wake(&self, queue: &str) {
        if let Some(notify) = self.by_queue.get(queue) {
            notify.notify_one();
        }
    }

    /// Wakes every queue loop (notifications may have been missed).
    pub fn wake_all(&self) {
        for notify in self.by_queue.values() {
            notify.notify_one();
        }
    }

    fn get(&self, queue: &str) -> Arc<Notify> {
        self.by_queue.get(queue).cloned().unwrap_or_default()
    }
}

/// Everything the loops share.
struct Shared {
    store: Arc<dyn Store>,
    jobs: JobService,
    handlers: Handlers,
    settings: WorkerSettings,
    in_flight: InFlight,
    wakers: Wakers,
}

impl Shared {
    fn now(&self) -> time::OffsetDateTime {
        self.jobs.now()
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, String>> {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A worker, built and not yet running.
pub struct Worker {
    shared: Arc<Shared>,
    recurring: Vec<RecurringJob>,
}

impl Worker {
    pub fn new(store: Arc<dyn Store>, jobs: JobService, handlers: Handlers, settings: WorkerSettings) -> Self {
        let wakers = Wakers::new(&settings.queues);
        let shared = Shared { store, jobs, handlers, settings, in_flight: Arc::default(), wakers };
        Self { shared: Arc::new(shared), recurring: Vec::new() }
    }

    /// Adds a recurring job (its kind must have a handler to be useful).
    pub fn schedule(mut self, recurring: RecurringJob) -> Self {
        self.recurring.push(recurring);
        self
    }

    /// Wakes idle queue loops at once (after an enqueue, or a database notification).
    pub fn wakers(&self) -> Wakers {
        self.shared.wakers.clone()
    }

    /// Runs until `stop` is cancelled, then shuts down as described in the crate docs.
    pub async fn run(self, stop: CancellationToken) {
        let Self { shared, recurring } = self;
        tracing::info!(
            worker = shared.settings.worker_id.as_str(),
            queues = ?shared.settings.queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
            kinds = ?shared.handlers.kinds().collect::<Vec<_>>(),
            "job worker started"
        );
        // The heartbeat and maintenance outlive the queue loops, to keep leases alive while
        // running jobs drain.
        let background = CancellationToken::new();
        let mut helpers = JoinSet::new();
        helpers.spawn(heartbeat(Arc::clone(&shared), background.clone()));
        helpers.spawn(maintenance(Arc::clone(&shared), background.clone()));
        if !recurring.is_empty() {
            helpers.spawn(scheduler(Arc::clone(&shared), recurring, stop.clone()));
        }
        let mut queues = JoinSet::new();
        for queue in shared.settings.queues.clone() {
            queues.spawn(serve_queue(Arc::clone(&shared), queue, stop.clone()));
        }
        while queues.join_next().await.is_some() {}
        background.cancel();
        while helpers.join_next().await.is_some() {}
        tracing::info!(worker = shared.settings.worker_id.as_str(), "job worker stopped");
    }
}

/// Claims and runs the jobs of one queue until `stop`; then drains.
async fn serve_queue(shared: Arc<Shared>, queue: QueueSettings, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(queue.concurrency.max(1)));
    let wake = shared.wakers.get(&queue.name);
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        if stop.is_cancelled() {
            break;
        }
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => continue,
                () = stop.cancelled() => break,
            }
        }
        let limit = u32::try_from(free).unwrap_or(u32::MAX).min(shared.settings.batch_size).max(1);
        let now = shared.now();
        let claim = Claim {
            queue: queue.name.clone(),
            worker: shared.settings.worker_id.clone(),
            limit,
            now,
            lease_until: now + shared.settings.lease,
            kinds: Some(shared.handlers.kinds().map(str::to_owned).collect()),
        };
        let claimed = match shared.store.claim_jobs(&claim).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, queue = queue.name.as_str(), "claiming jobs failed; trying again shortly");
                Vec::new()
            }
        };
        let full_batch = claimed.len() == limit as usize;
        for job in claimed {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                // Cannot happen (we claimed no more than the free slots); give it back if it does.
                let _ = shared.store.release_jobs(&shared.settings.worker_id, &[job.id], shared.now()).await;
                continue;
            };
            shared.in_flight().insert(job.id, queue.name.clone());
            running.spawn(execute(Arc::clone(&shared), job, permit));
        }
        if full_batch {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(shared.settings.poll_interval) => {}
            () = wake.notified() => {}
            Some(_) = running.join_next() => {}
            () = stop.cancelled() => break,
        }
    }
    drain(&shared, &queue.name, running).await;
}

/// Lets running jobs finish within the shutdown timeout, then stops the rest and gives their
/// leases back so another worker can take them at once.
async fn drain(shared: &Shared, queue: &str, mut running: JoinSet<()>) {
    let finished =
        tokio::time::timeout(shared.settings.shutdown_timeout, async { while running.join_next().await.is_some() {} })
            .await;
    if finished.is_ok() {
        return;
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
    let abandoned: Vec<Uuid> = {
        let mut in_flight = shared.in_flight();
        let ids = in_flight.iter().filter(|(_, q)| q.as_str() == queue).map(|(id, _)| *id).collect::<Vec<_>>();
        for id in &ids {
            in_flight.remove(id);
        }
        ids
    };
    match shared.store.release_jobs(&shared.settings.worker_id, &abandoned, shared.now()).await {
        Ok(released) => {
            tracing::warn!(queue, released, "jobs still running at the shutdown timeout were stopped and given back")
        }
        Err(error) => tracing::error!(%error, queue, "giving back unfinished jobs failed; their leases will expire"),
    }
}

/// Aborts the handler's task when the attempt is abandoned (timeout or shutdown).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One attempt of one job: run the handler (in its own task, so a panic is contained), then
/// acknowledge.
async fn execute(shared: Arc<Shared>, job: Job, _permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let outcome = match shared.handlers.get(&job.kind) {
        // Claims only take kinds with a handler; this is a claim made without that filter.
        None => Err(HandlerError::Transient(format!("no handler for job kind {:?} in this worker", job.kind))),
        Some(handler) => {
            let attempt = job.clone();
            let task = tokio::spawn(async move { handler.run(&attempt).await });
            let _guard = AbortOnDrop(task.abort_handle());
            match tokio::time::timeout(shared.settings.job_timeout, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(join_error)) if join_error.is_panic() => {
                    Err(HandlerError::Transient(format!("the handler panicked: {}", panic_message(join_error))))
                }
                Ok(Err(_)) => Err(HandlerError::Transient("the handler was cancelled".into())),
                Err(_) => Err(HandlerError::Transient(format!(
                    "the handler did not finish within {:?}",
                    shared.settings.job_timeout
                ))),
            }
        }
    };
    let elapsed = started.elapsed();
    let now = shared.now();
    let worker = shared.settings.worker_id.as_str();
    let labels = [("queue", job.queue.clone()), ("kind", job.kind.clone())];
    metrics::histogram!("job_duration_seconds", &labels).record(elapsed.as_secs_f64());
    let (acknowledged, outcome_label) = match outcome {
        Ok(()) => (shared.store.complete_job(job.id, worker, now).await, "succeeded"),
        Err(error) => {
            let retry_at = match &error {
                HandlerError::Permanent(_) => None,
                HandlerError::Transient(_) if job.attempts >= job.max_attempts => None,
                HandlerError::Transient(_) => {
                    Some(now + retry_delay(job.attempts, shared.settings.retry_base, shared.settings.retry_max))
                }
                HandlerError::Deferred { retry_after, .. } => Some(now + *retry_after),
            };
            let attempt_counted = !matches!(error, HandlerError::Deferred { .. });
            let dead = retry_at.is_none();
            if dead {
                tracing::error!(
                    jobId = %job.id, kind = job.kind.as_str(), queue = job.queue.as_str(),
                    attempt = job.attempts, maxAttempts = job.max_attempts, %error,
                    "job failed for the last time and is dead; an operator can retry it"
                );
            } else if attempt_counted {
                tracing::warn!(
                    jobId = %job.id, kind = job.kind.as_str(), queue = job.queue.as_str(),
                    attempt = job.attempts, maxAttempts = job.max_attempts, %error,
                    retryAt = ?retry_at, "job attempt failed; it will run again"
                );
            } else {
                // Nothing was tried (a dependency refused first): the handler says why.
                tracing::debug!(
                    jobId = %job.id, kind = job.kind.as_str(), %error, retryAt = ?retry_at,
                    "job deferred; its attempt is given back"
                );
            }
            let failure = JobFailure { error: error.to_string(), retry_at, attempt_counted };
            let label = match (dead, attempt_counted) {
                (true, _) => "dead",
                (false, true) => "failed",
                (false, false) => "deferred",
            };
            (shared.store.fail_job(job.id, worker, &failure, now).await, label)
        }
    };
    match acknowledged {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            jobId = %job.id, kind = job.kind.as_str(),
            "the job's lease was lost before it finished; another worker may run it again"
        ),
        Err(error) => tracing::error!(
            jobId = %job.id, kind = job.kind.as_str(), %error,
            "recording the job's outcome failed; it will be recovered when its lease expires"
        ),
    }
    metrics::counter!("jobs_processed_total", "queue" => job.queue.clone(), "kind" => job.kind.clone(), "outcome" => outcome_label)
        .increment(1);
    shared.in_flight().remove(&job.id);
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned())
}

/// Renews the leases of running jobs every third of the lease.
async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let every = (shared.settings.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let ids: Vec<Uuid> = shared.in_flight().keys().copied().collect();
        if ids.is_empty() {
            continue;
        }
        let lease_until = shared.now() + shared.settings.lease;
        match shared.store.extend_leases(&shared.settings.worker_id, &ids, lease_until).await {
            Ok(held) if held.len() < ids.len() => {
                // Jobs that finished meanwhile are not lost; only those still running are.
                let in_flight = shared.in_flight();
                let lost = ids.iter().filter(|id| !held.contains(id) && in_flight.contains_key(id)).count();
                drop(in_flight);
                if lost > 0 {
                    tracing::warn!(lost, "leases lost: those jobs may run again elsewhere");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "renewing job leases failed"),
        }
    }
}

/// Recovers jobs of dead workers, refreshes the queue metrics and purges finished jobs.
async fn maintenance(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        match shared.store.recover_expired_leases(shared.now()).await {
            Ok(0) => {}
            Ok(recovered) => {
                metrics::counter!("jobs_recovered_total").increment(recovered);
                tracing::warn!(recovered, "jobs whose worker stopped were returned to the queue");
            }
            Err(error) => tracing::warn!(%error, "recovering expired job leases failed"),
        }
        match shared.jobs.depths().await {
            Ok(depths) => record_depths(&depths, &shared.settings.queues, shared.now()),
            Err(error) => tracing::warn!(%error, "reading queue depths failed"),
        }
        match shared.jobs.purge_finished(shared.settings.purge_batch).await {
            Ok(0) => {}
            Ok(purged) => metrics::counter!("jobs_purged_total").increment(purged),
            Err(error) => tracing::warn!(%error, "purging finished jobs failed"),
        }
        let jitter = rand::rng().random_range(0.0..0.2);
        tokio::select! {
            () = tokio::time::sleep(shared.settings.maintenance_interval.mul_f64(1.0 + jitter)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Sets the gauges of every queue seen or served, zero where nothing is left (so a gauge never
/// keeps a stale value after its queue empties).
fn record_depths(depths: &[shop::jobs::QueueDepth], served: &[QueueSettings], now: time::OffsetDateTime) {
    let mut oldest: HashMap<&str, time::OffsetDateTime> = HashMap::new();
    let mut seen: HashMap<(&str, JobState), u64> = HashMap::new();
    for depth in depths {
        seen.insert((depth.queue.as_str(), depth.state), depth.count);
        if let Some(due) = depth.oldest_due {
            let entry = oldest.entry(depth.queue.as_str()).or_insert(due);
            *entry = (*entry).min(due);
        }
    }
    let queues: std::collections::BTreeSet<&str> =
        depths.iter().map(|depth| depth.queue.as_str()).chain(served.iter().map(|queue| queue.name.as_str())).collect();
    for queue in queues {
        for state in JobState::ALL {
            let count = seen.get(&(queue, state)).copied().unwrap_or(0);
            metrics::gauge!("jobs_depth", "queue" => queue.to_owned(), "state" => state.as_str()).set(count as f64);
        }
        let age = oldest.get(queue).map_or(0.0, |due| (now - *due).as_seconds_f64().max(0.0));
        metrics::gauge!("jobs_oldest_due_seconds", "queue" => queue.to_owned()).set(age);
    }
}

/// Enqueues recurring jobs: whichever instance first moves an occurrence forward enqueues it.
async fn scheduler(shared: Arc<Shared>, recurring: Vec<RecurringJob>, stop: CancellationToken) {
    loop {
        for job in &recurring {
            if let Err(error) = schedule_once(&shared, job).await {
                tracing::warn!(%error, schedule = job.name.as_str(), "scheduling a recurring job failed");
            }
        }
        let tick = shared.settings.schedule_tick;
        let slew = tick.mul_f64(rand::rng().random_range(0.0..1.0));
        tokio::select! {
            () = tokio::time::sleep(tick + slew) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Looks at one recurring job: schedules its first occurrence, or enqueues a due one.
async fn schedule_once(shared: &Shared, recurring: &RecurringJob) -> Result<(), shop::StoreError> {
    let now = shared.now();
    let Some(next) = recurring.schedule.next_after(now) else {
        tracing::warn!(schedule = recurring.name.as_str(), "the schedule has no further occurrence");
        return Ok(());
    };
    match shared.store.scheduled_at(&recurring.name).await? {
        None => {
            shared.store.advance_schedule(&recurring.name, None, next, None).await?;
        }
        // The schedule was changed to an earlier occurrence than the one kept: pull it in.
        Some(due) if due > next => {
            shared.store.advance_schedule(&recurring.name, Some(due), next, None).await?;
        }
        Some(due) if due <= now => {
            let job = NewJob::new(&recurring.kind, recurring.payload.clone(), now)
                .queue(&recurring.queue)
                .unique_key(format!("schedule:{}:{}", recurring.name, due.unix_timestamp()));
            if shared.store.advance_schedule(&recurring.name, Some(due), next, Some(&job)).await? {
                tracing::debug!(schedule = recurring.name.as_str(), occurrence = %due, "recurring job enqueued");
                shared.wakers.wake(&recurring.queue);
            }
        }
        Some(_) => {}
    }
    Ok(())
}
