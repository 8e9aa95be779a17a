//! The public listener over TLS: TCP connections accepted in a task of their own, each
//! handshake (with `server-tls`'s timeout, the gateway's code path) in its own task, and the
//! finished TLS streams handed to axum — so a slow handshake never holds the accept loop.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Handshaken connections waiting for axum to take them; beyond, handshakes wait.
const WAITING: usize = 256;

/// A listener that yields TLS streams.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` until `stop` (or until the listener is dropped).
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor, stop: CancellationToken) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (sender, incoming) = mpsc::channel(WAITING);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                    () = stop.cancelled() => return,
                    () = sender.closed() => return,
                };
                let _ = stream.set_nodelay(true);
                let (sender, acceptor) = (sender.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match server_tls::handshake(&acceptor, stream).await {
                        Ok(tls) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    }
                });
            }
        });
        Ok(Self { incoming, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accept task has stopped: no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
