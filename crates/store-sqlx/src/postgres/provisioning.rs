//! Creating and dropping whole databases: used by `shopkeep migrate` on a fresh server and by
//! tests that want a database of their own.

use std::str::FromStr;

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Creates the database named in `url` if it does not exist yet; returns whether it was created.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<bool> {
    let (maintenance, name) = maintenance_options(url)?;
    let mut conn = maintenance.connect().await.context("failed to connect to the PostgreSQL server")?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .context("failed to look up the database")?;
    if !exists {
        // Identifiers cannot be bound as parameters; quote the name instead.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {}", quote_identifier(&name))))
            .execute(&mut conn)
            .await
            .with_context(|| format!("failed to create database {name}"))?;
    }
    conn.close().await.ok();
    Ok(!exists)
}

/// Drops the database named in `url`, disconnecting anyone still using it.
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let (maintenance, name) = maintenance_options(url)?;
    let mut conn = maintenance.connect().await.context("failed to connect to the PostgreSQL server")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database if exists {} with (force)", quote_identifier(&name))))
        .execute(&mut conn)
        .await
        .with_context(|| format!("failed to drop database {name}"))?;
    conn.close().await.ok();
    Ok(())
}

/// Options for the server's `postgres` database, and the database name `url` points at.
fn maintenance_options(url: &str) -> anyhow::Result<(PgConnectOptions, String)> {
    let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL database URL")?;
    let name = options.get_database().context("the PostgreSQL URL names no database")?.to_owned();
    Ok((options.database("postgres"), name))
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_identifier;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("shop"), "\"shop\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
