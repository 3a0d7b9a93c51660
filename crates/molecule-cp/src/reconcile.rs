//! The reconciler: on a timer and whenever nudged, compares what should run (orgs that are
//! provisioning or running, live workspace instances, unfinished purges) with what the provider
//! observes, and acts on the difference. Every action is idempotent and keyed by org or
//! workspace, so a crash at any point is repaired by the next pass. Only the replica holding
//! the `reconciler` lease acts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molecule_shared::now_ms;

use crate::provider::{InstanceSpec, ManagedInstance, ObservedState, ProviderError, Role};
use crate::store::{BootEvent, InstanceStatus, Org, OrgStatus, PurgeStatus, WorkspaceState};
use crate::ControlPlane;

const LEASE: &str = "reconciler";
const LEASE_TTL_MS: i64 = 30_000;
/// Failed health checks in a row before a live-but-unhealthy instance is restarted.
const UNHEALTHY_PASSES_BEFORE_RESTART: u32 = 3;
const RESTART_HEALTH_DEADLINE: Duration = Duration::from_secs(30);

/// Exponential backoff between restarts of one instance: 1 s, 2 s, 4 s ... 60 s.
#[derive(Debug, Default, Clone, Copy)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn failed(&mut self) {
        let delay = Duration::from_secs(1u64 << self.failures.min(6)).min(Duration::from_secs(60));
        self.failures += 1;
        self.not_before = Some(Instant::now() + delay);
    }
}

#[derive(Default)]
struct State {
    in_flight: HashSet<String>,
    backoff: HashMap<String, Backoff>,
    unhealthy: HashMap<String, u32>,
    orphans: Arc<tokio::sync::Mutex<OrphanTracker>>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs until `cp.shutdown` is cancelled.
pub async fn run(cp: Arc<ControlPlane>) {
    let state: Shared = Arc::default();
    loop {
        if cp.shutdown.is_cancelled() {
            break;
        }
        match cp
            .store
            .acquire_lease(LEASE, &cp.replica_id, LEASE_TTL_MS)
            .await
        {
            Ok(true) => {
                if let Err(e) = pass(&cp, &state).await {
                    tracing::warn!(error = %e, "reconcile pass failed");
                }
            }
            Ok(false) => tracing::debug!("another replica holds the reconciler lease"),
            Err(e) => tracing::warn!(error = %e, "cannot take the reconciler lease"),
        }
        tokio::select! {
            _ = cp.shutdown.cancelled() => break,
            _ = tokio::time::sleep(cp.config.reconcile_interval) => {}
            _ = cp.nudge.notified() => {}
        }
    }
    let _ = cp.store.release_lease(LEASE, &cp.replica_id).await;
}

/// Starts `work` for `key` unless work for that key is already running.
fn spawn_once<F>(state: &Shared, key: String, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if !lock(state).in_flight.insert(key.clone()) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        work.await;
        lock(&state).in_flight.remove(&key);
    });
}

async fn pass(cp: &Arc<ControlPlane>, state: &Shared) -> Result<(), crate::store::StoreError> {
    let orgs = cp.store.list_orgs().await?;
    let mut counts: HashMap<&'static str, i64> = HashMap::new();
    for org in &orgs {
        *counts.entry(org.status.as_str()).or_default() += 1;
        if matches!(org.status, OrgStatus::Provisioning | OrgStatus::Running) {
            let (cp2, state2, org) = (cp.clone(), state.clone(), org.clone());
            spawn_once(state, format!("org:{}", org.id), async move {
                reconcile_tenant(&cp2, &state2, org).await;
            });
        }
    }
    for (status, n) in counts {
        cp.metrics.set_gauge("cp_orgs", &[("status", status)], n);
    }
    let running_orgs: HashMap<String, Org> = orgs
        .into_iter()
        .filter(|o| o.status == OrgStatus::Running)
        .map(|o| (o.id.clone(), o))
        .collect();
    for ws in cp.store.all_workspaces().await? {
        if ws.state == WorkspaceState::Terminated || !running_orgs.contains_key(&ws.org_id) {
            continue;
        }
        let (cp2, state2) = (cp.clone(), state.clone());
        spawn_once(state, format!("ws:{}", ws.workspace_id), async move {
            reconcile_workspace(&cp2, &state2, ws).await;
        });
    }
    let (cp2, tracker) = (cp.clone(), lock(state).orphans.clone());
    spawn_once(state, "orphan-sweep".into(), async move {
        let mut tracker = tracker.lock().await;
        if let Err(e) = sweep_orphans(&cp2, &mut tracker).await {
            tracing::warn!(error = %e, "orphan sweep failed");
        }
    });
    for purge in cp.store.unfinished_purges().await? {
        let delay_ms = 1000i64 << purge.attempts.clamp(0, 8);
        if purge.status == PurgeStatus::Failed && now_ms() < purge.updated_at + delay_ms {
            continue;
        }
        let cp2 = cp.clone();
        spawn_once(state, format!("purge:{}", purge.org_id), async move {
            if let Err(e) = crate::purge::resume(&cp2, purge).await {
                tracing::warn!(error = %e, "resumed purge failed; will retry");
            }
        });
    }
    Ok(())
}

/// When each orphan was first seen, so it is removed only after `orphan_grace`.
#[derive(Debug, Default)]
pub struct OrphanTracker {
    first_seen: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
pub struct SweepReport {
    /// Instances tagged as ours that no org or workspace names.
    pub orphans: Vec<ManagedInstance>,
    /// The ids of those terminated in this sweep (seen for longer than the grace period).
    pub terminated: Vec<String>,
}

/// Finds instances the provider runs for us that no org or workspace in the store names,
/// reports them (log and the `cp_orphan_instances` gauge), and terminates those first seen
/// more than `orphan_grace` ago. The grace covers a launch racing its row, and gives an
/// operator time to look.
pub async fn sweep_orphans(
    cp: &ControlPlane,
    tracker: &mut OrphanTracker,
) -> Result<SweepReport, crate::store::StoreError> {
    let managed = match cp.provider.list_managed().await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list managed instances");
            return Ok(SweepReport::default());
        }
    };
    let orgs: HashMap<String, String> = cp
        .store
        .list_orgs()
        .await?
        .into_iter()
        .map(|o| (o.id, o.slug))
        .collect();
    let workspaces: HashMap<String, String> = cp
        .store
        .all_workspaces()
        .await?
        .into_iter()
        .map(|w| (w.workspace_id, w.org_id))
        .collect();
    let orphans: Vec<ManagedInstance> = managed
        .into_iter()
        .filter(|m| match m.role {
            Role::Tenant => orgs.get(&m.org_id) != Some(&m.name),
            Role::Workspace => workspaces.get(&m.name) != Some(&m.org_id),
        })
        .collect();
    let now = Instant::now();
    tracker
        .first_seen
        .retain(|id, _| orphans.iter().any(|o| &o.instance_id == id));
    let mut report = SweepReport::default();
    for o in &orphans {
        let first = *tracker.first_seen.entry(o.instance_id.clone()).or_insert_with(|| {
            tracing::warn!(instance = %o.instance_id, role = o.role.as_str(), name = %o.name, org = %o.org_id, grace_s = cp.config.orphan_grace.as_secs(), "orphan instance: tagged as ours, but no org or workspace names it; terminating after the grace period");
            now
        });
        if now.duration_since(first) < cp.config.orphan_grace {
            continue;
        }
        match cp.provider.terminate_managed(o).await {
            Ok(()) => {
                tracing::warn!(instance = %o.instance_id, "orphan instance terminated");
                cp.metrics.inc("cp_orphans_terminated_total", &[]);
                tracker.first_seen.remove(&o.instance_id);
                report.terminated.push(o.instance_id.clone());
            }
            Err(e) => {
                tracing::warn!(instance = %o.instance_id, error = %e, "terminating an orphan failed")
            }
        }
    }
    cp.metrics.set_gauge(
        "cp_orphan_instances",
        &[],
        (orphans.len() - report.terminated.len()) as i64,
    );
    report.orphans = orphans;
    Ok(report)
}

async fn event(cp: &ControlPlane, org: &Org, stage: &str, status: &str, detail: &str) {
    let e = BootEvent {
        org_id: org.id.clone(),
        stage: stage.into(),
        status: status.into(),
        detail: detail.into(),
        source: "cp".into(),
        at: now_ms(),
    };
    if let Err(err) = cp.store.add_boot_event(&e).await {
        tracing::warn!(error = %err, "recording a boot event failed");
    }
}

/// Polls the instance's `/health` until it answers or `deadline` passes.
async fn wait_healthy(cp: &ControlPlane, address: &str, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    let mut delay = Duration::from_millis(10);
    while Instant::now() < until && !cp.shutdown.is_cancelled() {
        if cp.healthy(address).await {
            return true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    false
}

async fn tenant_spec(cp: &ControlPlane, org: &Org) -> Result<InstanceSpec, String> {
    let env = if cp.provider.exposes_boot_env() {
        crate::tenant_config::bootstrap_env(cp, org).await
    } else {
        crate::tenant_config::boot_env(cp, org).await
    }
    .map_err(|e| e.to_string())?;
    Ok(InstanceSpec {
        role: Role::Tenant,
        name: org.slug.clone(),
        org_id: org.id.clone(),
        env,
        tier: 0,
    })
}

async fn reconcile_tenant(cp: &ControlPlane, state: &Shared, org: Org) {
    let result = match org.status {
        OrgStatus::Provisioning => provision(cp, &org).await,
        OrgStatus::Running => heal(cp, state, &org).await,
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(org = %org.slug, error = %e, "tenant reconcile failed");
    }
}

/// Launches the tenant of a provisioning org and waits for it to be healthy, recording each
/// step as a boot event; on failure the org is `failed` with the step and the reason.
async fn provision(cp: &ControlPlane, org: &Org) -> Result<(), crate::store::StoreError> {
    let Some(mut inst) = cp.store.instance(&org.id).await? else {
        return Ok(());
    };
    let started = Instant::now();
    event(
        cp,
        org,
        "launch",
        "started",
        &format!("provider {}", cp.provider.kind()),
    )
    .await;
    let launched = match tenant_spec(cp, org).await {
        Ok(spec) => cp.provider.ensure(&spec).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let observed = match launched {
        Ok(o) => o,
        Err(reason) => return fail(cp, org, &mut inst, "launch", &reason).await,
    };
    inst.instance_id = Some(observed.instance_id.clone());
    inst.address = observed.address.clone();
    inst.status = InstanceStatus::Starting;
    cp.store.save_instance(&inst).await?;
    event(cp, org, "launch", "ok", &observed.instance_id).await;

    let address = observed.address.clone().unwrap_or_default();
    let remaining = cp
        .config
        .provision_deadline
        .saturating_sub(started.elapsed());
    if !wait_healthy(cp, &address, remaining).await {
        let reason = format!(
            "no healthy answer within {} s",
            cp.config.provision_deadline.as_secs()
        );
        return fail(cp, org, &mut inst, "health", &reason).await;
    }
    inst.status = InstanceStatus::Running;
    inst.observed_version = Some(inst.desired_version.clone());
    inst.last_error = None;
    cp.store.save_instance(&inst).await?;
    if cp
        .store
        .transition_org(&org.id, &[OrgStatus::Provisioning], OrgStatus::Running)
        .await?
    {
        event(
            cp,
            org,
            "health",
            "ok",
            &format!("running after {} ms", started.elapsed().as_millis()),
        )
        .await;
        cp.metrics.observe(
            "cp_tenant_provision_seconds",
            &[],
            started.elapsed().as_secs_f64(),
        );
        tracing::info!(org = %org.slug, ms = started.elapsed().as_millis() as u64, "tenant running");
    }
    Ok(())
}

async fn fail(
    cp: &ControlPlane,
    org: &Org,
    inst: &mut crate::store::TenantInstance,
    stage: &str,
    reason: &str,
) -> Result<(), crate::store::StoreError> {
    tracing::warn!(org = %org.slug, stage, reason, "tenant provisioning failed");
    event(cp, org, stage, "failed", reason).await;
    inst.status = InstanceStatus::Failed;
    inst.last_error = Some(format!("{stage}: {reason}"));
    cp.store.save_instance(inst).await?;
    cp.store
        .transition_org(&org.id, &[OrgStatus::Provisioning], OrgStatus::Failed)
        .await?;
    cp.metrics
        .inc("cp_tenant_provision_failures_total", &[("stage", stage)]);
    Ok(())
}

/// Keeps a running org's tenant alive: restarts a dead instance (with backoff), and a live one
/// that has failed its health check several passes in a row.
async fn heal(
    cp: &ControlPlane,
    state: &Shared,
    org: &Org,
) -> Result<(), crate::store::StoreError> {
    let Some(mut inst) = cp.store.instance(&org.id).await? else {
        return Ok(());
    };
    let observed = match cp.provider.describe(Role::Tenant, &org.slug).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(org = %org.slug, error = %e, "describe failed");
            return Ok(());
        }
    };
    let key = org.id.clone();
    if observed.state == ObservedState::Running {
        let address = observed.address.clone().unwrap_or_default();
        if cp.healthy(&address).await {
            {
                let mut s = lock(state);
                s.unhealthy.remove(&key);
                s.backoff.remove(&key);
            }
            if inst.status != InstanceStatus::Running || inst.address != observed.address {
                inst.status = InstanceStatus::Running;
                inst.address = observed.address;
                cp.store.save_instance(&inst).await?;
            }
            return Ok(());
        }
        let strikes = {
            let mut s = lock(state);
            let n = s.unhealthy.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        if inst.status != InstanceStatus::Unhealthy {
            inst.status = InstanceStatus::Unhealthy;
            cp.store.save_instance(&inst).await?;
        }
        if strikes < UNHEALTHY_PASSES_BEFORE_RESTART {
            return Ok(());
        }
        event(
            cp,
            org,
            "restart",
            "started",
            "instance failed its health check repeatedly",
        )
        .await;
        if let Err(e) = cp.provider.stop(Role::Tenant, &org.slug).await {
            tracing::warn!(org = %org.slug, error = %e, "stopping unhealthy instance failed");
        }
        lock(state).unhealthy.remove(&key);
    } else if observed.state == ObservedState::Gone {
        if !lock(state)
            .backoff
            .get(&key)
            .copied()
            .unwrap_or_default()
            .ready()
        {
            return Ok(());
        }
        event(cp, org, "restart", "started", "instance is gone").await;
    } else {
        return Ok(());
    }

    cp.metrics.inc("cp_tenant_restarts_total", &[]);
    // Not serving while it restarts: the router must not be sent to the old address.
    inst.status = InstanceStatus::Starting;
    cp.store.save_instance(&inst).await?;
    let result: Result<String, String> = async {
        let spec = tenant_spec(cp, org).await?;
        let observed = cp
            .provider
            .ensure(&spec)
            .await
            .map_err(|e: ProviderError| e.to_string())?;
        let address = observed.address.clone().unwrap_or_default();
        if !wait_healthy(cp, &address, RESTART_HEALTH_DEADLINE).await {
            return Err("restarted instance did not become healthy".into());
        }
        Ok(address)
    }
    .await;
    inst.restarts += 1;
    match result {
        Ok(address) => {
            lock(state).backoff.remove(&key);
            inst.status = InstanceStatus::Running;
            inst.address = Some(address);
            inst.last_error = None;
            cp.store.save_instance(&inst).await?;
            event(cp, org, "restart", "ok", "").await;
        }
        Err(reason) => {
            lock(state).backoff.entry(key).or_default().failed();
            inst.status = InstanceStatus::Failed;
            inst.last_error = Some(format!("restart: {reason}"));
            cp.store.save_instance(&inst).await?;
            event(cp, org, "restart", "failed", &reason).await;
        }
    }
    Ok(())
}

/// Restarts a workspace instance that should run but is gone.
async fn reconcile_workspace(
    cp: &ControlPlane,
    state: &Shared,
    mut ws: crate::store::WorkspaceInstance,
) {
    let observed = match cp
        .provider
        .describe(Role::Workspace, &ws.workspace_id)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(workspace = %ws.workspace_id, error = %e, "describe failed");
            return;
        }
    };
    let key = format!("ws:{}", ws.workspace_id);
    match observed.state {
        ObservedState::Running => {
            lock(state).backoff.remove(&key);
            if ws.state != WorkspaceState::Running || ws.address != observed.address {
                ws.state = WorkspaceState::Running;
                ws.address = observed.address;
                let _ = cp.store.save_workspace(&ws).await;
            }
        }
        ObservedState::Pending => {}
        ObservedState::Gone => {
            if !lock(state)
                .backoff
                .get(&key)
                .copied()
                .unwrap_or_default()
                .ready()
            {
                return;
            }
            cp.metrics.inc("cp_workspace_restarts_total", &[]);
            match crate::api::workspaces::launch(cp, &ws).await {
                Ok(observed) => {
                    lock(state).backoff.remove(&key);
                    ws.state = WorkspaceState::Running;
                    ws.address = observed.address;
                    ws.restarts += 1;
                    let _ = cp.store.save_workspace(&ws).await;
                }
                Err(e) => {
                    lock(state).backoff.entry(key).or_default().failed();
                    tracing::warn!(workspace = %ws.workspace_id, error = %e, "workspace restart failed");
                }
            }
        }
    }
}
