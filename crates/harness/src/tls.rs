//! TLS for the harness: a self-signed certificate made at start, served with rustls and ring.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A freshly made certificate and the acceptor that serves it.
pub(crate) struct SelfSigned {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) certificate_pem: String,
}

/// Makes a self-signed certificate for `localhost`, the loopback addresses and the address the
/// harness listens on, so a client may use any of them in its URL.
pub(crate) fn self_signed(address: SocketAddr) -> std::io::Result<SelfSigned> {
    let mut names = vec!["localhost".to_owned(), Ipv4Addr::LOCALHOST.to_string(), Ipv6Addr::LOCALHOST.to_string()];
    let ip = address.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .map_err(std::io::Error::other)?;
    // The harness speaks HTTP/1.1 only; saying so keeps clients from choosing HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SelfSigned { acceptor: TlsAcceptor::from(Arc::new(config)), certificate_pem: generated.cert.pem() })
}

/// A byte stream the harness answers on, plain or TLS, with the TCP socket underneath reachable
/// for tricks below HTTP (a reset).
pub(crate) trait Connection: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Connection for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Connection for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}
