//! Conversions between domain values and SQLite column values, and error mapping.

use anyhow::Context as _;
use shop::StoreError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Formats a timestamp as fixed-width UTC text, so that comparing the text compares the time.
pub fn timestamp(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// Parses text written by [`timestamp`] (or by SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ')`).
pub fn parse_timestamp(raw: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .with_context(|| format!("bad timestamp in database: {raw}"))
        .map_err(StoreError::other)
}

pub fn parse_optional_timestamp(raw: Option<&str>) -> Result<Option<OffsetDateTime>, StoreError> {
    raw.map(parse_timestamp).transpose()
}

/// The row offset of a page as SQLite's integer type.
pub fn offset(page: shop::PageRequest) -> i64 {
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

/// A `count(*)` result as an unsigned total.
pub fn count(total: i64) -> u64 {
    u64::try_from(total).unwrap_or(0)
}

/// A domain value stored in the database failed its own rules: the data is corrupt.
pub fn corrupt(what: &str, message: String) -> StoreError {
    StoreError::other(anyhow::anyhow!("invalid {what} in database: {message}"))
}

/// Maps a sqlx error: unique and foreign-key violations become `Conflict` (SQLite reports
/// unique violations as `table.column`, which becomes `table_column_key` to match PostgreSQL's
/// names); everything else becomes `Other` with `context`.
pub fn error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let sqlx::Error::Database(database_error) = &error {
            if database_error.is_unique_violation() {
                let message = database_error.message();
                let columns = message.rsplit(": ").next().unwrap_or(message);
                let constraint = format!("{}_key", columns.replace(", ", "_").replace('.', "_"));
                return StoreError::Conflict { constraint };
            }
            // ON DELETE RESTRICT reports SQLITE_CONSTRAINT_TRIGGER (1811), not _FOREIGNKEY (787),
            // so recognise the message too.
            if database_error.is_foreign_key_violation()
                || database_error.message().contains("FOREIGN KEY constraint failed")
            {
                return StoreError::Conflict { constraint: "foreign_key".into() };
            }
        }
        StoreError::other(anyhow::Error::new(error).context(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_have_fixed_width_and_round_trip() {
        let at = datetime!(2026-11-23 10:00:00.5 +02:00);
        let text = timestamp(at);
        assert_eq!(text, "2026-11-23T08:00:00.500000Z");
        assert_eq!(parse_timestamp(&text).ok(), Some(at));
        assert!(timestamp(datetime!(2026-11-23 08:00:00 UTC)) < text);
    }
}
