//! A private PostgreSQL primary and a streaming replica made from it with `pg_basebackup`,
//! each on a free port, for read-replica tests: the replica's replay can be paused (lag on
//! demand) and the replica stopped and started again. Both clusters stop when dropped.
//!
//! Private clusters, because streaming needs a `replication` line in `pg_hba.conf` that the
//! machine's own server need not have; `initdb --auth=trust` writes one for loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A primary and its hot-standby replica.
pub struct PostgresReplication {
    bin: PathBuf,
    directory: tempfile::TempDir,
    primary_port: u16,
    replica_port: u16,
    replica_running: bool,
}

impl PostgresReplication {
    /// Creates the primary (`initdb`), starts it, copies it with `pg_basebackup -R -X stream`,
    /// starts the copy as a streaming replica and waits until it replays. As root, every
    /// server program runs as the user `postgres` (PostgreSQL refuses root).
    pub async fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let directory = tempfile::Builder::new().prefix("pg-replication").tempdir()?;
        if is_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(directory.path()).status()?;
            if !status.success() {
                bail!("chown of {} failed", directory.path().display());
            }
        }
        let primary_port = crate::pgbouncer::free_port()?;
        let replica_port = crate::pgbouncer::free_port()?;
        let mut replication = Self { bin, directory, primary_port, replica_port, replica_running: false };
        let primary = replication.data("primary");
        replication.run("initdb", &["-D", &primary, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])?;
        let socket_dir = replication.directory.path().display().to_string();
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {primary_port}\nunix_socket_directories = '{socket_dir}'\n\
             wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = off\n\
             full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 100\n"
        );
        append(&Path::new(&primary).join("postgresql.conf"), &settings)?;
        replication.pg_ctl_start("primary", primary_port)?;
        wait_for_port(primary_port).await?;
        let replica = replication.data("replica");
        let port = primary_port.to_string();
        replication.run(
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &replica, "-R", "-X", "stream", "--no-sync"],
        )?;
        replication.start_replica().await?;
        Ok(replication)
    }

    /// `postgres://postgres@127.0.0.1:{primary}/{database}`.
    pub fn primary_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.primary_port)
    }

    /// `postgres://postgres@127.0.0.1:{replica}/{database}`.
    pub fn replica_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.replica_port)
    }

    /// Stops applying the primary's changes on the replica (it keeps receiving them): the
    /// replica lags from now on, by as much as the primary writes.
    pub fn pause_replay(&self) -> anyhow::Result<()> {
        self.sql(self.replica_port, "select pg_wal_replay_pause()").map(|_| ())
    }

    pub fn resume_replay(&self) -> anyhow::Result<()> {
        self.sql(self.replica_port, "select pg_wal_replay_resume()").map(|_| ())
    }

    /// Stops the replica at once (`-m immediate`).
    pub fn stop_replica(&mut self) -> anyhow::Result<()> {
        if self.replica_running {
            self.run("pg_ctl", &["-D", &self.data("replica"), "-m", "immediate", "-w", "stop"])?;
            self.replica_running = false;
        }
        Ok(())
    }

    /// Starts the replica (again) and waits until it answers queries and replays.
    pub async fn start_replica(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start("replica", self.replica_port)?;
        self.replica_running = true;
        wait_for_port(self.replica_port).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.sql(self.replica_port, "select pg_is_in_recovery() and pg_last_wal_replay_lsn() is not null") {
                Ok(answer) if answer.trim() == "t" => return Ok(()),
                _ if Instant::now() > deadline => bail!("the replica did not start replaying within 20 s"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Runs `sql` in the database `postgres` of the server at `port` with `psql`; returns its
    /// unaligned output.
    pub fn sql(&self, port: u16, sql: &str) -> anyhow::Result<String> {
        self.sql_in(port, "postgres", sql)
    }

    /// [`PostgresReplication::sql`] in `database`.
    pub fn sql_in(&self, port: u16, database: &str, sql: &str) -> anyhow::Result<String> {
        let port = port.to_string();
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", database, "-Atc", sql])
            .stdin(Stdio::null())
            .output()
            .context("failed to run psql")?;
        if !output.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    pub fn replica_port(&self) -> u16 {
        self.replica_port
    }

    fn data(&self, name: &str) -> String {
        self.directory.path().join(name).display().to_string()
    }

    fn pg_ctl_start(&self, name: &str, port: u16) -> anyhow::Result<()> {
        let log = self.directory.path().join(format!("{name}.log")).display().to_string();
        let options = format!("-p {port} -k {}", self.directory.path().display());
        self.run("pg_ctl", &["-D", &self.data(name), "-l", &log, "-o", &options, "-w", "-t", "30", "start"])
            .with_context(|| format!("{name} did not start: {}", std::fs::read_to_string(&log).unwrap_or_default()))
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(self.directory.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PostgresReplication {
    fn drop(&mut self) {
        let _ = self.stop_replica();
        let _ = self.run("pg_ctl", &["-D", &self.data("primary"), "-m", "immediate", "-w", "stop"]);
    }
}

/// The newest installed PostgreSQL's programs (Debian: `/usr/lib/postgresql/{version}/bin`).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server programs are not installed (/usr/lib/postgresql)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_basebackup").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no PostgreSQL version with pg_basebackup under /usr/lib/postgresql")
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn is_root() -> bool {
    crate::pgbouncer::is_root()
}
