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

use crate::backend::InFlight;
use crate::body::ProxyBody;

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
