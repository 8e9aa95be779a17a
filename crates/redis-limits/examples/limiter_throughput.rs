//! Shared-limiter decisions per second against a real Redis, with 32 concurrent callers:
//! `cargo run --release -p redis-limits --example limiter_throughput [redis-url] [seconds]`.
//! Prints a table; asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_limits::{RedisRateLimiter, RedisSettings};
use resilience::{Quota, SharedLimiter};

const CALLERS: usize = 32;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let limiter = Arc::new(RedisRateLimiter::new(&RedisSettings {
        url,
        timeout: Duration::from_secs(1),
        key_prefix: format!("shopkeep-bench-{}", std::process::id()),
    })?);
    limiter.ping().await?;
    let quota = Quota::new(1_000_000, Duration::from_secs(1));
    let decisions = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let (limiter, decisions, errors) = (Arc::clone(&limiter), Arc::clone(&decisions), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut own = Vec::new();
            let key = format!("client-{}", caller % 8);
            while Instant::now() < deadline {
                let started = Instant::now();
                match limiter.check("bench", &key, quota).await {
                    Ok(_) => decisions.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                own.push(started.elapsed());
            }
            own
        }));
    }
    for task in tasks {
        latencies.extend(task.await?);
    }
    latencies.sort_unstable();
    let percentile =
        |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let total = decisions.load(Ordering::Relaxed);
    println!("| callers | seconds | decisions/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {CALLERS} | {seconds} | {:.0} | {:?} | {:?} | {} |",
        total as f64 / seconds as f64,
        percentile(0.5).copied().unwrap_or_default(),
        percentile(0.99).copied().unwrap_or_default(),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
