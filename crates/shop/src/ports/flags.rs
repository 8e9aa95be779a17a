//! Ports of the control plane: feature flags and the audit log.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::{AuditContext, AuditEntry, AuditQuery};
use crate::error::StoreError;
use crate::flags::{Flag, FlagName, FlagWrite};
use crate::pagination::Page;

/// Feature flags. Every write records its audit row in its own transaction and bumps the flags'
/// generation, which every instance polls to reload its snapshot.
#[async_trait]
pub trait FlagRepository: Send + Sync {
    /// Every flag, by name.
    async fn list_flags(&self) -> Result<Vec<Flag>, StoreError>;
    async fn find_flag(&self, name: &FlagName) -> Result<Option<Flag>, StoreError>;
    /// A number that changes whenever a flag write commits, on any instance.
    async fn flag_generation(&self) -> Result<i64, StoreError>;
    /// Creates or replaces a flag; returns it as it was (`None`: created) and as it is now.
    /// `Conflict::FlagChanged` when `expected_version` is given and is not the stored one (or
    /// the flag does not exist); `Conflict::FlagLimit` when creating would pass `MAX_FLAGS`.
    async fn put_flag(&self, write: &FlagWrite, audit: &AuditContext) -> Result<(Option<Flag>, Flag), StoreError>;
    /// Deletes a flag and returns what it was; `NotFound` if there is none, `Conflict::FlagChanged`
    /// when `expected_version` is given and differs.
    async fn delete_flag(
        &self,
        name: &FlagName,
        expected_version: Option<i64>,
        audit: &AuditContext,
    ) -> Result<Flag, StoreError>;
}

/// The audit log. Changes to stored data write their row themselves, in their own transaction;
/// `record_action` is for actions with no stored change of their own (a breaker reset), recorded
/// before they are taken: if the row cannot be written, the action is not taken.
#[async_trait]
pub trait AuditRepository: Send + Sync {
    async fn record_action(
        &self,
        context: &AuditContext,
        action: &str,
        target: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), StoreError>;
    async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError>;
    /// Deletes at most `limit` entries older than `before`.
    async fn purge_audit(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}
