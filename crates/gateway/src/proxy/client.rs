//! The client the gateway reaches backends with: hyper-util's pooled client over hyper-rustls,
//! so a backend is plain HTTP or HTTPS (web roots plus an optional private CA), one per worker.

use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::config::{GatewayConfig, millis};

/// The client the gateway reaches backends with (health checks too): plain HTTP, or HTTPS for
/// backends with `tls = true`.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// The TLS settings for backends reached over HTTPS: the web's roots plus `upstream_ca_file`,
/// ring, TLS 1.2/1.3, HTTP/1.1. Built once at start, so a bad CA file stops the gateway there.
pub fn upstream_tls(config: &GatewayConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.upstream_ca_file {
        let pem = std::fs::read(path).with_context(|| format!("upstream_ca_file: cannot read {path}"))?;
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate = certificate.map_err(|error| anyhow::anyhow!("upstream_ca_file: {path}: {error}"))?;
            roots
                .add(certificate)
                .with_context(|| format!("upstream_ca_file: {path} holds a certificate that cannot be used"))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "upstream_ca_file: {path} holds no PEM certificate");
    }
    // No ALPN here: the connector sets it (http/1.1) and refuses a config that has one.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS to the backends")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// Builds the keep-alive client: connect timeout, no Nagle, bounded idle connections.
pub fn upstream_client(config: &GatewayConfig, tls: &Arc<rustls::ClientConfig>) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(millis(config.timeouts.connect_ms)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls::ClientConfig::clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(millis(config.timeouts.keep_alive_ms))
        .pool_max_idle_per_host(config.limits.max_idle_per_backend)
        .build(connector)
}
