//! The Shopkeep binary as a library: CLI, configuration, telemetry, wiring, startup and graceful
//! shutdown. `main.rs` only parses arguments and calls [`run`]; tests build an [`Application`].

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
mod commands;
pub mod config;
pub mod control;
mod edge;
pub mod jobs;
pub mod telemetry;
pub mod webhooks;

use std::process::ExitCode;
use std::sync::Arc;

pub use app::Application;
use cli::{
    AdminCommand, BreakersCommand, CachesCommand, Cli, Command, ConfigCommand, FlagsCommand, JobsCommand, MailCommand,
    SearchCommand, SessionsCommand,
};
use config::Config;
use tokio_util::sync::CancellationToken;

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// Runs one command to completion and says how the process should exit.
pub async fn run(cli: Cli) -> ExitCode {
    // The gateway reads its own configuration file, not the shop's.
    if let Command::Gateway { listen, admin_listen, check, command } = cli.command {
        let options = edge::GatewayOptions { config: cli.config, listen, admin_listen, check };
        return edge::run(options, command).await;
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Config { command: ConfigCommand::Check } = &cli.command {
        print!("{}", config.to_redacted_toml());
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    telemetry::init_logging(&config.log);
    let result = match cli.command {
        Command::Serve { listen, admin_listen, no_worker } => {
            if no_worker {
                config.jobs.run_worker_in_serve = false;
            }
            if let Some(listen) = listen {
                config.server.listen = listen.to_string();
            }
            if let Some(admin_listen) = admin_listen {
                config.server.admin_listen = admin_listen.to_string();
            }
            if let Err(errors) = config.revalidate() {
                eprint!("{errors}");
                return ExitCode::from(EXIT_CONFIG);
            }
            serve(config).await
        }
        Command::Worker => run_worker(config).await,
        Command::Migrate { action } => commands::migrate(&config, action).await,
        Command::Admin { command: AdminCommand::Jobs { command: JobsCommand::List { state, queue, limit } } } => {
            commands::list_jobs(&config, state.as_deref(), queue, limit).await
        }
        Command::Admin { command: AdminCommand::Jobs { command: JobsCommand::Retry { id } } } => {
            commands::retry_job(&config, id).await
        }
        Command::Admin { command: AdminCommand::Mail { command: MailCommand::List { limit } } } => {
            commands::list_outbox_mail(&config, limit).await
        }
        Command::Admin { command: AdminCommand::Search { command: SearchCommand::Reindex } } => {
            commands::reindex_search(&config).await
        }
        Command::Admin { command: AdminCommand::Flags { command } } => run_flags_command(&config, command).await,
        Command::Admin { command: AdminCommand::Drain } => control::drain(&config, true).await,
        Command::Admin { command: AdminCommand::Undrain } => control::drain(&config, false).await,
        Command::Admin { command: AdminCommand::LogLevel { filter } } => {
            control::log_level(&config, filter.as_deref()).await
        }
        Command::Admin { command: AdminCommand::Sessions { command } } => match command {
            SessionsCommand::List { user } => control::user_sessions(&config, user).await,
            SessionsCommand::End { user } => control::end_user_sessions(&config, user).await,
        },
        Command::Admin { command: AdminCommand::Caches { command: CachesCommand::Flush } } => {
            control::flush_caches(&config).await
        }
        Command::Admin { command: AdminCommand::Breakers { command } } => match command {
            BreakersCommand::List => control::list_breakers(&config).await,
            BreakersCommand::Reset { name } => control::breaker_action(&config, &name, "reset").await,
            BreakersCommand::ForceOpen { name } => control::breaker_action(&config, &name, "force-open").await,
            BreakersCommand::Disable { name } => control::breaker_action(&config, &name, "disable").await,
        },
        Command::Admin { command: AdminCommand::Audit { action, actor, target, since, limit, page } } => {
            let filters = control::AuditFilters {
                action: action.as_deref(),
                actor: actor.as_deref(),
                target: target.as_deref(),
                since: since.as_deref(),
                limit,
                page,
            };
            control::list_audit(&config, filters).await
        }
        Command::Admin { command: AdminCommand::CreateUser { email, role, name, password_file } } => {
            commands::create_user(&config, &email, &role, name.as_deref(), password_file.as_deref()).await
        }
        // Both answered above, before the shop's configuration is needed.
        Command::Config { .. } | Command::Gateway { .. } => Ok(()),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "shopkeep failed");
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    };
    telemetry::flush_logs();
    code
}

async fn run_flags_command(config: &Config, command: FlagsCommand) -> anyhow::Result<()> {
    match command {
        FlagsCommand::List => control::list_flags(config).await,
        FlagsCommand::Get { name } => control::get_flag(config, &name).await,
        FlagsCommand::Set { name, on, off, default, description, variants, file } => {
            let change = control::FlagChange {
                name: &name,
                enabled: if on {
                    Some(true)
                } else if off {
                    Some(false)
                } else {
                    None
                },
                default: default.as_deref(),
                description: description.as_deref(),
                variants: variants.as_deref(),
                file: file.as_deref(),
            };
            control::set_flag(config, change).await
        }
        FlagsCommand::Rollout { name, percent } => control::rollout_flag(config, &name, percent).await,
        FlagsCommand::Delete { name } => control::delete_flag(config, &name).await,
        FlagsCommand::Eval { name, user, role, guest, anonymous, country } => {
            let context = control::EvalContext {
                user: user.as_deref(),
                role: role.as_deref(),
                guest,
                anonymous: anonymous.as_deref(),
                country: country.as_deref(),
            };
            control::evaluate_flag(config, &name, context).await
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Signals are handled from the start: one during startup stops the shop once it is up.
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let application = Application::build(config).await?;
    application.run_until_stopped(shutdown).await
}

/// `shopkeep worker`: the job worker alone, until a signal; then it drains and exits.
async fn run_worker(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let store: Arc<dyn shop::Store> = app::open_store(&config, config.migrate_on_start()).await?;
    let clock: Arc<dyn shop::Clock> = Arc::new(shop::SystemClock);
    let accounts = app::account_service(&config, Arc::clone(&store), Arc::clone(&clock));
    let jobs = shop::jobs::JobService::new(Arc::clone(&store), Arc::clone(&clock), jobs::job_settings(&config));
    let breakers = resilience::BreakerRegistry::new();
    let payments = app::payment_provider(&config, &breakers, Arc::new(resilience::MonotonicClock))?;
    let orders = app::order_service(&config, Arc::clone(&store), Arc::clone(&clock), payments);
    let mailer = jobs::build_mailer(&config, Arc::clone(&store), &breakers, Arc::new(resilience::MonotonicClock))?;
    let webhooks = jobs::WebhookParts {
        service: app::webhook_service(&config, Arc::clone(&store), clock),
        sender: app::webhook_clients(&config, &breakers, Arc::new(resilience::MonotonicClock)),
    };
    let worker = jobs::build_worker(&config, Arc::clone(&store), jobs, accounts, orders, mailer, webhooks);
    let waking = CancellationToken::new();
    let wake = tokio::spawn(jobs::wake_on_new_jobs(&config, store.as_ref(), worker.wakers(), waking.clone()));
    worker.run(shutdown).await;
    waking.cancel();
    let _ = wake.await;
    store.close().await;
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT (Ctrl-C).
/// Cancels `shutdown` at the first SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the returned future first runs, so a signal that arrives right after
/// startup is never left to the default action (which kills the process without draining).
pub(crate) fn signal_shutdown(shutdown: CancellationToken) -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = handlers;
            let wait = |stream: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match stream {
                    Ok(mut stream) => {
                        stream.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, signal = name, "cannot listen for the signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "SIGINT") => tracing::info!(signal = "SIGINT", "signal received"),
                () = wait(terminate, "SIGTERM") => tracing::info!(signal = "SIGTERM", "signal received"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!(signal = "SIGINT", "signal received");
        }
        shutdown.cancel();
    }
}
