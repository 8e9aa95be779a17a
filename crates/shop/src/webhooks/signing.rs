//! Signing secrets and the `Shopkeep-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`
//! over `"{t}.{raw body}"`, so a receiver can check both origin and freshness.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::secrets::SecretToken;

/// An endpoint's signing secret: `whsec_` and 32 random bytes (URL-safe base64). Stored in
/// plain text (the shop must be able to sign with it); shown to the admin only when created or
/// rotated; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    /// A fresh secret: a [`SecretToken`] (256 bits from a CSPRNG) with the `whsec_` prefix.
    pub fn generate() -> Self {
        Self(SecretToken::generate(Self::PREFIX).expose().to_owned())
    }

    /// A secret read back from storage.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// The `Shopkeep-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature_header(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it total anyway.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return format!("t={timestamp},v1=");
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_redacted() {
        let first = WebhookSecret::generate();
        let second = WebhookSecret::generate();
        assert_ne!(first, second);
        assert!(first.expose().starts_with("whsec_"));
        assert_eq!(first.expose().len(), 6 + 43);
        assert!(!format!("{first:?}").contains(&first.expose()[6..]));
    }

    #[test]
    fn signatures_match_a_known_vector() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_test'
        let secret = WebhookSecret::from_stored("whsec_test".into());
        let header = signature_header(&secret, 1_700_000_000, br#"{"a":1}"#);
        let expected = {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
            mac.update(br#"1700000000.{"a":1}"#);
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_ne!(signature_header(&secret, 1_700_000_001, br#"{"a":1}"#), header, "the time is signed");
    }
}
