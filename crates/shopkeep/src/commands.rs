//! The subcommands other than `serve` and `worker`: migrations, admin bootstrap, jobs.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use shop::accounts::{Email, PasswordPlain, PersonName, Role};
use shop::{Store, SystemClock};
use store_sqlx::{PostgresSettings, SqlStore, SqliteSettings, provisioning};

use crate::app::{account_service, open_store};
use crate::cli::MigrateAction;
use crate::config::{Backend, Config, redacted_url};

/// `migrate up|down|status`. On PostgreSQL, `up` creates the database first if it is missing.
pub async fn migrate(config: &Config, action: MigrateAction) -> anyhow::Result<()> {
    let target = migrations_store(config, action == MigrateAction::Up).await?;
    match action {
        MigrateAction::Up => {
            target.migrate_up().await?;
            println!("migrations applied");
            // Products written before the search index existed (or analysed another way) are
            // indexed as part of the migration step, not by the first instance to start.
            if let Some(indexed) = target.ensure_search_index().await? {
                println!("search index rebuilt ({indexed} products)");
            }
        }
        MigrateAction::Down => match target.migrate_down().await? {
            Some(version) => println!("reverted migration {version}"),
            None => println!("no migration to revert"),
        },
        MigrateAction::Status => {}
    }
    for migration in target.migration_status().await? {
        let state = if migration.applied { "applied" } else { "pending" };
        println!("{} {state:<9} {}", migration.version, migration.description);
    }
    shop::ports::StoreHealth::close(&target).await;
    Ok(())
}

/// A one-connection store for migrations, on a session of its own: the database URL, or behind
/// PgBouncer `database.direct_url` (migrations hold an advisory lock for their whole run and the
/// migrator prepares named statements, neither of which survives transaction pooling). With
/// `create`, a missing PostgreSQL database is created first.
pub(crate) async fn migrations_store(config: &Config, create: bool) -> anyhow::Result<SqlStore> {
    let database = &config.database;
    let acquire_timeout = Duration::from_secs(database.acquire_timeout_secs);
    let Some(url) = database.session_url() else {
        bail!(
            "database.pgbouncer is on: migrations need a session of their own; set database.direct_url \
             (SHOPKEEP_DATABASE__DIRECT_URL) to the PostgreSQL server itself, not PgBouncer"
        )
    };
    let target = match config.backend().map_err(|problem| anyhow::anyhow!(problem))? {
        Backend::Sqlite => {
            SqlStore::sqlite(&SqliteSettings {
                url: url.to_owned(),
                max_connections: 1,
                acquire_timeout,
                busy_timeout: Duration::from_secs(database.busy_timeout_secs),
            })
            .await?
        }
        Backend::Postgres => {
            if create && provisioning::create_database_if_missing(url).await? {
                println!("created database {}", redacted_url(url));
            }
            SqlStore::postgres(&PostgresSettings {
                url: url.to_owned(),
                max_connections: 1,
                min_connections: 0,
                acquire_timeout,
                // Migrations may legitimately run long.
                statement_timeout: Duration::from_secs(600),
                pgbouncer: false,
            })
            .await?
        }
    };
    Ok(target.with_search_analyzer(shop::search::Analyzer::new(config.search.settings().language)))
}

/// `admin create-user`: creates an account with a role, password from a file, the
/// environment (`SHOPKEEP_ADMIN_PASSWORD`) or a prompt.
pub async fn create_user(
    config: &Config,
    email: &str,
    role: &str,
    name: Option<&str>,
    password_file: Option<&Path>,
) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|problem| anyhow::anyhow!("--email {problem}"))?;
    let role = Role::parse(role).map_err(|problem| anyhow::anyhow!("--role {problem}"))?;
    let default_name = email.as_str().split('@').next().unwrap_or("Administrator").to_owned();
    let name =
        PersonName::parse(name.unwrap_or(&default_name)).map_err(|problem| anyhow::anyhow!("--name {problem}"))?;
    let password = read_password(password_file)?;
    let password = PasswordPlain::parse_new(&password).map_err(|problem| anyhow::anyhow!("password {problem}"))?;
    let store: Arc<dyn Store> = open_store(config, config.migrate_on_start()).await?;
    let accounts = account_service(config, Arc::clone(&store), Arc::new(SystemClock));
    let result = accounts.create_user(email, password, name, role).await;
    store.close().await;
    match result {
        Ok(user) => {
            println!("created {} {} ({})", user.role, user.id, user.email.as_str());
            Ok(())
        }
        Err(shop::Error::Conflict(detail)) => bail!("{detail}"),
        Err(error) => Err(anyhow::Error::new(error).context("failed to create the user")),
    }
}

fn read_password(password_file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(path) = password_file {
        let content =
            std::fs::read_to_string(path).with_context(|| format!("cannot read --password-file {}", path.display()))?;
        return Ok(content.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(password) = std::env::var("SHOPKEEP_ADMIN_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password given: use --password-file, SHOPKEEP_ADMIN_PASSWORD, or run in a terminal to be prompted");
    }
    let first = rpassword::prompt_password("Password (12-128 characters): ").context("failed to read the password")?;
    let second = rpassword::prompt_password("Repeat the password: ").context("failed to read the password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

fn job_service(config: &Config, store: &Arc<dyn shop::Store>) -> shop::jobs::JobService {
    shop::jobs::JobService::new(Arc::clone(store), Arc::new(SystemClock), crate::jobs::job_settings(config))
}

/// `shopkeep admin jobs list`: one line per job, most recently changed first.
pub async fn list_jobs(config: &Config, state: Option<&str>, queue: Option<String>, limit: u32) -> anyhow::Result<()> {
    let state = state
        .map(|raw| {
            shop::jobs::JobState::parse(raw)
                .ok_or_else(|| anyhow::anyhow!("--state {raw:?}: must be queued, running, succeeded, failed or dead"))
        })
        .transpose()?;
    let page = shop::PageRequest::new(None, Some(limit)).map_err(|problem| anyhow::anyhow!("--limit {problem}"))?;
    let store: Arc<dyn Store> = open_store(config, false).await?;
    let query = shop::jobs::JobQuery { state, queue, page, ..shop::jobs::JobQuery::default() };
    let result = job_service(config, &store).list(&query).await;
    store.close().await;
    let page = result.context("failed to list jobs")?;
    println!(
        "{} job(s){}",
        page.total,
        if page.total > u64::from(limit) { format!(", first {limit} shown") } else { String::new() }
    );
    for job in page.items {
        let error = job.last_error.as_deref().map(|e| format!(" error={e:?}")).unwrap_or_default();
        println!(
            "{} {} queue={} kind={} attempts={}/{} run_at={}{error}",
            job.id,
            job.state.as_str(),
            job.queue,
            job.kind,
            job.attempts,
            job.max_attempts,
            job.run_at
        );
    }
    Ok(())
}

/// `shopkeep admin search reindex`: rebuilds the search index with a progress bar (on a
/// terminal; a line per batch is not printed elsewhere, only the summary).
pub async fn reindex_search(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config, false).await?;
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} indexing [{bar:40}] {pos}/{len} products ({eta} left)")
            .map_err(|error| anyhow::anyhow!("progress bar template: {error}"))?
            .progress_chars("=> "),
    );
    let result = store
        .rebuild_search_index(|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    shop::ports::StoreHealth::close(store.as_ref()).await;
    let indexed = result.context("failed to rebuild the search index")?;
    println!(
        "search index rebuilt: {indexed} products in {:.1} s (language {})",
        started.elapsed().as_secs_f64(),
        config.search.language
    );
    Ok(())
}

/// `shopkeep admin jobs retry ID`.
pub async fn retry_job(config: &Config, id: uuid::Uuid) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = open_store(config, false).await?;
    // Straight to the database, so no admin token: the operator's account names the actor.
    let operator = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let audit =
        shop::audit::AuditContext::new(format!("cli:{operator} (database)"), None, time::OffsetDateTime::now_utc());
    let result = job_service(config, &store).retry(id, &audit).await;
    store.close().await;
    match result {
        Ok(job) => {
            println!("queued {} ({}) again", job.id, job.kind);
            Ok(())
        }
        Err(shop::Error::NotFound) => bail!("no job {id}"),
        Err(shop::Error::Conflict(detail)) => bail!("{detail}"),
        Err(error) => Err(anyhow::Error::new(error).context("failed to retry the job")),
    }
}

/// `shopkeep admin mail list`: outbox messages (never delivered), newest first, with their text.
pub async fn list_outbox_mail(config: &Config, limit: u32) -> anyhow::Result<()> {
    let page = shop::PageRequest::new(None, Some(limit)).map_err(|problem| anyhow::anyhow!("--limit {problem}"))?;
    let store: Arc<dyn Store> = open_store(config, false).await?;
    let result = store.list_outbox_mail(&page).await;
    store.close().await;
    let page = result.context("failed to read the mail outbox")?;
    if config.mail.smtp_url.is_some() {
        println!("(SMTP is configured: new mail is delivered, not kept here)");
    }
    println!("{} message(s) in the outbox — NOT delivered", page.total);
    for message in page.items {
        println!("\n--- {} at {}", message.id, message.created_at);
        println!("To: {}\nSubject: {}\n", message.mail.to, message.mail.subject);
        println!("{}", message.mail.text.trim_end());
    }
    Ok(())
}
