//! A private `redis-server` for a test, on a port of its own, that the test can kill and bring
//! back on the same port: how Redis dying mid-run and returning is reproduced for real.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running (or stopped) `redis-server` without persistence, stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    address: SocketAddr,
}

impl RedisServer {
    /// Starts Redis on a free local port and waits (up to 10 s) until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let port = crate::pgbouncer::free_port()?;
        let mut server = Self { child: None, address: SocketAddr::from(([127, 0, 0, 1], port)) };
        server.restart().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .context("redis-server is not installed (Debian package `redis-server`)")?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &self.address.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.address).await.is_err() {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("redis-server exited ({status})");
            }
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {} within 10 s", self.address);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
