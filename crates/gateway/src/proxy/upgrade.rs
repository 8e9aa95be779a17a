//! Upgrade passthrough (WebSocket and any other `Upgrade:` protocol over HTTP/1.1): the
//! request goes to one backend with its `Connection: upgrade` and `Upgrade` kept, and when the
//! backend answers 101 the two connections are joined byte for byte until either side closes or
//! the gateway stops. Never retried; the tunnel counts as a request in flight, so a drain waits
//! for it.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{Failure, error_chain, hash_key, problem, upstream_headers, upstream_request};
use crate::backend::InFlight;
use crate::body::Holds;
use crate::body::{self, ProxyBody};
use crate::pool::Outcome;

/// Whether the client asks to switch protocols: `Connection` names `upgrade` and `Upgrade`
/// says to what.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Puts back the two headers an upgrade needs after the hop-by-hop ones were stripped.
pub fn restore_upgrade_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// Joins the client's and the backend's upgraded connections once both are ready.
pub fn tunnel(client: OnUpgrade, backend: OnUpgrade, in_flight: InFlight, stop: CancellationToken) {
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "an upgrade did not complete");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                if let Err(error) = copied {
                    tracing::debug!(%error, "an upgraded connection ended with an error");
                }
            }
            () = stop.cancelled() => tracing::debug!("an upgraded connection closed: the gateway stops"),
        }
    });
}

/// Takes the client's pending upgrade out of its request.
pub fn take_client_upgrade<B>(request: &mut Request<B>) -> OnUpgrade {
    hyper::upgrade::on(request)
}

/// Takes the backend's pending upgrade out of its 101 answer.
pub fn take_backend_upgrade(response: &mut Response<hyper::body::Incoming>) -> Option<OnUpgrade> {
    (response.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(response))
}

/// The 101 for the client: the backend's headers with the upgrade pair kept.
pub fn switching_protocols(response: &Response<hyper::body::Incoming>) -> Response<ProxyBody> {
    let mut answer = Response::new(crate::body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = answer.headers_mut();
    for (name, value) in response.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.append(name, value.clone());
        }
    }
    answer
}

// === impl Proxy ===

impl super::Proxy {
    /// An upgrade request (WebSocket…): one backend, no retry; on 101 the connections are
    /// joined, otherwise the answer is passed on as any other.
    pub(super) async fn forward_upgrade(
        &self,
        client: &super::UpstreamClient,
        parts: http::request::Parts,
        client_upgrade: hyper::upgrade::OnUpgrade,
        (peer, scheme): (SocketAddr, &'static str),
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        if let Some(refused) = self.limit_client(peer, request_id) {
            return refused;
        }
        let key = self.pool.balancer().wants_key().then(|| hash_key(&self.hash_key, &parts.headers, peer.ip()));
        let Some(backend) = self.pool.pick(key.as_deref(), &[]) else {
            self.metrics.no_backend.increment(1);
            return problem(StatusCode::SERVICE_UNAVAILABLE, "no backend can take the request", request_id, Some(1));
        };
        let mut headers = upstream_headers(&parts, peer.ip(), scheme);
        if let Some(protocol) = parts.headers.get(header::UPGRADE) {
            restore_upgrade_headers(&mut headers, protocol.clone());
        }
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let upstream = match upstream_request(&parts.method, &backend, path, headers, body::empty()) {
            Ok(upstream) => upstream,
            Err(detail) => return problem(StatusCode::BAD_REQUEST, detail, request_id, None),
        };
        let in_flight = backend.start_request();
        let sent = Instant::now();
        let result = tokio::time::timeout(self.first_byte_timeout, client.request(upstream)).await;
        let (elapsed, now, decay) = (sent.elapsed(), self.pool.now(), self.pool.policy().ewma_decay);
        match result {
            Ok(Ok(mut response)) => {
                backend.count_response(response.status());
                match take_backend_upgrade(&mut response) {
                    Some(backend_upgrade) => {
                        backend.observe_latency(elapsed, now, decay);
                        self.pool.record(&backend, Outcome::Success);
                        let answer = switching_protocols(&response);
                        tunnel(client_upgrade, backend_upgrade, in_flight, self.stop.clone());
                        answer
                    }
                    None => {
                        let deadline = Instant::now() + self.total_timeout;
                        self.stream_back(
                            response,
                            Holds { in_flight, permit: None, report: None },
                            &backend,
                            request_id,
                            deadline,
                        )
                    }
                }
            }
            Ok(Err(error)) => {
                let failure = if error.is_connect() { Failure::Refused } else { Failure::Broken };
                tracing::warn!(backend = backend.name(), error = %error_chain(&error), "upstream upgrade failed");
                self.charge_failure(&backend, failure, false, elapsed, now, decay);
                problem(failure.status(), failure.detail(), request_id, None)
            }
            Err(_) => {
                self.charge_failure(&backend, Failure::TimedOut, false, elapsed, now, decay);
                problem(Failure::TimedOut.status(), Failure::TimedOut.detail(), request_id, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_needs_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade(&headers));
        headers.remove(header::UPGRADE);
        assert!(!is_upgrade(&headers));
    }
}
