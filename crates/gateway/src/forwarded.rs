//! Header rewriting at the edge: hop-by-hop headers stripped both ways (RFC 9110 §7.6.1),
//! `X-Forwarded-For/Proto/Host` and `Forwarded` (RFC 7239) set for the backend, and an
//! `X-Request-ID` kept when the client sent a sane one or made here when not.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message, and so never cross a proxy.
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Headers a client cannot make hop-by-hop by naming them in `Connection`: the gateway itself
/// needs them end to end.
fn protected(name: &HeaderName) -> bool {
    name == header::HOST || name == X_REQUEST_ID || name == header::CONTENT_LENGTH
}

/// Removes the hop-by-hop headers and every header the `Connection` header names (except the
/// few the gateway relies on: `Host`, `X-Request-ID`, `Content-Length`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .filter(|name| !protected(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
}

/// Tells the backend who asked and how: appends the client to `X-Forwarded-For` and
/// `Forwarded`, and sets `X-Forwarded-Proto` and `X-Forwarded-Host` (the gateway is the edge,
/// so a client's own claims of those two are replaced, not trusted).
pub fn add_forwarding(headers: &mut HeaderMap, client: IpAddr, proto: &'static str, host: Option<&HeaderValue>) {
    let client_text = client.to_string();
    append_list(headers, &X_FORWARDED_FOR, &client_text);
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.remove(&X_FORWARDED_HOST);
    let host_text = host.and_then(|host| host.to_str().ok());
    if let Some(host) = host
        && host_text.is_some()
    {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    let node = match client {
        IpAddr::V4(_) => client_text,
        IpAddr::V6(_) => format!("\"[{client_text}]\""),
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(host) = host_text {
        element.push_str(";host=");
        element.push_str(&quoted(host));
    }
    append_list(headers, &header::FORWARDED, &element);
}

/// A `Forwarded` value as a token if it is one, else as a quoted string.
fn quoted(value: &str) -> String {
    let is_token =
        !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if is_token { value.to_owned() } else { format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")) }
}

/// Joins a list-valued header's lines and the new element with ", " into one line.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, element: &str) {
    let mut joined: Vec<&str> = headers.get_all(name).iter().filter_map(|value| value.to_str().ok()).collect();
    joined.push(element);
    match HeaderValue::try_from(joined.join(", ")) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            if let Ok(value) = HeaderValue::try_from(element) {
                headers.insert(name, value);
            }
        }
    }
}

/// The request's id: the client's if it is 1–128 visible ASCII characters, else a new UUID v7.
/// Either way it is set on `headers`.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(&X_REQUEST_ID)
        && (1..=128).contains(&given.len())
        && given.as_bytes().iter().all(|byte| byte.is_ascii_graphic())
    {
        return given.clone();
    }
    let made =
        HeaderValue::try_from(uuid::Uuid::now_v7().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    headers.insert(&X_REQUEST_ID, made.clone());
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::try_from(*name).unwrap(), HeaderValue::try_from(*value).unwrap());
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1, "{map:?}");
        assert!(map.contains_key("accept"));
    }

    #[test]
    fn connection_cannot_strip_the_host_or_the_request_id() {
        let mut map =
            headers(&[("connection", "host, x-request-id"), ("host", "shop.example"), ("x-request-id", "r1")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map["host"], "shop.example");
        assert_eq!(map["x-request-id"], "r1");
    }

    #[test]
    fn forwarding_headers_append_the_client_and_replace_proto_and_host_claims() {
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let host = HeaderValue::from_static("shop.example:8000");
        add_forwarding(&mut map, "192.0.2.7".parse().unwrap(), "http", Some(&host));
        assert_eq!(map["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "shop.example:8000");
        assert_eq!(map["forwarded"], "for=192.0.2.7;proto=http;host=\"shop.example:8000\"");
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let mut map = headers(&[("forwarded", "for=198.51.100.1")]);
        add_forwarding(&mut map, "2001:db8::1".parse().unwrap(), "https", None);
        assert_eq!(map["forwarded"], "for=198.51.100.1, for=\"[2001:db8::1]\";proto=https");
        assert!(!map.contains_key("x-forwarded-host"));
    }

    #[test]
    fn a_sane_request_id_is_kept_and_a_bad_one_replaced() {
        let mut kept = headers(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut kept), "abc-123");
        let mut replaced = headers(&[("x-request-id", &"x".repeat(200))]);
        let made = ensure_request_id(&mut replaced);
        assert_eq!(made.len(), 36);
        assert_eq!(replaced["x-request-id"], made);
    }
}
