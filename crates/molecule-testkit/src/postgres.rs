//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `pg_ctl start` on a free loopback
//! port with its socket in that dir, `pg_ctl stop` on drop. When running as root (CI here), the
//! server runs as the `postgres` user, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
}

fn find_bin() -> Option<PathBuf> {
    // Debian's versioned dirs first: they hold the whole server toolset, createdb included.
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    /// Starts a cluster, or reports why it cannot (see [`crate::unavailable`]) and returns None.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            crate::unavailable(
                "PostgreSQL",
                "initdb/pg_ctl not found in PATH or /usr/lib/postgresql/*/bin",
            );
            return None;
        };
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("molecule-pg")
            .tempdir()
            .expect("temp dir");
        if let Some(user) = &run_as {
            let ok = Command::new("chown")
                .arg("-R")
                .arg(user)
                .arg(dir.path())
                .status()
                .map(|s| s.success());
            if !matches!(ok, Ok(true)) {
                crate::unavailable(
                    "PostgreSQL",
                    &format!("cannot hand the data dir to user {user}"),
                );
                return None;
            }
        }
        let cluster = PgCluster {
            dir,
            bin,
            port: crate::free_port(),
            run_as,
        };
        let data = cluster.data_dir();
        let init = cluster
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "molecule", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output();
        match init {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                crate::unavailable(
                    "PostgreSQL",
                    &format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)),
                );
                return None;
            }
            Err(e) => {
                crate::unavailable("PostgreSQL", &format!("cannot run initdb: {e}"));
                return None;
            }
        }
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            cluster.port,
            cluster.dir.path().display()
        );
        let start = cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(cluster.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output();
        match start {
            Ok(out) if out.status.success() => Some(cluster),
            other => {
                let log = std::fs::read_to_string(cluster.dir.path().join("server.log"))
                    .unwrap_or_default();
                crate::unavailable(
                    "PostgreSQL",
                    &format!("pg_ctl start failed: {other:?} {log}"),
                );
                None
            }
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `name` (which [`PgCluster::create_database`] makes).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://molecule@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh database for one test.
    pub fn create_database(&self, name: &str) -> String {
        let createdb = Some(self.bin.join("createdb"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("createdb"));
        let status = Command::new(createdb)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "molecule",
                name,
            ])
            .status();
        let created = matches!(status, Ok(s) if s.success());
        assert!(created, "createdb failed for {name}: {status:?}");
        self.url(name)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
