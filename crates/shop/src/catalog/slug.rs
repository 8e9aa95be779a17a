//! URL slugs: lowercase ASCII letters and digits separated by single hyphens.

use std::fmt;

const MAX_LEN: usize = 100;

/// A slug such as `harry-potter`. Never shaped like a UUID, so `{idOrSlug}` paths are unambiguous.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_shape = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-')
            && !raw.contains("--");
        if !valid_shape {
            return Err(format!("must be 1-{MAX_LEN} lowercase letters, digits and single hyphens, like harry-potter"));
        }
        if uuid::Uuid::parse_str(raw).is_ok() {
            return Err("must not look like an id".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// Derives a slug from a name: ASCII letters and digits kept (lowercased), everything else a hyphen.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let mut slug = String::with_capacity(name.len());
        for c in name.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.ends_with('-') && !slug.is_empty() {
                slug.push('-');
            }
        }
        let trimmed: String = slug.trim_end_matches('-').chars().take(MAX_LEN).collect();
        Self::parse(trimmed.trim_end_matches('-'))
            .map_err(|_| "cannot be derived from the name; give a slug explicitly".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slug({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_slugs_only() {
        assert!(Slug::parse("harry-potter").is_ok());
        assert!(Slug::parse("book-2").is_ok());
        for bad in
            ["", "Harry", "harry potter", "-a", "a-", "a--b", "harry_potter", "0190f0e4-4a4b-7c3d-8e2f-1a2b3c4d5e6f"]
        {
            assert!(Slug::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn derives_from_names() {
        assert_eq!(Slug::from_name("Harry Potter & the Stone!").map(|s| s.0), Ok("harry-potter-the-stone".into()));
        assert_eq!(Slug::from_name("  Café 2 ").map(|s| s.0), Ok("caf-2".into()));
        assert!(Slug::from_name("日本").is_err());
    }
}
