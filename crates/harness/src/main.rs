//! `cargo run -p harness -- --mode trickle:1s --listen 127.0.0.1:7070` for manual game days;
//! add `--tls` to serve HTTPS with a self-signed certificate, printed at start for clients to trust.
//! `cargo run -p harness -- payments --mode decline` runs the payment sandbox instead; add
//! `--webhook-url URL --webhook-secret SECRET` to have it send signed webhooks.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use harness::{Harness, Mode, PaymentMode, PaymentSandbox};

/// A deliberately devious upstream server.
#[derive(Debug, Parser)]
#[command(name = "harness", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// A Stripe-like payment provider sandbox with failure modes.
    Payments(PaymentsArgs),
}

#[derive(Debug, Args)]
struct PaymentsArgs {
    /// approve, decline, slow:DUR, hang, status:CODE, garbage, charge-then-fail, charge-then-hang
    #[arg(long, default_value = "approve", value_parser = PaymentMode::parse)]
    mode: PaymentMode,
    /// The API secret clients send as `Authorization: Bearer SECRET`.
    #[arg(long, env = "HARNESS_PAYMENTS_SECRET", default_value = DEFAULT_SECRET, hide_env_values = true)]
    secret: String,
    /// Port 0 picks a free port; the address is printed.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to POST signed webhook events, e.g.
    /// `http://127.0.0.1:8080/api/v1/payment-webhooks/provider` (with `--webhook-secret`).
    #[arg(long, value_name = "URL", requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// The secret webhook events are signed with (with `--webhook-url`).
    #[arg(long, value_name = "SECRET", requires = "webhook_url")]
    webhook_secret: Option<String>,
}

const DEFAULT_SECRET: &str = "sk_test_sandbox";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").compact().init();
    let cli = Cli::parse();
    if let Some(Command::Payments(payments)) = cli.command {
        return run_payment_sandbox(payments).await;
    }
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

async fn run_payment_sandbox(args: PaymentsArgs) -> anyhow::Result<()> {
    let sandbox = PaymentSandbox::start_on(args.listen, &args.secret, args.mode).await?;
    let url = sandbox.url();
    // Only the well-known default is echoed; a secret of one's own stays off the terminal.
    let secret = if args.secret == DEFAULT_SECRET { DEFAULT_SECRET } else { "$HARNESS_PAYMENTS_SECRET" };
    println!("payment sandbox listening on {url} (mode {})", sandbox.mode());
    if let (Some(webhook_url), Some(webhook_secret)) = (args.webhook_url, args.webhook_secret) {
        println!("sending signed webhooks to {webhook_url}");
        sandbox.set_webhooks(webhook_url, webhook_secret);
    }
    println!(
        "\ncharge:  curl -H 'Authorization: Bearer {secret}' -H 'Idempotency-Key: key-1' \\\n\
         \x20          -d '{{\"amount\":1299,\"currency\":\"eur\",\"order_id\":\"order-1\"}}' {url}/v1/payment_intents\n\
         refund:  curl -H 'Authorization: Bearer {secret}' -H 'Idempotency-Key: key-2' \\\n\
         \x20          -d '{{\"payment_intent\":\"pi_...\",\"amount\":1299}}' {url}/v1/refunds\n\
         \ncontrol (no auth):\n\
         \x20 curl -X PUT -d '{{\"mode\":\"charge-then-fail\"}}' {url}/sandbox/mode\n\
         \x20     modes: approve, decline, slow:DUR, hang, status:CODE, garbage, charge-then-fail, charge-then-hang\n\
         \x20 curl {url}/sandbox/mode\n\
         \x20 curl {url}/sandbox/charges\n\
         \x20 curl {url}/sandbox/refunds\n\
         \x20 curl -X POST {url}/sandbox/reset\n\
         \x20 curl -X PUT -d '{{\"url\":\"http://127.0.0.1:8080/api/v1/payment-webhooks/provider\",\"secret\":\"whsec_...\"}}' {url}/sandbox/webhooks\n\
         \x20 curl -X DELETE {url}/sandbox/webhooks\n\
         \x20 curl {url}/sandbox/events"
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
