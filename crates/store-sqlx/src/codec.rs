//! Conversions between domain values and column values on both backends, and the mapping of
//! database errors to [`StoreError`] (constraint violations to the domain's [`Conflict`]s).
//!
//! Ids are UUIDs (16-byte blobs in SQLite, `uuid` in PostgreSQL), money is integer minor units,
//! JSON is text in SQLite and `jsonb` in PostgreSQL; timestamps are `timestamptz` in PostgreSQL
//! and UTC text of one fixed width in SQLite, so that comparing the text compares the time.

use anyhow::Context as _;
use shop::{Conflict, StoreError};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Postgres, Sqlite, Type};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// A timestamp column, decoded from either backend's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub OffsetDateTime);

impl From<Timestamp> for OffsetDateTime {
    fn from(timestamp: Timestamp) -> Self {
        timestamp.0
    }
}

/// Formats a timestamp as SQLite stores it: fixed-width UTC text.
pub(crate) fn sqlite_timestamp(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// Parses text written by [`sqlite_timestamp`] (or by SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ')`).
fn parse_sqlite_timestamp(raw: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .with_context(|| format!("bad timestamp in database: {raw}"))
        .map_err(StoreError::other)
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <str as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(parse_sqlite_timestamp(text)?))
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <OffsetDateTime as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <OffsetDateTime as Decode<Postgres>>::decode(value).map(Self)
    }
}

/// An optional timestamp column as the domain's `Option<OffsetDateTime>`.
pub(crate) fn optional(timestamp: Option<Timestamp>) -> Option<OffsetDateTime> {
    timestamp.map(OffsetDateTime::from)
}

/// The row offset of a page as a bind value.
pub(crate) fn offset(page: shop::PageRequest) -> i64 {
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

/// A `count(*)` result as an unsigned total.
pub(crate) fn count(total: i64) -> u64 {
    u64::try_from(total).unwrap_or(0)
}

/// A domain value stored in the database failed its own rules: the data is corrupt.
pub(crate) fn corrupt(what: &str, message: String) -> StoreError {
    StoreError::other(anyhow::anyhow!("invalid {what} in database: {message}"))
}

/// Maps a sqlx error: unique and foreign-key violations become `Conflict`, named by
/// [`conflict`]; everything else becomes `Other` with `context`.
pub(crate) fn error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let sqlx::Error::Database(database_error) = &error
            && let Some(constraint) = constraint_name(database_error.as_ref())
        {
            return StoreError::Conflict(conflict(&constraint));
        }
        StoreError::other(anyhow::Error::new(error).context(context))
    }
}

/// Like [`error`], for a statement that can break only one foreign key: any foreign-key
/// violation is `foreign_key` (SQLite does not say which key failed; PostgreSQL does).
pub(crate) fn error_with_foreign_key(
    context: &'static str,
    foreign_key: Conflict,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |sql_error| {
        if let sqlx::Error::Database(database_error) = &sql_error
            && is_foreign_key_violation(database_error.as_ref())
        {
            return StoreError::Conflict(foreign_key);
        }
        error(context)(sql_error)
    }
}

/// The domain's name for the rule a constraint enforces: the one table of constraint names.
/// The names are PostgreSQL's; [`constraint_name`] gives SQLite's violations the same names.
fn conflict(constraint: &str) -> Conflict {
    match constraint {
        "users_email_key" => Conflict::EmailTaken,
        "categories_slug_key" => Conflict::CategorySlugTaken,
        "products_slug_key" => Conflict::ProductSlugTaken,
        "products_category_id_fkey" => Conflict::UnknownCategory,
        "cart_items_product_id_fkey" => Conflict::UnknownProduct,
        "jobs_unique_key" => Conflict::DuplicateJob,
        "external_identities_pkey" | "external_identities_issuer_external_identities_subject_key" => {
            Conflict::IdentityLinked
        }
        "account_tokens_token_hash_key" => Conflict::DuplicateToken,
        // A concurrent writer created the flag first.
        "feature_flags_pkey" | "feature_flags_name_key" => Conflict::FlagChanged,
        user_key if user_key.ends_with("_user_id_fkey") => Conflict::UnknownUser,
        other => Conflict::Unnamed(other.to_owned()),
    }
}

fn is_foreign_key_violation(database_error: &dyn sqlx::error::DatabaseError) -> bool {
    // ON DELETE RESTRICT reports SQLITE_CONSTRAINT_TRIGGER (1811), not _FOREIGNKEY (787), so
    // recognise SQLite's message too.
    database_error.is_foreign_key_violation() || database_error.message().contains("FOREIGN KEY constraint failed")
}

/// The name of the constraint a database error violated, if it is a unique or foreign-key
/// violation. PostgreSQL names its constraints; SQLite reports a unique violation as
/// `table.column[, table.column]`, which becomes `table_column_key` (PostgreSQL's default name),
/// and a foreign-key violation without saying which: `foreign_key`.
fn constraint_name(database_error: &dyn sqlx::error::DatabaseError) -> Option<String> {
    let foreign_key = is_foreign_key_violation(database_error);
    if !database_error.is_unique_violation() && !foreign_key {
        return None;
    }
    if let Some(constraint) = database_error.constraint() {
        return Some(constraint.to_owned());
    }
    if foreign_key {
        return Some("foreign_key".into());
    }
    let message = database_error.message();
    let columns = message.rsplit(": ").next().unwrap_or(message);
    let name = format!("{}_key", columns.replace(", ", "_").replace('.', "_"));
    // The partial unique index on live jobs' keys has no column-derived name in PostgreSQL.
    Some(if name == "jobs_unique_key_key" { "jobs_unique_key".into() } else { name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn sqlite_timestamps_have_fixed_width_and_round_trip() {
        let at = datetime!(2026-11-23 10:00:00.5 +02:00);
        let text = sqlite_timestamp(at);
        assert_eq!(text, "2026-11-23T08:00:00.500000Z");
        assert_eq!(parse_sqlite_timestamp(&text).ok(), Some(at));
        assert!(sqlite_timestamp(datetime!(2026-11-23 08:00:00 UTC)) < text);
    }

    #[test]
    fn constraint_names_become_domain_conflicts() {
        assert_eq!(conflict("users_email_key"), Conflict::EmailTaken);
        assert_eq!(conflict("orders_user_id_fkey"), Conflict::UnknownUser);
        assert_eq!(conflict("sessions_pkey"), Conflict::Unnamed("sessions_pkey".into()));
    }
}
