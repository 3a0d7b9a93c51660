//! One harness for the system tests: a real control plane on a real port (port 0), SQLite in a
//! temp dir, the local provider running the real `molecule` binary as tenants and agents.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use molecule_cp::config::{CpConfig, ProviderKind};
use molecule_cp::provider::local::LocalProvider;
use molecule_cp::provider::Provider;
use molecule_cp::startup::Application;
use molecule_cp::ControlPlane;
use molecule_shared::crypto::EncryptionKey;
use molecule_shared::secret::Secret;
use molecule_shared::ssrf::SsrfPolicy;
use molecule_shared::token::{self, TokenKind};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const BIN: &str = env!("CARGO_BIN_EXE_molecule");

pub type ProviderWrap = Box<dyn FnOnce(Arc<dyn Provider>) -> Arc<dyn Provider> + Send>;

pub struct TestCpBuilder {
    shared_secret: bool,
    admin_token: bool,
    wrap: Option<ProviderWrap>,
    instance_env: Vec<(String, String)>,
}

impl TestCpBuilder {
    pub fn without_shared_secret(mut self) -> Self {
        self.shared_secret = false;
        self
    }

    pub fn without_admin_token(mut self) -> Self {
        self.admin_token = false;
        self
    }

    /// Puts a wrapper (fault injection) around the local provider.
    pub fn wrap_provider(
        mut self,
        wrap: impl FnOnce(Arc<dyn Provider>) -> Arc<dyn Provider> + Send + 'static,
    ) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Starts with a [`FaultyProvider`] around the local provider, set up by `faults`; returns
    /// it too, so a test can change the faults later.
    pub async fn start_faulty(
        self,
        faults: impl FnOnce(&FaultyProvider) + Send + 'static,
    ) -> (TestCp, Arc<FaultyProvider>) {
        let slot: Arc<std::sync::Mutex<Option<Arc<FaultyProvider>>>> = Arc::default();
        let keep = slot.clone();
        let cp = self
            .wrap_provider(move |inner| {
                let f = FaultyProvider::wrap(inner);
                // Faults are in place before the control plane runs.
                faults(&f);
                *keep.lock().unwrap() = Some(f.clone());
                f
            })
            .start()
            .await;
        let faulty = slot
            .lock()
            .unwrap()
            .take()
            .expect("the provider was wrapped at start");
        (cp, faulty)
    }

    /// Sets an environment variable for every instance the CP launches.
    pub fn instance_env(mut self, name: &str, value: &str) -> Self {
        self.instance_env.push((name.into(), value.into()));
        self
    }

    pub async fn start(self) -> TestCp {
        let dir = tempfile::Builder::new()
            .prefix("molecule-test")
            .tempdir()
            .unwrap();
        let config = CpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: format!("sqlite://{}", dir.path().join("cp.db").display()),
            data_dir: dir.path().to_path_buf(),
            provider: ProviderKind::Local,
            strict: false,
            admin_token: self
                .admin_token
                .then(|| token::generate(TokenKind::CpAdmin)),
            shared_secret: self
                .shared_secret
                .then(|| token::generate(TokenKind::ProvisionShared)),
            shared_secret_previous: None,
            encryption_key: EncryptionKey::generate(),
            kms_key_arn: None,
            aws: Default::default(),
            bootstrap_ttl: Duration::from_secs(900),
            orphan_grace: Duration::from_secs(900),
            cp_base_url: None,
            ssrf: SsrfPolicy::AllowLoopback,
            reconcile_interval: Duration::from_millis(300),
            provision_deadline: Duration::from_secs(30),
            tenant_version: "test".into(),
        };
        let mut local = LocalProvider::new(PathBuf::from(BIN), dir.path().to_path_buf());
        for (k, v) in &self.instance_env {
            local = local.with_env(k, v);
        }
        let local = Arc::new(local);
        let mut provider: Arc<dyn Provider> = local.clone();
        if let Some(wrap) = self.wrap {
            provider = wrap(provider);
        }
        let mut cp = TestCp {
            _dir: dir,
            local,
            provider,
            config,
            app: None,
            http: reqwest::Client::new(),
        };
        cp.boot().await;
        cp
    }
}

pub struct TestCp {
    /// Holds the data dir for the life of the test.
    _dir: tempfile::TempDir,
    pub local: Arc<LocalProvider>,
    provider: Arc<dyn Provider>,
    pub config: CpConfig,
    app: Option<(
        Arc<ControlPlane>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    )>,
    pub http: reqwest::Client,
}

impl TestCp {
    pub fn builder() -> TestCpBuilder {
        TestCpBuilder {
            shared_secret: true,
            admin_token: true,
            wrap: None,
            instance_env: Vec::new(),
        }
    }

    pub async fn start() -> TestCp {
        Self::builder().start().await
    }

    async fn boot(&mut self) {
        let token = CancellationToken::new();
        let app = Application::build(self.config.clone(), self.provider.clone(), token.clone())
            .await
            .unwrap();
        // Keep the same address across restarts: tenants were told it.
        self.config.listen = app.addr();
        self.config.cp_base_url = Some(app.base_url().to_owned());
        let cp = app.cp.clone();
        let task = tokio::spawn(app.run_until_stopped());
        self.app = Some((cp, token, task));
    }

    pub fn cp(&self) -> &Arc<ControlPlane> {
        &self.app.as_ref().expect("running").0
    }

    pub fn url(&self) -> String {
        self.config.cp_base_url.clone().unwrap()
    }

    pub fn admin_token(&self) -> &str {
        self.config
            .admin_token
            .as_ref()
            .map(Secret::expose)
            .unwrap_or("")
    }

    pub fn shared_secret(&self) -> &str {
        self.config
            .shared_secret
            .as_ref()
            .map(Secret::expose)
            .unwrap_or("")
    }

    /// Stops the control plane only; its instances keep running.
    pub async fn stop_cp(&mut self) {
        if let Some((_, token, task)) = self.app.take() {
            token.cancel();
            task.await.unwrap();
        }
    }

    /// Stops and starts the control plane on the same address, database and data dir.
    pub async fn restart(&mut self) {
        self.stop_cp().await;
        self.boot().await;
    }

    /// A request with an optional bearer and JSON body; returns status and JSON (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(self.admin_token()), body)
            .await
    }

    pub async fn create_org(&self, slug: &str) -> Value {
        let (status, body) = self
            .admin(
                Method::POST,
                "/cp/admin/orgs",
                Some(serde_json::json!({"slug": slug, "name": slug.to_uppercase()})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Polls the public lookup until the org has `status`; returns the lookup body.
    pub async fn wait_status(&self, slug: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self
                .call(
                    Method::GET,
                    &format!("/cp/orgs/{slug}/instance"),
                    None,
                    None,
                )
                .await;
            if code == StatusCode::OK
                && body["status"] == status
                && (status != "running" || body["backend"].is_string())
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "org {slug} did not reach {status}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn create_running_org(&self, slug: &str) -> (Value, String) {
        let org = self.create_org(slug).await;
        let lookup = self.wait_status(slug, "running").await;
        (org, lookup["backend"].as_str().unwrap().to_owned())
    }

    pub async fn tenant_token(&self, slug: &str) -> String {
        let (status, body) = self
            .admin(
                Method::GET,
                &format!("/cp/admin/orgs/{slug}/admin-token"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["admin_token"].as_str().unwrap().to_owned()
    }

    pub fn tenant_pid(&self, slug: &str) -> Option<i32> {
        pid_in(
            &self
                .local
                .dir(molecule_cp::provider::Role::Tenant, slug)
                .join("instance.pid"),
        )
    }

    pub async fn state_counts(&self) -> Vec<(&'static str, i64)> {
        self.cp().store.state_counts().await.unwrap()
    }

    pub async fn stop(mut self) {
        self.stop_cp().await;
        self.local.stop_all().await.unwrap();
    }
}

/// The PID of the live holder of a pidfile.
pub fn pid_in(path: &std::path::Path) -> Option<i32> {
    match molecule_shared::pidfile::probe(path).ok()? {
        molecule_shared::pidfile::Probe::Live { pid, .. } if pid > 0 => Some(pid),
        _ => None,
    }
}

/// How many live processes run `molecule tenant serve` for the pidfile `path`.
pub fn processes_with_arg(needle: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // Zombies have an empty cmdline; only live processes count.
            if cmd.contains(needle) {
                n += 1;
            }
        }
    }
    n
}

impl Drop for TestCp {
    fn drop(&mut self) {
        // Never leave instance processes behind, even when a test fails.
        for (role, name) in self.local.known_instances() {
            let pidfile = self.local.dir(role, &name).join("instance.pid");
            let _ = molecule_shared::pidfile::signal_holder(&pidfile, libc::SIGKILL);
        }
    }
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A provider that fails on purpose: `ensure` for chosen names, `terminate` of tenants a given
/// number of times. Everything else goes to the real provider.
pub struct FaultyProvider {
    inner: Arc<dyn Provider>,
    launch_failures: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    terminate_failures: std::sync::atomic::AtomicUsize,
}

impl FaultyProvider {
    pub fn wrap(inner: Arc<dyn Provider>) -> Arc<FaultyProvider> {
        Arc::new(FaultyProvider {
            inner,
            launch_failures: Default::default(),
            terminate_failures: Default::default(),
        })
    }

    pub fn fail_launches(&self, name: &str, times: usize) {
        self.launch_failures
            .lock()
            .unwrap()
            .insert(name.to_owned(), times);
    }

    pub fn fail_tenant_terminates(&self, times: usize) {
        self.terminate_failures
            .store(times, std::sync::atomic::Ordering::SeqCst);
    }
}

use molecule_cp::provider::{InstanceSpec, Observed, ProviderError, Role};

#[async_trait::async_trait]
impl Provider for FaultyProvider {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ensure(&self, spec: &InstanceSpec) -> Result<Observed, ProviderError> {
        {
            let mut failures = self.launch_failures.lock().unwrap();
            if let Some(n) = failures.get_mut(&spec.name) {
                if *n > 0 {
                    *n -= 1;
                    return Err(ProviderError::Launch {
                        role: "tenant",
                        reason: "injected launch failure".into(),
                    });
                }
            }
        }
        self.inner.ensure(spec).await
    }

    async fn describe(&self, role: Role, name: &str) -> Result<Observed, ProviderError> {
        self.inner.describe(role, name).await
    }

    async fn stop(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        self.inner.stop(role, name).await
    }

    async fn terminate(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        use std::sync::atomic::Ordering;
        if role == Role::Tenant
            && self
                .terminate_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(ProviderError::Io("injected terminate failure".into()));
        }
        self.inner.terminate(role, name).await
    }

    async fn console(&self, role: Role, name: &str) -> Result<String, ProviderError> {
        self.inner.console(role, name).await
    }
}

/// A tenant server run as the real binary (`molecule tenant serve`) with exactly the given
/// environment, its log kept in a file: the subject of the black-box suite.
pub struct TestTenant {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin_token: String,
    child: std::process::Child,
    pub http: reqwest::Client,
}

pub const TENANT_ADMIN_TOKEN: &str = "mol_tat_black-box-admin-token-0123456789abcdef";

impl TestTenant {
    /// A strict standalone tenant on a fresh install with `ADMIN_TOKEN` set, plus `env`.
    pub async fn start(env: &[(&str, &str)]) -> TestTenant {
        let mut all = vec![
            ("ADMIN_TOKEN", TENANT_ADMIN_TOKEN),
            ("MOLECULE_ENV", "staging"),
            (
                "SECRETS_ENCRYPTION_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("MOLECULE_SSRF_ALLOW", "loopback"),
        ];
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push((k, v));
        }
        Self::start_exact(&all).await
    }

    /// A tenant with exactly `env` (nothing else).
    pub async fn start_exact(env: &[(&str, &str)]) -> TestTenant {
        let dir = tempfile::Builder::new()
            .prefix("molecule-tenant")
            .tempdir()
            .unwrap();
        let pidfile = dir.path().join("tenant.pid");
        let log = std::fs::File::create(dir.path().join("tenant.log")).unwrap();
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["tenant", "serve", "--listen", "127.0.0.1:0", "--pidfile"])
            .arg(&pidfile)
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("tenant.db").display()),
            )
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        let started = Instant::now();
        let addr = loop {
            if let Ok(molecule_shared::pidfile::Probe::Live {
                addr: Some(addr), ..
            }) = molecule_shared::pidfile::probe(&pidfile)
            {
                break addr;
            }
            let log = std::fs::read_to_string(dir.path().join("tenant.log")).unwrap_or_default();
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "tenant did not start: {log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let admin_token = env
            .iter()
            .find(|(k, _)| *k == "ADMIN_TOKEN")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        TestTenant {
            dir,
            url: format!("http://{addr}"),
            admin_token,
            child,
            http: reqwest::Client::new(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tenant.log")).unwrap_or_default()
    }

    /// A request; returns the status, the raw body and the body as JSON (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, text, json)
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, j) = self
            .call(method, path, Some(&self.admin_token.clone()), body)
            .await;
        (s, j)
    }

    /// Creates a workspace; returns its id.
    pub async fn create_workspace(&self, body: Value) -> String {
        let (status, created) = self.admin(Method::POST, "/workspaces", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// Mints a token for a workspace with the admin credential.
    pub async fn workspace_token(&self, id: &str) -> String {
        let (status, body) = self
            .admin(Method::POST, &format!("/workspaces/{id}/tokens"), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["auth_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestTenant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
