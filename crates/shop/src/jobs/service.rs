//! Use cases around the queue that are not the worker's: enqueueing, the operators' list and
//! retry, queue depth for metrics, and purging finished jobs (steady state).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{Job, JobQuery, JobState, NewJob, QueueDepth};
use crate::clock::Clock;
use crate::error::{Conflict, Error, StoreError};
use crate::pagination::Page;
use crate::ports::Store;

/// Retention of finished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    /// Succeeded jobs are deleted this long after they finished.
    pub succeeded_retention: Duration,
    /// Dead jobs are kept this long for operators, then deleted.
    pub dead_retention: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self { succeeded_retention: Duration::from_secs(86_400), dead_retention: Duration::from_secs(30 * 86_400) }
    }
}

/// The queue's use cases; cheap to clone.
#[derive(Clone)]
pub struct JobService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: JobSettings,
}

impl JobService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: JobSettings) -> Self {
        Self { store, clock, settings }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Enqueues a job on its own (not part of another change); `false` when a live job with the
    /// same unique key already exists.
    pub async fn enqueue(&self, job: &NewJob) -> Result<bool, Error> {
        Ok(self.store.enqueue_job(job).await?)
    }

    pub async fn find(&self, id: Uuid) -> Result<Job, Error> {
        self.store.find_job(id).await?.ok_or(Error::NotFound)
    }

    pub async fn list(&self, query: &JobQuery) -> Result<Page<Job>, Error> {
        Ok(self.store.list_jobs(query).await?)
    }

    /// An operator's retry of a dead or failed job: queued now, with its attempts reset.
    pub async fn retry(&self, id: Uuid, audit: &crate::audit::AuditContext) -> Result<Job, Error> {
        match self.store.retry_job(id, self.clock.now(), audit).await {
            Ok(job) => {
                tracing::info!(jobId = %job.id, kind = job.kind.as_str(), "job retried by an operator");
                Ok(job)
            }
            Err(StoreError::Conflict(Conflict::DuplicateJob)) => Err(Error::Conflict(
                "another job with the same unique key is queued or running; this one would duplicate it".into(),
            )),
            Err(StoreError::Conflict(_)) => {
                Err(Error::Conflict("only dead or failed jobs can be retried; this one is not".into()))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn depths(&self) -> Result<Vec<QueueDepth>, Error> {
        Ok(self.store.queue_depths(self.clock.now()).await?)
    }

    /// Deletes up to `limit` succeeded and up to `limit` dead jobs past their retention.
    pub async fn purge_finished(&self, limit: u32) -> Result<u64, Error> {
        let now = self.clock.now();
        let succeeded =
            self.store.purge_jobs(JobState::Succeeded, now - self.settings.succeeded_retention, limit).await?;
        let dead = self.store.purge_jobs(JobState::Dead, now - self.settings.dead_retention, limit).await?;
        Ok(succeeded + dead)
    }
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService").field("settings", &self.settings).finish_non_exhaustive()
    }
}
