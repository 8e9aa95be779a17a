//! The test PostgreSQL server: fresh databases on it, dropped when a test ends.

#![allow(dead_code)]

use store_sqlx::provisioning;

/// `SHOPKEEP_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn server_url() -> String {
    std::env::var("SHOPKEEP_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops the test database when the test ends.
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let url = std::mem::take(&mut self.0);
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(provisioning::drop_database(&url))
        })
        .join();
    }
}

pub fn url_with_database(server: &str, database: &str) -> String {
    match server.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.len() > "postgres://".len() => format!("{base}/{database}"),
        _ => format!("{server}/{database}"),
    }
}
