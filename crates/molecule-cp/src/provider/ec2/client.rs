//! The EC2 calls the provider makes, behind a small trait: implemented for the real SDK client
//! (which tests run against moto) and, in tests, by a fake for what moto does not emulate
//! (`DependencyViolation` on group deletion, orphan timing).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, InstanceType, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
};

/// An EC2 error: its code (`DependencyViolation`, `InvalidGroup.NotFound` ...) and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct Ec2Error {
    pub code: Option<String>,
    pub message: String,
}

impl Ec2Error {
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            code: Some(code.to_owned()),
            message: message.to_owned(),
        }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn is_not_found(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.ends_with("NotFound"))
    }
}

fn sdk_err<E>(e: aws_sdk_ec2::error::SdkError<E>) -> Ec2Error
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    Ec2Error {
        code: e.code().map(str::to_owned),
        message: crate::aws::error_text(&e),
    }
}

/// What the provider needs to know about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: String,
    /// The EC2 state name: pending, running, shutting-down, terminated, stopping, stopped.
    pub state: String,
    pub private_ip: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Launch time, ms since the epoch.
    pub launched_at_ms: Option<i64>,
}

#[derive(Clone)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// Base64 of the user-data script (the API wants it encoded; the SDK does not do it).
    pub user_data_b64: String,
    pub tags: Vec<(String, String)>,
    pub client_token: String,
}

impl std::fmt::Debug for LaunchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("image_id", &self.image_id)
            .field("instance_type", &self.instance_type)
            .field("user_data_len", &self.user_data_b64.len())
            .field("tags", &self.tags)
            .finish()
    }
}

/// One ingress rule: TCP `port` from `cidr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    pub port: u16,
    pub cidr: String,
    pub description: String,
}

#[async_trait]
pub trait Ec2Api: Send + Sync + 'static {
    /// Instances whose tags include every `tags` pair and whose state is one of `states`.
    async fn find_instances(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> Result<Vec<InstanceInfo>, Ec2Error>;
    async fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, Ec2Error>;
    async fn run_instance(&self, req: &LaunchRequest) -> Result<InstanceInfo, Ec2Error>;
    async fn start_instance(&self, id: &str) -> Result<(), Ec2Error>;
    async fn stop_instance(&self, id: &str) -> Result<(), Ec2Error>;
    async fn terminate_instance(&self, id: &str) -> Result<(), Ec2Error>;
    /// The id of the group named `name` (in `vpc_id`, when given).
    async fn find_security_group(
        &self,
        name: &str,
        vpc_id: Option<&str>,
    ) -> Result<Option<String>, Ec2Error>;
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[(String, String)],
    ) -> Result<String, Ec2Error>;
    async fn authorize_ingress(
        &self,
        group_id: &str,
        rules: &[IngressRule],
    ) -> Result<(), Ec2Error>;
    async fn delete_security_group(&self, group_id: &str) -> Result<(), Ec2Error>;
    async fn vpc_cidr(&self, vpc_id: &str) -> Result<Option<String>, Ec2Error>;
    /// The console output, decoded.
    async fn console_output(&self, id: &str) -> Result<Option<String>, Ec2Error>;
}

fn info(i: &aws_sdk_ec2::types::Instance) -> InstanceInfo {
    InstanceInfo {
        id: i.instance_id().unwrap_or_default().to_owned(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_owned),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
        launched_at_ms: i.launch_time().and_then(|t| t.to_millis().ok()),
    }
}

fn tag_spec(kind: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(kind);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    spec.build()
}

#[async_trait]
impl Ec2Api for aws_sdk_ec2::Client {
    async fn find_instances(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> Result<Vec<InstanceInfo>, Ec2Error> {
        let mut filters: Vec<Filter> = tags
            .iter()
            .map(|(k, v)| {
                Filter::builder()
                    .name(format!("tag:{k}"))
                    .values(*v)
                    .build()
            })
            .collect();
        if !states.is_empty() {
            let mut f = Filter::builder().name("instance-state-name");
            for s in states {
                f = f.values(*s);
            }
            filters.push(f.build());
        }
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let resp = self
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(sdk_err)?;
            for r in resp.reservations() {
                out.extend(r.instances().iter().map(info));
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, Ec2Error> {
        match self.describe_instances().instance_ids(id).send().await {
            Ok(resp) => Ok(resp
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(info)
                .find(|i| i.id == id)),
            Err(e) => {
                let e = sdk_err(e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn run_instance(&self, req: &LaunchRequest) -> Result<InstanceInfo, Ec2Error> {
        let resp = self
            .run_instances()
            .image_id(&req.image_id)
            .instance_type(InstanceType::from(req.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(req.subnet_id.clone())
            .set_security_group_ids(Some(req.security_group_ids.clone()))
            .user_data(&req.user_data_b64)
            .client_token(&req.client_token)
            .tag_specifications(tag_spec(ResourceType::Instance, &req.tags))
            .send()
            .await
            .map_err(sdk_err)?;
        resp.instances()
            .first()
            .map(info)
            .ok_or_else(|| Ec2Error::new("Empty", "RunInstances returned no instance"))
    }

    async fn start_instance(&self, id: &str) -> Result<(), Ec2Error> {
        self.start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn stop_instance(&self, id: &str) -> Result<(), Ec2Error> {
        self.stop_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn terminate_instance(&self, id: &str) -> Result<(), Ec2Error> {
        self.terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn find_security_group(
        &self,
        name: &str,
        vpc_id: Option<&str>,
    ) -> Result<Option<String>, Ec2Error> {
        let mut req = self
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(name).build());
        if let Some(vpc) = vpc_id {
            req = req.filters(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let resp = req.send().await.map_err(sdk_err)?;
        Ok(resp
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(name))
            .and_then(|g| g.group_id())
            .map(str::to_owned))
    }

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[(String, String)],
    ) -> Result<String, Ec2Error> {
        let resp = self
            .create_security_group()
            .group_name(name)
            .description(description)
            .vpc_id(vpc_id)
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(sdk_err)?;
        resp.group_id()
            .map(str::to_owned)
            .ok_or_else(|| Ec2Error::new("Empty", "CreateSecurityGroup returned no id"))
    }

    async fn authorize_ingress(
        &self,
        group_id: &str,
        rules: &[IngressRule],
    ) -> Result<(), Ec2Error> {
        let perms = rules
            .iter()
            .map(|r| {
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(i32::from(r.port))
                    .to_port(i32::from(r.port))
                    .ip_ranges(
                        IpRange::builder()
                            .cidr_ip(&r.cidr)
                            .description(&r.description)
                            .build(),
                    )
                    .build()
            })
            .collect();
        self.authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(perms))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn delete_security_group(&self, group_id: &str) -> Result<(), Ec2Error> {
        self.delete_security_group()
            .group_id(group_id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn vpc_cidr(&self, vpc_id: &str) -> Result<Option<String>, Ec2Error> {
        let resp = self
            .describe_vpcs()
            .vpc_ids(vpc_id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(resp
            .vpcs()
            .first()
            .and_then(|v| v.cidr_block())
            .map(str::to_owned))
    }

    async fn console_output(&self, id: &str) -> Result<Option<String>, Ec2Error> {
        use base64::Engine;
        let resp = self
            .get_console_output()
            .instance_id(id)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(resp.output().map(|o| {
            base64::engine::general_purpose::STANDARD
                .decode(o.trim())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| o.to_owned())
        }))
    }
}
