//! Governor (Release It! 2nd ed., ch. 5): a limit on the rate of automatic or destructive
//! actions — purging rows, disabling webhooks, cancelling orders — so automation gone wrong (a
//! clock bug, a bad query) cannot do damage faster than humans can notice and stop it. The limit
//! is exact: a log of the actions granted in the last `period`, pruned as it goes. Every refusal
//! is logged at WARN; metrics: `governor_actions_total{name,outcome}`, `governor_allowance{name}`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// Settings of one governor.
#[derive(Debug, Clone)]
pub struct ActionGovernorConfig {
    /// The automation's name, in logs and metric labels (`order_expiry`, `webhook_auto_disable`).
    pub name: String,
    /// Actions allowed in any sliding `period`; zero holds back every action.
    pub max_actions: u32,
    pub period: Duration,
}

/// The answer to [`ActionGovernor::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Actions that may go ahead now; they are already counted.
    pub granted: u32,
    /// Actions held back.
    pub refused: u32,
    /// When something was refused: time until at least one more action is allowed. `None` when
    /// nothing was refused, or when `max_actions` is zero and nothing ever will be allowed.
    pub retry_after: Option<Duration>,
}

/// A limit on the rate of automatic actions. Share it with `Arc`; all methods take `&self`.
pub struct ActionGovernor {
    config: ActionGovernorConfig,
    clock: Arc<dyn Clock>,
    log: Mutex<ActionLog>,
}

/// The actions granted in the last period, oldest first, and their sum.
#[derive(Default)]
struct ActionLog {
    /// When actions were granted and how many; never holds a zero count.
    entries: VecDeque<(Instant, u32)>,
    total: u32,
}

impl ActionLog {
    /// Forgets actions granted a whole period or more before `now`.
    fn prune(&mut self, now: Instant, period: Duration) {
        while let Some(&(granted_at, count)) = self.entries.front() {
            if now.saturating_duration_since(granted_at) < period {
                break;
            }
            self.entries.pop_front();
            self.total = self.total.saturating_sub(count);
        }
    }

    /// Time until the oldest action leaves the period, making room for one more.
    fn until_room(&self, now: Instant, period: Duration) -> Option<Duration> {
        let &(oldest, _) = self.entries.front()?;
        Some(period.saturating_sub(now.saturating_duration_since(oldest)))
    }
}

impl ActionGovernor {
    pub fn new(config: ActionGovernorConfig, clock: Arc<dyn Clock>) -> Self {
        let governor = Self { config, clock, log: Mutex::new(ActionLog::default()) };
        governor.report_allowance(governor.config.max_actions);
        governor
    }

    pub fn config(&self) -> &ActionGovernorConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActionLog> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn report_allowance(&self, allowance: u32) {
        metrics::gauge!("governor_allowance", "name" => self.config.name.clone()).set(f64::from(allowance));
    }

    /// Actions still allowed now in the sliding period.
    pub fn allowance(&self) -> u32 {
        let now = self.clock.now();
        let mut log = self.lock();
        log.prune(now, self.config.period);
        let allowance = self.config.max_actions.saturating_sub(log.total);
        drop(log);
        self.report_allowance(allowance);
        allowance
    }

    /// Asks for `wanted` actions; grants as many as the allowance permits (maybe fewer, maybe 0)
    /// and records them. Do only the granted ones; [`ActionGovernor::release`] what goes unused.
    pub fn request(&self, wanted: u32) -> Grant {
        let now = self.clock.now();
        let mut log = self.lock();
        log.prune(now, self.config.period);
        let granted = wanted.min(self.config.max_actions.saturating_sub(log.total));
        if granted > 0 {
            log.entries.push_back((now, granted));
            log.total += granted;
        }
        let refused = wanted - granted;
        let retry_after = if refused > 0 { log.until_room(now, self.config.period) } else { None };
        let allowance = self.config.max_actions.saturating_sub(log.total);
        drop(log);

        let name = self.config.name.clone();
        if granted > 0 {
            metrics::counter!("governor_actions_total", "name" => name.clone(), "outcome" => "granted")
                .increment(u64::from(granted));
        }
        if refused > 0 {
            metrics::counter!("governor_actions_total", "name" => name, "outcome" => "refused")
                .increment(u64::from(refused));
            tracing::warn!(
                governor = self.config.name.as_str(),
                maxActions = self.config.max_actions,
                periodSecs = self.config.period.as_secs_f64(),
                wanted,
                granted,
                refused,
                retryAfterSecs = retry_after.map(|wait| wait.as_secs_f64()),
                "automatic actions held back; a human should look"
            );
        }
        self.report_allowance(allowance);
        Grant { granted, refused, retry_after }
    }

    /// Gives back actions that were granted but not used (e.g. fewer rows existed), so they do
    /// not count. The most recent grants are given back first.
    pub fn release(&self, unused: u32) {
        let now = self.clock.now();
        let mut log = self.lock();
        log.prune(now, self.config.period);
        let mut left = unused;
        while left > 0 {
            let Some(newest) = log.entries.back_mut() else { break };
            let returned = left.min(newest.1);
            newest.1 -= returned;
            if newest.1 == 0 {
                log.entries.pop_back();
            }
            log.total -= returned;
            left -= returned;
        }
        let allowance = self.config.max_actions.saturating_sub(log.total);
        drop(log);
        self.report_allowance(allowance);
    }
}

impl std::fmt::Debug for ActionGovernor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionGovernor").field("config", &self.config).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;

    fn governor(max_actions: u32, period: Duration) -> (Arc<ManualClock>, ActionGovernor) {
        let clock = Arc::new(ManualClock::default());
        let config = ActionGovernorConfig { name: "order_expiry".into(), max_actions, period };
        (clock.clone(), ActionGovernor::new(config, clock))
    }

    #[test]
    fn grants_at_most_max_actions_per_period() {
        let (clock, governor) = governor(100, Duration::from_secs(3600));
        assert_eq!(governor.allowance(), 100);
        assert_eq!(governor.request(60), Grant { granted: 60, refused: 0, retry_after: None });
        clock.advance(Duration::from_secs(600));
        assert_eq!(governor.request(40), Grant { granted: 40, refused: 0, retry_after: None });
        assert_eq!(governor.allowance(), 0);
        let refused = governor.request(1);
        assert_eq!(
            refused,
            Grant { granted: 0, refused: 1, retry_after: Some(Duration::from_secs(3000)) },
            "the first 60 leave the period 3000 s from now"
        );
    }

    #[test]
    fn grants_part_of_a_request_when_the_allowance_is_short() {
        let (_, governor) = governor(10, Duration::from_secs(60));
        assert_eq!(governor.request(7).granted, 7);
        assert_eq!(governor.request(5), Grant { granted: 3, refused: 2, retry_after: Some(Duration::from_secs(60)) });
        assert_eq!(governor.request(0), Grant { granted: 0, refused: 0, retry_after: None });
    }

    #[test]
    fn released_actions_do_not_count() {
        let (_, governor) = governor(10, Duration::from_secs(60));
        assert_eq!(governor.request(4).granted, 4);
        assert_eq!(governor.request(6).granted, 6);
        governor.release(8);
        assert_eq!(governor.allowance(), 8, "only 2 of the 10 granted were used");
        governor.release(50);
        assert_eq!(governor.allowance(), 10, "releasing more than was granted gives back no more than that");
        assert_eq!(governor.request(12).granted, 10);
    }

    #[test]
    fn the_allowance_recovers_as_the_window_slides() {
        let (clock, governor) = governor(10, Duration::from_secs(60));
        assert_eq!(governor.request(4).granted, 4);
        clock.advance(Duration::from_secs(30));
        assert_eq!(governor.request(6).granted, 6);
        assert_eq!(governor.request(1).retry_after, Some(Duration::from_secs(30)));
        clock.advance(Duration::from_secs(29));
        assert_eq!(governor.allowance(), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(governor.allowance(), 4, "the first 4 left the period");
        clock.advance(Duration::from_secs(30));
        assert_eq!(governor.allowance(), 10);
    }

    #[test]
    fn zero_max_actions_holds_back_everything() {
        let (_, governor) = governor(0, Duration::from_secs(60));
        assert_eq!(governor.request(3), Grant { granted: 0, refused: 3, retry_after: None });
    }

    proptest! {
        #[test]
        fn never_grants_more_than_max_actions_within_any_period(
            max_actions in 0u32..50,
            period_ms in 1u64..5_000,
            steps in proptest::collection::vec((0u64..2_000, 0u32..30, 0u32..30), 1..200),
        ) {
            let period = Duration::from_millis(period_ms);
            let (clock, governor) = governor(max_actions, period);
            // Actions used at each moment: granted minus released right away.
            let mut used: Vec<(Duration, u32)> = Vec::new();
            let mut elapsed = Duration::ZERO;
            for (advance_ms, wanted, unused) in steps {
                clock.advance(Duration::from_millis(advance_ms));
                elapsed += Duration::from_millis(advance_ms);
                let grant = governor.request(wanted);
                prop_assert_eq!(grant.granted + grant.refused, wanted);
                let unused = unused.min(grant.granted);
                governor.release(unused);
                used.push((elapsed, grant.granted - unused));
                // Any window holding more than max_actions would also hold too many if it ended
                // at its last action, so windows ending now cover every case.
                let in_window: u32 = used
                    .iter()
                    .filter(|(at, _)| elapsed.saturating_sub(*at) < period)
                    .map(|(_, count)| count)
                    .sum();
                prop_assert!(in_window <= max_actions, "{in_window} actions within {period:?} at {elapsed:?}");
                prop_assert_eq!(governor.allowance(), max_actions - in_window);
            }
        }
    }
}
