//! The SMTP server's URL: `smtp://[user:pass@]host[:port][?starttls=required]` or
//! `smtps://[user:pass@]host[:port]`, parsed strictly so that a typo never sends mail in plain
//! text where encryption was meant.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::smtp::SmtpConfigError;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// `smtp://`: plain text (a relay on the same host or a private network).
    None,
    /// `smtp://…?starttls=required`: plain connection upgraded with STARTTLS; refusing to go on
    /// when the server does not offer it.
    StartTls,
    /// `smtps://`: TLS from the first byte (port 465).
    ImplicitTls,
}

/// A parsed SMTP URL. Its `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) credentials: Option<(String, String)>,
}

/// The port of plain SMTP and of STARTTLS when the URL names none.
const SMTP_PORT: u16 = 25;
/// The port of implicit TLS (submissions) when the URL names none.
const SMTPS_PORT: u16 = 465;

impl Endpoint {
    pub(crate) fn parse(raw: &str) -> Result<Self, SmtpConfigError> {
        let invalid = |detail: String| SmtpConfigError::Url(detail);
        // The parser's own errors never quote the input, so no password can leak through them.
        let url = url::Url::parse(raw).map_err(|error| invalid(format!("not a URL: {error}")))?;
        let implicit_tls = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => return Err(invalid(format!("the scheme must be smtp or smtps, not {other:?}"))),
        };
        let host = match url.host() {
            Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => address.to_string(),
            _ => return Err(invalid("the URL names no host".into())),
        };
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(invalid("the URL may hold no path and no fragment".into()));
        }
        let mut starttls = false;
        for (name, value) in url.query_pairs() {
            match (name.as_ref(), value.as_ref()) {
                ("starttls", "required") if !implicit_tls => starttls = true,
                ("starttls", _) if implicit_tls => {
                    return Err(invalid("smtps:// is TLS from the start; starttls does not apply".into()));
                }
                ("starttls", other) => {
                    return Err(invalid(format!("starttls takes only the value \"required\", not {other:?}")));
                }
                (other, _) => {
                    return Err(invalid(format!(
                        "unknown URL parameter {other:?} (the only one is starttls=required)"
                    )));
                }
            }
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(invalid("the URL has a password but no user name".into())),
            (user, password) => Some((decode(user, "user name")?, decode(password.unwrap_or(""), "password")?)),
        };
        let security = match (implicit_tls, starttls) {
            (true, _) => Security::ImplicitTls,
            (false, true) => Security::StartTls,
            (false, false) => Security::None,
        };
        let port = url.port().unwrap_or(if implicit_tls { SMTPS_PORT } else { SMTP_PORT });
        Ok(Self { host, port, security, credentials })
    }
}

fn decode(raw: &str, what: &str) -> Result<String, SmtpConfigError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| SmtpConfigError::Url(format!("the {what} is not UTF-8 once percent-decoded")))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.security == Security::ImplicitTls { "smtps" } else { "smtp" };
        let user = self.credentials.as_ref().map_or(String::new(), |(user, _)| format!("{user}:***@"));
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let query = if self.security == Security::StartTls { "?starttls=required" } else { "" };
        write!(f, "{scheme}://{user}{host}:{}{query}", self.port)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_kinds_of_url() {
        let plain = Endpoint::parse("smtp://mail.internal").unwrap();
        assert_eq!((plain.host.as_str(), plain.port, plain.security), ("mail.internal", 25, Security::None));
        assert_eq!(plain.credentials, None);

        let starttls = Endpoint::parse("smtp://shop:s%40cret@smtp.example.com:587?starttls=required").unwrap();
        assert_eq!((starttls.port, starttls.security), (587, Security::StartTls));
        assert_eq!(starttls.credentials, Some(("shop".into(), "s@cret".into())));

        let implicit = Endpoint::parse("smtps://shop:pw@smtp.example.com").unwrap();
        assert_eq!((implicit.port, implicit.security), (465, Security::ImplicitTls));

        let literal = Endpoint::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((literal.host.as_str(), literal.port), ("127.0.0.1", 2525));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for url in [
            "http://smtp.example.com",
            "smtp://",
            "smtp://smtp.example.com/path",
            "smtp://smtp.example.com?tls=required",
            "smtp://smtp.example.com?starttls=opportunistic",
            "smtps://smtp.example.com?starttls=required",
            "smtp://:password@smtp.example.com",
            "not a url",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn never_shows_the_password() {
        let endpoint = Endpoint::parse("smtp://shop:hunter2@smtp.example.com:587?starttls=required").unwrap();
        assert_eq!(endpoint.to_string(), "smtp://shop:***@smtp.example.com:587?starttls=required");
        assert!(!format!("{endpoint:?}").contains("hunter2"));
        let error = Endpoint::parse("smtp://shop:hunter2@smtp.example.com?tls=on").unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
    }
}
