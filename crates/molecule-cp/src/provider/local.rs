//! The local provider: each instance is a child process of this binary (`molecule tenant serve`
//! or `molecule agent`) with its own folder, port, log (under `logs/`) and pidfile. The pidfile's lock, not the
//! PID, identifies a live instance, so a restarted control plane adopts the processes it finds
//! and never starts a second one, and a recycled PID is never signalled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use molecule_shared::pidfile::{self, Probe};

use super::{InstanceSpec, Observed, ObservedState, Provider, ProviderError, Role};

/// Variables passed through from our own environment: diagnostics and timing knobs, never
/// credentials.
const PASSTHROUGH: &[&str] = &[
    "RUST_LOG",
    "RUST_BACKTRACE",
    "MOLECULE_CONFIG_REFRESH_SECS",
    "HEARTBEAT_INTERVAL_SECONDS",
    "SWEEP_INTERVAL_SECONDS",
    "LIVENESS_TIMEOUT_SECONDS",
];
const CONSOLE_TAIL: u64 = 64 * 1024;

type LaunchLock = Arc<tokio::sync::Mutex<()>>;

pub struct LocalProvider {
    binary: PathBuf,
    root: PathBuf,
    start_timeout: Duration,
    stop_grace: Duration,
    /// Extra environment for every instance (timing knobs set by the operator or a test).
    extra_env: Vec<(String, String)>,
    /// One launch at a time per instance, so concurrent `ensure` calls do not race.
    launching: Mutex<HashMap<(Role, String), LaunchLock>>,
}

impl LocalProvider {
    /// Instances run `binary` and live under `root` (`root/tenants/<slug>`,
    /// `root/workspaces/<id>`).
    pub fn new(binary: PathBuf, root: PathBuf) -> Self {
        Self {
            binary,
            root,
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
            extra_env: Vec::new(),
            launching: Mutex::new(HashMap::new()),
        }
    }

    /// Adds `name=value` to every instance's environment (never a credential).
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.extra_env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn dir(&self, role: Role, name: &str) -> PathBuf {
        let group = match role {
            Role::Tenant => "tenants",
            Role::Workspace => "workspaces",
        };
        self.root.join(group).join(name)
    }

    fn pidfile(&self, role: Role, name: &str) -> PathBuf {
        self.dir(role, name).join("instance.pid")
    }

    /// Logs live outside the instance folder, so they survive a purge of the instance's data.
    pub fn log_path(&self, role: Role, name: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{}-{name}.log", role.as_str()))
    }

    fn instance_id(role: Role, name: &str) -> String {
        format!("local-{}-{name}", role.as_str())
    }

    fn observed(role: Role, name: &str, probe: Probe) -> Observed {
        let (state, address) = match probe {
            Probe::Live {
                addr: Some(addr), ..
            } => (ObservedState::Running, Some(format!("http://{addr}"))),
            Probe::Live { addr: None, .. } => (ObservedState::Pending, None),
            Probe::Dead => (ObservedState::Gone, None),
        };
        Observed {
            instance_id: Self::instance_id(role, name),
            state,
            private_ip: address.as_ref().map(|_| "127.0.0.1".to_owned()),
            address,
        }
    }

    fn probe(&self, role: Role, name: &str) -> Result<Probe, ProviderError> {
        pidfile::probe(&self.pidfile(role, name)).map_err(|e| ProviderError::Io(e.to_string()))
    }

    fn launch_lock(&self, role: Role, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.launching.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((role, name.to_owned())).or_default().clone()
    }

    /// Every instance folder under the root, for stopping all of them.
    pub fn known_instances(&self) -> Vec<(Role, String)> {
        let mut out = Vec::new();
        for (role, group) in [(Role::Tenant, "tenants"), (Role::Workspace, "workspaces")] {
            if let Ok(entries) = std::fs::read_dir(self.root.join(group)) {
                for entry in entries.flatten() {
                    if let Some(name) = entry.file_name().to_str() {
                        out.push((role, name.to_owned()));
                    }
                }
            }
        }
        out
    }

    /// Stops every running instance (keeping their data): `molecule up` on Ctrl-C.
    pub async fn stop_all(&self) -> Result<(), ProviderError> {
        let pidfiles: Vec<PathBuf> = self
            .known_instances()
            .into_iter()
            .map(|(role, name)| self.pidfile(role, &name))
            .collect();
        self.stop_pidfiles(&pidfiles).await
    }

    /// SIGTERM to every holder, then SIGKILL to those still alive after the grace period. All
    /// at once, so stopping many instances takes one grace period, not one each.
    async fn stop_pidfiles(&self, pidfiles: &[PathBuf]) -> Result<(), ProviderError> {
        let io = |e: std::io::Error| ProviderError::Io(e.to_string());
        for path in pidfiles {
            pidfile::signal_holder(path, libc::SIGTERM).map_err(io)?;
        }
        for (signal, wait) in [
            (libc::SIGKILL, self.stop_grace),
            (0, Duration::from_secs(2)),
        ] {
            let deadline = Instant::now() + wait;
            loop {
                let mut alive = Vec::new();
                for path in pidfiles {
                    if pidfile::probe(path).map_err(io)? != Probe::Dead {
                        alive.push(path);
                    }
                }
                if alive.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    if signal == 0 {
                        return Err(ProviderError::Io(format!(
                            "{} instance(s) did not exit",
                            alive.len()
                        )));
                    }
                    tracing::warn!(
                        count = alive.len(),
                        "instances ignored SIGTERM; sending SIGKILL"
                    );
                    for path in alive {
                        pidfile::signal_holder(path, signal).map_err(io)?;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    async fn launch(&self, spec: &InstanceSpec) -> Result<Observed, ProviderError> {
        let role = spec.role.as_str();
        let launch_err = |reason: String| ProviderError::Launch { role, reason };
        let dir = self.dir(spec.role, &spec.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| launch_err(format!("cannot create {}: {e}", dir.display())))?;
        let log_path = self.log_path(spec.role, &spec.name);
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| launch_err(format!("cannot create {}: {e}", parent.display())))?;
        }
        let log = open_log(&log_path).map_err(|e| launch_err(format!("cannot open log: {e}")))?;
        let log_err = log.try_clone().map_err(|e| launch_err(e.to_string()))?;
        let port_file = dir.join("port");
        let preferred_port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let pidfile = self.pidfile(spec.role, &spec.name);

        let mut cmd = tokio::process::Command::new(&self.binary);
        match spec.role {
            Role::Tenant => cmd.args(["tenant", "serve"]),
            Role::Workspace => cmd.arg("agent"),
        };
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--pidfile")
            .arg(&pidfile);
        if let Some(port) = preferred_port {
            cmd.arg("--prefer-port").arg(port.to_string());
        }
        // Start from an empty environment: the instance gets exactly its boot env.
        cmd.env_clear();
        for name in PASSTHROUGH {
            if let Ok(v) = std::env::var(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(spec.env.iter());
        if spec.role == Role::Tenant && spec.env.get("DATABASE_URL").is_none() {
            cmd.env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("tenant.db").display()),
            );
        }
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Our own process group: a Ctrl-C at the terminal reaches the control plane, which
            // then stops its instances in order, instead of killing them all at once.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| launch_err(format!("cannot start {}: {e}", self.binary.display())))?;

        let started = Instant::now();
        loop {
            if let Probe::Live {
                addr: Some(addr), ..
            } = self.probe(spec.role, &spec.name)?
            {
                if let Some(port) = addr.rsplit(':').next() {
                    let _ = std::fs::write(&port_file, port);
                }
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                // It may have lost the pidfile race to a twin that is now serving: adopt that.
                if let Probe::Live { .. } = self.probe(spec.role, &spec.name)? {
                    return self.wait_for_address(spec.role, &spec.name, started).await;
                }
                return Err(launch_err(format!(
                    "the process exited ({status}) before it was ready; see {}",
                    self.log_path(spec.role, &spec.name).display()
                )));
            }
            if started.elapsed() > self.start_timeout {
                let _ = child.start_kill();
                return Err(ProviderError::NotReady {
                    role,
                    seconds: self.start_timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Reap the child when it exits so it does not linger as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(Self::observed(
            spec.role,
            &spec.name,
            self.probe(spec.role, &spec.name)?,
        ))
    }

    async fn wait_for_address(
        &self,
        role: Role,
        name: &str,
        started: Instant,
    ) -> Result<Observed, ProviderError> {
        loop {
            let probe = self.probe(role, name)?;
            match probe {
                Probe::Live { addr: Some(_), .. } => return Ok(Self::observed(role, name, probe)),
                Probe::Dead => {
                    return Err(ProviderError::Launch {
                        role: role.as_str(),
                        reason: "the instance exited while starting".into(),
                    })
                }
                Probe::Live { addr: None, .. } if started.elapsed() > self.start_timeout => {
                    return Err(ProviderError::NotReady {
                        role: role.as_str(),
                        seconds: self.start_timeout.as_secs(),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[async_trait]
impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn ensure(&self, spec: &InstanceSpec) -> Result<Observed, ProviderError> {
        let lock = self.launch_lock(spec.role, &spec.name);
        let _guard = lock.lock().await;
        match self.probe(spec.role, &spec.name)? {
            probe @ Probe::Live { addr: Some(_), .. } => {
                Ok(Self::observed(spec.role, &spec.name, probe))
            }
            Probe::Live { addr: None, .. } => {
                self.wait_for_address(spec.role, &spec.name, Instant::now())
                    .await
            }
            Probe::Dead => self.launch(spec).await,
        }
    }

    async fn describe(&self, role: Role, name: &str) -> Result<Observed, ProviderError> {
        Ok(Self::observed(role, name, self.probe(role, name)?))
    }

    async fn stop(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        self.stop_pidfiles(&[self.pidfile(role, name)]).await
    }

    async fn terminate(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        self.stop(role, name).await?;
        let dir = self.dir(role, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProviderError::Io(format!(
                "cannot remove {}: {e}",
                dir.display()
            ))),
        }
    }

    async fn console(&self, role: Role, name: &str) -> Result<String, ProviderError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.log_path(role, name);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(ProviderError::Io(e.to_string())),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        file.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL)))
            .map_err(|e| ProviderError::Io(e.to_string()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| ProviderError::Io(e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
