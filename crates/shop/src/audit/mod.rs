//! The audit log: who changed what, when, through which request — one row per administrative
//! action, written by the storage adapter in the same transaction as the change it records, so
//! a change that rolled back left no row and no committed change lacks one.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::pagination::PageRequest;

/// The job kind of the daily purge of audit entries past their retention.
pub const PURGE_AUDIT: &str = "audit.purge";

/// Who acts and through which request; given to every audited write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// `admin-token`, `admin-token (cli:alice)`, `user:<id>`: never a secret.
    pub actor: String,
    pub request_id: Option<String>,
    pub at: OffsetDateTime,
}

impl AuditContext {
    /// The longest actor kept; longer ones are cut.
    pub const MAX_ACTOR: usize = 128;

    pub fn new(actor: impl Into<String>, request_id: Option<String>, at: OffsetDateTime) -> Self {
        let mut actor: String = actor.into();
        if actor.len() > Self::MAX_ACTOR {
            let mut cut = Self::MAX_ACTOR;
            while !actor.is_char_boundary(cut) {
                cut -= 1;
            }
            actor.truncate(cut);
        }
        Self { actor, request_id, at }
    }
}

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    /// `flag.create`, `flag.update`, `flag.delete`, …
    pub action: String,
    /// What was acted on: `flag:maintenance`.
    pub target: String,
    /// The target before and after (secrets redacted); absent for a creation or a deletion.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

/// Filters of `GET /admin/v1/audit`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// An exact action (`flag.update`) or a prefix ending in `.` (`flag.`).
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub page: PageRequest,
}

/// Reading and pruning the audit log (its rows are written by the audited changes themselves).
#[derive(Clone)]
pub struct AuditLog {
    store: std::sync::Arc<dyn crate::ports::AuditRepository>,
}

impl AuditLog {
    pub fn new(store: std::sync::Arc<dyn crate::ports::AuditRepository>) -> Self {
        Self { store }
    }

    /// Records an action that changes no stored data (a breaker reset) before it is taken;
    /// an error means it must not be taken.
    pub async fn record_action(
        &self,
        context: &AuditContext,
        action: &str,
        target: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), crate::Error> {
        Ok(self.store.record_action(context, action, target, before, after).await?)
    }

    /// Newest first.
    pub async fn list(&self, query: &AuditQuery) -> Result<crate::Page<AuditEntry>, crate::Error> {
        Ok(self.store.list_audit(query).await?)
    }

    /// Deletes at most `limit` entries recorded before `before`; counted in
    /// `audit_entries_purged_total`.
    pub async fn purge(&self, before: OffsetDateTime, limit: u32) -> Result<u64, crate::Error> {
        let purged = self.store.purge_audit(before, limit).await?;
        metrics::counter!("audit_entries_purged_total").increment(purged);
        Ok(purged)
    }
}
