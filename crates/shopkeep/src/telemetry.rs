//! Logs (JSON lines or human-readable, level from configuration) and the Prometheus recorder.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogConfig;

/// The log writer's worker: dropping it flushes what is buffered. Held until [`flush_logs`].
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);
/// Lines the writer dropped because its buffer was full.
static LOG_DROPS: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global log subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Calling it again (as tests do) keeps the first subscriber.
///
/// Lines are written to stdout by a thread of their own: a request formats its line and puts
/// it in a bounded buffer (`log.buffer_lines`), never waiting on stdout. When the buffer is
/// full (stdout slower than the logging), lines are dropped and counted
/// (`log_lines_dropped_total`) rather than slowing every request down.
pub fn init_logging(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info")));
    // The writer thread drains every queued line into this buffer and flushes it when the queue
    // is empty: one write to stdout per batch instead of one per line (stdout alone is line
    // buffered), and at most a batch old when the server is idle.
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let (writer, guard) =
        NonBlockingBuilder::default().buffered_lines_limit(config.buffer_lines).lossy(true).finish(stdout);
    let drops = writer.error_counter();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE).with_writer(writer);
    // The filter can be replaced while running (`PUT /admin/v1/log-level`).
    let (result, control) = if config.format == "human" {
        let builder = builder.compact().with_target(true).with_filter_reloading();
        let control = filter_control(builder.reload_handle());
        (builder.try_init(), control)
    } else {
        let builder = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .with_filter_reloading();
        let control = filter_control(builder.reload_handle());
        (builder.try_init(), control)
    };
    // Already installed (a second app in one test process): keep the first, and its writer.
    if result.is_ok() {
        *LOG_WRITER.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(guard);
        let _ = LOG_DROPS.set(drops);
        let _ = LOG_FILTER.set(control);
    }
}

use shop_api::{LogFilter, LogFilterControl};

static LOG_FILTER: OnceLock<LogFilterControl> = OnceLock::new();

/// The installed subscriber's filter, behind its reload handle.
struct ReloadableFilter<S> {
    handle: tracing_subscriber::reload::Handle<EnvFilter, S>,
}

impl<S: 'static> LogFilter for ReloadableFilter<S> {
    fn current(&self) -> Result<String, String> {
        self.handle.with_current(|filter| filter.to_string()).map_err(|error| error.to_string())
    }

    fn check(&self, directives: &str) -> Result<(), String> {
        EnvFilter::try_new(directives).map(drop).map_err(|error| error.to_string())
    }

    fn replace(&self, directives: &str) -> Result<String, String> {
        let filter = EnvFilter::try_new(directives).map_err(|error| error.to_string())?;
        self.handle.reload(filter).map_err(|error| error.to_string())?;
        self.current()
    }
}

fn filter_control<S: 'static>(handle: tracing_subscriber::reload::Handle<EnvFilter, S>) -> LogFilterControl
where
    tracing_subscriber::reload::Handle<EnvFilter, S>: Send + Sync,
{
    std::sync::Arc::new(ReloadableFilter { handle })
}

/// The live control of the log filter, once [`init_logging`] installed the subscriber.
pub fn log_filter_control() -> Option<LogFilterControl> {
    LOG_FILTER.get().cloned()
}

/// Writes out every buffered line and stops the writer; logging after this is lost. The last
/// thing a command does.
pub fn flush_logs() {
    let guard = LOG_WRITER.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    drop(guard);
}

/// Sets `log_lines_dropped_total` (read at scrape time).
pub fn publish_log_drops() {
    if let Some(drops) = LOG_DROPS.get() {
        metrics::counter!("log_lines_dropped_total").absolute(drops.dropped_lines() as u64);
    }
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds) for request and dependency histograms.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide Prometheus recorder, installed on first use. `None` if another recorder
/// was installed first (then the metrics endpoint says so).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    Some(handle)
                }
                Err(error) => {
                    tracing::error!(%error, "could not install the Prometheus recorder");
                    None
                }
            }
        })
        .clone()
}

/// Runs the recorder's housekeeping (histogram maintenance) until the token is cancelled.
pub async fn run_metrics_upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = interval.tick() => handle.run_upkeep(),
            () = stop.cancelled() => break,
        }
    }
}

fn describe_metrics() {
    metrics::describe_counter!("log_lines_dropped_total", "Log lines dropped because the writer's buffer was full");
    metrics::describe_counter!("http_requests_total", "HTTP requests by method, route template and status");
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    metrics::describe_gauge!("http_requests_in_flight", "HTTP requests being served");
    metrics::describe_counter!("http_requests_shed_total", "Requests refused by the in-flight limit");
    metrics::describe_gauge!("db_pool_connections", "Database pool connections by state (open, idle, waiting)");
    metrics::describe_gauge!("db_pool_max_connections", "Database pool size limit");
    metrics::describe_counter!("accounts_signups_total", "Accounts created by sign-up");
    metrics::describe_counter!("accounts_logins_total", "Login attempts by outcome (ok, failed)");
    metrics::describe_counter!("sessions_purged_total", "Expired sessions deleted by the purge task");
}
