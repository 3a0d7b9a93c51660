//! What moto does not emulate, against a hand-written fake of the provider's EC2 client:
//! `DependencyViolation` while deleting a group (moto deletes a group in use), and the timing of
//! the orphan sweep.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::config;
use molecule_cp::provider::ec2::client::{
    Ec2Api, Ec2Error, IngressRule, InstanceInfo, LaunchRequest,
};
use molecule_cp::provider::ec2::user_data::Artifact;
use molecule_cp::provider::ec2::{Ec2Provider, Ec2Settings};
use molecule_cp::provider::{Provider, Role};
use molecule_cp::reconcile::{sweep_orphans, OrphanTracker};

#[derive(Default)]
struct FakeState {
    instances: Vec<InstanceInfo>,
    groups: BTreeMap<String, String>,
    /// How many more deletions answer `DependencyViolation`.
    busy_deletes: u32,
    delete_attempts: Vec<Instant>,
    terminated: Vec<String>,
}

#[derive(Default, Clone)]
struct FakeEc2(Arc<Mutex<FakeState>>);

impl FakeEc2 {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn add_instance(&self, id: &str, role: &str, name: &str, org: &str) {
        let tags = BTreeMap::from([
            ("molecule:managed-by".to_owned(), "molecule-cp".to_owned()),
            ("molecule:role".to_owned(), role.to_owned()),
            ("molecule:name".to_owned(), name.to_owned()),
            ("molecule:org-id".to_owned(), org.to_owned()),
        ]);
        self.state().instances.push(InstanceInfo {
            id: id.into(),
            state: "running".into(),
            private_ip: Some("10.0.0.9".into()),
            tags,
            launched_at_ms: Some(1),
        });
    }
}

#[async_trait]
impl Ec2Api for FakeEc2 {
    async fn find_instances(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> Result<Vec<InstanceInfo>, Ec2Error> {
        Ok(self
            .state()
            .instances
            .iter()
            .filter(|i| {
                tags.iter()
                    .all(|(k, v)| i.tags.get(*k).map(String::as_str) == Some(*v))
            })
            .filter(|i| states.is_empty() || states.contains(&i.state.as_str()))
            .cloned()
            .collect())
    }
    async fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, Ec2Error> {
        Ok(self.state().instances.iter().find(|i| i.id == id).cloned())
    }
    async fn run_instance(&self, _: &LaunchRequest) -> Result<InstanceInfo, Ec2Error> {
        Err(Ec2Error::new("Unsupported", "not in this fake"))
    }
    async fn start_instance(&self, _: &str) -> Result<(), Ec2Error> {
        Ok(())
    }
    async fn stop_instance(&self, _: &str) -> Result<(), Ec2Error> {
        Ok(())
    }
    async fn terminate_instance(&self, id: &str) -> Result<(), Ec2Error> {
        let mut s = self.state();
        s.terminated.push(id.to_owned());
        for i in s.instances.iter_mut().filter(|i| i.id == id) {
            i.state = "terminated".into();
        }
        Ok(())
    }
    async fn find_security_group(
        &self,
        name: &str,
        _: Option<&str>,
    ) -> Result<Option<String>, Ec2Error> {
        Ok(self.state().groups.get(name).cloned())
    }
    async fn create_security_group(
        &self,
        name: &str,
        _: &str,
        _: &str,
        _: &[(String, String)],
    ) -> Result<String, Ec2Error> {
        let id = format!("sg-{name}");
        self.state().groups.insert(name.into(), id.clone());
        Ok(id)
    }
    async fn authorize_ingress(&self, _: &str, _: &[IngressRule]) -> Result<(), Ec2Error> {
        Ok(())
    }
    async fn delete_security_group(&self, group_id: &str) -> Result<(), Ec2Error> {
        let mut s = self.state();
        s.delete_attempts.push(Instant::now());
        if s.busy_deletes > 0 {
            s.busy_deletes -= 1;
            return Err(Ec2Error::new(
                "DependencyViolation",
                "resource has a dependent object",
            ));
        }
        s.groups.retain(|_, id| id != group_id);
        Ok(())
    }
    async fn vpc_cidr(&self, _: &str) -> Result<Option<String>, Ec2Error> {
        Ok(Some("10.0.0.0/16".into()))
    }
    async fn console_output(&self, _: &str) -> Result<Option<String>, Ec2Error> {
        Ok(None)
    }
}

fn provider(fake: &FakeEc2, attempts: u32) -> Ec2Provider {
    let mut s = Ec2Settings::defaults("ami-1".into(), Artifact::Image("img:1".into()));
    s.vpc_id = Some("vpc-1".into());
    s.poll_interval = Duration::from_millis(5);
    s.terminate_wait = Duration::from_secs(2);
    s.sg_delete_attempts = attempts;
    s.sg_delete_backoff = Duration::from_millis(20);
    Ec2Provider::new(Arc::new(fake.clone()), s)
}

#[tokio::test]
async fn group_deletion_retries_with_backoff_while_aws_reports_a_dependency_violation() {
    let fake = FakeEc2::default();
    fake.add_instance("i-1", "tenant", "acme", "org-1");
    fake.state()
        .groups
        .insert("molecule-tenant-acme".into(), "sg-1".into());
    fake.state().busy_deletes = 3;
    provider(&fake, 6)
        .terminate(Role::Tenant, "acme")
        .await
        .expect("succeeds once the group is free");
    let s = fake.state();
    assert_eq!(s.terminated, vec!["i-1"]);
    assert!(s.groups.is_empty(), "group deleted");
    assert_eq!(s.delete_attempts.len(), 4, "three refusals, then success");
    let gaps: Vec<Duration> = s.delete_attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(20), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(40), "doubling: {gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(80), "doubling: {gaps:?}");
}

#[tokio::test]
async fn group_deletion_gives_up_after_its_bounded_attempts() {
    let fake = FakeEc2::default();
    fake.state()
        .groups
        .insert("molecule-tenant-acme".into(), "sg-1".into());
    fake.state().busy_deletes = u32::MAX;
    let err = provider(&fake, 3)
        .terminate(Role::Tenant, "acme")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("DependencyViolation"), "{err}");
    assert_eq!(fake.state().delete_attempts.len(), 3);
    assert_eq!(
        fake.state().groups.len(),
        1,
        "group still there; a retry resumes"
    );
}

#[tokio::test]
async fn the_orphan_sweep_reports_first_and_terminates_after_the_grace_period() {
    let fake = FakeEc2::default();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.orphan_grace = Duration::from_millis(400);
    let app = molecule_cp::startup::Application::build(
        cfg,
        Arc::new(provider(&fake, 3)),
        Default::default(),
    )
    .await
    .unwrap();
    let cp = app.cp.clone();
    let org = molecule_cp::orgs::create(
        &cp,
        molecule_cp::orgs::NewOrg {
            slug: "alive".into(),
            name: "Alive".into(),
            plan: None,
            owner_user_id: None,
        },
    )
    .await
    .unwrap();
    fake.add_instance("i-live", "tenant", "alive", &org.id);
    fake.add_instance("i-gone-org", "tenant", "deleted", "org-that-was-purged");
    fake.add_instance("i-same-slug-other-org", "tenant", "alive", "org-old");
    fake.add_instance("i-gone-ws", "workspace", "ws-1", &org.id);
    fake.state()
        .groups
        .insert("molecule-tenant-deleted".into(), "sg-d".into());

    let mut tracker = OrphanTracker::default();
    let first = sweep_orphans(&cp, &mut tracker).await.unwrap();
    let mut ids: Vec<_> = first
        .orphans
        .iter()
        .map(|o| o.instance_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec!["i-gone-org", "i-gone-ws", "i-same-slug-other-org"]
    );
    assert!(first.terminated.is_empty(), "reported, not yet removed");
    assert!(fake.state().terminated.is_empty());
    let metrics = cp.metrics.render();
    assert!(metrics.contains("cp_orphan_instances 3"), "{metrics}");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = sweep_orphans(&cp, &mut tracker).await.unwrap();
    assert!(
        second.terminated.is_empty(),
        "still inside the grace period"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = sweep_orphans(&cp, &mut tracker).await.unwrap();
    let mut done = third.terminated.clone();
    done.sort();
    assert_eq!(
        done,
        vec!["i-gone-org", "i-gone-ws", "i-same-slug-other-org"]
    );
    {
        let s = fake.state();
        assert!(
            !s.terminated.contains(&"i-live".to_owned()),
            "the live tenant stays"
        );
        assert!(
            !s.groups.contains_key("molecule-tenant-deleted"),
            "orphan's group removed"
        );
    }
    let fourth = sweep_orphans(&cp, &mut tracker).await.unwrap();
    assert!(fourth.orphans.is_empty());
}
