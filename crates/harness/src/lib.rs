//! A deliberately devious HTTP/TCP server (Release It! ch. 5, "Test Harnesses"): it fails the
//! ways real integration points fail — refusing, hanging, trickling, resetting, lying about
//! lengths, answering garbage, HTML or 5xx — so clients can be tested against each failure.
//! One mode for every request, or one per path; modes change while it runs, so a test can make
//! a dependency sick and then healthy again. Everything it does is logged.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
        let duration = |default: Duration| -> Result<Duration, String> {
            if argument.is_empty() {
                return Ok(default);
            }
            if let Some(ms) = argument.strip_suffix("ms") {
                return ms.parse().map(Duration::from_millis).map_err(|_| format!("bad duration {argument:?}"));
            }
            argument
                .trim_end_matches('s')
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| format!("bad duration {argument:?}"))
        };
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

#[derive(Debug, Default)]
struct Modes {
    default: Option<Mode>,
    by_path: HashMap<String, Mode>,
}

/// A running harness. Dropping it stops accepting.
#[derive(Debug)]
pub struct Harness {
    address: SocketAddr,
    modes: Arc<RwLock<Modes>>,
    connections: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl Harness {
    /// Listens on `address` (port 0 for any) answering every request in `mode`.
    pub async fn start(address: SocketAddr, mode: Mode) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let modes = Arc::new(RwLock::new(Modes { default: Some(mode), by_path: HashMap::new() }));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::clone(&modes), Arc::clone(&connections), stopped));
        tracing::info!(%address, "harness listening");
        Ok(Self { address, modes, connections, stop })
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Changes how every request without a path-specific mode is answered.
    pub fn set_mode(&self, mode: Mode) {
        tracing::info!(?mode, "harness mode changed");
        self.modes.write().unwrap_or_else(|poisoned| poisoned.into_inner()).default = Some(mode);
    }

    /// Answers requests for exactly `path` in `mode`.
    pub fn set_path_mode(&self, path: &str, mode: Mode) {
        tracing::info!(path, ?mode, "harness path mode changed");
        self.modes.write().unwrap_or_else(|poisoned| poisoned.into_inner()).by_path.insert(path.to_owned(), mode);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    modes: Arc<RwLock<Modes>>,
    connections: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let modes = Arc::clone(&modes);
                    tokio::spawn(async move {
                        if let Err(error) = serve(stream, peer, modes).await {
                            tracing::debug!(%peer, %error, "harness connection ended");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "harness accept failed"),
            },
            _ = stopped.changed() => return,
        }
    }
}

fn current_mode(modes: &RwLock<Modes>, path: Option<&str>) -> Mode {
    let modes = modes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    path.and_then(|path| modes.by_path.get(path).cloned()).or_else(|| modes.default.clone()).unwrap_or(Mode::Ok)
}

/// Reads one request's head (and its body, if it has a Content-Length); returns the path.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
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
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).map(|target| target.split('?').next().unwrap_or(target).to_owned());
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut remaining = length.saturating_sub(buffer.len() - head_end);
    while remaining > 0 {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        remaining = remaining.saturating_sub(read);
    }
    Ok(path)
}

fn response(status: u16, reason: &str, content_type: &str, body: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

const OK_BODY: &str = r#"{"status":"ok","source":"harness"}"#;

async fn serve(mut stream: TcpStream, peer: SocketAddr, modes: Arc<RwLock<Modes>>) -> std::io::Result<()> {
    if current_mode(&modes, None) == Mode::AcceptNeverRead {
        tracing::info!(%peer, "accept-never-read: holding the connection without reading");
        std::future::pending::<()>().await;
    }
    let Some(path) = read_request(&mut stream).await? else { return Ok(()) };
    let mode = current_mode(&modes, Some(&path));
    tracing::info!(%peer, path, ?mode, "harness answering");
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
            stream.set_zero_linger()?;
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
