//! What the tests that run the real `shopkeep` binary as separate processes share.

use std::path::Path;

use tokio::process::Command;

/// `shopkeep --config CONFIG …` on `database_url`, with no inherited log filter or admin
/// password, killed if the test drops it.
pub fn shopkeep(config: &Path, database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopkeep"));
    command
        .env_remove("RUST_LOG")
        .env_remove("SHOPKEEP_ADMIN_PASSWORD")
        .env("DATABASE_URL", database_url)
        .arg("--config")
        .arg(config)
        .kill_on_drop(true);
    command
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
