//! The job worker (seed 004 §8): for each configured queue it claims due jobs in batches, as
//! many as its concurrency limit (a bulkhead per queue) has free slots, leases them, runs their
//! handlers, and acknowledges each: succeeded, failed (to run again after an exponential,
//! jittered delay) or dead. A heartbeat keeps the leases of running jobs alive; a job whose
//! worker died is recovered when its lease expires. A handler that errors, panics or overruns
//! its timeout counts as a failed attempt, and the worker carries on. Recurring jobs are
//! enqueued by whichever instance wins each occurrence. On shutdown it stops claiming, lets
//! running jobs finish within the timeout, and gives the rest back.
//!
//! Delivery is at least once: a job may run again after a crash or a lost lease, so handlers
//! are written to be idempotent (see ARCHITECTURE.md).

#![forbid(unsafe_code)]

mod handler;
mod run;

pub use handler::{HandlerError, Handlers, JobHandler, PayloadHandler};
pub use run::{QueueSettings, Wakers, Worker, WorkerSettings};
