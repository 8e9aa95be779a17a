//! `cargo run -p harness -- --mode trickle:1s --listen 127.0.0.1:7070` for manual game days;
//! add `--tls` to serve HTTPS with a self-signed certificate, printed at start for clients to trust.

use std::net::SocketAddr;

use clap::Parser;
use harness::{Harness, Mode};

/// A deliberately devious upstream server.
#[derive(Debug, Parser)]
#[command(name = "harness", version, about)]
struct Cli {
    /// ok, slow:DUR, accept-never-read, never-respond, headers-no-body, trickle:DUR, reset,
    /// wrong-content-length, garbage, html, status:CODE, too-many-requests:SECS
    #[arg(long, default_value = "ok", value_parser = Mode::parse)]
    mode: Mode,
    /// Per-path modes, e.g. `--path /v1/charges=status:503` (repeatable).
    #[arg(long = "path", value_name = "PATH=MODE")]
    paths: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate made at start; its PEM is printed to stdout
    /// (e.g. for `curl --cacert`).
    #[arg(long)]
    tls: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").compact().init();
    let cli = Cli::parse();
    let harness = if cli.tls {
        Harness::start_tls(cli.listen, cli.mode).await?
    } else {
        Harness::start(cli.listen, cli.mode).await?
    };
    for entry in &cli.paths {
        let (path, mode) =
            entry.split_once('=').ok_or_else(|| anyhow::anyhow!("--path wants PATH=MODE, got {entry:?}"))?;
        harness.set_path_mode(path, Mode::parse(mode).map_err(anyhow::Error::msg)?);
    }
    println!("harness listening on {}", harness.url(""));
    if let Some(certificate) = harness.certificate_pem() {
        println!("its self-signed certificate:\n{certificate}");
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
