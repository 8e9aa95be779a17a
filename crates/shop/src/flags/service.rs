//! The flag service: the in-memory snapshot every evaluation reads (never the database), its
//! refresh when the stored generation moves, and the validated, audited writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use super::{CompiledFlag, Flag, FlagContext, FlagDefinition, FlagKind, FlagName, FlagValue, MAX_FLAGS};
use crate::audit::AuditContext;
use crate::error::{Conflict, Error, StoreError};
use crate::ports::FlagRepository;

/// A create-or-replace of one flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagWrite {
    pub name: FlagName,
    pub definition: FlagDefinition,
    /// `If-Match`: the write applies only to this version.
    pub expected_version: Option<i64>,
    pub now: OffsetDateTime,
}

/// Every flag as last loaded, ready to evaluate.
#[derive(Debug, Default)]
pub struct FlagSnapshot {
    /// The stored generation this snapshot reflects; `None` until the first load succeeded.
    generation: Option<i64>,
    compiled: HashMap<String, CompiledFlag>,
    flags: Vec<Flag>,
}

impl FlagSnapshot {
    pub fn loaded(&self) -> bool {
        self.generation.is_some()
    }

    pub fn flags(&self) -> &[Flag] {
        &self.flags
    }
}

/// Feature flags: evaluated from a snapshot in memory (nothing on the request path touches the
/// database or Redis), refreshed by [`follow_flags`] and after every write made here.
#[derive(Clone)]
pub struct FlagService {
    store: Arc<dyn FlagRepository>,
    snapshot: Arc<ArcSwap<FlagSnapshot>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl FlagService {
    /// A service with an empty snapshot: until [`FlagService::refresh`] succeeds, every
    /// evaluation answers the caller's default (and counts it).
    pub fn new(store: Arc<dyn FlagRepository>) -> Self {
        Self {
            store,
            snapshot: Arc::new(ArcSwap::from_pointee(FlagSnapshot::default())),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The flags as this instance evaluates them now.
    pub fn snapshot(&self) -> Arc<FlagSnapshot> {
        self.snapshot.load_full()
    }

    /// What flag `name` answers `context`; `None` when no such flag is defined (or none could
    /// be loaded yet).
    pub fn evaluate(&self, name: &str, context: &FlagContext<'_>) -> Option<FlagValue> {
        let snapshot = self.snapshot.load();
        match snapshot.compiled.get(name) {
            Some(flag) => Some(flag.evaluate(context).clone()),
            None => {
                if !snapshot.loaded() {
                    count_error(name, "not_loaded");
                }
                None
            }
        }
    }

    /// A boolean flag's answer, or `default` when it is not defined, not loaded, or not boolean
    /// (the last two counted in `feature_flag_evaluation_errors_total`). Never fails.
    pub fn is_enabled(&self, name: &str, context: &FlagContext<'_>, default: bool) -> bool {
        let snapshot = self.snapshot.load();
        match snapshot.compiled.get(name).map(|flag| flag.evaluate(context)) {
            Some(FlagValue::Bool(value)) => *value,
            Some(FlagValue::Variant(_)) => {
                count_error(name, "not_boolean");
                default
            }
            None => {
                if !snapshot.loaded() {
                    count_error(name, "not_loaded");
                }
                default
            }
        }
    }

    /// Whether flag `name` can answer callers differently (enabled, with rules): a response
    /// shaped by it must not be cached publicly.
    pub fn varies_by_caller(&self, name: &str) -> bool {
        self.snapshot.load().compiled.get(name).is_some_and(CompiledFlag::varies)
    }

    /// Reloads the snapshot when the stored generation moved (or nothing was loaded yet);
    /// `true` when it was replaced. Concurrent refreshes wait for one another.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let generation = self.store.flag_generation().await?;
        if self.snapshot.load().generation == Some(generation) {
            return Ok(false);
        }
        let flags = self.store.list_flags().await?;
        let compiled = flags.iter().map(|flag| (flag.name.as_str().to_owned(), CompiledFlag::compile(flag))).collect();
        self.snapshot.store(Arc::new(FlagSnapshot { generation: Some(generation), compiled, flags }));
        metrics::gauge!("feature_flags_defined").set(self.snapshot.load().flags.len() as f64);
        Ok(true)
    }

    /// Every flag, read from the database (not the snapshot): what an operator sees is stored.
    pub async fn list(&self) -> Result<Vec<Flag>, Error> {
        Ok(self.store.list_flags().await?)
    }

    pub async fn get(&self, name: &FlagName) -> Result<Flag, Error> {
        self.store.find_flag(name).await?.ok_or(Error::NotFound)
    }

    /// Creates or replaces a flag (validated first, audited with the write), then reloads this
    /// instance's snapshot; the others follow within their refresh interval.
    pub async fn put(&self, write: FlagWrite, audit: &AuditContext) -> Result<(Option<Flag>, Flag), Error> {
        write.definition.validate()?;
        let written = self.store.put_flag(&write, audit).await.map_err(|error| match error {
            StoreError::Conflict(Conflict::FlagChanged) => Error::PreconditionFailed,
            StoreError::Conflict(Conflict::FlagLimit) => {
                Error::Conflict(format!("at most {MAX_FLAGS} flags can be defined"))
            }
            other => other.into(),
        })?;
        self.refresh_after_write().await;
        Ok(written)
    }

    /// Sets the percentage of a boolean flag's rollout: its first rule that is a lone rollout
    /// answering `true` is changed, or one is added after the other rules.
    pub async fn set_rollout(
        &self,
        name: &FlagName,
        percentage: u8,
        expected_version: Option<i64>,
        audit: &AuditContext,
    ) -> Result<(Option<Flag>, Flag), Error> {
        let flag = self.get(name).await?;
        if flag.definition.kind != FlagKind::Boolean {
            return Err(Error::Conflict("only boolean flags have a rollout percentage".into()));
        }
        if expected_version.is_some_and(|expected| expected != flag.version) {
            return Err(Error::PreconditionFailed);
        }
        let mut definition = flag.definition.clone();
        let existing = definition.rules.iter_mut().find(|rule| {
            rule.then == FlagValue::Bool(true) && matches!(rule.when.as_slice(), [super::Condition::Rollout { .. }])
        });
        match existing {
            Some(rule) => {
                if let Some(super::Condition::Rollout { percentage: current, .. }) = rule.when.first_mut() {
                    *current = percentage;
                }
            }
            None => definition.rules.push(super::Rule {
                when: vec![super::Condition::Rollout { percentage, group_id: None }],
                then: FlagValue::Bool(true),
            }),
        }
        let write = FlagWrite { name: name.clone(), definition, expected_version: Some(flag.version), now: audit.at };
        self.put(write, audit).await
    }

    pub async fn delete(
        &self,
        name: &FlagName,
        expected_version: Option<i64>,
        audit: &AuditContext,
    ) -> Result<Flag, Error> {
        let deleted = self.store.delete_flag(name, expected_version, audit).await.map_err(|error| match error {
            StoreError::Conflict(Conflict::FlagChanged) => Error::PreconditionFailed,
            other => other.into(),
        })?;
        self.refresh_after_write().await;
        Ok(deleted)
    }

    async fn refresh_after_write(&self) {
        // The write is committed; a failed reload only delays this instance until the next poll.
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "cannot reload the feature flags after a change; the next poll will");
        }
    }
}

/// Counts an evaluation that answered the default for `reason`; names other than the shop's
/// own flags are labelled `other`, so callers cannot grow the label set.
pub(super) fn count_error(flag: &str, reason: &'static str) {
    let label = super::known::ALL.iter().find(|known| **known == flag).copied().unwrap_or("other");
    metrics::counter!("feature_flag_evaluation_errors_total", "flag" => label, "reason" => reason).increment(1);
}

/// Reloads the flags whenever their stored generation moves, checking every `every` until
/// `stop` (the first check at once), so a change on any instance is evaluated everywhere
/// within `every` plus one query. A failed check keeps the last snapshot.
pub async fn follow_flags(service: FlagService, every: Duration, stop: impl Future<Output = ()>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = &mut stop => return,
        }
        match service.refresh().await {
            Ok(changed) => {
                if changed {
                    tracing::info!(flags = service.snapshot().flags().len(), "feature flags loaded");
                }
                if failing {
                    tracing::info!("feature flags can be read again");
                    failing = false;
                }
                metrics::counter!("feature_flag_refreshes_total", "outcome" => "ok").increment(1);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot refresh the feature flags; evaluating the last snapshot");
                    failing = true;
                }
                metrics::counter!("feature_flag_refreshes_total", "outcome" => "error").increment(1);
            }
        }
    }
}
