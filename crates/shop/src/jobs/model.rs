//! Job records, their states, and the backoff schedule between attempts.

use std::time::Duration;

use rand::Rng as _;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::pagination::PageRequest;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its `run_at`.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    Succeeded,
    /// An attempt failed; it runs again at `run_at`.
    Failed,
    /// Its last attempt failed (or it failed permanently); only an operator's retry revives it.
    Dead,
}

impl JobState {
    pub const ALL: [Self; 5] = [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == raw)
    }
}

/// A job to enqueue. Build it with [`NewJob::new`] and the setters.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: Uuid,
    /// Which handler runs it (`mail.send`, `sessions.purge`).
    pub kind: String,
    pub queue: String,
    pub payload: serde_json::Value,
    /// Higher runs first among jobs that are due.
    pub priority: i32,
    pub run_at: OffsetDateTime,
    pub max_attempts: u32,
    /// While a job with this key is queued, running or failed, enqueueing another is a no-op.
    pub unique_key: Option<String>,
    pub created_at: OffsetDateTime,
}

impl NewJob {
    /// A job of `kind` on the `default` queue, due now, with 10 attempts.
    pub fn new(kind: &str, payload: serde_json::Value, now: OffsetDateTime) -> Self {
        Self {
            id: crate::new_id(),
            kind: kind.to_owned(),
            queue: "default".to_owned(),
            payload,
            priority: 0,
            run_at: now,
            max_attempts: 10,
            unique_key: None,
            created_at: now,
        }
    }

    pub fn queue(mut self, queue: &str) -> Self {
        queue.clone_into(&mut self.queue);
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn run_at(mut self, run_at: OffsetDateTime) -> Self {
        self.run_at = run_at;
        self
    }

    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub state: JobState,
    /// Attempts started so far (the running one included).
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: OffsetDateTime,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub unique_key: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// A worker's request for due jobs of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub queue: String,
    /// The worker's unique name; only the lease owner may finish a job.
    pub worker: String,
    pub limit: u32,
    pub now: OffsetDateTime,
    pub lease_until: OffsetDateTime,
    /// Only jobs of these kinds (the ones the worker has handlers for), so a worker never takes
    /// a job it cannot run — one of a newer version's kinds during a rolling deploy waits for
    /// a worker that knows it. `None`: any kind.
    pub kinds: Option<Vec<String>>,
}

/// The end of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub error: String,
    /// `Some`: run again then (state `failed`); `None`: dead.
    pub retry_at: Option<OffsetDateTime>,
    /// `false` when the attempt was not really made (deferred: a dependency refused before
    /// anything was tried): the attempt the claim counted is given back.
    pub attempt_counted: bool,
}

/// Sort orders of the admin job list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSort {
    /// Most recently changed first.
    #[default]
    UpdatedAt,
    RunAt,
}

/// Filters of the admin job list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobQuery {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub sort: JobSort,
    pub page: PageRequest,
}

/// Jobs of one queue in one state, and the oldest due one's `run_at` (for queue age).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    pub state: JobState,
    pub count: u64,
    /// For `queued` and `failed`: the earliest `run_at` that is already due.
    pub oldest_due: Option<OffsetDateTime>,
}

/// When a recurring job runs. Both kinds are pure functions of the time, so every instance
/// computes the same occurrences.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every `period`, aligned to the Unix epoch.
    Every(Duration),
    /// A cron expression, in UTC.
    Cron(Box<CronSchedule>),
}

impl Schedule {
    /// The first occurrence strictly after `after`; `None` when there is none (a cron
    /// expression that never matches again).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Self::Every(period) => {
                let period_ns = i128::try_from(period.as_nanos()).unwrap_or(i128::MAX).max(1_000_000_000);
                let now_ns = after.unix_timestamp_nanos();
                let next = (now_ns.div_euclid(period_ns) + 1) * period_ns;
                OffsetDateTime::from_unix_timestamp_nanos(next).ok()
            }
            Self::Cron(cron) => cron.next_after(after),
        }
    }
}

/// A parsed cron expression: five fields (minute hour day-of-month month day-of-week), or six
/// with seconds first, or a nickname (`@hourly`, `@daily`, `@weekly`, …); evaluated in UTC.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    cron: croner::Cron,
}

impl CronSchedule {
    /// Parses `expression`; refuses one that is malformed or never occurs.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression.trim())
            .map_err(|error| format!("{expression:?} is not a cron expression: {error}"))?;
        let schedule = Self { expression: expression.trim().to_owned(), cron };
        if schedule.next_after(OffsetDateTime::now_utc()).is_none() {
            return Err(format!("{expression:?} never occurs"));
        }
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = chrono::DateTime::from_timestamp(after.unix_timestamp(), after.nanosecond())?;
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }
}

impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.expression).finish()
    }
}

/// A job enqueued on a schedule; exactly one instance enqueues each occurrence.
#[derive(Debug, Clone)]
pub struct RecurringJob {
    /// Unique name; also the job's kind unless `kind` says otherwise.
    pub name: String,
    pub kind: String,
    pub queue: String,
    pub schedule: Schedule,
    pub payload: serde_json::Value,
}

/// The wait before the next attempt after `attempts` failed ones: exponential from `base`,
/// capped at `max`, with "equal jitter" — between half the ceiling and the ceiling — so retries
/// of many jobs spread out (dogpile) while each still waits at least half the nominal time.
pub fn retry_delay(attempts: u32, base: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(2_u32.saturating_pow(exponent)).min(max);
    let half = ceiling / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("zombie"), None);
    }

    #[test]
    fn interval_schedules_are_aligned_so_instances_agree() {
        let schedule = Schedule::Every(Duration::from_secs(60));
        let at = |seconds: i64| OffsetDateTime::from_unix_timestamp(seconds).unwrap();
        assert_eq!(schedule.next_after(at(1_000_000_030)), Some(at(1_000_000_080)));
        assert_eq!(schedule.next_after(at(1_000_000_020)), Some(at(1_000_000_080)));
        assert_eq!(schedule.next_after(at(1_000_000_080)), Some(at(1_000_000_140)), "strictly after");
    }

    #[test]
    fn cron_schedules_name_their_next_occurrence_in_utc() {
        let at = |raw: &str| OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).unwrap();
        let nightly = Schedule::Cron(Box::new(CronSchedule::parse("30 3 * * *").unwrap()));
        assert_eq!(nightly.next_after(at("2026-11-23T10:00:00Z")), Some(at("2026-11-24T03:30:00Z")));
        assert_eq!(nightly.next_after(at("2026-11-24T03:30:00Z")), Some(at("2026-11-25T03:30:00Z")), "strictly after");
        let weekdays = Schedule::Cron(Box::new(CronSchedule::parse("0 */6 * * MON-FRI").unwrap()));
        assert_eq!(weekdays.next_after(at("2026-11-21T10:00:00Z")), Some(at("2026-11-23T00:00:00Z")), "Sat → Mon");
        let seconds = Schedule::Cron(Box::new(CronSchedule::parse("*/15 * * * * *").unwrap()));
        assert_eq!(seconds.next_after(at("2026-11-23T10:00:07Z")), Some(at("2026-11-23T10:00:15Z")));
        let hourly = Schedule::Cron(Box::new(CronSchedule::parse("@hourly").unwrap()));
        assert_eq!(hourly.next_after(at("2026-11-23T10:20:00Z")), Some(at("2026-11-23T11:00:00Z")));
        for bad in ["", "every day", "61 * * * *", "* * * *", "0 0 31 2 *"] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn retry_delays_double_within_their_jitter_band(attempts in 1_u32..40) {
            let base = Duration::from_secs(30);
            let max = Duration::from_secs(3_600);
            let ceiling = base.saturating_mul(2_u32.saturating_pow(attempts - 1)).min(max);
            let delay = retry_delay(attempts, base, max);
            prop_assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
        }
    }
}
