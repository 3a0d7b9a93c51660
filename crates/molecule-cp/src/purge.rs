//! Org deletion as ordered, resumable steps. Each completed step is recorded before the next
//! starts, so a repeated request (or the reconciler, after a crash) resumes where it stopped.
//! No step depends on the tenant being healthy or on provisioning ever having finished.

use std::collections::HashSet;
use std::sync::Mutex;

use molecule_shared::now_ms;

use crate::provider::Role;
use crate::store::{new_id, Org, OrgStatus, Purge, PurgeStatus, StoreError};
use crate::ControlPlane;

/// The steps, in order. `billing` has nothing to cancel until billing exists; it is a step
/// already so that purges recorded now resume correctly later.
pub const STEPS: &[&str] = &["billing", "workspaces", "tenant", "rows"];

const LEASE_TTL_MS: i64 = 5 * 60 * 1000;

/// Orgs whose purge runs in this process right now.
#[derive(Default)]
pub(crate) struct PurgeLocks(Mutex<HashSet<String>>);

struct Held<'a>(&'a PurgeLocks, String);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

impl PurgeLocks {
    fn try_hold(&self, org_id: &str) -> Option<Held<'_>> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(org_id.to_owned())
            .then(|| Held(self, org_id.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("purge step {step} failed: {reason}")]
    Step {
        purge_id: String,
        step: &'static str,
        reason: String,
    },
    #[error("a purge of this org is already running")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts the purge of `org`, or resumes its unfinished one, and runs it to the end.
pub async fn purge_org(
    cp: &ControlPlane,
    org: &Org,
    requested_by: &str,
) -> Result<Purge, PurgeError> {
    if org.status != OrgStatus::Deleting {
        cp.store
            .set_org_status(&org.id, OrgStatus::Deleting)
            .await?;
    }
    let purge = match cp.store.open_purge(&org.id).await? {
        Some(p) => p,
        None => {
            let p = Purge {
                id: new_id(),
                org_id: org.id.clone(),
                slug: org.slug.clone(),
                status: PurgeStatus::Running,
                last_step: String::new(),
                attempts: 0,
                last_error: None,
                requested_by: requested_by.to_owned(),
                created_at: now_ms(),
                updated_at: now_ms(),
            };
            cp.store.insert_purge(&p).await?;
            p
        }
    };
    cp.nudge.notify_one();
    resume(cp, purge).await
}

/// Runs the steps of `purge` after its last completed one.
pub async fn resume(cp: &ControlPlane, mut purge: Purge) -> Result<Purge, PurgeError> {
    let Some(_held) = cp.purges_running.try_hold(&purge.org_id) else {
        return Err(PurgeError::Busy);
    };
    let lease = format!("purge:{}", purge.org_id);
    if !cp
        .store
        .acquire_lease(&lease, &cp.replica_id, LEASE_TTL_MS)
        .await?
    {
        return Err(PurgeError::Busy);
    }
    let result = run_steps(cp, &mut purge).await;
    let _ = cp.store.release_lease(&lease, &cp.replica_id).await;
    result.map(|()| purge)
}

async fn run_steps(cp: &ControlPlane, purge: &mut Purge) -> Result<(), PurgeError> {
    let start = STEPS
        .iter()
        .position(|s| *s == purge.last_step)
        .map(|i| i + 1)
        .unwrap_or(0);
    purge.attempts += 1;
    purge.status = PurgeStatus::Running;
    cp.store.save_purge(purge).await?;
    for step in &STEPS[start..] {
        if let Err(reason) = run_step(cp, purge, step).await {
            purge.status = PurgeStatus::Failed;
            purge.last_error = Some(format!("{step}: {reason}"));
            cp.store.save_purge(purge).await?;
            cp.metrics
                .inc("cp_purge_step_failures_total", &[("step", step)]);
            cp.audit(
                &purge.requested_by,
                "purge",
                &purge.slug,
                "failed",
                &format!("step {step}: {reason}"),
            )
            .await;
            return Err(PurgeError::Step {
                purge_id: purge.id.clone(),
                step,
                reason,
            });
        }
        purge.last_step = (*step).to_owned();
        cp.store.save_purge(purge).await?;
    }
    purge.status = PurgeStatus::Done;
    purge.last_error = None;
    cp.store.save_purge(purge).await?;
    cp.audit(
        &purge.requested_by,
        "purge",
        &purge.slug,
        "ok",
        &format!("purge {} done", purge.id),
    )
    .await;
    tracing::info!(org = %purge.slug, purge = %purge.id, "org purged");
    Ok(())
}

async fn run_step(cp: &ControlPlane, purge: &Purge, step: &str) -> Result<(), String> {
    match step {
        "billing" => Ok(()),
        "workspaces" => {
            let workspaces = cp
                .store
                .workspaces_of_org(&purge.org_id)
                .await
                .map_err(|e| e.to_string())?;
            for ws in workspaces {
                cp.provider
                    .terminate(Role::Workspace, &ws.workspace_id)
                    .await
                    .map_err(|e| e.to_string())?;
                cp.store
                    .delete_workspace(&ws.workspace_id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "tenant" => cp
            .provider
            .terminate(Role::Tenant, &purge.slug)
            .await
            .map_err(|e| e.to_string()),
        "rows" => cp
            .store
            .delete_org_rows(&purge.org_id)
            .await
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown step {other}")),
    }
}
