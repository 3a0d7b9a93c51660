//! The EC2 provider and KMS envelope mode against a real EC2 and KMS API implementation: a moto
//! server on loopback (required in CI; skipped with a reason elsewhere if missing).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use base64::Engine;
use common::{config, eventually, LogCapture, RunningCp};
use molecule_cp::aws::AwsSettings;
use molecule_cp::keyring::{Keyring, KeyringError};
use molecule_cp::provider::ec2::user_data::Artifact;
use molecule_cp::provider::ec2::{Ec2Provider, Ec2Settings};
use molecule_cp::provider::{
    BootEnv, InstanceSpec, Observed, ObservedState, Provider, ProviderError, Role,
};
use molecule_shared::crypto::{sealed_version, EncryptionKey};
use molecule_testkit::moto::MotoServer;

struct Moto {
    _server: MotoServer,
    aws: AwsSettings,
    ec2: aws_sdk_ec2::Client,
    ami: String,
}

async fn moto() -> Option<Moto> {
    let server = MotoServer::start()?;
    let aws = AwsSettings::for_test_endpoint(&server.url());
    let sdk = molecule_cp::aws::sdk_config(&aws).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let images = ec2.describe_images().send().await.expect("DescribeImages");
    let ami = images
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .expect("moto has images")
        .to_owned();
    Some(Moto {
        _server: server,
        aws,
        ec2,
        ami,
    })
}

impl Moto {
    async fn vpc(&self) -> (String, String) {
        let vpc = self
            .ec2
            .create_vpc()
            .cidr_block("10.20.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
        let subnet = self
            .ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block("10.20.1.0/24")
            .send()
            .await
            .unwrap();
        let subnet_id = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
        (vpc_id, subnet_id)
    }

    fn settings(&self) -> Ec2Settings {
        let mut s = Ec2Settings::defaults(
            self.ami.clone(),
            Artifact::Image("ghcr.io/molecule/tenant:test".into()),
        );
        s.poll_interval = Duration::from_millis(100);
        s.terminate_wait = Duration::from_secs(30);
        s.sg_delete_backoff = Duration::from_millis(50);
        s
    }

    async fn provider(&self, settings: Ec2Settings) -> Arc<Ec2Provider> {
        Arc::new(Ec2Provider::from_sdk(&self.aws, settings).await)
    }

    /// Instances tagged as the tenant of `slug`, with their states.
    async fn tenant_instances(&self, slug: &str) -> Vec<aws_sdk_ec2::types::Instance> {
        let resp = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:molecule:name")
                    .values(slug)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("tag:molecule:role")
                    .values("tenant")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        resp.reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect()
    }

    async fn live_tenant_instances(&self, slug: &str) -> Vec<aws_sdk_ec2::types::Instance> {
        self.tenant_instances(slug)
            .await
            .into_iter()
            .filter(|i| {
                let s = i.state().and_then(|s| s.name()).map(|n| n.as_str());
                matches!(s, Some("pending" | "running"))
            })
            .collect()
    }

    async fn group(&self, name: &str) -> Option<aws_sdk_ec2::types::SecurityGroup> {
        let resp = self
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(name).build())
            .send()
            .await
            .unwrap();
        resp.security_groups().first().cloned()
    }

    async fn user_data(&self, instance_id: &str) -> String {
        let resp = self
            .ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let b64 = resp.user_data().and_then(|v| v.value()).unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }
}

fn tag(i: &aws_sdk_ec2::types::Instance, key: &str) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_owned)
}

/// The env file the user-data writes (its base64 here-document after `<role>.env`).
fn env_file_of(script: &str) -> String {
    let mut lines = script.lines();
    lines
        .by_ref()
        .find(|l| l.contains(".env' <<'MOLECULE_DATA'"))
        .expect("env file here-document");
    let b64: String = lines.take_while(|l| *l != "MOLECULE_DATA").collect();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// The single-quoted value of `export NAME='...'` in an env file (no `'` inside: tokens and ids).
fn exported(env_file: &str, name: &str) -> Option<String> {
    env_file
        .lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}='")))
        .map(|v| v.trim_end_matches('\'').to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_gets_one_tagged_instance_in_its_own_group_and_deletion_removes_both() {
    let Some(m) = moto().await else { return };
    let (vpc_id, subnet_id) = m.vpc().await;
    let mut settings = m.settings();
    settings.vpc_id = Some(vpc_id.clone());
    settings.subnet_id = Some(subnet_id.clone());
    let dir = tempfile::tempdir().unwrap();
    let cp = RunningCp::start(config(dir.path()), m.provider(settings).await).await;
    let org = cp.create_org("acme").await;
    let org_id = org["id"].as_str().unwrap().to_owned();

    let instances = eventually(20, "the tenant instance", || async {
        let found = m.tenant_instances("acme").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    // A few more reconcile passes (the tenant never answers health on moto): still one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = m.tenant_instances("acme").await;
    assert_eq!(all.len(), 1, "exactly one instance for the org");
    let inst = &instances[0];
    assert_eq!(
        tag(inst, "molecule:org-id").as_deref(),
        Some(org_id.as_str())
    );
    assert_eq!(tag(inst, "molecule:role").as_deref(), Some("tenant"));
    assert_eq!(tag(inst, "molecule:name").as_deref(), Some("acme"));
    assert_eq!(
        tag(inst, "molecule:managed-by").as_deref(),
        Some("molecule-cp")
    );
    assert_eq!(tag(inst, "molecule:generation").as_deref(), Some("1"));
    assert_eq!(inst.subnet_id(), Some(subnet_id.as_str()));

    // Its own group, in the VPC, with only the tenant port from the VPC's CIDR.
    let group = m
        .group("molecule-tenant-acme")
        .await
        .expect("per-tenant group");
    assert_eq!(group.vpc_id(), Some(vpc_id.as_str()));
    let inst_groups: Vec<_> = inst
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(inst_groups, vec![group.group_id().unwrap()]);
    let rules = group.ip_permissions();
    assert_eq!(rules.len(), 1, "one ingress rule: {rules:?}");
    let rule = &rules[0];
    assert_eq!(rule.ip_protocol(), Some("tcp"));
    assert_eq!((rule.from_port(), rule.to_port()), (Some(8080), Some(8080)));
    let cidrs: Vec<_> = rule
        .ip_ranges()
        .iter()
        .filter_map(|r| r.cidr_ip())
        .collect();
    assert_eq!(cidrs, vec!["10.20.0.0/16"]);

    // Deletion terminates the instance and removes the group.
    let resp = reqwest::Client::new()
        .delete(format!("{}/cp/admin/tenants/acme", cp.url))
        .bearer_auth(cp.admin())
        .json(&serde_json::json!({"confirm": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let after = m.tenant_instances("acme").await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("terminated")
    );
    assert!(
        m.group("molecule-tenant-acme").await.is_none(),
        "group deleted"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_vpc_the_shared_group_is_used_and_a_warning_is_logged() {
    let Some(m) = moto().await else { return };
    let shared = m
        .ec2
        .create_security_group()
        .group_name("molecule-shared")
        .description("shared")
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    let mut settings = m.settings();
    settings.shared_sg_id = Some(shared.clone());
    let provider = m.provider(settings).await;
    let logs = LogCapture::default();
    tracing::subscriber::with_default(logs.subscriber(), || provider.warn_if_shared());
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("EC2_VPC_ID is not set"), "{text}");
    assert!(text.contains("per-tenant isolation is OFF"), "{text}");

    let spec = InstanceSpec {
        role: Role::Tenant,
        name: "acme".into(),
        org_id: "org-1".into(),
        env: BootEnv::default(),
        tier: 0,
    };
    let observed = provider.ensure(&spec).await.unwrap();
    let inst = &m.live_tenant_instances("acme").await[0];
    assert_eq!(inst.instance_id(), Some(observed.instance_id.as_str()));
    let groups: Vec<_> = inst
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, vec![shared.as_str()]);
    assert!(m.group("molecule-tenant-acme").await.is_none());
    // With a VPC configured the warning is not logged.
    let mut with_vpc = m.settings();
    with_vpc.vpc_id = Some(m.vpc().await.0);
    let provider = m.provider(with_vpc).await;
    let logs = LogCapture::default();
    tracing::subscriber::with_default(logs.subscriber(), || provider.warn_if_shared());
    assert!(!logs.text().contains("isolation is OFF"), "{}", logs.text());
}

/// Launches, then never returns: the CP "crashes" between RunInstances and recording the
/// instance.
struct CrashAfterLaunch(Arc<dyn Provider>);

#[async_trait]
impl Provider for CrashAfterLaunch {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn exposes_boot_env(&self) -> bool {
        true
    }
    async fn ensure(&self, spec: &InstanceSpec) -> Result<Observed, ProviderError> {
        self.0.ensure(spec).await?;
        std::future::pending().await
    }
    async fn describe(&self, role: Role, name: &str) -> Result<Observed, ProviderError> {
        self.0.describe(role, name).await
    }
    async fn stop(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        self.0.stop(role, name).await
    }
    async fn terminate(&self, role: Role, name: &str) -> Result<(), ProviderError> {
        self.0.terminate(role, name).await
    }
    async fn console(&self, role: Role, name: &str) -> Result<String, ProviderError> {
        self.0.console(role, name).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cp_restarted_between_launch_and_commit_adopts_instead_of_launching_again() {
    let Some(m) = moto().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = RunningCp::start(
        config(dir.path()),
        Arc::new(CrashAfterLaunch(m.provider(m.settings()).await)),
    )
    .await;
    let org = first.create_org("crashy").await;
    let org_id = org["id"].as_str().unwrap().to_owned();
    eventually(20, "the first launch", || async {
        (!m.live_tenant_instances("crashy").await.is_empty()).then_some(())
    })
    .await;
    let store = first.cp.store.clone();
    let row = store.instance(&org_id).await.unwrap().unwrap();
    assert_eq!(row.instance_id, None, "the launch was never recorded");
    first.stop().await;

    // A new CP on the same database and a fresh provider: it must adopt, not launch.
    let second = RunningCp::start(config(dir.path()), m.provider(m.settings()).await).await;
    let recorded = eventually(20, "the adopted instance recorded", || async {
        store.instance(&org_id).await.unwrap().unwrap().instance_id
    })
    .await;
    let live = m.live_tenant_instances("crashy").await;
    assert_eq!(live.len(), 1, "no second instance");
    assert_eq!(live[0].instance_id(), Some(recorded.as_str()));
    assert_eq!(m.tenant_instances("crashy").await.len(), 1);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_user_data_holds_no_secret_and_its_bootstrap_token_works_once() {
    let Some(m) = moto().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let cp = RunningCp::start(config(dir.path()), m.provider(m.settings()).await).await;
    let org = cp.create_org("bootco").await;
    let org_id = org["id"].as_str().unwrap().to_owned();
    let inst = eventually(20, "the tenant instance", || async {
        m.live_tenant_instances("bootco").await.into_iter().next()
    })
    .await;
    let script = m.user_data(inst.instance_id().unwrap()).await;

    // Every secret the tenant ends up with, and the CP's own.
    let admin_token: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/cp/admin/orgs/bootco/admin-token", cp.url))
        .bearer_auth(cp.admin())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin_token = admin_token["admin_token"].as_str().unwrap().to_owned();
    let org_row = cp.cp.store.org_by_id(&org_id).await.unwrap().unwrap();
    let full = molecule_cp::tenant_config::boot_env(&cp.cp, &org_row)
        .await
        .unwrap();
    let tenant_key = full.get("SECRETS_ENCRYPTION_KEY").unwrap().to_owned();
    let shared = cp
        .cp
        .config
        .shared_secret
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let cp_key = cp.cp.config.encryption_key.to_base64().expose().to_owned();
    let env_file = env_file_of(&script);
    for (what, secret) in [
        ("admin token", admin_token.as_str()),
        ("tenant encryption key", tenant_key.as_str()),
        ("shared secret", shared.as_str()),
        ("CP encryption key", cp_key.as_str()),
        ("CP admin token", cp.admin().as_str()),
    ] {
        assert!(!script.contains(secret), "user-data contains the {what}");
        assert!(
            !env_file.contains(secret),
            "the env file contains the {what}"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(
            !script.contains(&b64),
            "user-data contains the {what}, base64"
        );
    }
    assert_eq!(
        exported(&env_file, "MOLECULE_ORG_ID").as_deref(),
        Some(org_id.as_str())
    );
    assert_eq!(
        exported(&env_file, "MOLECULE_CP_URL").as_deref(),
        Some(cp.url.as_str())
    );
    assert!(exported(&env_file, "ADMIN_TOKEN").is_none());
    let token = exported(&env_file, "MOLECULE_BOOTSTRAP_TOKEN").expect("bootstrap token");
    assert!(token.starts_with("mol_bst_"));

    // The tenant's exchange: once, for the right org only.
    use molecule_tenant::bootstrap::{exchange, BootstrapError};
    assert!(matches!(
        exchange(&cp.url, "some-other-org", &token).await,
        Err(BootstrapError::Refused)
    ));
    let got = exchange(&cp.url, &org_id, &token).await.unwrap();
    assert_eq!(got.get("ADMIN_TOKEN"), Some(&admin_token));
    assert_eq!(got.get("SECRETS_ENCRYPTION_KEY"), Some(&tenant_key));
    assert_eq!(got.get("MOLECULE_CP_SHARED_SECRET"), Some(&shared));
    assert!(matches!(
        exchange(&cp.url, &org_id, &token).await,
        Err(BootstrapError::Refused)
    ));
    // An expired token is refused too.
    let expired = molecule_shared::token::generate(molecule_shared::token::TokenKind::Bootstrap);
    let hash = molecule_shared::token::TokenHash::of(expired.expose());
    cp.cp
        .store
        .insert_bootstrap_token(&org_id, hash.as_str(), molecule_shared::now_ms() + 300)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        exchange(&cp.url, &org_id, expired.expose()).await,
        Err(BootstrapError::Refused)
    ));
    // Each refusal is audited, with the token kind and never the token.
    let audit = cp.cp.store.audit(100).await.unwrap();
    let denied: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "POST /cp/tenants/bootstrap" && a.outcome == "denied")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    for a in &denied {
        assert!(a.detail.contains("mol_bst_"), "{}", a.detail);
        assert!(!a.detail.contains(&token[8..]), "{}", a.detail);
    }
    assert!(audit
        .iter()
        .any(|a| a.action == "bootstrap" && a.outcome == "ok"));
    cp.stop().await;
}

async fn kms_key(m: &Moto) -> String {
    let sdk = molecule_cp::aws::sdk_config(&m.aws).await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms.create_key().send().await.unwrap();
    key.key_metadata().unwrap().arn().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_envelopes_round_trip_and_are_bound_to_their_org() {
    let Some(m) = moto().await else { return };
    let arn = kms_key(&m).await;
    let static_key = EncryptionKey::generate();
    let kms = Keyring::kms(&m.aws, arn.clone(), Some(static_key.clone())).await;
    let sealed = kms
        .seal("org-a", "admin_token", "s3cret-value")
        .await
        .unwrap();
    assert_eq!(sealed_version(&sealed).unwrap(), 2);
    assert!(!sealed.contains("s3cret"));
    let again = kms
        .seal("org-a", "admin_token", "s3cret-value")
        .await
        .unwrap();
    assert_ne!(sealed, again, "a fresh data key and nonce each time");
    assert_eq!(
        kms.open("org-a", "admin_token", &sealed)
            .await
            .unwrap()
            .expose(),
        "s3cret-value"
    );
    // Bound to org A: as org B (or another field) it does not decrypt, at KMS.
    assert!(matches!(
        kms.open("org-b", "admin_token", &sealed).await,
        Err(KeyringError::Kms { op: "Decrypt", .. })
    ));
    assert!(kms.open("org-a", "encryption_key", &sealed).await.is_err());
    // A static-mode keyring cannot open a KMS envelope, and says why.
    assert!(Keyring::Static(static_key.clone())
        .open("org-a", "admin_token", &sealed)
        .await
        .is_err());
    // Static rows open in KMS mode with the static key configured, and only with it.
    let v1 = Keyring::Static(static_key.clone())
        .seal("org-a", "admin_token", "old-row")
        .await
        .unwrap();
    assert_eq!(
        kms.open("org-a", "admin_token", &v1)
            .await
            .unwrap()
            .expose(),
        "old-row"
    );
    let kms_only = Keyring::kms(&m.aws, arn, None).await;
    assert!(matches!(
        kms_only.open("org-a", "admin_token", &v1).await,
        Err(KeyringError::NoStaticKey)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_in_static_mode_stay_readable_after_switching_to_kms() {
    let Some(m) = moto().await else { return };
    let arn = kms_key(&m).await;
    let dir = tempfile::tempdir().unwrap();
    let mut static_config = config(dir.path());
    static_config.provision_deadline = Duration::from_secs(1);
    let static_key = static_config.encryption_key.clone();
    let local: Arc<dyn Provider> = Arc::new(Noop);
    let first = RunningCp::start(static_config.clone(), local.clone()).await;
    first.create_org("oldorg").await;
    let old = first.cp.store.org_by_slug("oldorg").await.unwrap().unwrap();
    let old_token = molecule_cp::orgs::admin_token(&first.cp, &old)
        .await
        .unwrap();
    let creds = first.cp.store.credentials(&old.id).await.unwrap().unwrap();
    assert_eq!(sealed_version(&creds.admin_token_sealed).unwrap(), 1);
    first.stop().await;

    let mut kms_config = static_config;
    kms_config.kms_key_arn = Some(arn);
    kms_config.aws = m.aws.clone();
    kms_config.encryption_key = static_key;
    let second = RunningCp::start(kms_config, local).await;
    assert_eq!(second.cp.keyring.mode(), "kms");
    let reread = molecule_cp::orgs::admin_token(&second.cp, &old)
        .await
        .unwrap();
    assert_eq!(reread, old_token, "static rows stay readable in KMS mode");
    assert!(molecule_cp::tenant_config::boot_env(&second.cp, &old)
        .await
        .is_ok());
    second.create_org("neworg").await;
    let new = second
        .cp
        .store
        .org_by_slug("neworg")
        .await
        .unwrap()
        .unwrap();
    let creds = second.cp.store.credentials(&new.id).await.unwrap().unwrap();
    assert_eq!(sealed_version(&creds.admin_token_sealed).unwrap(), 2);
    assert_eq!(sealed_version(&creds.encryption_key_sealed).unwrap(), 2);
    assert!(molecule_cp::orgs::admin_token(&second.cp, &new)
        .await
        .is_ok());
    second.stop().await;
}

/// A provider that runs nothing (the KMS test needs a CP, not instances).
struct Noop;

#[async_trait]
impl Provider for Noop {
    fn kind(&self) -> &'static str {
        "local"
    }
    async fn ensure(&self, _: &InstanceSpec) -> Result<Observed, ProviderError> {
        Err(ProviderError::Io("noop".into()))
    }
    async fn describe(&self, _: Role, _: &str) -> Result<Observed, ProviderError> {
        Ok(Observed {
            instance_id: String::new(),
            state: ObservedState::Gone,
            address: None,
            private_ip: None,
        })
    }
    async fn stop(&self, _: Role, _: &str) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn terminate(&self, _: Role, _: &str) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn console(&self, _: Role, _: &str) -> Result<String, ProviderError> {
        Ok(String::new())
    }
}
