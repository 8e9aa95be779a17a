//! A real PgBouncer in transaction mode in front of a PostgreSQL server, started for a test
//! and stopped when dropped: the stock configuration a shop would run (only what must be
//! named: the server, the listen port, trust authentication, `pool_mode = transaction`).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `pgbouncer` process (Debian's package: `/usr/sbin/pgbouncer`).
pub struct PgBouncer {
    child: Child,
    address: SocketAddr,
    /// Holds the configuration and the log; removed on drop.
    directory: tempfile::TempDir,
}

/// What a test may set; everything else is PgBouncer's default.
#[derive(Debug, Clone)]
pub struct PgBouncerSettings {
    /// The PostgreSQL server behind it.
    pub server_host: String,
    pub server_port: u16,
    /// The one user clients connect as (trust authentication: it must exist on the server).
    pub user: String,
    /// Server connections per database and user.
    pub default_pool_size: u32,
    pub max_client_conn: u32,
}

impl Default for PgBouncerSettings {
    fn default() -> Self {
        Self {
            server_host: "127.0.0.1".into(),
            server_port: 5432,
            user: "postgres".into(),
            default_pool_size: 5,
            max_client_conn: 500,
        }
    }
}

impl PgBouncer {
    /// Starts PgBouncer on a free local port and waits (up to 10 s) until it accepts
    /// connections. As root it drops to the user `postgres` (PgBouncer refuses to run as root).
    pub async fn start(settings: &PgBouncerSettings) -> anyhow::Result<Self> {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .context("pgbouncer is not installed (Debian package `pgbouncer`; scripts/services installs it)")?;
        let directory = tempfile::Builder::new().prefix("pgbouncer").tempdir()?;
        let port = free_port()?;
        let config = directory.path().join("pgbouncer.ini");
        let users = directory.path().join("userlist.txt");
        std::fs::write(&users, format!("\"{}\" \"\"\n", settings.user))?;
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
                 pool_mode = transaction\ndefault_pool_size = {pool}\nmax_client_conn = {clients}\n\
                 admin_users = {user}\n",
                host = settings.server_host,
                server_port = settings.server_port,
                users = users.display(),
                pool = settings.default_pool_size,
                clients = settings.max_client_conn,
                user = settings.user,
            ),
        )?;
        let log = std::fs::File::create(directory.path().join("pgbouncer.log"))?;
        let mut command = Command::new(binary);
        if is_root() {
            // The files must be readable by the user PgBouncer switches to.
            make_world_readable(directory.path())?;
            command.arg("-u").arg("postgres");
        }
        let child = command
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("failed to start pgbouncer")?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut bouncer = Self { child, address, directory };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(address).await.is_err() {
            if let Some(status) = bouncer.child.try_wait()? {
                bail!("pgbouncer exited ({status}): {}", bouncer.log());
            }
            if Instant::now() > deadline {
                bail!("pgbouncer did not listen on {address} within 10 s: {}", bouncer.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(bouncer)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `postgres://user@127.0.0.1:port/database` through this PgBouncer.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@{}/{database}", self.address)
    }

    /// What PgBouncer logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (the OS's choice for port 0).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|out| out.stdout.starts_with(b"0\n")).unwrap_or(false)
}

#[cfg(unix)]
fn make_world_readable(directory: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(directory)? {
        std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o666))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_world_readable(_: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}
