//! Entry point: parse the command line and run.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than the system allocator: under load the server's many small, short-lived
/// allocations (headers, log lines, futures) spent about a fifth of its CPU time in glibc's
/// malloc and free (see bench/catalog.sh and ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    shopkeep::run(shopkeep::cli::Cli::parse()).await
}
