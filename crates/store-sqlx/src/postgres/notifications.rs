//! LISTEN for the queue's notifications: every insert of a job sends `pg_notify` with the
//! job's queue in its transaction, so a listening worker wakes at commit instead of at its next
//! poll. A dedicated connection (not from the pool, and not through PgBouncer in transaction
//! mode, where LISTEN does not work — configure `database.pgbouncer` and workers only poll).

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// Calls `on_job(Some(queue))` for each notification until `stop` (`None`: notifications may
/// have been missed, e.g. while reconnecting — wake every queue). Reconnects after failures (1 s,
/// doubling to 30 s); while disconnected, the worker's polling carries on, so nothing is lost
/// but latency.
pub async fn listen_for_jobs(url: String, on_job: impl Fn(Option<&str>) + Send + 'static, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect(&url).await {
            Ok(mut listener) => {
                tracing::info!("listening for job notifications");
                // Anything enqueued while we were not listening is due now.
                on_job(None);
                backoff = Duration::from_secs(1);
                loop {
                    tokio::select! {
                        received = listener.try_recv() => match received {
                            Ok(Some(notification)) => on_job(Some(notification.payload())),
                            // The connection dropped; sqlx reconnects on the next call, but
                            // notifications sent meanwhile are gone: wake every queue once.
                            Ok(None) => {
                                tracing::warn!("job notification connection lost; reconnecting");
                                on_job(None);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "job notifications failed; polling until they are back");
                                break;
                            }
                        },
                        () = stop.cancelled() => return,
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot listen for job notifications; polling until it can"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(super::JOBS_CHANNEL).await?;
    Ok(listener)
}
