//! A deliberately devious HTTP/TCP server (Release It! ch. 5, "Test Harnesses"): it fails the
//! ways real integration points fail — refusing, hanging, trickling, resetting, lying about
//! lengths, answering garbage, HTML or 5xx — so clients can be tested against each failure.
//! One mode for every request, or one per path; modes change while it runs, so a test can make
//! a dependency sick and then healthy again. It serves plain HTTP or, with a self-signed
//! certificate made at start, HTTPS; it keeps the heads of the last requests so a test can see
//! what reached it. Everything it does is logged.
//!
//! Beside it, a [`PaymentSandbox`]: a Stripe-like payment provider over HTTP with failure modes
//! of its own, which records every charge so a test can prove that nothing was charged twice, and
//! sends signed webhooks for what it creates, as a real provider does. And [`PgBouncer`]: the
//! real connection pooler, started in transaction mode in front of the test PostgreSQL server.
//! And [`RedisServer`]: a private Redis a test can kill and bring back; [`PostgresReplication`]:
//! a private PostgreSQL primary with a streaming replica made by `pg_basebackup`.

#![forbid(unsafe_code)]

mod payments;
mod pgbouncer;
mod postgres_replica;
mod redis_server;
mod requests;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use payments::{
    ChargeStatus, DeliveryAttempt, PaymentMode, PaymentSandbox, SandboxCharge, SandboxEvent, SandboxRefund,
    webhook_signature,
};
pub use pgbouncer::{PgBouncer, PgBouncerSettings};
pub use postgres_replica::PostgresReplication;
pub use redis_server::RedisServer;
pub use requests::{KEPT_REQUESTS, RecordedRequest};

use requests::Recorder;
use tls::Connection;

/// How the harness answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 with a small JSON body: a healthy dependency.
    Ok,
    /// Correct, but only after `delay`.
    Slow { delay: Duration },
    /// Accepts the connection and never reads from it.
    AcceptNeverRead,
    /// Reads the request and never answers.
    NeverRespond,
    /// Sends the status line and headers, then nothing.
    HeadersNoBody,
    /// A correct response, one byte every `interval`.
    Trickle { interval: Duration },
    /// Starts a response, then resets the connection (TCP RST).
    ResetMidResponse,
    /// Promises more body than it sends, then closes.
    WrongContentLength,
    /// Random bytes instead of HTTP.
    Garbage,
    /// 200 with an HTML page where JSON was promised.
    Html,
    /// An empty JSON body with this status (500, 503, …).
    Status(u16),
    /// 429 with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
}

impl Mode {
    /// Parses the names the command line uses: `ok`, `slow:500ms`, `trickle:1s`, `status:503`, …
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (name, argument) = raw.split_once(':').unwrap_or((raw, ""));
        let duration = |default: Duration| parse_duration(argument, default);
        Ok(match name {
            "ok" => Self::Ok,
            "slow" => Self::Slow { delay: duration(Duration::from_secs(2))? },
            "accept-never-read" => Self::AcceptNeverRead,
            "never-respond" => Self::NeverRespond,
            "headers-no-body" => Self::HeadersNoBody,
            "trickle" => Self::Trickle { interval: duration(Duration::from_secs(1))? },
            "reset" => Self::ResetMidResponse,
            "wrong-content-length" => Self::WrongContentLength,
            "garbage" => Self::Garbage,
            "html" => Self::Html,
            "status" => Self::Status(argument.parse().map_err(|_| format!("bad status {argument:?}"))?),
            "too-many-requests" => Self::TooManyRequests {
                retry_after_secs: if argument.is_empty() { 5 } else { argument.parse().map_err(|_| "bad seconds")? },
            },
            _ => {
                return Err(format!(
                    "unknown mode {name:?}: ok, slow:DUR, accept-never-read, never-respond, headers-no-body, \
                     trickle:DUR, reset, wrong-content-length, garbage, html, status:CODE, too-many-requests:SECS"
                ));
            }
        })
    }
}

/// Reads `500ms`, `2s` or `2` (seconds); `default` when `argument` is empty.
pub(crate) fn parse_duration(argument: &str, default: Duration) -> Result<Duration, String> {
    if argument.is_empty() {
        return Ok(default);
    }
    if let Some(ms) = argument.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| format!("bad duration {argument:?}"));
    }
    argument.trim_end_matches('s').parse().map(Duration::from_secs).map_err(|_| format!("bad duration {argument:?}"))
}

#[derive(Debug, Default)]
struct Modes {
    default: Option<Mode>,
    by_path: HashMap<String, Mode>,
}

/// What the accept loop and every connection share with the `Harness` handle.
#[derive(Debug, Default)]
struct Shared {
    modes: RwLock<Modes>,
    connections: AtomicU64,
    requests: Recorder,
}

/// A running harness. Dropping it stops accepting.
#[derive(Debug)]
pub struct Harness {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// The self-signed certificate, when serving TLS.
    certificate_pem: Option<String>,
    stop: watch::Sender<bool>,
}

impl Harness {
    /// Listens on `address` (port 0 for any) answering every request in `mode`, over plain HTTP.
    pub async fn start(address: SocketAddr, mode: Mode) -> std::io::Result<Self> {
        Self::listen(address, mode, false).await
    }

    /// Like [`Harness::start`], over TLS with a self-signed certificate made now for `localhost`,
    /// `127.0.0.1`, `::1` and `address`; a client trusts it through [`Harness::certificate_pem`].
    /// Accept-never-read holds the connection before the handshake; every other mode is played
    /// inside TLS.
    pub async fn start_tls(address: SocketAddr, mode: Mode) -> std::io::Result<Self> {
        Self::listen(address, mode, true).await
    }

    async fn listen(address: SocketAddr, mode: Mode, with_tls: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (acceptor, certificate_pem) = if with_tls {
            let self_signed = tls::self_signed(address)?;
            (Some(self_signed.acceptor), Some(self_signed.certificate_pem))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            modes: RwLock::new(Modes { default: Some(mode), by_path: HashMap::new() }),
            ..Shared::default()
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared), stopped));
        tracing::info!(%address, tls = with_tls, "harness listening");
        Ok(Self { address, shared, certificate_pem, stop })
    }

    /// An address where nothing listens: connecting is refused.
    pub async fn refusing_address() -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        drop(listener);
        Ok(address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDRESS{path}`, or `https://` when serving TLS.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.certificate_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
    }

    /// The PEM of the self-signed certificate when serving TLS, for clients to trust.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// Changes how every request without a path-specific mode is answered.
    pub fn set_mode(&self, mode: Mode) {
        tracing::info!(?mode, "harness mode changed");
        self.shared.modes.write().unwrap_or_else(|poisoned| poisoned.into_inner()).default = Some(mode);
    }

    /// Answers requests for exactly `path` in `mode`.
    pub fn set_path_mode(&self, path: &str, mode: Mode) {
        tracing::info!(path, ?mode, "harness path mode changed");
        self.shared
            .modes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .by_path
            .insert(path.to_owned(), mode);
    }

    /// Connections accepted so far (TCP: a failed TLS handshake counts too).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The last [`KEPT_REQUESTS`] requests whose head was read, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.snapshot()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(connection(stream, peer, acceptor.clone(), Arc::clone(&shared)));
                }
                Err(error) => tracing::warn!(%error, "harness accept failed"),
            },
            _ = stopped.changed() => return,
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    if current_mode(&shared.modes, None) == Mode::AcceptNeverRead {
        tracing::info!(%peer, "accept-never-read: holding the connection without reading");
        std::future::pending::<()>().await;
    }
    let result = match acceptor {
        None => serve(stream, peer, &shared).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve(stream, peer, &shared).await,
            Err(error) => {
                tracing::info!(%peer, %error, "harness TLS handshake failed");
                return;
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "harness connection ended");
    }
}

fn current_mode(modes: &RwLock<Modes>, path: Option<&str>) -> Mode {
    let modes = modes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    path.and_then(|path| modes.by_path.get(path).cloned()).or_else(|| modes.default.clone()).unwrap_or(Mode::Ok)
}

/// Reads one request's head (and its body, if it has a Content-Length).
async fn read_request(stream: &mut impl Connection) -> std::io::Result<Option<RecordedRequest>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]);
    let Some(request) = RecordedRequest::parse_head(&head) else { return Ok(None) };
    let mut remaining = request.content_length().saturating_sub(buffer.len() - head_end);
    while remaining > 0 {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        remaining = remaining.saturating_sub(read);
    }
    Ok(Some(request))
}

fn response(status: u16, reason: &str, content_type: &str, body: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

const OK_BODY: &str = r#"{"status":"ok","source":"harness"}"#;

async fn serve(mut stream: impl Connection, peer: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await? else { return Ok(()) };
    let mode = current_mode(&shared.modes, Some(&request.path));
    let (method, path, headers) = (request.method.as_str(), request.path.as_str(), request.headers.len());
    tracing::info!(%peer, method, path, headers, ?mode, "harness answering");
    shared.requests.record(request);
    match mode {
        Mode::Ok => stream.write_all(response(200, "OK", "application/json", OK_BODY, "").as_bytes()).await?,
        Mode::Slow { delay } => {
            tokio::time::sleep(delay).await;
            stream.write_all(response(200, "OK", "application/json", OK_BODY, "").as_bytes()).await?;
        }
        Mode::AcceptNeverRead | Mode::NeverRespond => std::future::pending::<()>().await,
        Mode::HeadersNoBody => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            std::future::pending::<()>().await;
        }
        Mode::Trickle { interval } => {
            for byte in response(200, "OK", "application/json", OK_BODY, "").bytes() {
                stream.write_all(&[byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(interval).await;
            }
        }
        Mode::ResetMidResponse => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\":";
            stream.write_all(head.as_bytes()).await?;
            stream.flush().await?;
            // Linger 0: closing sends RST instead of FIN.
            stream.tcp().set_zero_linger()?;
            drop(stream);
        }
        Mode::WrongContentLength => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\nconnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(OK_BODY.as_bytes()).await?;
            stream.shutdown().await?;
        }
        Mode::Garbage => {
            let mut noise = vec![0u8; 512];
            rand::rng().fill_bytes(&mut noise);
            stream.write_all(&noise).await?;
            stream.shutdown().await?;
        }
        Mode::Html => {
            let page = "<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>";
            stream.write_all(response(200, "OK", "text/html", page, "").as_bytes()).await?;
        }
        Mode::Status(status) => {
            let body = format!(r#"{{"status":{status},"source":"harness"}}"#);
            stream.write_all(response(status, "Harness", "application/json", &body, "").as_bytes()).await?;
        }
        Mode::TooManyRequests { retry_after_secs } => {
            let extra = format!("retry-after: {retry_after_secs}\r\n");
            let body = r#"{"error":"slow down"}"#;
            stream.write_all(response(429, "Too Many Requests", "application/json", body, &extra).as_bytes()).await?;
        }
    }
    Ok(())
}
