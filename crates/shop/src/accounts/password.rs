//! Passwords: the length and common-password rules, and Argon2id hashing on a bounded pool.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::{OnceCell, Semaphore};

const MIN_CHARS: usize = 12;
const MAX_CHARS: usize = 128;

/// Common passwords of 12+ characters shipped with the code (see the file's header for its source).
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// A password as typed by its owner, checked against the rules. Never printed.
#[derive(Clone)]
pub struct PasswordPlain(String);

impl PasswordPlain {
    /// Applies the rules for a new password: 12–128 characters and not a well-known password.
    pub fn parse_new(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if !(MIN_CHARS..=MAX_CHARS).contains(&chars) {
            return Err(format!("must be between {MIN_CHARS} and {MAX_CHARS} characters"));
        }
        if COMMON_PASSWORDS.contains(raw.to_lowercase().as_str()) {
            return Err("is too common; choose a less predictable password".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// Wraps a password offered at login. Only the upper bound applies, so that old passwords
    /// made under other rules still work and huge inputs never reach the hasher.
    pub fn parse_offered(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > MAX_CHARS {
            return Err("invalid password".into());
        }
        Ok(Self(raw.to_owned()))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for PasswordPlain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordPlain([redacted])")
    }
}

/// Hashes and verifies passwords with Argon2id at OWASP's parameters (19 MiB, t=2, p=1).
///
/// Each hash costs tens of milliseconds of CPU, so it runs on tokio's blocking pool and at most
/// `max_concurrent` run at once: a login flood queues here instead of starving the runtime.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    pub fn new(max_concurrent: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent.max(1))), dummy_hash: Arc::default() }
    }

    /// Whether `stored` is a password hash at all (PHC format). Guests and external-only
    /// accounts store a marker instead, against which nothing verifies.
    pub fn is_hash(stored: &str) -> bool {
        stored.starts_with('$')
    }

    /// Returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    pub async fn hash(&self, password: &PasswordPlain) -> Result<String, HashError> {
        let password = password.clone();
        self.run_blocking(move || {
            Argon2::default().hash_password(password.as_bytes()).map(|hash| hash.to_string()).map_err(HashError::new)
        })
        .await
    }

    /// Whether `password` matches `stored`. A malformed stored hash counts as no match.
    pub async fn verify(&self, password: &PasswordPlain, stored: &str) -> Result<bool, HashError> {
        let password = password.clone();
        let stored = stored.to_owned();
        self.run_blocking(move || Ok(Argon2::default().verify_password(password.as_bytes(), stored.as_str()).is_ok()))
            .await
    }

    /// Computes the dummy hash now, so that even the first login with an unknown email costs
    /// exactly one verification.
    pub async fn warm_up(&self) -> Result<(), HashError> {
        self.dummy().await.map(|_| ())
    }

    async fn dummy(&self) -> Result<String, HashError> {
        self.dummy_hash
            .get_or_try_init(|| async {
                let filler = PasswordPlain("dummy password for timing equalisation".into());
                self.hash(&filler).await
            })
            .await
            .cloned()
    }

    /// Spends the same effort as a real verification, for logins with an unknown email, so that
    /// response time does not reveal whether an account exists.
    pub async fn verify_dummy(&self, password: &PasswordPlain) -> Result<(), HashError> {
        let dummy = self.dummy().await?;
        self.verify(password, &dummy).await.map(|_| ())
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        // The permit moves into the blocking task: if the caller gives up (timeout, client gone),
        // the hash still runs to completion and keeps its slot until then.
        let permit = Arc::clone(&self.permits).acquire_owned().await.map_err(HashError::new)?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(HashError::new)?
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher").field("available_permits", &self.permits.available_permits()).finish()
    }
}

/// Hashing failed (the blocking pool went away, or the hasher rejected its input).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl HashError {
    fn new(error: impl fmt::Display) -> Self {
        Self(error.to_string())
    }
}

impl From<HashError> for crate::Error {
    fn from(error: HashError) -> Self {
        crate::Error::Internal(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules_count_characters() {
        assert!(PasswordPlain::parse_new("short").is_err());
        assert!(PasswordPlain::parse_new(&"x".repeat(129)).is_err());
        assert!(PasswordPlain::parse_new("ééééééééééé").is_err(), "11 characters, 22 bytes");
        assert!(PasswordPlain::parse_new("correct horse battery").is_ok());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        assert!(PasswordPlain::parse_new("qwerty123456").is_err());
        assert!(PasswordPlain::parse_new("QWERTY123456").is_err());
        assert!(COMMON_PASSWORDS.len() > 100);
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(2);
        let password = PasswordPlain::parse_new("a perfectly fine password").unwrap_or_else(|e| panic!("{e}"));
        let hash = hasher.hash(&password).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify(&password, &hash).await.unwrap_or(false));
        let wrong = PasswordPlain::parse_offered("another password!").unwrap_or_else(|e| panic!("{e}"));
        assert!(!hasher.verify(&wrong, &hash).await.unwrap_or(true));
        assert!(!hasher.verify(&password, "not a phc string").await.unwrap_or(true));
        assert!(hasher.verify_dummy(&wrong).await.is_ok());
    }
}
