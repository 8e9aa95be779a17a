//! Email addresses, normalised (trimmed, lowercased) and syntactically validated.

use std::fmt;

/// A normalised, plausibly deliverable email address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Trims and lowercases, then checks the shape `local@domain.tld` within RFC 5321 lengths.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("is required".into());
        }
        if email.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("must be an email address like name@example.com".into());
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err("must be an email address like name@example.com".into());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A form safe for logs: first character of the local part and the domain (`a***@example.com`).
    pub fn redacted(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".into(),
        }
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        assert_eq!(Email::parse("  Ada@Example.COM ").map(|e| e.as_str().to_owned()), Ok("ada@example.com".into()));
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in
            ["", "ada", "ada@", "@example.com", "ada@example", "a..b@example.com", "ada@-x.com", "a b@example.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn debug_does_not_reveal_the_address() {
        let email = Email::parse("ada@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{email:?}"), "Email(a***@example.com)");
    }
}
