//! Live reconfiguration (SIGHUP in `shopkeep gateway`): a new configuration's pool is applied
//! to the running gateway without dropping a connection — new backends join (checked first,
//! then slow-started), backends gone from the file are drained and removed, changed weights
//! move gradually over the slow-start time, a changed address is a drain-and-replace. Settings
//! that cannot change in flight (listeners, workers, policies) are reported, not applied.

use std::sync::Arc;
use std::time::Duration;

use crate::Shared;
use crate::backend::Backend;
use crate::config::{GatewayConfig, parse_backend_address};

/// How long a backend taken out by a reload may finish its requests before it is removed.
const RELOAD_DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Applies configurations to a running gateway. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    /// The configuration the gateway runs with now.
    current: Arc<std::sync::Mutex<GatewayConfig>>,
    /// Backends a reload is draining out; a later reload that lists one again keeps it.
    leaving: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub reweighted: Vec<String>,
    pub replaced: Vec<String>,
    /// Keys that changed but need a restart to take effect.
    pub needs_restart: Vec<String>,
}

impl Reloader {
    pub(crate) fn new(shared: Arc<Shared>, current: GatewayConfig) -> Self {
        Self { shared, current: Arc::new(std::sync::Mutex::new(current)), leaving: Arc::default() }
    }

    /// Checks `next` and applies its pool; an invalid configuration changes nothing.
    pub fn apply(&self, next: GatewayConfig) -> Result<ReloadReport, crate::ConfigErrors> {
        next.check()?;
        // The certificate is read again too (also done by the file watch); a bad new pair is
        // logged and the current one kept.
        if let Some(certificates) = &self.shared.certificates
            && let Err(error) = certificates.reload()
        {
            tracing::warn!(%error, "cannot reload the TLS certificate; keeping the current one");
        }
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut report = ReloadReport { needs_restart: fixed_changes(&current, &next), ..ReloadReport::default() };
        let pool = &self.shared.pool;
        let now = pool.now();
        let ramp = pool.policy().slow_start;
        for wanted in &next.backends {
            let Ok(authority) = parse_backend_address(&wanted.address) else { continue };
            match pool.find(&wanted.name) {
                None => {
                    let backend =
                        Arc::new(Backend::with_scheme(&wanted.name, authority, wanted.weight, wanted.tls, now));
                    if pool.add(Arc::clone(&backend)).is_ok() {
                        self.shared.watch(backend);
                        report.added.push(wanted.name.clone());
                    }
                }
                Some(existing)
                    if existing.authority() != &authority || existing.scheme() != Backend::scheme_for(wanted.tls) =>
                {
                    // Same name, new address: the old one leaves the pool at once (its requests
                    // in flight finish on their connections) and the new one joins, so the
                    // name is never without a backend.
                    self.leaving().remove(&wanted.name);
                    pool.remove_exact(&existing);
                    let replacement =
                        Arc::new(Backend::with_scheme(&wanted.name, authority, wanted.weight, wanted.tls, now));
                    if pool.add(Arc::clone(&replacement)).is_ok() {
                        self.shared.watch(replacement);
                        report.replaced.push(wanted.name.clone());
                    }
                }
                // A drained backend stays drained — draining is the operator's call — unless a
                // reload was taking it out and the file lists it again.
                Some(existing) => {
                    if self.leaving().remove(&wanted.name) {
                        existing.set_draining(false);
                        report.added.push(wanted.name.clone());
                    }
                    if existing.target_weight() != wanted.weight {
                        existing.shift_weight(wanted.weight, ramp, now);
                        report.reweighted.push(wanted.name.clone());
                    }
                }
            }
        }
        for backend in pool.backends().iter() {
            let listed = next.backends.iter().any(|wanted| wanted.name == backend.name());
            if !listed && self.leaving().insert(backend.name().to_owned()) {
                self.drain_out(Arc::clone(backend));
                report.removed.push(backend.name().to_owned());
            }
        }
        tracing::info!(
            added = ?report.added,
            removed = ?report.removed,
            reweighted = ?report.reweighted,
            replaced = ?report.replaced,
            needs_restart = ?report.needs_restart,
            "gateway configuration reloaded"
        );
        *current = next;
        Ok(report)
    }

    fn leaving(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.leaving.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drains `backend` in the background and removes it — unless a later reload kept it.
    fn drain_out(&self, backend: Arc<Backend>) {
        let (shared, leaving) = (Arc::clone(&self.shared), Arc::clone(&self.leaving));
        backend.set_draining(true);
        tokio::spawn(async move {
            let still_leaving =
                || leaving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(backend.name());
            backend.wait_until_idle(RELOAD_DRAIN_WAIT, &shared.stop, still_leaving).await;
            let removed_from_plan =
                leaving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(backend.name());
            if removed_from_plan && shared.pool.remove_exact(&backend) {
                tracing::info!(backend = backend.name(), "backend removed by a reload");
            }
        });
    }
}

/// The keys that differ between `current` and `next` but only take effect on a restart.
fn fixed_changes(current: &GatewayConfig, next: &GatewayConfig) -> Vec<String> {
    let json = |config: &GatewayConfig| serde_json::to_value(config).unwrap_or_default();
    let (before, after) = (json(current), json(next));
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else { return Vec::new() };
    let mut keys: Vec<String> = before
        .iter()
        .filter(|(key, value)| key.as_str() != "backends" && after.get(key.as_str()) != Some(value))
        .map(|(key, _)| key.clone())
        .collect();
    keys.sort();
    keys
}
