//! The command line: `shopkeep serve | worker | gateway | migrate | admin … | config check`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Shopkeep: a commerce backend in one binary.
#[derive(Debug, Parser)]
#[command(name = "shopkeep", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (settings not in it come from defaults and the environment).
    #[arg(long, global = true, env = "SHOPKEEP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the public API and the admin listener until SIGTERM or Ctrl-C.
    Serve {
        /// Public listener address, overriding server.listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Admin listener address, overriding server.admin_listen.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
        /// Do not run the job worker in this process (run `shopkeep worker` elsewhere).
        #[arg(long)]
        no_worker: bool,
    },
    /// Run only the job worker until SIGTERM or Ctrl-C (scale it apart from `serve`).
    Worker,
    /// Run the L7 gateway in front of N `serve` instances (--config names the gateway's own
    /// TOML file), or control a running one: `shopkeep gateway backends list|add|…`.
    Gateway {
        /// Public listener address, overriding `listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Admin listener address, overriding `admin_listen`.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
        /// Check the configuration, print it (the token hidden) and exit.
        #[arg(long)]
        check: bool,
        #[command(subcommand)]
        command: Option<GatewayCommand>,
    },
    /// Apply, revert or list schema migrations.
    Migrate {
        #[arg(value_enum)]
        action: MigrateAction,
    },
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateAction {
    /// Apply every pending migration (creating the PostgreSQL database if missing).
    Up,
    /// Revert the most recent migration.
    Down,
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// The running gateway's pool, over its admin listener (`admin_listen` and `admin_token`
    /// of the same configuration, or SHOPKEEP_GATEWAY_ADMIN_URL).
    Backends {
        #[command(subcommand)]
        command: BackendsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackendsCommand {
    /// Every backend: weight, health, ejection, requests in flight, latency.
    List,
    /// Add a backend; it takes traffic once its first health check passes, slow-starting.
    Add {
        name: String,
        /// host:port
        address: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Drain a backend (wait for its requests in flight), then take it out of the pool.
    Remove {
        name: String,
        /// How long to wait for requests in flight: 30s, 500ms, 2m.
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
    },
    /// Set a backend's weight, at once or gradually (--over 5m) for blue/green and canaries.
    Weight {
        name: String,
        weight: u32,
        #[arg(long, value_name = "DURATION")]
        over: Option<String>,
    },
    /// Send a backend no new requests and wait for those in flight.
    Drain {
        name: String,
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
    },
    /// Send a drained backend requests again.
    Undrain { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user with a role, e.g. the first administrator. The password comes from
    /// --password-file, SHOPKEEP_ADMIN_PASSWORD, or a prompt.
    CreateUser {
        #[arg(long)]
        email: String,
        /// customer, staff or admin.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Display name (default: the part of the email before @).
        #[arg(long)]
        name: Option<String>,
        /// A file holding the password.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
    },
    /// Inspect and retry background jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Read the mail outbox (mail kept, not delivered, when no SMTP server is configured).
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Maintain the product search index.
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
    /// Feature flags of a running shop, through its admin listener (`admin.url`, `admin.token`).
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// Readiness 503 on a running instance (a load balancer moves traffic away) while it keeps
    /// serving; through its admin listener.
    Drain,
    /// End an operator's drain: readiness follows the instance's health again.
    Undrain,
    /// Show the running instance's log filter, or replace it (`debug`, `shopkeep=debug,info`)
    /// until the next change or a restart.
    LogLevel { filter: Option<String> },
    /// A user's sessions on a running shop, through its admin listener.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// The in-process caches of a running instance, through its admin listener.
    Caches {
        #[command(subcommand)]
        command: CachesCommand,
    },
    /// Circuit breakers of a running instance, through its admin listener.
    Breakers {
        #[command(subcommand)]
        command: BreakersCommand,
    },
    /// The audit log of administrative actions, through the admin listener, newest first.
    Audit {
        /// An action (`flag.update`), or a prefix ending in `.` (`flag.`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// What was acted on: `flag:maintenance`.
        #[arg(long)]
        target: Option<String>,
        /// Only entries since this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (1–100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 1)]
        page: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// The user's sessions, most recently seen first.
    List { user: uuid::Uuid },
    /// Sign the user out everywhere (API tokens stay).
    End { user: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
pub enum CachesCommand {
    /// Drop every entry of the instance's in-process caches.
    Flush,
}

#[derive(Debug, Subcommand)]
pub enum BreakersCommand {
    /// Every breaker: state, calls in its window, failure and slow-call rates.
    List,
    /// Close the breaker with an empty window.
    Reset { name: String },
    /// Refuse every call through it until reset.
    ForceOpen { name: String },
    /// Let every call through it, unjudged, until reset.
    Disable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Every flag: kind, kill switch, default, rules, version.
    List,
    /// One flag's stored definition, as JSON.
    Get { name: String },
    /// Create a flag, or change what is given (conditional on the version read).
    Set {
        name: String,
        /// Turn the kill switch on.
        #[arg(long, conflicts_with = "off")]
        on: bool,
        /// Turn the kill switch off: everyone gets false (or the first variant).
        #[arg(long)]
        off: bool,
        /// The value when no rule holds: true/false, or a variant.
        #[arg(long)]
        default: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated variant names: makes it a variant flag (the first is the off value).
        #[arg(long)]
        variants: Option<String>,
        /// A JSON definition replacing the whole flag (kind, enabled, default, rules).
        #[arg(long, value_name = "PATH", conflicts_with_all = ["on", "off", "default", "description", "variants"])]
        file: Option<PathBuf>,
    },
    /// Roll a boolean flag out to PERCENT of callers (stable buckets: raising keeps those in).
    Rollout {
        name: String,
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// Delete a flag (the shop's own flags fall back to their defaults).
    Delete { name: String },
    /// What the flag answers a caller, as the instance evaluates it now.
    Eval {
        name: String,
        /// A user id.
        #[arg(long)]
        user: Option<String>,
        /// customer, staff or admin.
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        guest: Option<bool>,
        /// The stable id of a visitor who is not signed in (their address).
        #[arg(long)]
        anonymous: Option<String>,
        #[arg(long)]
        country: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Analyse every category and product again with the configured `search.language` and
    /// recount the vocabulary, with a progress bar. The shop keeps serving meanwhile (catalog
    /// writes wait at most for one batch of 500 products).
    Reindex,
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// The most recent outbox messages with their text, newest first.
    List {
        /// At most this many (1–100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, most recently changed first.
    List {
        /// queued, running, succeeded, failed or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        /// At most this many (1–100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Queue a dead or failed job again, with its attempts reset.
    Retry { id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}
