//! Test helpers: a real SMTP server (`scripts/smtp_sink.py` on aiosmtpd, one process per test)
//! and a small reader of the `.eml` files it writes, decoding what lettre may have encoded.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use base64::Engine as _;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The interpreter of the virtualenv that `scripts/services` creates with aiosmtpd.
fn python() -> PathBuf {
    let python = Path::new(REPO).join(".venv-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/services, which creates the .venv-tools virtualenv with aiosmtpd \
         (the real SMTP server these tests talk to)",
        python.display()
    );
    python
}

/// A running `smtp_sink.py`, killed when dropped.
pub struct SmtpSink {
    child: Child,
    port: u16,
    directory: tempfile::TempDir,
    stderr: PathBuf,
    connections: Arc<Sessions>,
}

/// The number of sessions the sink has reported, and a signal for each new one.
#[derive(Default)]
struct Sessions {
    count: Mutex<usize>,
    changed: Condvar,
}

impl SmtpSink {
    /// A sink that accepts everything, on a free port.
    pub fn start() -> Self {
        Self::spawn(0, None)
    }

    /// A sink that answers every RCPT and DATA with `code`.
    pub fn rejecting(code: u16) -> Self {
        Self::spawn(0, Some(code))
    }

    /// A sink that accepts everything, on `port` (a server coming back where it was).
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, None)
    }

    fn spawn(port: u16, reject: Option<u16>) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let stderr = directory.path().join("sink.stderr");
        let mut command = Command::new(python());
        command
            .arg(Path::new(REPO).join("scripts/smtp_sink.py"))
            .arg("--directory")
            .arg(directory.path().join("mail"))
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if let Some(code) = reject {
            command.arg("--reject").arg(code.to_string());
        }
        let mut child = command.spawn().expect("failed to start scripts/smtp_sink.py");
        let stdout = child.stdout.take().unwrap();
        let connections = Arc::new(Sessions::default());
        let (port_sender, port_receiver) = mpsc::channel();
        let counter = Arc::clone(&connections);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("listening on ") {
                    let _ = port_sender.send(port.trim().parse::<u16>().unwrap());
                } else if line == "connection" {
                    *counter.count.lock().unwrap() += 1;
                    counter.changed.notify_all();
                }
            }
        });
        let port = match port_receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the SMTP sink did not start: {}", read(&stderr));
            }
        };
        Self { child, port, directory, stderr, connections }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// SMTP sessions opened so far (reported by the sink as they start).
    pub fn connections(&self) -> usize {
        *self.connections.count.lock().unwrap()
    }

    /// Waits until the sink has reported `count` sessions; panics after a few seconds.
    pub fn wait_for_connections(&self, count: usize) {
        let seen = self.connections.count.lock().unwrap();
        let (seen, timeout) =
            self.connections.changed.wait_timeout_while(seen, Duration::from_secs(10), |seen| *seen < count).unwrap();
        assert!(!timeout.timed_out(), "the sink reported {} connections, expected {count}", *seen);
    }

    /// Opens and closes one connection of the test's own: once the sink has reported it, every
    /// connection opened before it has been reported too (the server accepts in order).
    pub fn mark(&self) -> usize {
        let before = self.connections();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut greeting = [0u8; 3];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"220");
        drop(stream);
        self.wait_for_connections(before + 1);
        self.connections()
    }

    /// The messages received so far, oldest first. The sink writes each one (atomically) before
    /// it says 250, so a send that returned `Ok` has its file here.
    pub fn messages(&self) -> Vec<Eml> {
        let Ok(entries) = std::fs::read_dir(self.directory.path().join("mail")) else { return Vec::new() };
        let mut paths: Vec<PathBuf> = entries
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
            .collect();
        paths.sort();
        paths.iter().map(|path| Eml::parse(&read(path))).collect()
    }

    pub fn stderr(&self) -> String {
        read(&self.stderr)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

/// A port on which nothing listens (bound once, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A log writer for `tracing_subscriber` that keeps everything in memory.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Makes this the current thread's subscriber (DEBUG and up) until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// === impl Eml ===

/// A received message: unfolded headers (encoded words decoded) and the raw body.
#[derive(Debug)]
pub struct Eml {
    headers: Vec<(String, String)>,
    body: String,
}

/// One part of a multipart body, its content decoded.
#[derive(Debug)]
pub struct EmlPart {
    pub content_type: String,
    pub content: String,
}

impl Eml {
    pub fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
        Self { headers: parse_headers(head), body: body.to_owned() }
    }

    /// The first header of that name (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.clone())
    }

    /// The parts of a multipart body (one level deep).
    pub fn parts(&self) -> Vec<EmlPart> {
        let content_type = self.header("Content-Type").expect("no Content-Type header");
        let boundary = parameter(&content_type, "boundary").expect("a multipart body without a boundary");
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        for chunk in self.body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
            let (head, content) = chunk.split_once("\n\n").unwrap_or((chunk, ""));
            let headers = parse_headers(head);
            let get = |name: &str| {
                headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.clone())
            };
            // The line break before the next delimiter belongs to the delimiter.
            let content = content.strip_suffix('\n').unwrap_or(content);
            let encoding = get("Content-Transfer-Encoding").unwrap_or_else(|| "7bit".into()).to_ascii_lowercase();
            let content = match encoding.as_str() {
                "base64" => {
                    let compact: String = content.chars().filter(|c| !c.is_whitespace()).collect();
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(compact).unwrap()).unwrap()
                }
                "quoted-printable" => decode_quoted_printable(content),
                _ => content.to_owned(),
            };
            parts.push(EmlPart { content_type: get("Content-Type").unwrap_or_default(), content });
        }
        parts
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    headers.into_iter().map(|(name, value)| (name, decode_encoded_words(&value))).collect()
}

fn parameter(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|parameter| {
        let (key, value) = parameter.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); whitespace between two of them
/// is dropped, as the RFC says.
fn decode_encoded_words(value: &str) -> String {
    let mut output = String::new();
    let mut rest = value;
    let mut previous_was_word = false;
    while let Some(start) = rest.find("=?") {
        let Some((word, after)) = encoded_word(&rest[start..]) else {
            output.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            previous_was_word = false;
            continue;
        };
        let between = &rest[..start];
        if !(previous_was_word && between.trim().is_empty()) {
            output.push_str(between);
        }
        output.push_str(&word);
        rest = after;
        previous_was_word = true;
    }
    output.push_str(rest);
    output
}

fn encoded_word(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let (payload, after) = (&inner[..end], &inner[end + 2..]);
    assert!(charset.eq_ignore_ascii_case("utf-8"), "unexpected charset {charset}");
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD.decode(payload).ok()?,
        "q" | "Q" => decode_quoted_printable(&payload.replace('_', " ")).into_bytes(),
        _ => return None,
    };
    Some((String::from_utf8(bytes).ok()?, after))
}

fn decode_quoted_printable(text: &str) -> String {
    let mut bytes = Vec::new();
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches([' ', '\t']);
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line, false),
        };
        let raw = line.as_bytes();
        let mut index = 0;
        while index < raw.len() {
            if raw[index] == b'=' && index + 2 < raw.len() {
                let hex = std::str::from_utf8(&raw[index + 1..index + 3]).unwrap();
                bytes.push(u8::from_str_radix(hex, 16).unwrap());
                index += 3;
            } else {
                bytes.push(raw[index]);
                index += 1;
            }
        }
        if !soft_break && lines.peek().is_some() {
            bytes.push(b'\n');
        }
    }
    String::from_utf8(bytes).unwrap()
}
