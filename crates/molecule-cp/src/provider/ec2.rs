//! `MOLECULE_PROVIDER=ec2`: tenants and workspaces as EC2 instances, through the official AWS
//! SDK (behind [`client::Ec2Api`]).
//!
//! - Identity is in tags: `molecule:managed-by=molecule-cp`, `molecule:org-id`, `molecule:role`,
//!   `molecule:name` (org slug or workspace id), `molecule:generation`. `ensure` first looks for a
//!   live instance with the same tags and adopts it, so a CP that crashed between RunInstances
//!   and recording the instance never launches a second one (moto ignores `ClientToken`, and AWS
//!   honours it for a limited time only, so tags are the real dedupe).
//! - Security groups (C3): with `EC2_VPC_ID`, one group per instance (`molecule-<role>-<name>`)
//!   in that VPC, allowing only the role's TCP port from the VPC's CIDR (no SSH at all); without
//!   it, `EC2_SHARED_SG_ID` (or the default group) and a warning at start.
//! - `stop` is StopInstances (the EBS disk stays; `ensure` starts a stopped instance again, so
//!   the tenant keeps its data, which is what the trait promises). `terminate` is
//!   TerminateInstances, a bounded wait for `terminated`, then deleting the instance's group,
//!   retried with exponential backoff while AWS reports `DependencyViolation`.
//! - User-data (C2) is rendered by [`user_data`]; tenants get only non-secret values and a
//!   single-use bootstrap token (see `tenant_config::bootstrap_env`).

pub mod client;
pub mod user_data;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use sha2::{Digest, Sha256};

use self::client::{Ec2Api, Ec2Error, IngressRule, InstanceInfo, LaunchRequest};
use self::user_data::{Artifact, UserDataSpec};
use super::{
    InstanceSpec, ManagedInstance, Observed, ObservedState, Provider, ProviderError, Role,
};
use crate::config::ConfigError;

pub const TAG_MANAGED_BY: &str = "molecule:managed-by";
pub const MANAGED_BY: &str = "molecule-cp";
pub const TAG_ORG_ID: &str = "molecule:org-id";
pub const TAG_ROLE: &str = "molecule:role";
pub const TAG_NAME: &str = "molecule:name";
pub const TAG_GENERATION: &str = "molecule:generation";

/// States in which an instance exists and can come back (so `ensure` adopts rather than
/// launches).
const LIVE: &[&str] = &["pending", "running", "stopping", "stopped"];
/// Every state but `terminated`.
const NOT_TERMINATED: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

#[derive(Debug, Clone)]
pub struct Ec2Settings {
    /// `EC2_AMI_ID`.
    pub ami_id: String,
    /// `EC2_INSTANCE_TYPE`: tenants, and workspaces without a tier size.
    pub instance_type: String,
    /// `EC2_INSTANCE_TYPE_TIER_<n>`: workspace sizes by tier (1 to 4).
    pub tier_types: BTreeMap<i64, String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub shared_sg_id: Option<String>,
    /// `EC2_TENANT_IMAGE` or `EC2_TENANT_BINARY_URL`.
    pub artifact: Artifact,
    pub tenant_port: u16,
    pub workspace_port: u16,
    pub state_dir: String,
    pub unit_dir: String,
    /// How long `terminate` waits for `terminated`.
    pub terminate_wait: Duration,
    pub poll_interval: Duration,
    /// Group deletion retries on `DependencyViolation`: attempts and first delay (doubling).
    pub sg_delete_attempts: u32,
    pub sg_delete_backoff: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn aws_id(name: &'static str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v)
            if v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
        {
            Ok(Some(v))
        }
        Some(_) => Err(ConfigError::Invalid {
            name,
            reason: "must be an AWS resource id (letters, digits, '-', '.', '_')".into(),
        }),
        None => Ok(None),
    }
}

impl Ec2Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let missing = |name: &'static str| ConfigError::Invalid {
            name,
            reason: "is required with MOLECULE_PROVIDER=ec2".into(),
        };
        let ami_id =
            aws_id("EC2_AMI_ID", var("EC2_AMI_ID"))?.ok_or_else(|| missing("EC2_AMI_ID"))?;
        let instance_type = aws_id("EC2_INSTANCE_TYPE", var("EC2_INSTANCE_TYPE"))?
            .unwrap_or_else(|| "t3.small".into());
        let mut tier_types = BTreeMap::new();
        for (tier, name) in [
            (1, "EC2_INSTANCE_TYPE_TIER_1"),
            (2, "EC2_INSTANCE_TYPE_TIER_2"),
            (3, "EC2_INSTANCE_TYPE_TIER_3"),
            (4, "EC2_INSTANCE_TYPE_TIER_4"),
        ] {
            if let Some(t) = aws_id(name, var(name))? {
                tier_types.insert(tier, t);
            }
        }
        let artifact = match (var("EC2_TENANT_IMAGE"), var("EC2_TENANT_BINARY_URL")) {
            (Some(image), None) => Artifact::Image(image),
            (None, Some(url)) => Artifact::BinaryUrl(url),
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "EC2_TENANT_IMAGE",
                    reason: "set EC2_TENANT_IMAGE or EC2_TENANT_BINARY_URL, not both".into(),
                })
            }
            (None, None) => return Err(missing("EC2_TENANT_IMAGE (or EC2_TENANT_BINARY_URL)")),
        };
        let settings = Ec2Settings {
            ami_id,
            instance_type,
            tier_types,
            subnet_id: aws_id("EC2_SUBNET_ID", var("EC2_SUBNET_ID"))?,
            vpc_id: aws_id("EC2_VPC_ID", var("EC2_VPC_ID"))?,
            shared_sg_id: aws_id("EC2_SHARED_SG_ID", var("EC2_SHARED_SG_ID"))?,
            artifact,
            ..Ec2Settings::defaults(String::new(), Artifact::Image(String::new()))
        };
        settings.check()?;
        Ok(settings)
    }

    /// Defaults for everything but the AMI and the artifact.
    pub fn defaults(ami_id: String, artifact: Artifact) -> Self {
        Ec2Settings {
            ami_id,
            instance_type: "t3.small".into(),
            tier_types: BTreeMap::new(),
            subnet_id: None,
            vpc_id: None,
            shared_sg_id: None,
            artifact,
            tenant_port: 8080,
            workspace_port: 8000,
            state_dir: "/var/lib/molecule".into(),
            unit_dir: "/etc/systemd/system".into(),
            terminate_wait: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            sg_delete_attempts: 8,
            sg_delete_backoff: Duration::from_secs(2),
        }
    }

    /// Renders an empty script once, so a bad image, URL or path fails at start.
    fn check(&self) -> Result<(), ConfigError> {
        let env = BTreeMap::new();
        user_data::render(&UserDataSpec {
            role: "tenant",
            artifact: &self.artifact,
            args: &[],
            env: &env,
            state_dir: &self.state_dir,
            unit_dir: &self.unit_dir,
        })
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid {
            name: "EC2_TENANT_IMAGE",
            reason: e.to_string(),
        })
    }
}

pub struct Ec2Provider {
    api: Arc<dyn Ec2Api>,
    settings: Ec2Settings,
}

fn launch_err(role: Role, reason: impl std::fmt::Display) -> ProviderError {
    ProviderError::Launch {
        role: role.as_str(),
        reason: reason.to_string(),
    }
}

fn io_err(what: &str, e: Ec2Error) -> ProviderError {
    ProviderError::Io(format!("{what}: {e}"))
}

impl Ec2Provider {
    pub fn new(api: Arc<dyn Ec2Api>, settings: Ec2Settings) -> Self {
        Ec2Provider { api, settings }
    }

    /// The provider over the real SDK client, configured from `aws` (the standard chain).
    pub async fn from_sdk(aws: &crate::aws::AwsSettings, settings: Ec2Settings) -> Self {
        let sdk = crate::aws::sdk_config(aws).await;
        Self::new(Arc::new(aws_sdk_ec2::Client::new(&sdk)), settings)
    }

    pub fn settings(&self) -> &Ec2Settings {
        &self.settings
    }

    /// Logs the isolation mode; without a VPC, says that per-tenant isolation is off.
    pub fn warn_if_shared(&self) {
        match &self.settings.vpc_id {
            Some(vpc) => tracing::info!(vpc = %vpc, "EC2 provider: one security group per tenant and per workspace"),
            None => tracing::warn!(
                shared_group = self.settings.shared_sg_id.as_deref().unwrap_or("(the default group)"),
                "EC2_VPC_ID is not set: per-tenant isolation is OFF. Every tenant and workspace shares one security group, so instances of different orgs can reach each other; set EC2_VPC_ID to give each its own group"
            ),
        }
    }

    fn port(&self, role: Role) -> u16 {
        match role {
            Role::Tenant => self.settings.tenant_port,
            Role::Workspace => self.settings.workspace_port,
        }
    }

    pub fn group_name(role: Role, name: &str) -> String {
        format!("molecule-{}-{name}", role.as_str())
    }

    async fn instances(
        &self,
        role: Role,
        name: &str,
        states: &[&str],
    ) -> Result<Vec<InstanceInfo>, Ec2Error> {
        let mut found = self
            .api
            .find_instances(
                &[
                    (TAG_MANAGED_BY, MANAGED_BY),
                    (TAG_ROLE, role.as_str()),
                    (TAG_NAME, name),
                ],
                states,
            )
            .await?;
        found.sort_by_key(|i| (i.launched_at_ms.unwrap_or(i64::MAX), i.id.clone()));
        Ok(found)
    }

    fn observed(&self, role: Role, i: &InstanceInfo) -> Observed {
        let state = match i.state.as_str() {
            "pending" => ObservedState::Pending,
            "running" => ObservedState::Running,
            _ => ObservedState::Gone,
        };
        let address = match state {
            ObservedState::Gone => None,
            _ => i
                .private_ip
                .as_ref()
                .map(|ip| format!("http://{ip}:{}", self.port(role))),
        };
        Observed {
            instance_id: i.id.clone(),
            state,
            address,
            private_ip: i.private_ip.clone(),
        }
    }

    /// The group the instance goes into: its own (created if missing) with a VPC, else shared.
    async fn security_group(&self, spec: &InstanceSpec) -> Result<Vec<String>, ProviderError> {
        let Some(vpc) = &self.settings.vpc_id else {
            return Ok(self.settings.shared_sg_id.clone().into_iter().collect());
        };
        let name = Self::group_name(spec.role, &spec.name);
        let existing = self
            .api
            .find_security_group(&name, Some(vpc))
            .await
            .map_err(|e| launch_err(spec.role, format!("DescribeSecurityGroups: {e}")))?;
        if let Some(id) = existing {
            return Ok(vec![id]);
        }
        let cidr = self
            .api
            .vpc_cidr(vpc)
            .await
            .map_err(|e| launch_err(spec.role, format!("DescribeVpcs: {e}")))?
            .ok_or_else(|| launch_err(spec.role, format!("VPC {vpc} has no CIDR block")))?;
        let tags = vec![
            (TAG_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (TAG_ORG_ID.to_owned(), spec.org_id.clone()),
            (TAG_ROLE.to_owned(), spec.role.as_str().to_owned()),
            (TAG_NAME.to_owned(), spec.name.clone()),
        ];
        let description = format!("Molecule {} {}", spec.role.as_str(), spec.name);
        let id = match self
            .api
            .create_security_group(&name, &description, vpc, &tags)
            .await
        {
            Ok(id) => id,
            // Created by a concurrent or crashed attempt since we looked: use that one.
            Err(e) if e.is("InvalidGroup.Duplicate") => self
                .api
                .find_security_group(&name, Some(vpc))
                .await
                .map_err(|e| launch_err(spec.role, format!("DescribeSecurityGroups: {e}")))?
                .ok_or_else(|| launch_err(spec.role, "security group vanished"))?,
            Err(e) => return Err(launch_err(spec.role, format!("CreateSecurityGroup: {e}"))),
        };
        let rule = IngressRule {
            port: self.port(spec.role),
            cidr,
            description: format!("molecule {} port from the VPC", spec.role.as_str()),
        };
        match self.api.authorize_ingress(&id, &[rule]).await {
            Ok(()) => {}
            Err(e) if e.is("InvalidPermission.Duplicate") => {}
            Err(e) => {
                return Err(launch_err(
                    spec.role,
                    format!("AuthorizeSecurityGroupIngress: {e}"),
                ))
            }
        }
        Ok(vec![id])
    }

    fn user_data(&self, spec: &InstanceSpec) -> Result<String, ProviderError> {
        let port = self.port(spec.role);
        let listen = format!("0.0.0.0:{port}");
        let mut env = spec.env.clone().into_map();
        let args: Vec<&str> = match spec.role {
            Role::Tenant => {
                env.entry("DATABASE_URL".into())
                    .or_insert_with(|| format!("sqlite://{}/tenant.db", self.settings.state_dir));
                env.entry("MOLECULE_BOOTSTRAP_STATE".into())
                    .or_insert_with(|| format!("{}/bootstrap.json", self.settings.state_dir));
                vec!["tenant", "serve", "--listen", &listen]
            }
            Role::Workspace => vec!["agent", "--listen", &listen],
        };
        let script = user_data::render(&UserDataSpec {
            role: spec.role.as_str(),
            artifact: &self.settings.artifact,
            args: &args,
            env: &env,
            state_dir: &self.settings.state_dir,
            unit_dir: &self.settings.unit_dir,
        })
        .map_err(|e| launch_err(spec.role, format!("user-data: {e}")))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(script))
    }

    fn instance_type(&self, spec: &InstanceSpec) -> String {
        match spec.role {
            Role::Tenant => self.settings.instance_type.clone(),
            Role::Workspace => self
                .settings
                .tier_types
                .get(&spec.tier)
                .cloned()
                .unwrap_or_else(|| self.settings.instance_type.clone()),
        }
    }

    /// Waits (bounded) until `id` is terminated or gone.
    async fn wait_terminated(&self, id: &str) -> Result<(), ProviderError> {
        let until = Instant::now() + self.settings.terminate_wait;
        loop {
            match self.api.instance(id).await {
                Ok(None) => return Ok(()),
                Ok(Some(i)) if i.state == "terminated" => return Ok(()),
                Ok(Some(_)) => {}
                Err(e) => return Err(io_err("DescribeInstances", e)),
            }
            if Instant::now() >= until {
                return Err(ProviderError::Io(format!(
                    "instance {id} not terminated after {} s",
                    self.settings.terminate_wait.as_secs()
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Deletes the instance's own group, retrying with exponential backoff while AWS still sees
    /// it in use (`DependencyViolation`: a terminated instance's interface lingers a while).
    pub async fn delete_group(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        let Some(vpc) = &self.settings.vpc_id else {
            return Ok(());
        };
        let group = Self::group_name(role, name);
        let Some(id) = self
            .api
            .find_security_group(&group, Some(vpc))
            .await
            .map_err(|e| io_err("DescribeSecurityGroups", e))?
        else {
            return Ok(());
        };
        let mut delay = self.settings.sg_delete_backoff;
        let attempts = self.settings.sg_delete_attempts.max(1);
        for attempt in 1..=attempts {
            match self.api.delete_security_group(&id).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) if e.is("DependencyViolation") && attempt < attempts => {
                    tracing::info!(group = %id, attempt, delay_ms = delay.as_millis() as u64, "security group still in use; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
                Err(e) => return Err(io_err("DeleteSecurityGroup", e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn terminate_ids(&self, ids: &[String]) -> Result<(), ProviderError> {
        for id in ids {
            match self.api.terminate_instance(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(io_err("TerminateInstances", e)),
            }
        }
        for id in ids {
            self.wait_terminated(id).await?;
        }
        Ok(())
    }

    fn generation(existing: &[InstanceInfo]) -> i64 {
        existing
            .iter()
            .filter_map(|i| i.tags.get(TAG_GENERATION)?.parse::<i64>().ok())
            .max()
            .unwrap_or(0)
            + 1
    }
}

#[async_trait]
impl Provider for Ec2Provider {
    fn kind(&self) -> &'static str {
        "ec2"
    }

    fn exposes_boot_env(&self) -> bool {
        true
    }

    async fn ensure(&self, spec: &InstanceSpec) -> Result<Observed, ProviderError> {
        let role = spec.role;
        let all = self
            .instances(role, &spec.name, &[])
            .await
            .map_err(|e| launch_err(role, format!("DescribeInstances: {e}")))?;
        let live: Vec<&InstanceInfo> = all
            .iter()
            .filter(|i| LIVE.contains(&i.state.as_str()))
            .collect();
        if live.len() > 1 {
            tracing::warn!(role = role.as_str(), name = %spec.name, count = live.len(), "more than one live instance; adopting the oldest");
        }
        if let Some(found) = live.first() {
            tracing::info!(role = role.as_str(), name = %spec.name, instance = %found.id, state = %found.state, "adopting existing instance");
            if found.state == "stopped" {
                self.api
                    .start_instance(&found.id)
                    .await
                    .map_err(|e| launch_err(role, format!("StartInstances: {e}")))?;
                let mut started = (*found).clone();
                started.state = "pending".into();
                return Ok(self.observed(role, &started));
            }
            return Ok(self.observed(role, found));
        }
        let groups = self.security_group(spec).await?;
        let user_data = self.user_data(spec)?;
        let generation = Self::generation(&all);
        let tags = vec![
            (TAG_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (TAG_ORG_ID.to_owned(), spec.org_id.clone()),
            (TAG_ROLE.to_owned(), role.as_str().to_owned()),
            (TAG_NAME.to_owned(), spec.name.clone()),
            (TAG_GENERATION.to_owned(), generation.to_string()),
            (
                "Name".to_owned(),
                format!("molecule-{}-{}", role.as_str(), spec.name),
            ),
        ];
        let token = hex::encode(Sha256::digest(format!(
            "{}/{}/{}/{generation}",
            role.as_str(),
            spec.org_id,
            spec.name
        )));
        let req = LaunchRequest {
            image_id: self.settings.ami_id.clone(),
            instance_type: self.instance_type(spec),
            subnet_id: self.settings.subnet_id.clone(),
            security_group_ids: groups,
            user_data_b64: user_data,
            tags,
            client_token: token[..64].to_owned(),
        };
        let launched = self
            .api
            .run_instance(&req)
            .await
            .map_err(|e| launch_err(role, format!("RunInstances: {e}")))?;
        tracing::info!(role = role.as_str(), name = %spec.name, instance = %launched.id, generation, "instance launched");
        Ok(self.observed(role, &launched))
    }

    async fn describe(&self, role: Role, name: &str) -> Result<Observed, ProviderError> {
        let found = self
            .instances(role, name, NOT_TERMINATED)
            .await
            .map_err(|e| io_err("DescribeInstances", e))?;
        let best = found
            .iter()
            .find(|i| i.state == "running")
            .or_else(|| found.iter().find(|i| i.state == "pending"))
            .or_else(|| found.first());
        Ok(match best {
            Some(i) => self.observed(role, i),
            None => Observed {
                instance_id: String::new(),
                state: ObservedState::Gone,
                address: None,
                private_ip: None,
            },
        })
    }

    async fn stop(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        let found = self
            .instances(role, name, &["pending", "running"])
            .await
            .map_err(|e| io_err("DescribeInstances", e))?;
        for i in found {
            self.api
                .stop_instance(&i.id)
                .await
                .map_err(|e| io_err("StopInstances", e))?;
        }
        Ok(())
    }

    async fn terminate(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        let ids: Vec<String> = self
            .instances(role, name, NOT_TERMINATED)
            .await
            .map_err(|e| io_err("DescribeInstances", e))?
            .into_iter()
            .map(|i| i.id)
            .collect();
        self.terminate_ids(&ids).await?;
        self.delete_group(role, name).await
    }

    async fn console(&self, role: Role, name: &str) -> Result<String, ProviderError> {
        let found = self
            .instances(role, name, NOT_TERMINATED)
            .await
            .map_err(|e| io_err("DescribeInstances", e))?;
        let Some(i) = found.first() else {
            return Ok(String::new());
        };
        Ok(self
            .api
            .console_output(&i.id)
            .await
            .map_err(|e| io_err("GetConsoleOutput", e))?
            .unwrap_or_default())
    }

    async fn list_managed(&self) -> Result<Vec<ManagedInstance>, ProviderError> {
        let found = self
            .api
            .find_instances(&[(TAG_MANAGED_BY, MANAGED_BY)], LIVE)
            .await
            .map_err(|e| io_err("DescribeInstances", e))?;
        Ok(found
            .into_iter()
            .filter_map(|i| {
                let role = match i.tags.get(TAG_ROLE)?.as_str() {
                    "tenant" => Role::Tenant,
                    "workspace" => Role::Workspace,
                    _ => return None,
                };
                Some(ManagedInstance {
                    role,
                    name: i.tags.get(TAG_NAME)?.clone(),
                    org_id: i.tags.get(TAG_ORG_ID).cloned().unwrap_or_default(),
                    instance_id: i.id,
                    launched_at_ms: i.launched_at_ms,
                })
            })
            .collect())
    }

    async fn terminate_managed(&self, m: &ManagedInstance) -> Result<(), ProviderError> {
        self.terminate_ids(std::slice::from_ref(&m.instance_id))
            .await?;
        // The group is shared by every instance of this role and name: delete it only when no
        // other instance of it remains.
        let others = self
            .instances(m.role, &m.name, NOT_TERMINATED)
            .await
            .map_err(|e| io_err("DescribeInstances", e))?;
        if others.is_empty() {
            self.delete_group(m.role, &m.name).await?;
        }
        Ok(())
    }
}
