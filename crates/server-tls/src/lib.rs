//! TLS termination for Shopkeep's listeners, shared by `serve` and `shopkeep gateway`: a PEM
//! certificate chain and private key read from files, TLS 1.2 and 1.3 only (rustls with ring),
//! ALPN `h2` and `http/1.1`, and the pair reloaded while running — when the files change (polled)
//! or when asked (SIGHUP) — without dropping a connection; a broken new pair is logged and the
//! old one kept. Handshakes run in the connection's own task with a timeout, never in the
//! accept loop, so a slow client cannot hold the door.

#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the key in {path} cannot sign: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {certificate}")]
    Mismatch { certificate: PathBuf, key: PathBuf },
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

/// A certificate chain and key in use, reloadable.
pub struct Certificates {
    certificate_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    /// The files' modification times at the last load, to notice a change.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

/// Hands rustls whichever pair is current.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok()
}

/// Reads and checks a pair: the chain, a key that can sign, and that they belong together.
fn read_pair(certificate_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source });
    let certificate_pem = read(certificate_file)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&certificate_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: certificate_file.to_owned() });
    }
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: key_file.to_owned() })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::BadKey { path: key_file.to_owned(), reason: error.to_string() })?;
    let pair = CertifiedKey::new(chain, signing_key);
    pair.keys_match()
        .map_err(|_| TlsError::Mismatch { certificate: certificate_file.to_owned(), key: key_file.to_owned() })?;
    Ok(pair)
}

impl Certificates {
    /// Loads the pair and builds the server configuration; any problem is an error now, at
    /// start, rather than at the first handshake.
    pub fn load(certificate_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let pair = read_pair(certificate_file, key_file)?;
        let resolver = Arc::new(Resolver { current: ArcSwap::from_pointee(pair) });
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|error| TlsError::Config(error.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            certificate_file: certificate_file.to_owned(),
            key_file: key_file.to_owned(),
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            loaded: Mutex::new((modified(certificate_file), modified(key_file))),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the files again and, if they hold a good pair, serves it to new handshakes;
    /// otherwise keeps the current one and says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (modified(&self.certificate_file), modified(&self.key_file));
        let pair = read_pair(&self.certificate_file, &self.key_file)?;
        self.resolver.current.store(Arc::new(pair));
        *self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = stamps;
        tracing::info!(certificate = %self.certificate_file.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Whether either file changed since the last load.
    fn changed(&self) -> bool {
        let now = (modified(&self.certificate_file), modified(&self.key_file));
        *self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) != now
    }

    /// Polls the files every `interval` and reloads when they change, until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            if self.changed()
                && let Err(error) = self.reload()
            {
                // A half-written renewal is common (the key written before the chain): the old
                // pair stays until the files agree again.
                tracing::warn!(%error, "TLS certificate files changed but cannot be used; keeping the current pair");
                *self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    (modified(&self.certificate_file), modified(&self.key_file));
            }
        }
    }
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("certificate_file", &self.certificate_file).finish_non_exhaustive()
    }
}

/// Completes a server handshake within [`HANDSHAKE_TIMEOUT`].
pub async fn handshake<S>(acceptor: &TlsAcceptor, stream: S) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(directory: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (certificate, key) = (directory.join("cert.pem"), directory.join("key.pem"));
        std::fs::write(&certificate, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (certificate, key)
    }

    #[test]
    fn a_good_pair_loads_and_bad_files_are_named() {
        let directory = tempfile::tempdir().unwrap();
        let (certificate, key) = write_pair(directory.path(), "localhost");
        Certificates::load(&certificate, &key).unwrap();

        let missing = directory.path().join("missing.pem");
        let error = Certificates::load(&missing, &key).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"));

        std::fs::write(directory.path().join("empty.pem"), "not pem").unwrap();
        let error = Certificates::load(&directory.path().join("empty.pem"), &key).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        let error = Certificates::load(&certificate, &directory.path().join("empty.pem")).unwrap_err();
        assert!(matches!(error, TlsError::NoKey { .. }), "{error}");

        // Another certificate's key does not match.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path(), "elsewhere");
        let error = Certificates::load(&certificate, &other_key).unwrap_err();
        assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_broken_renewal_keeps_the_current_pair_and_a_good_one_replaces_it() {
        let directory = tempfile::tempdir().unwrap();
        let (certificate, key) = write_pair(directory.path(), "localhost");
        let certificates = Certificates::load(&certificate, &key).unwrap();
        let before = certificates.resolver.current.load_full();
        std::fs::write(&certificate, "garbage").unwrap();
        assert!(certificates.reload().is_err());
        assert!(Arc::ptr_eq(&before, &certificates.resolver.current.load_full()), "the old pair stays");
        write_pair(directory.path(), "localhost");
        certificates.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &certificates.resolver.current.load_full()), "the new pair is served");
    }
}
