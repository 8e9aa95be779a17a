//! `shopkeep gateway`: runs the gateway crate's L7 proxy with the binary's logging, metrics and
//! signals, and `shopkeep gateway backends …`, the client of a running gateway's admin listener.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gateway::{Gateway, GatewayConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::{BackendsCommand, GatewayCommand};
use crate::config::LogConfig;
use crate::control::{AdminClient, field_rows, items, print_table, urlencoding};
use crate::{EXIT_CONFIG, EXIT_FAILURE, signal_shutdown, telemetry};

/// What the command line says about the gateway.
#[derive(Debug)]
pub struct GatewayOptions {
    pub config: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub admin_listen: Option<std::net::SocketAddr>,
    pub check: bool,
}

pub async fn run(options: GatewayOptions, command: Option<GatewayCommand>) -> ExitCode {
    let config = match load(&options) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = LogConfig { level: config.log.level.clone(), format: config.log.format.clone(), ..LogConfig::default() };
    let mut problems = config.check().err().map(|errors| errors.0).unwrap_or_default();
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&log.level) {
        problems.push(format!("log.level: {:?} is not a valid filter: {error}", log.level));
    }
    if !problems.is_empty() {
        eprint!("{}", gateway::ConfigErrors(problems));
        return ExitCode::from(EXIT_CONFIG);
    }
    if options.check {
        print!("{}", config.to_redacted_json());
        eprintln!("gateway configuration is valid");
        return ExitCode::SUCCESS;
    }
    let result = match command {
        None => {
            telemetry::init_logging(&log);
            serve(config, options).await
        }
        Some(GatewayCommand::Backends { command }) => backends(&config, command).await,
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "shopkeep gateway failed");
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    };
    telemetry::flush_logs();
    code
}

/// The file (if any) and the environment, with the command line's overrides on top.
fn load(options: &GatewayOptions) -> Result<GatewayConfig, gateway::ConfigErrors> {
    let mut config = GatewayConfig::load(options.config.as_deref())?;
    if let Some(listen) = options.listen {
        config.listen = listen.to_string();
    }
    if let Some(admin_listen) = options.admin_listen {
        config.admin_listen = admin_listen.to_string();
    }
    Ok(config)
}

async fn serve(config: GatewayConfig, options: GatewayOptions) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let metrics = telemetry::prometheus();
    if let Some(handle) = metrics.clone() {
        tokio::spawn(telemetry::run_metrics_upkeep(handle, shutdown.clone()));
    }
    let gateway = Gateway::build(config, metrics).await?;
    tokio::spawn(reload_on_sighup(gateway.reloader(), options, shutdown.clone()));
    tracing::info!(port = gateway.port(), admin_port = gateway.admin_port(), "gateway ready");
    gateway.run_until_stopped(shutdown).await
}

/// SIGHUP: read the configuration again and apply its pool; a bad file is logged and changes
/// nothing.
async fn reload_on_sighup(reloader: gateway::reload::Reloader, options: GatewayOptions, stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP: reload by restarting");
                return;
            }
        };
        loop {
            tokio::select! {
                received = hangups.recv() => if received.is_none() { return },
                () = stop.cancelled() => return,
            }
            tracing::info!(signal = "SIGHUP", "reloading the gateway configuration");
            match load(&options).map(|config| reloader.apply(config)) {
                Ok(Ok(report)) if !report.needs_restart.is_empty() => {
                    tracing::warn!(keys = ?report.needs_restart, "changed settings that take effect only on a restart");
                }
                Ok(Ok(_)) => {}
                Ok(Err(errors)) | Err(errors) => {
                    tracing::error!(problems = ?errors.0, "the new configuration is invalid: nothing changed");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, options, stop);
    }
}

/// The admin client of the gateway this configuration describes, or of
/// `SHOPKEEP_GATEWAY_ADMIN_URL`.
fn admin_client(config: &GatewayConfig) -> anyhow::Result<AdminClient> {
    let base = match std::env::var("SHOPKEEP_GATEWAY_ADMIN_URL") {
        Ok(url) => url,
        Err(_) => {
            let mut address = config.admin_address().map_err(anyhow::Error::msg)?;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{address}")
        }
    };
    let token = config.admin_token.as_ref().map(|token| token.expose().to_owned());
    // A drain may wait up to an hour on the server; the client waits a little longer.
    AdminClient::new(&base, token, Duration::from_secs(3_700))
}

/// `30s`, `500ms`, `2m`, `1h` or a bare number of seconds, in milliseconds.
fn parse_duration_ms(raw: &str) -> anyhow::Result<u64> {
    let raw = raw.trim();
    let (number, unit_ms) = if let Some(ms) = raw.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(secs) = raw.strip_suffix('s') {
        (secs, 1_000)
    } else if let Some(minutes) = raw.strip_suffix('m') {
        (minutes, 60_000)
    } else if let Some(hours) = raw.strip_suffix('h') {
        (hours, 3_600_000)
    } else {
        (raw, 1_000)
    };
    let count: u64 =
        number.trim().parse().map_err(|_| anyhow::anyhow!("{raw:?} is not a duration like 30s, 500ms or 5m"))?;
    Ok(count.saturating_mul(unit_ms))
}

fn backend_rows(backends: &[Value]) -> Vec<Vec<String>> {
    field_rows(
        backends,
        &["name", "address", "weight", "effective_weight", "health", "draining", "ejected", "in_flight", "latency_ms"],
    )
}

const BACKEND_HEADER: [&str; 9] =
    ["NAME", "ADDRESS", "WEIGHT", "EFFECTIVE", "HEALTH", "DRAINING", "EJECTED", "IN FLIGHT", "LATENCY MS"];

fn print_backends(backends: &[Value]) {
    print_table(&BACKEND_HEADER, &backend_rows(backends));
}

async fn backends(config: &GatewayConfig, command: BackendsCommand) -> anyhow::Result<()> {
    let client = admin_client(config)?;
    let path = |name: &str, action: &str| format!("/admin/v1/backends/{}{action}", urlencoding(name));
    let wait_query = |wait: Option<&str>| -> anyhow::Result<String> {
        Ok(match wait {
            Some(wait) => format!("?timeout_ms={}", parse_duration_ms(wait)?),
            None => String::new(),
        })
    };
    let answer = match command {
        BackendsCommand::List => {
            let answer = client.call(Method::GET, "/admin/v1/backends", None, None).await?;
            print_backends(&items(&answer.body, "backends"));
            return Ok(());
        }
        BackendsCommand::Add { name, address, weight } => {
            let body = json!({ "name": name, "address": address, "weight": weight });
            client.call(Method::POST, "/admin/v1/backends", Some(&body), None).await?
        }
        BackendsCommand::Remove { name, wait } => {
            let target = format!("{}{}", path(&name, ""), wait_query(wait.as_deref())?);
            client.call(Method::DELETE, &target, None, None).await?
        }
        BackendsCommand::Weight { name, weight, over } => {
            let over_ms = over.as_deref().map(parse_duration_ms).transpose()?.unwrap_or(0);
            let body = json!({ "weight": weight, "over_ms": over_ms });
            client.call(Method::PUT, &path(&name, "/weight"), Some(&body), None).await?
        }
        BackendsCommand::Drain { name, wait } => {
            let target = format!("{}{}", path(&name, "/drain"), wait_query(wait.as_deref())?);
            client.call(Method::POST, &target, None, None).await?
        }
        BackendsCommand::Undrain { name } => client.call(Method::POST, &path(&name, "/undrain"), None, None).await?,
    };
    print_backends(std::slice::from_ref(&answer.body));
    if answer.body.get("drained") == Some(&Value::Bool(false)) {
        anyhow::bail!("requests were still in flight when the wait ran out");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("30s").unwrap(), 30_000);
        assert_eq!(parse_duration_ms("5m").unwrap(), 300_000);
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("7").unwrap(), 7_000);
        assert!(parse_duration_ms("soon").is_err());
    }
}
