//! What a job handler is, and the table of handlers by job kind.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shop::jobs::{Job, JobPayload};

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a dependency down, a timeout): retried until the attempts run out.
    #[error("{0}")]
    Transient(String),
    /// Will never work (a malformed payload, a thing that no longer exists): dead at once.
    #[error("{0}")]
    Permanent(String),
    /// Not tried at all (a dependency's breaker is open, its bulkhead full): runs again after
    /// `retry_after` and the attempt is given back, so refusals never use up a job's attempts.
    #[error("{reason}")]
    Deferred { reason: String, retry_after: std::time::Duration },
}

/// Runs jobs of one kind. Must be idempotent: the same job may run more than once.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<(), HandlerError>;
}

/// Runs the jobs of one payload type (and so of its kind), handed the payload read from the
/// job; a payload that does not read is a permanent failure. Must be idempotent.
#[async_trait]
pub trait PayloadHandler: Send + Sync + 'static {
    type Payload: JobPayload;

    async fn run(&self, job: &Job, payload: Self::Payload) -> Result<(), HandlerError>;
}

/// A [`PayloadHandler`] as a [`JobHandler`].
struct ReadsPayload<H>(H);

#[async_trait]
impl<H: PayloadHandler> JobHandler for ReadsPayload<H> {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let payload = job.payload_as::<H::Payload>().map_err(HandlerError::Permanent)?;
        self.0.run(job, payload).await
    }
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<String, Arc<dyn JobHandler>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of `kind`, replacing any earlier one.
    pub fn register(&mut self, kind: &str, handler: impl JobHandler) -> &mut Self {
        self.by_kind.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    /// Registers the handler of its payload's kind, replacing any earlier one.
    pub fn register_payload<H: PayloadHandler>(&mut self, handler: H) -> &mut Self {
        self.register(<H::Payload as JobPayload>::KIND, ReadsPayload(handler))
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.by_kind.get(kind).cloned()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").field("kinds", &self.by_kind.keys().collect::<Vec<_>>()).finish()
    }
}
