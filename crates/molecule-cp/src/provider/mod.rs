//! Compute providers: where tenant and workspace instances run. The control plane asks for an
//! instance by role and name and gets back what is running; every operation is idempotent, so
//! the reconciler can repeat any of them after a crash without creating a second instance.

pub mod ec2;
pub mod local;

use std::collections::BTreeMap;

use async_trait::async_trait;
use molecule_shared::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Tenant,
    Workspace,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tenant => "tenant",
            Role::Workspace => "workspace",
        }
    }
}

/// The environment an instance boots with. `Debug` lists the names only: values include
/// credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BootEnv(BTreeMap<String, String>);

impl BootEnv {
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_owned(), value.into());
    }

    pub fn set_secret(&mut self, name: &str, value: &Secret) {
        self.0.insert(name.to_owned(), value.expose().to_owned());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl From<BTreeMap<String, String>> for BootEnv {
    fn from(map: BTreeMap<String, String>) -> Self {
        BootEnv(map)
    }
}

impl std::fmt::Debug for BootEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What to run: the instance's identity (role and a name unique within the role: the org slug
/// for a tenant, the workspace id for a workspace), its org, and its boot environment.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub role: Role,
    pub name: String,
    pub org_id: String,
    pub env: BootEnv,
    pub tier: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedState {
    /// Launched, not yet serving.
    Pending,
    /// Serving at `address`.
    Running,
    /// No instance: never launched, exited, or terminated.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub instance_id: String,
    pub state: ObservedState,
    /// Base URL of the instance, when it serves.
    pub address: Option<String>,
    /// The instance's private IP, when it has one.
    pub private_ip: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("launching the {role} instance failed: {reason}")]
    Launch { role: &'static str, reason: String },
    #[error("the {role} instance did not become ready within {seconds} s")]
    NotReady { role: &'static str, seconds: u64 },
    #[error("provider I/O failed: {0}")]
    Io(String),
}

/// An instance the provider runs for us, as its tags say: what the orphan sweep compares with
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInstance {
    pub role: Role,
    /// Org slug (tenant) or workspace id.
    pub name: String,
    pub org_id: String,
    pub instance_id: String,
    pub launched_at_ms: Option<i64>,
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `local` or `ec2`.
    fn kind(&self) -> &'static str;

    /// Whether the boot env can be read by others on the instance (EC2 user-data is readable
    /// through the metadata service). If so, tenants get a single-use bootstrap token instead of
    /// their long-lived credentials.
    fn exposes_boot_env(&self) -> bool {
        false
    }

    /// Every instance this provider runs for us (the orphan sweep). Local: none are tracked
    /// apart from the store, so none.
    async fn list_managed(&self) -> Result<Vec<ManagedInstance>, ProviderError> {
        Ok(Vec::new())
    }

    /// Destroys one listed instance by its id (an orphan: no org or workspace names it).
    async fn terminate_managed(&self, _instance: &ManagedInstance) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The running instance for `spec`: the existing one if there is one (adopted, never
    /// duplicated), else a newly launched one, once it serves.
    async fn ensure(&self, spec: &InstanceSpec) -> Result<Observed, ProviderError>;

    /// What is running for `role`/`name` now.
    async fn describe(&self, role: Role, name: &str) -> Result<Observed, ProviderError>;

    /// Stops the instance and keeps its disk, so `ensure` can bring it back with its data.
    async fn stop(&self, role: Role, name: &str) -> Result<(), ProviderError>;

    /// Destroys the instance and its disk. Succeeds when there is nothing to destroy.
    async fn terminate(&self, role: Role, name: &str) -> Result<(), ProviderError>;

    /// The tail of the instance's console output.
    async fn console(&self, role: Role, name: &str) -> Result<String, ProviderError>;
}
