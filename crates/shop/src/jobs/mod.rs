//! The durable job queue (seed 004 §8): jobs stored in the shop's database, enqueued in the
//! same transaction as the state change that causes them (transactional outbox), claimed in
//! batches under a lease by workers (the `worker` crate), retried with exponential backoff and
//! jitter, dead-lettered after their last attempt, and listed and retried by operators.

mod model;
mod payload;
mod service;

pub use model::{
    Claim, CronSchedule, Job, JobFailure, JobQuery, JobSort, JobState, NewJob, QueueDepth, RecurringJob, Schedule,
    retry_delay,
};
pub use payload::JobPayload;
pub use service::{JobService, JobSettings};
