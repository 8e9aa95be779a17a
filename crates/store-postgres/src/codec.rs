//! Error mapping and small conversions for PostgreSQL.

use shop::StoreError;

/// A domain value stored in the database failed its own rules: the data is corrupt.
pub fn corrupt(what: &str, message: String) -> StoreError {
    StoreError::other(anyhow::anyhow!("invalid {what} in database: {message}"))
}

/// The row offset of a page as PostgreSQL's bigint.
pub fn offset(page: shop::PageRequest) -> i64 {
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

/// A `count(*)` result as an unsigned total.
pub fn count(total: i64) -> u64 {
    u64::try_from(total).unwrap_or(0)
}

/// Maps a sqlx error: unique and foreign-key violations become `Conflict` with the constraint's
/// name; everything else becomes `Other` with `context`.
pub fn error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let sqlx::Error::Database(database_error) = &error
            && (database_error.is_unique_violation() || database_error.is_foreign_key_violation())
        {
            let constraint = database_error.constraint().unwrap_or("unknown").to_owned();
            return StoreError::Conflict { constraint };
        }
        StoreError::other(anyhow::Error::new(error).context(context))
    }
}
