//! The control-plane client behind `shopkeep admin flags …`, `audit`, `breakers …`, `drain`,
//! `undrain`, `caches flush` and `log-level`: calls the admin listener of a running instance (its URL from `admin.url`, else
//! `server.admin_listen`; the token from `admin.token`), prints tables, and fails — a non-zero
//! exit — on every refusal, with the problem's detail.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::Config;

/// A client of one admin listener.
pub struct AdminClient {
    base: url::Url,
    token: Option<String>,
    actor: String,
    http: reqwest::Client,
}

/// An answer of the admin listener: its status and JSON body (null when empty).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl AdminClient {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let base = match &config.admin.url {
            Some(url) => url.clone(),
            None => {
                let mut address = config.admin_listen();
                if address.ip().is_unspecified() {
                    address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{address}")
            }
        };
        Self::new(&base, config.admin.token.as_ref().map(|token| token.expose().to_owned()), Duration::from_secs(15))
    }

    /// A client of the admin listener at `base`, sending `token` as a bearer token if given;
    /// `timeout` bounds each call (a drain waits on the server).
    pub(crate) fn new(base: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let base = url::Url::parse(base).with_context(|| format!("admin url {base:?}"))?;
        let loopback = match base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if base.scheme() == "http" && !loopback && token.is_some() {
            eprintln!(
                "warning: the admin token goes over plain http to {base}: use https (a TLS proxy) across networks"
            );
        }
        // reqwest's TLS backend (an https admin url) needs the process-wide crypto provider.
        integration::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        let operator = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Ok(Self { base, token, actor: format!("cli:{operator}"), http })
    }

    /// Sends a request; any status is an answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<i64>,
    ) -> anyhow::Result<Answer> {
        let url = self.base.join(path).with_context(|| format!("bad admin path {path}"))?;
        let mut request = self.http.request(method, url.clone()).header("x-shopkeep-actor", &self.actor);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(version) = if_match {
            request = request.header("if-match", format!("\"{version}\""));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach the admin listener at {url}"))?;
        let status = response.status();
        let text = response.text().await.context("the admin listener's answer broke off")?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok(Answer { status, body })
    }

    /// Sends a request; a status other than 2xx is an error naming the problem.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<i64>,
    ) -> anyhow::Result<Answer> {
        let answer = self.send(method.clone(), path, body, if_match).await?;
        if !answer.status.is_success() {
            bail!("{method} {path} refused: {}", refusal(&answer));
        }
        Ok(answer)
    }

    async fn get_flag(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let path = flag_path(name);
        let answer = self.send(Method::GET, &path, None, None).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(answer.body)),
            _ => bail!("GET {path} refused: {}", refusal(&answer)),
        }
    }
}

/// The status and problem detail of a refusal, with each field error on a line.
fn refusal(answer: &Answer) -> String {
    let body = &answer.body;
    let detail = body.get("detail").and_then(Value::as_str).unwrap_or_default();
    let fields: String = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|error| {
                    let field = error.get("field").and_then(Value::as_str).unwrap_or("?");
                    let message = error.get("message").and_then(Value::as_str).unwrap_or("?");
                    format!("\n  {field}: {message}")
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{} {detail}{fields}", answer.status)
}

fn flag_path(name: &str) -> String {
    format!("/admin/v1/flags/{}", urlencoding(name))
}

/// Percent-encodes what a path segment cannot hold (flag names are plain; anything else the
/// server refuses with a clear error).
pub(crate) fn urlencoding(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// Prints rows under a header, columns padded to their widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}", width = *width)).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|cell| (*cell).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The array under `key` of an answer (empty when absent).
pub(crate) fn items(body: &Value, key: &str) -> Vec<Value> {
    body.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
}

/// One row per item: the given fields, as text.
pub(crate) fn field_rows(items: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    items.iter().map(|item| fields.iter().map(|field| text(&item[*field])).collect()).collect()
}

fn flag_row(flag: &Value) -> Vec<String> {
    let rules = flag.get("rules").and_then(Value::as_array).map_or(0, Vec::len);
    vec![
        text(&flag["name"]),
        text(&flag["kind"]),
        if flag["enabled"] == Value::Bool(true) { "on".into() } else { "off".into() },
        text(&flag["default"]),
        rules.to_string(),
        text(&flag["version"]),
        text(&flag["updatedAt"]),
    ]
}

const FLAG_HEADER: [&str; 7] = ["NAME", "KIND", "SWITCH", "DEFAULT", "RULES", "VERSION", "UPDATED"];

/// `shopkeep admin flags list`.
pub async fn list_flags(config: &Config) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = client.call(Method::GET, "/admin/v1/flags", None, None).await?;
    let flags = items(&answer.body, "items");
    print_table(&FLAG_HEADER, &flags.iter().map(flag_row).collect::<Vec<_>>());
    if flags.is_empty() {
        eprintln!("no flags defined: the shop's own flags answer their defaults");
    }
    Ok(())
}

/// `shopkeep admin flags get NAME`: the stored definition as JSON.
pub async fn get_flag(config: &Config, name: &str) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = client.call(Method::GET, &flag_path(name), None, None).await?;
    println!("{}", serde_json::to_string_pretty(&answer.body)?);
    Ok(())
}

/// What `shopkeep admin flags set` changes.
pub struct FlagChange<'a> {
    pub name: &'a str,
    /// `Some(true)` for `--on`, `Some(false)` for `--off`.
    pub enabled: Option<bool>,
    pub default: Option<&'a str>,
    pub description: Option<&'a str>,
    /// Comma-separated: makes (or keeps) the flag a variant flag.
    pub variants: Option<&'a str>,
    /// A whole definition (JSON) replacing the stored one.
    pub file: Option<&'a Path>,
}

/// `shopkeep admin flags set NAME …`: creates the flag or changes what is given, conditional
/// on the version read (a concurrent change makes it fail rather than be overwritten).
pub async fn set_flag(config: &Config, change: FlagChange<'_>) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let path = flag_path(change.name);
    if let Some(file) = change.file {
        let raw = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let definition: Value =
            serde_json::from_str(&raw).with_context(|| format!("{} is not JSON", file.display()))?;
        let answer = client.call(Method::PUT, &path, Some(&definition), None).await?;
        return report(&answer);
    }
    let current = client.get_flag(change.name).await?;
    let version = current.as_ref().and_then(|flag| flag.get("version")).and_then(Value::as_i64);
    let mut definition = match current {
        Some(mut flag) => {
            let object = flag.as_object_mut().context("the flag is not a JSON object")?;
            for key in ["name", "version", "updatedAt"] {
                object.remove(key);
            }
            flag
        }
        None => json!({ "kind": "boolean", "enabled": true, "default": true, "rules": [] }),
    };
    if let Some(variants) = change.variants {
        let names: Vec<&str> = variants.split(',').map(str::trim).filter(|name| !name.is_empty()).collect();
        definition["kind"] = json!("variant");
        definition["variants"] = json!(names);
        if version.is_none() || change.default.is_none() {
            definition["default"] = json!(names.first().copied().unwrap_or_default());
        }
    }
    if let Some(enabled) = change.enabled {
        definition["enabled"] = json!(enabled);
    }
    if let Some(description) = change.description {
        definition["description"] = json!(description);
    }
    if let Some(default) = change.default {
        definition["default"] = match (definition["kind"].as_str(), default) {
            (Some("boolean"), "true") => json!(true),
            (Some("boolean"), "false") => json!(false),
            (Some("boolean"), other) => bail!("--default of a boolean flag is true or false, not {other:?}"),
            (_, variant) => json!(variant),
        };
    }
    let answer = client.call(Method::PUT, &path, Some(&definition), version).await?;
    report(&answer)
}

fn report(answer: &Answer) -> anyhow::Result<()> {
    let verb = if answer.status == StatusCode::CREATED { "created" } else { "changed" };
    print_table(&FLAG_HEADER, &[flag_row(&answer.body)]);
    eprintln!("flag {verb}; every instance evaluates it within flags.refresh_interval_ms");
    Ok(())
}

/// `shopkeep admin flags rollout NAME PERCENT`.
pub async fn rollout_flag(config: &Config, name: &str, percentage: u8) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let body = json!({ "percentage": percentage });
    let answer = client.call(Method::PUT, &format!("{}/rollout", flag_path(name)), Some(&body), None).await?;
    report(&answer)
}

/// `shopkeep admin flags delete NAME`.
pub async fn delete_flag(config: &Config, name: &str) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    client.call(Method::DELETE, &flag_path(name), None, None).await?;
    eprintln!("flag {name} deleted");
    Ok(())
}

/// Who `shopkeep admin flags eval` asks about.
pub struct EvalContext<'a> {
    pub user: Option<&'a str>,
    pub role: Option<&'a str>,
    pub guest: Option<bool>,
    pub anonymous: Option<&'a str>,
    pub country: Option<&'a str>,
}

/// `shopkeep admin flags eval NAME --user … --role … --guest … --country …`: what the instance
/// answers such a caller.
pub async fn evaluate_flag(config: &Config, name: &str, context: EvalContext<'_>) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("userId", context.user.map(str::to_owned)),
        ("role", context.role.map(str::to_owned)),
        ("guest", context.guest.map(|guest| guest.to_string())),
        ("anonymousId", context.anonymous.map(str::to_owned)),
        ("country", context.country.map(str::to_owned)),
    ] {
        if let Some(value) = value {
            query.append_pair(key, &value);
        }
    }
    let path = format!("{}/evaluate?{}", flag_path(name), query.finish());
    let answer = client.call(Method::GET, &path, None, None).await?;
    println!("{}", text(&answer.body["value"]));
    if answer.body["value"].is_null() {
        eprintln!("flag {name} is not defined: the shop uses its built-in default");
    }
    Ok(())
}

fn breaker_row(breaker: &Value) -> Vec<String> {
    let percent = |value: &Value| value.as_f64().map_or("-".to_owned(), |rate| format!("{rate:.1}%"));
    vec![
        text(&breaker["name"]),
        text(&breaker["state"]),
        text(&breaker["callsInWindow"]),
        percent(&breaker["failureRate"]),
        percent(&breaker["slowCallRate"]),
        breaker["retryAfterSeconds"].as_f64().map_or("-".to_owned(), |seconds| format!("{seconds:.1}s")),
    ]
}

const BREAKER_HEADER: [&str; 6] = ["NAME", "STATE", "CALLS", "FAILURES", "SLOW", "NEXT PROBE"];

/// `shopkeep admin breakers list`.
pub async fn list_breakers(config: &Config) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = client.call(Method::GET, "/admin/v1/status", None, None).await?;
    let breakers = items(&answer.body, "breakers");
    print_table(&BREAKER_HEADER, &breakers.iter().map(breaker_row).collect::<Vec<_>>());
    Ok(())
}

/// `shopkeep admin breakers reset|force-open|disable NAME` (`action` as in the admin route).
pub async fn breaker_action(config: &Config, name: &str, action: &str) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let path = format!("/admin/v1/breakers/{}/{action}", urlencoding(name));
    let answer = client.call(Method::POST, &path, None, None).await?;
    print_table(&BREAKER_HEADER, &[breaker_row(&answer.body)]);
    Ok(())
}

/// `shopkeep admin drain` (`true`) and `admin undrain` (`false`).
pub async fn drain(config: &Config, drain: bool) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let path = if drain { "/admin/v1/drain" } else { "/admin/v1/undrain" };
    let answer = client.call(Method::POST, path, None, None).await?;
    let body = &answer.body;
    let state = match (body["drainedByOperator"].as_bool(), body["shuttingDown"].as_bool()) {
        (_, Some(true)) => "shutting down (readiness 503)",
        (Some(true), _) => "drained (readiness 503, still serving)",
        _ => "serving (readiness follows health)",
    };
    println!("{state}");
    Ok(())
}

/// `shopkeep admin log-level [FILTER]`: prints the filter in force (after the change, if any).
pub async fn log_level(config: &Config, filter: Option<&str>) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = match filter {
        None => client.call(Method::GET, "/admin/v1/log-level", None, None).await?,
        Some(filter) => {
            let body = json!({ "filter": filter });
            client.call(Method::PUT, "/admin/v1/log-level", Some(&body), None).await?
        }
    };
    println!("{}", text(&answer.body["filter"]));
    Ok(())
}

/// `shopkeep admin sessions list USER`.
pub async fn user_sessions(config: &Config, user: uuid::Uuid) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = client.call(Method::GET, &format!("/admin/v1/users/{user}/sessions"), None, None).await?;
    let rows = field_rows(&items(&answer.body, "data"), &["id", "lastSeenAt", "createdAt", "expiresAt"]);
    print_table(&["SESSION", "LAST SEEN", "CREATED", "EXPIRES"], &rows);
    Ok(())
}

/// `shopkeep admin sessions end USER`.
pub async fn end_user_sessions(config: &Config, user: uuid::Uuid) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = client.call(Method::DELETE, &format!("/admin/v1/users/{user}/sessions"), None, None).await?;
    println!("{} sessions ended", text(&answer.body["ended"]));
    Ok(())
}

/// `shopkeep admin caches flush`.
pub async fn flush_caches(config: &Config) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let answer = client.call(Method::POST, "/admin/v1/caches/flush", None, None).await?;
    let rows = field_rows(&items(&answer.body, "caches"), &["name", "entriesDropped"]);
    print_table(&["CACHE", "ENTRIES DROPPED"], &rows);
    Ok(())
}

/// Filters of `shopkeep admin audit`.
pub struct AuditFilters<'a> {
    pub action: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub target: Option<&'a str>,
    pub since: Option<&'a str>,
    pub limit: u32,
    pub page: u32,
}

/// `shopkeep admin audit`: the newest entries first.
pub async fn list_audit(config: &Config, filters: AuditFilters<'_>) -> anyhow::Result<()> {
    let client = AdminClient::from_config(config)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &filters.limit.to_string()).append_pair("page", &filters.page.to_string());
    for (key, value) in
        [("action", filters.action), ("actor", filters.actor), ("target", filters.target), ("since", filters.since)]
    {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    let answer = client.call(Method::GET, &format!("/admin/v1/audit?{}", query.finish()), None, None).await?;
    let entries = items(&answer.body, "data");
    let rows = field_rows(&entries, &["at", "actor", "action", "target", "requestId"]);
    print_table(&["AT", "ACTOR", "ACTION", "TARGET", "REQUEST"], &rows);
    eprintln!("{} of {} entries", entries.len(), text(&answer.body["total"]));
    Ok(())
}
