//! Secrets in the configuration: the `Secret` type that never prints, URLs shown without their
//! password, and secrets read from `*_file` paths (container secrets).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};

/// A secret string: never printed by `Debug`, `Display` or `config check`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// A database URL for display: the password replaced, everything else kept (it helps debugging).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "[unparseable, redacted]".into(),
    }
}

pub(super) fn serialize_redacted_url<S: Serializer>(url: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redacted_url(url.expose()))
}

pub(super) fn serialize_optional_redacted_url<S: Serializer>(
    url: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&redacted_url(url.expose())),
        None => serializer.serialize_none(),
    }
}

/// A comma-separated list of URLs, each with its password redacted.
pub(super) fn serialize_optional_redacted_urls<S: Serializer>(
    urls: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match urls {
        Some(urls) => {
            let redacted: Vec<String> = urls.expose().split(',').map(|url| redacted_url(url.trim())).collect();
            serializer.serialize_str(&redacted.join(","))
        }
        None => serializer.serialize_none(),
    }
}

/// The secret in `file`, when one is given and can be read (else a problem naming `key`, the
/// file's key).
pub(super) fn read_secret_file(file: Option<&Path>, key: &str, problems: &mut Vec<String>) -> Option<Secret> {
    match read_secret(file?) {
        Ok(value) => Some(Secret(value)),
        Err(problem) => {
            problems.push(format!("{key}: {problem}"));
            None
        }
    }
}

/// Reads the optional secret `key` from `{key}_file` when one is given; both given is a problem
/// (which one wins would be up to precedence).
pub(super) fn secret_from_file(
    secret: &mut Option<Secret>,
    file: Option<&Path>,
    key: &str,
    problems: &mut Vec<String>,
) {
    if file.is_some() && secret.is_some() {
        problems.push(format!("{key}_file: give either {key} or {key}_file, not both"));
    }
    if let Some(value) = read_secret_file(file, &format!("{key}_file"), problems) {
        *secret = Some(value);
    }
}

fn read_secret(path: &Path) -> Result<String, String> {
    let content = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let value = content.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value)
}
