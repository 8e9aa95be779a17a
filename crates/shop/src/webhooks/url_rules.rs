//! Which URLs an endpoint may have: absolute `https://` (or `http://` when allowed), no
//! credentials, and — unless private networks are allowed — no loopback, private, link-local or
//! otherwise non-public IP literal. Host names are checked again at delivery time, after DNS
//! resolution (see the README: a DNS-rebinding window remains between that check and the
//! connection).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::model::MAX_URL_LEN;

/// What the configuration allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    /// `http://` as well as `https://` (tests, local development).
    pub allow_insecure: bool,
    /// Loopback, private and link-local addresses (tests, an intranet).
    pub allow_private_networks: bool,
}

/// Validates an endpoint URL; the normalised URL or why not.
pub fn parse_endpoint_url(raw: &str, policy: UrlPolicy) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("is required".into());
    }
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute URL like https://example.com/hooks".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure => {}
        _ if policy.allow_insecure => return Err("must be an http:// or https:// URL".into()),
        _ => return Err("must be an https:// URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@)".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment (#…)".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(domain)) => {
            if !policy.allow_private_networks && (domain == "localhost" || domain.ends_with(".localhost")) {
                return Err("must not point to this machine (localhost)".into());
            }
            None
        }
        Some(url::Host::Ipv4(address)) => Some(IpAddr::V4(address)),
        Some(url::Host::Ipv6(address)) => Some(IpAddr::V6(address)),
        None => return Err("must name a host".into()),
    };
    if let Some(address) = host
        && !policy.allow_private_networks
        && !is_public_address(address)
    {
        return Err("must not point to a loopback, private or link-local address".into());
    }
    Ok(url.to_string())
}

/// Whether an address is globally routable: not loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast, broadcast, documentation, unique-local, or an IPv6 range that embeds
/// an IPv4 address (IPv4-mapped ones are judged by that address; NAT64, 6to4 and
/// IPv4-compatible are refused).
pub fn is_public_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    !(address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15, benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

/// Ranges that embed or translate to an IPv4 address (NAT64, 6to4, IPv4-compatible) are not
/// public: the IPv4 address they reach may be internal, and a gateway on our network would
/// carry the request there.
fn is_public_v6(address: Ipv6Addr) -> bool {
    let segments = address.segments();
    let first = segments[0];
    !(address.is_loopback()
        || address.is_unspecified()
        || address.is_multicast()
        // ::/96, IPv4-compatible (deprecated; `::` and `::1` are in it too).
        || segments[..6] == [0; 6]
        // 64:ff9b::/96, NAT64 well-known prefix.
        || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        // 64:ff9b:1::/48, NAT64 local-use prefix.
        || segments[..3] == [0x64, 0xff9b, 1]
        // 2002::/16, 6to4.
        || first == 0x2002
        // fc00::/7, unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation.
        || (first == 0x2001 && address.segments()[1] == 0x0db8))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: UrlPolicy = UrlPolicy { allow_insecure: false, allow_private_networks: false };

    #[test]
    fn only_public_https_urls_pass_the_strict_policy() {
        assert_eq!(parse_endpoint_url("https://hooks.example.com/x", STRICT).unwrap(), "https://hooks.example.com/x");
        for bad in [
            "",
            "hooks.example.com",
            "/relative",
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://user@hooks.example.com/",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://192.168.0.1/",
            "https://172.16.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://localhost/",
            "https://hooks.example.com/#fragment",
            // IPv4 literals in decimal, hexadecimal and octal: the url crate reads them as
            // 127.0.0.1, so they are refused like it.
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0x7f000001/",
            "https://017700000001/",
            "https://0177.0.0.1/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://[::127.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
            "https://[64:ff9b:1::a00:1]/",
            "https://[2002:a00:1::1]/",
        ] {
            assert!(parse_endpoint_url(bad, STRICT).is_err(), "{bad:?} accepted");
        }
        assert!(parse_endpoint_url(&format!("https://a.example/{}", "x".repeat(MAX_URL_LEN)), STRICT).is_err());
    }

    #[test]
    fn the_relaxed_policy_allows_http_and_private_addresses_but_never_credentials() {
        let relaxed = UrlPolicy { allow_insecure: true, allow_private_networks: true };
        assert!(parse_endpoint_url("http://127.0.0.1:8080/hook", relaxed).is_ok());
        assert!(parse_endpoint_url("http://localhost/hook", relaxed).is_ok());
        assert!(parse_endpoint_url("http://u:p@127.0.0.1/hook", relaxed).is_err());
        assert!(parse_endpoint_url("ftp://127.0.0.1/hook", relaxed).is_err());
    }

    #[test]
    fn public_addresses_are_recognised() {
        assert!(is_public_address("93.184.216.34".parse().unwrap()));
        assert!(is_public_address("2606:4700::1111".parse().unwrap()));
        assert!(!is_public_address("127.0.0.53".parse().unwrap()));
        assert!(!is_public_address("::ffff:10.0.0.1".parse().unwrap()));
        assert!(is_public_address("::ffff:93.184.216.34".parse().unwrap()), "IPv4-mapped: by its address");
        for embedding in ["::10.0.0.1", "::93.184.216.34", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::1"] {
            assert!(!is_public_address(embedding.parse().unwrap()), "{embedding} is public");
        }
    }
}
