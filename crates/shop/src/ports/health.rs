//! Health and lifecycle of the storage backend: pool figures and read replicas.

use async_trait::async_trait;

use crate::error::StoreError;

/// Connection pool figures for metrics and the admin health view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (idle or in use).
    pub size: u32,
    pub idle: u32,
    /// Tasks currently waiting for a connection.
    pub waiting: u32,
    pub max_size: u32,
}

/// Health and lifecycle of the storage backend.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// A trivial round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    fn pool_stats(&self) -> PoolStats;
    /// The backend's name for logs and status pages (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Waits for connections in use to return, then closes them all.
    async fn close(&self);
    /// The read replicas and their freshness as last checked (none by default).
    fn replicas(&self) -> Vec<ReplicaHealth> {
        Vec::new()
    }
}

/// One read replica as its last check found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaHealth {
    /// `host:port/database` (never credentials).
    pub name: String,
    /// Proven to hold the primary's writes within the configured lag.
    pub fresh: bool,
    /// Reads go to it now (fresh, and no catalog change known since the proof).
    pub serving: bool,
    /// Seconds since it was last proven fresh; `None` if never.
    pub lag_seconds: Option<f64>,
}
