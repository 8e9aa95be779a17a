//! Random bearer secrets (session ids, API tokens) and the hashes under which they are stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A freshly generated secret: 256 bits from a CSPRNG, URL-safe base64.
/// It is shown to its owner once; only its [`SecretHash`] is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Generates a secret, optionally with a readable prefix (e.g. `skp_` for API tokens).
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        // `rand::rng()` is a CSPRNG (ChaCha) seeded from the operating system.
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Wraps a secret presented by a client (cookie or header) so it can be hashed for lookup.
    pub fn from_presented(raw: &str) -> Option<Self> {
        // Anything longer than any secret we issue cannot be one; refuse before hashing.
        if raw.is_empty() || raw.len() > 128 {
            return None;
        }
        Some(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken([redacted])")
    }
}

/// SHA-256 of a secret. A fast hash is right here: the secret has 256 bits of entropy, so
/// unlike a password it cannot be guessed from its hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SecretHash(pub [u8; 32]);

impl crate::cache::Weigh for SecretHash {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl SecretHash {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_unique_and_hash_stably() {
        let first = SecretToken::generate("skp_");
        let second = SecretToken::generate("skp_");
        assert_ne!(first, second);
        assert!(first.expose().starts_with("skp_"));
        assert_eq!(first.expose().len(), 4 + 43);
        assert_eq!(
            first.hash(),
            SecretToken::from_presented(first.expose()).map(|t| t.hash()).unwrap_or(SecretHash([0; 32]))
        );
        assert!(!format!("{first:?}").contains(&first.expose()[4..]));
    }

    #[test]
    fn absurd_presented_values_are_refused() {
        assert!(SecretToken::from_presented("").is_none());
        assert!(SecretToken::from_presented(&"a".repeat(129)).is_none());
    }
}
