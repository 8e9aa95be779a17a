//! How the repositories run SQL on either database: a [`Statement`] is SQL with `$n`
//! placeholders (both sqlx drivers read them) and its [`Value`]s; a [`Connection`] or a
//! [`Transaction`] of either backend runs it through the [`Executor`] methods.
//!
//! This is the seam that lets every query be written once. The repositories never name a
//! backend's connection type; where the SQL itself must differ they ask the [`Dialect`].

use std::borrow::Cow;
use std::sync::Arc;

use anyhow::Context as _;
use shop::StoreError;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow, PgTypeInfo};
use sqlx::sqlite::{SqliteConnection, SqliteRow, SqliteTypeInfo};
use sqlx::{AssertSqlSafe, Decode, Encode, FromRow, Postgres, Sqlite, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec;
use crate::dialect::Dialect;

/// One SQL statement and the values of its placeholders, in order.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    sql: Cow<'static, str>,
    args: Vec<Value>,
}

/// A statement of fixed text; bind its `$1`, `$2`, … with [`Statement::bind`].
pub(crate) fn sql(text: &'static str) -> Statement {
    Statement { sql: Cow::Borrowed(text), args: Vec::new() }
}

impl Statement {
    /// A statement whose text is assembled at run time (from fixed fragments only; values are
    /// always bound).
    pub(crate) fn owned(text: String) -> Self {
        Self { sql: Cow::Owned(text), args: Vec::new() }
    }

    /// Binds the next placeholder (`$1`, then `$2`, …).
    pub(crate) fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends SQL text (never a value: values go through [`Statement::push_bind`]).
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.sql.to_mut().push_str(text);
        self
    }

    /// Appends a placeholder for the next value and binds it.
    pub(crate) fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        let placeholder = format!("${}", self.args.len());
        self.sql.to_mut().push_str(&placeholder);
        self
    }

    /// Appends `(<placeholders>)` binding each value: the right-hand side of `in`. An empty list
    /// becomes `(null)`, which matches nothing.
    pub(crate) fn push_list<T: Into<Value>>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self {
        self.push("(");
        let mut empty = true;
        for value in values {
            if !empty {
                self.push(", ");
            }
            self.push_bind(value);
            empty = false;
        }
        self.push(if empty { "null)" } else { ")" })
    }
}

/// A value bound to a placeholder. Each backend encodes it in its own way (see `codec`).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Uuid(Option<Uuid>),
    Integer(Option<i64>),
    Boolean(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Timestamp(Option<OffsetDateTime>),
    Json(Option<serde_json::Value>),
    /// A label of a PostgreSQL enum type; plain text in SQLite.
    Label {
        type_name: &'static str,
        label: Option<String>,
    },
}

impl Value {
    /// The label `label` of the PostgreSQL enum type `type_name` (text in SQLite).
    pub(crate) fn label(type_name: &'static str, label: Option<&str>) -> Self {
        Self::Label { type_name, label: label.map(str::to_owned) }
    }
}

macro_rules! value_from {
    ($variant:ident: $($ty:ty => |$v:ident| $convert:expr),+ $(,)?) => {$(
        impl From<$ty> for Value {
            fn from($v: $ty) -> Self {
                Self::$variant(Some($convert))
            }
        }
        impl From<Option<$ty>> for Value {
            fn from(value: Option<$ty>) -> Self {
                Self::$variant(value.map(|$v| $convert))
            }
        }
    )+};
}

value_from!(Uuid: Uuid => |v| v, &Uuid => |v| *v);
value_from!(Integer: i64 => |v| v, i32 => |v| i64::from(v), u32 => |v| i64::from(v), u16 => |v| i64::from(v));
value_from!(Boolean: bool => |v| v);
value_from!(Text: String => |v| v, &String => |v| v.clone(), &str => |v| v.to_owned());
value_from!(Bytes: Vec<u8> => |v| v, &[u8] => |v| v.to_vec(), &Vec<u8> => |v| v.clone());
value_from!(Timestamp: OffsetDateTime => |v| v);
value_from!(Json: serde_json::Value => |v| v);

/// Encodes `value` for `DB` (names the backend where both would fit).
fn put<'q, DB: sqlx::Database, T: Encode<'q, DB>>(
    value: T,
    buf: &mut DB::ArgumentBuffer,
) -> Result<IsNull, BoxDynError> {
    value.encode(buf)
}

// === impl Encode for SQLite ===

impl Type<Sqlite> for Value {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Value {
    fn encode_by_ref(&self, buf: &mut <Sqlite as sqlx::Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Uuid(value) => put::<Sqlite, _>(value, buf),
            Self::Integer(value) => put::<Sqlite, _>(value, buf),
            Self::Boolean(value) => put::<Sqlite, _>(value, buf),
            Self::Text(value) | Self::Label { label: value, .. } => put::<Sqlite, _>(value, buf),
            Self::Bytes(value) => put::<Sqlite, _>(value, buf),
            Self::Timestamp(value) => put::<Sqlite, _>(value.map(codec::sqlite_timestamp), buf),
            Self::Json(value) => put::<Sqlite, _>(value.as_ref().map(serde_json::Value::to_string), buf),
        }
    }
}

// === impl Encode for PostgreSQL ===

impl Type<Postgres> for Value {
    fn type_info() -> PgTypeInfo {
        // Never used: `produces` names each value's real type.
        <str as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Value {
    fn encode_by_ref(&self, buf: &mut <Postgres as sqlx::Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Uuid(value) => put::<Postgres, _>(value, buf),
            Self::Integer(value) => put::<Postgres, _>(value, buf),
            Self::Boolean(value) => put::<Postgres, _>(value, buf),
            Self::Text(value) | Self::Label { label: value, .. } => put::<Postgres, _>(value, buf),
            Self::Bytes(value) => put::<Postgres, _>(value, buf),
            Self::Timestamp(value) => put::<Postgres, _>(value, buf),
            Self::Json(value) => put::<Postgres, _>(value.as_ref().map(sqlx::types::Json), buf),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(match self {
            Self::Uuid(_) => <Uuid as Type<Postgres>>::type_info(),
            Self::Integer(_) => <i64 as Type<Postgres>>::type_info(),
            Self::Boolean(_) => <bool as Type<Postgres>>::type_info(),
            Self::Text(_) => <String as Type<Postgres>>::type_info(),
            Self::Bytes(_) => <Vec<u8> as Type<Postgres>>::type_info(),
            Self::Timestamp(_) => <OffsetDateTime as Type<Postgres>>::type_info(),
            Self::Json(_) => <sqlx::types::JsonValue as Type<Postgres>>::type_info(),
            Self::Label { type_name, .. } => PgTypeInfo::with_name(type_name),
        })
    }
}

// === Rows and scalars ===

/// A row type both backends can decode (a `#[derive(FromRow)]` struct whose fields decode on both).
pub(crate) trait Row: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

impl<T> Row for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

/// A single column value both backends can decode.
pub(crate) trait Scalar:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin
{
}

impl<T> Scalar for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin
{
}

// === Connections and transactions ===

/// How statements reach a PostgreSQL server.
#[derive(Debug, Clone, Default)]
pub(crate) enum Pooling {
    /// Each pooled connection is one server session: statements are prepared once per
    /// connection and cached, and the session's settings (the statement timeout, sent at
    /// connect) hold for everything it runs.
    #[default]
    Session,
    /// Behind PgBouncer in transaction mode: consecutive transactions of one connection may run
    /// on different server sessions. So nothing may rely on the session: statements are
    /// unnamed (prepared, bound and run inside one transaction), a statement outside a
    /// transaction gets a transaction of its own, and every transaction begins with this
    /// statement, which sets the statement timeout for that transaction only (`set local`).
    Transaction { begin: Arc<str> },
}

impl Pooling {
    /// Behind PgBouncer, every transaction begins with `set local statement_timeout`.
    pub(crate) fn transaction(statement_timeout: std::time::Duration) -> Self {
        let begin = format!("begin; set local statement_timeout = '{}ms'", statement_timeout.as_millis());
        Self::Transaction { begin: begin.into() }
    }
}

/// A pooled connection of either backend.
pub(crate) enum Connection {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>, Pooling),
}

/// A transaction of either backend, on a borrowed [`Connection`]. Dropped without
/// [`Transaction::commit`], it rolls back.
pub(crate) enum Transaction<'c> {
    Sqlite(sqlx::Transaction<'c, Sqlite>),
    Postgres(sqlx::Transaction<'c, Postgres>, bool),
}

/// The driver connection a statement runs on, and whether its statements may be kept prepared.
pub(crate) enum Raw<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection, bool),
}

/// Where an [`Executor`] runs a statement.
pub(crate) enum Target<'a> {
    /// On this connection as it is.
    Direct(Raw<'a>),
    /// In a transaction of its own, begun with this statement (behind PgBouncer).
    OwnTransaction(&'a mut PgConnection, Arc<str>),
}

/// The driver's arguments for `values`, in placeholder order.
fn arguments<DB: sqlx::Database>(values: Vec<Value>) -> Result<DB::Arguments, sqlx::Error>
where
    Value: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut arguments = DB::Arguments::default();
    for value in values {
        sqlx::Arguments::add(&mut arguments, value).map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

/// Runs `$body` with `$conn` bound to the driver connection, `$db` naming its database type and
/// `$persistent` saying whether the statement may stay prepared, wherever the executor runs it:
/// the body is written once and compiled for each backend (and for a transaction of its own).
macro_rules! run {
    ($executor:expr, |$conn:ident, $db:ident, $persistent:ident| $body:expr) => {
        match $executor.target() {
            Target::Direct(Raw::Sqlite($conn)) => {
                type $db = Sqlite;
                let $persistent = true;
                $body
            }
            Target::Direct(Raw::Postgres($conn, $persistent)) => {
                type $db = Postgres;
                $body
            }
            Target::OwnTransaction(connection, begin) => {
                let mut transaction = sqlx::Connection::begin_with(connection, AssertSqlSafe(begin)).await?;
                let result = {
                    type $db = Postgres;
                    let $conn: &mut PgConnection = &mut transaction;
                    let $persistent = false;
                    $body
                };
                match result {
                    Ok(value) => transaction.commit().await.map(|()| value),
                    Err(error) => {
                        // Now, so the server session goes back to PgBouncer's pool at once.
                        let _ = transaction.rollback().await;
                        Err(error)
                    }
                }
            }
        }
    };
}

impl Connection {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres(..) => Dialect::Postgres,
        }
    }

    /// A transaction that will write: SQLite begins it with `BEGIN IMMEDIATE`, taking the write
    /// lock up front, so a transaction that reads and then writes can never fail on lock upgrade
    /// (other writers wait up to the busy timeout instead); PostgreSQL begins it plainly (behind
    /// PgBouncer, with its statement timeout: see [`Pooling`]).
    pub(crate) async fn begin_write(&mut self) -> Result<Transaction<'_>, StoreError> {
        let begun = match self {
            Self::Sqlite(conn) => {
                sqlx::Connection::begin_with(&mut **conn, "begin immediate").await.map(Transaction::Sqlite)
            }
            Self::Postgres(conn, Pooling::Session) => {
                sqlx::Connection::begin(&mut **conn).await.map(|tx| Transaction::Postgres(tx, true))
            }
            Self::Postgres(conn, Pooling::Transaction { begin }) => {
                sqlx::Connection::begin_with(&mut **conn, AssertSqlSafe(Arc::clone(begin)))
                    .await
                    .map(|tx| Transaction::Postgres(tx, false))
            }
        };
        begun.context("failed to begin a write transaction").map_err(StoreError::other)
    }
}

impl Transaction<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres(..) => Dialect::Postgres,
        }
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        let committed = match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx, _) => tx.commit().await,
        };
        committed.context("failed to commit").map_err(StoreError::other)
    }

    /// Ends a transaction that found nothing to do, releasing its locks now rather than when the
    /// connection is next used.
    pub(crate) async fn roll_back(self) -> Result<(), StoreError> {
        let rolled_back = match self {
            Self::Sqlite(tx) => tx.rollback().await,
            Self::Postgres(tx, _) => tx.rollback().await,
        };
        rolled_back.context("failed to roll back").map_err(StoreError::other)
    }
}

/// What runs statements: a [`Connection`] or a [`Transaction`].
pub(crate) trait Executor: Send {
    fn target(&mut self) -> Target<'_>;

    /// Runs `statement`; returns the number of rows it affected.
    async fn execute(&mut self, statement: Statement) -> Result<u64, sqlx::Error> {
        let Statement { sql, args } = statement;
        run!(self, |conn, Db, persistent| {
            sqlx::query_with(AssertSqlSafe(sql), arguments::<Db>(args)?)
                .persistent(persistent)
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
        })
    }

    async fn fetch_all<R: Row>(&mut self, statement: Statement) -> Result<Vec<R>, sqlx::Error> {
        let Statement { sql, args } = statement;
        run!(self, |conn, Db, persistent| {
            sqlx::query_as_with(AssertSqlSafe(sql), arguments::<Db>(args)?).persistent(persistent).fetch_all(conn).await
        })
    }

    async fn fetch_optional<R: Row>(&mut self, statement: Statement) -> Result<Option<R>, sqlx::Error> {
        let Statement { sql, args } = statement;
        run!(self, |conn, Db, persistent| {
            sqlx::query_as_with(AssertSqlSafe(sql), arguments::<Db>(args)?)
                .persistent(persistent)
                .fetch_optional(conn)
                .await
        })
    }

    async fn fetch_one<R: Row>(&mut self, statement: Statement) -> Result<R, sqlx::Error> {
        self.fetch_optional(statement).await?.ok_or(sqlx::Error::RowNotFound)
    }

    async fn fetch_all_scalars<T: Scalar>(&mut self, statement: Statement) -> Result<Vec<T>, sqlx::Error> {
        let Statement { sql, args } = statement;
        run!(self, |conn, Db, persistent| {
            sqlx::query_scalar_with(AssertSqlSafe(sql), arguments::<Db>(args)?)
                .persistent(persistent)
                .fetch_all(conn)
                .await
        })
    }

    async fn fetch_optional_scalar<T: Scalar>(&mut self, statement: Statement) -> Result<Option<T>, sqlx::Error> {
        let Statement { sql, args } = statement;
        run!(self, |conn, Db, persistent| {
            sqlx::query_scalar_with(AssertSqlSafe(sql), arguments::<Db>(args)?)
                .persistent(persistent)
                .fetch_optional(conn)
                .await
        })
    }

    async fn fetch_scalar<T: Scalar>(&mut self, statement: Statement) -> Result<T, sqlx::Error> {
        self.fetch_optional_scalar(statement).await?.ok_or(sqlx::Error::RowNotFound)
    }
}

impl Executor for Connection {
    fn target(&mut self) -> Target<'_> {
        match self {
            Self::Sqlite(conn) => Target::Direct(Raw::Sqlite(conn)),
            Self::Postgres(conn, Pooling::Session) => Target::Direct(Raw::Postgres(conn, true)),
            Self::Postgres(conn, Pooling::Transaction { begin }) => Target::OwnTransaction(conn, Arc::clone(begin)),
        }
    }
}

impl Executor for Transaction<'_> {
    fn target(&mut self) -> Target<'_> {
        match self {
            Self::Sqlite(tx) => Target::Direct(Raw::Sqlite(tx)),
            Self::Postgres(tx, persistent) => Target::Direct(Raw::Postgres(tx, *persistent)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_statements_number_their_placeholders() {
        let mut statement = sql("select 1 from t where a = $1").bind(7_i64);
        statement.push(" and b = ").push_bind("x").push(" and c in ").push_list([1_i64, 2]);
        assert_eq!(statement.sql, "select 1 from t where a = $1 and b = $2 and c in ($3, $4)");
        assert_eq!(statement.args.len(), 4);
        let mut empty = sql("select 1 from t where c in ");
        empty.push_list(Vec::<i64>::new());
        assert_eq!(empty.sql, "select 1 from t where c in (null)");
        assert!(empty.args.is_empty());
    }
}
