//! The port of the durable job queue.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::jobs::{Claim, Job, JobFailure, JobQuery, JobState, NewJob, QueueDepth};
use crate::pagination::Page;

/// The durable job queue. Only the lease owner may finish a running job: a worker whose lease
/// expired (and whose job was recovered and claimed by another) learns it from a `false`.
#[async_trait]
pub trait JobRepository: Send + Sync {
    /// Enqueues one job on its own; `false` when a live job (queued, running, failed) has the
    /// same unique key, in which case nothing is added.
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError>;
    /// Takes up to `claim.limit` due jobs (`queued` or `failed` with `run_at <= now`) of the
    /// queue, highest priority then earliest `run_at` first: each becomes `running`, leased to
    /// the worker until `lease_until`, with one more attempt counted. Concurrent claims never
    /// return the same job.
    async fn claim_jobs(&self, claim: &Claim) -> Result<Vec<Job>, StoreError>;
    /// Extends the leases the worker still holds; returns the ids it still holds.
    async fn extend_leases(
        &self,
        worker: &str,
        ids: &[Uuid],
        lease_until: OffsetDateTime,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// `running` → `succeeded`; `false` when the worker no longer holds the lease.
    async fn complete_job(&self, id: Uuid, worker: &str, now: OffsetDateTime) -> Result<bool, StoreError>;
    /// `running` → `failed` (with `retry_at`) or `dead`; `false` when the lease is no longer held.
    async fn fail_job(
        &self,
        id: Uuid,
        worker: &str,
        failure: &JobFailure,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Gives leased jobs back (a worker shutting down): `running` → `queued`, due now; the
    /// attempt already counted stays counted.
    async fn release_jobs(&self, worker: &str, ids: &[Uuid], now: OffsetDateTime) -> Result<u64, StoreError>;
    /// Jobs whose lease expired (their worker died): `failed` and due now, or `dead` when that
    /// was their last attempt. Returns how many were recovered.
    async fn recover_expired_leases(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
    async fn find_job(&self, id: Uuid) -> Result<Option<Job>, StoreError>;
    async fn list_jobs(&self, query: &JobQuery) -> Result<Page<Job>, StoreError>;
    /// An operator's retry of a `dead` or `failed` job: `queued`, due now, attempts reset.
    /// `NotFound`, or `Conflict { constraint: "jobs_state" }` in any other state.
    /// The retry is audited (`job.retry`) in its own transaction, with `audit` as actor.
    async fn retry_job(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        audit: &crate::audit::AuditContext,
    ) -> Result<Job, StoreError>;
    /// Deletes at most `limit` jobs in `state` (succeeded or dead) finished before `before`.
    async fn purge_jobs(&self, state: JobState, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// Depth by queue and state, with the oldest due job of each queue.
    async fn queue_depths(&self, now: OffsetDateTime) -> Result<Vec<QueueDepth>, StoreError>;
    /// Moves a recurring job's next occurrence from `expected` (`None`: never scheduled) to
    /// `next` and enqueues `job`, in one transaction, only if nobody moved it first. `true`
    /// when this caller won the occurrence.
    async fn advance_schedule(
        &self,
        name: &str,
        expected: Option<OffsetDateTime>,
        next: OffsetDateTime,
        job: Option<&NewJob>,
    ) -> Result<bool, StoreError>;
    /// The next occurrence of a recurring job, if it was ever scheduled.
    async fn scheduled_at(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    /// In-process announcements of committed job inserts (the queue's name), for a store whose
    /// database cannot notify (SQLite); `None` where the database does (PostgreSQL's NOTIFY).
    fn job_wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
