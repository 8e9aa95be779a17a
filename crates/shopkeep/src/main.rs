//! Entry point: parse the command line and run.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    shopkeep::run(shopkeep::cli::Cli::parse()).await
}
