//! Serde helpers for durations written as a whole number of the unit their key names
//! (`settle_after_secs = 60`, `idempotency_ttl_hours = 24`), for sections read straight into an
//! owner's settings that hold `time::Duration`; and, for sections that keep plain numbers
//! (`accounts`, `jobs`, `http`), their owner's default durations in the unit of their key.

/// Seconds in the unit a key names: `*_secs`, `*_minutes`, `*_hours`, `*_days`.
pub(super) const SECS: u64 = 1;
pub(super) const MINUTES: u64 = 60;
pub(super) const HOURS: u64 = 3_600;
pub(super) const DAYS: u64 = 86_400;

/// An owner's default `time::Duration` as a count of `unit_secs` (whole units, negatives as 0).
pub(super) fn count(duration: time::Duration, unit_secs: u64) -> u64 {
    u64::try_from(duration.whole_seconds()).unwrap_or(0) / unit_secs
}

/// An owner's default `std::time::Duration` as a count of `unit_secs` (whole units).
pub(super) fn std_count(duration: std::time::Duration, unit_secs: u64) -> u64 {
    duration.as_secs() / unit_secs
}

/// An owner's default `std::time::Duration` in milliseconds (`*_ms` keys).
pub(super) fn std_millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A count of units as a duration; absurd counts saturate (validation then refuses them) rather
/// than overflow.
fn saturating(count: u64, unit_secs: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(count.saturating_mul(unit_secs)).unwrap_or(i64::MAX))
}

macro_rules! whole_units {
    ($(#[$doc:meta])* $module:ident, $unit_secs:expr, $whole:ident) => {
        $(#[$doc])*
        pub(super) mod $module {
            use serde::{Deserialize as _, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(duration: &time::Duration, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u64(u64::try_from(duration.$whole()).unwrap_or(0))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<time::Duration, D::Error> {
                Ok(super::saturating(u64::deserialize(deserializer)?, $unit_secs))
            }
        }
    };
}

whole_units!(
    /// `*_secs` keys.
    secs,
    1,
    whole_seconds
);
whole_units!(
    /// `*_minutes` keys.
    minutes,
    60,
    whole_minutes
);
whole_units!(
    /// `*_hours` keys.
    hours,
    3_600,
    whole_hours
);
whole_units!(
    /// `*_days` keys.
    days,
    86_400,
    whole_days
);

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_counts_saturate_instead_of_overflowing() {
        assert_eq!(super::saturating(90, 60), time::Duration::minutes(90));
        assert_eq!(super::saturating(u64::MAX, 86_400), time::Duration::seconds(i64::MAX));
    }

    #[test]
    fn owner_defaults_count_whole_units() {
        assert_eq!(super::count(time::Duration::days(30), super::HOURS), 720);
        assert_eq!(super::count(time::Duration::minutes(-5), super::MINUTES), 0);
        assert_eq!(super::std_count(std::time::Duration::from_secs(30 * 86_400), super::DAYS), 30);
        assert_eq!(super::std_millis(std::time::Duration::from_secs(1)), 1_000);
    }
}
