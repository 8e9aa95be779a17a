//! What truly differs between the two databases, asked by the repositories where their SQL must
//! differ: row locks, and the two backends' names in logs and health output. (Write
//! transactions begin differently too: see `Connection::begin_write`. Job claims and their
//! notifications differ enough to have two statements: see `jobs.rs`.)

/// The SQL dialect of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite: one writer at a time (every write transaction holds the database's write lock),
    /// so rows need no locks of their own.
    Sqlite,
    /// PostgreSQL: concurrent writers, so a read that a later write depends on locks its rows.
    Postgres,
}

impl Dialect {
    /// The locking clause ending a `select` whose rows the transaction will change or depend
    /// on (`lock` is PostgreSQL's, e.g. `for no key update`); empty in SQLite, where the
    /// transaction's write lock already excludes every other writer.
    pub(crate) fn row_lock(self, lock: &'static str) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => lock,
        }
    }

    /// `select` text followed by its row lock, as the dialect wants it.
    pub(crate) fn locking(self, select: &str, lock: &'static str) -> String {
        match self {
            Self::Sqlite => select.to_owned(),
            Self::Postgres => format!("{select} {lock}"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}
