//! Workspace lifecycle: `provisioning → online ⇄ degraded → offline`, `failed`, `paused`,
//! `removed`. Every transition is an event. In SaaS mode the control plane runs each workspace's
//! instance: provisioning asks it for one, and delete, pause and restart release it (the
//! original forgot to). Sweeps fail stuck provisions and mark silent workspaces offline.

use std::sync::Arc;

use molecule_shared::now_ms;
use molecule_shared::secret::Secret;
use molecule_shared::token::{self, TokenHash, TokenKind};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::state::{AppState, TenantState};
use crate::store::{Val, Workspace, WsStatus};

/// The prefix of a token that may be shown and stored: its kind and 8 characters.
pub fn token_prefix(token: &Secret) -> String {
    token.expose().chars().take(16).collect()
}

/// Mints a workspace token, stores its hash, and returns it (shown once).
pub async fn issue_token(
    state: &TenantState,
    workspace_id: &str,
) -> Result<Secret, molecule_shared::db::DbError> {
    let token = token::generate(TokenKind::Workspace);
    state
        .store
        .insert_workspace_token(
            workspace_id,
            TokenHash::of(token.expose()).as_str(),
            &token_prefix(&token),
        )
        .await?;
    Ok(token)
}

/// Moves a workspace and records the event; returns whether it moved.
pub async fn transition(
    state: &TenantState,
    id: &str,
    from: &[WsStatus],
    to: WsStatus,
    event: &str,
    payload: serde_json::Value,
) -> bool {
    match state.store.transition(id, from, to).await {
        Ok(true) => {
            state.events.record(event, id, payload).await;
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(workspace = id, error = %e, "status update failed");
            false
        }
    }
}

/// Starts the workspace's instance through the control plane, in the background. Without a
/// control plane (self-hosted), the workspace waits for an agent to register.
pub fn spawn_provision(state: &AppState, ws: &Workspace) {
    let Some(cp) = state.cp.clone() else { return };
    let state = state.clone();
    let id = ws.id.clone();
    let (runtime, tier) = (ws.runtime.clone(), ws.tier);
    tokio::spawn(async move {
        if let Err(reason) = provision(&state, &cp, &id, &runtime, tier).await {
            // The CP's reason can name infrastructure details: log it, show a generic text.
            tracing::warn!(workspace = %id, error = %reason, "workspace provisioning failed");
            let _ = state
                .store
                .update_workspace(
                    &id,
                    &[(
                        "last_sample_error",
                        Val::Text(Some("provisioning failed".into())),
                    )],
                )
                .await;
            transition(
                &state,
                &id,
                &[WsStatus::Provisioning],
                WsStatus::Failed,
                "WORKSPACE_PROVISION_FAILED",
                json!({ "error": "provisioning failed" }),
            )
            .await;
        }
    });
}

async fn provision(
    state: &TenantState,
    cp: &Arc<crate::cp_client::CpClient>,
    id: &str,
    runtime: &str,
    tier: i64,
) -> Result<(), String> {
    // A fresh registration credential for the new instance; older ones stop working.
    state
        .store
        .revoke_all_workspace_tokens(id)
        .await
        .map_err(|e| e.to_string())?;
    let token = issue_token(state, id).await.map_err(|e| e.to_string())?;
    let mut env = crate::secrets::merged(state, id)
        .await
        .map_err(|keys| format!("secrets failed to decrypt: {keys:?}"))?;
    env.insert("MOLECULE_WORKSPACE_TOKEN".into(), token.expose().to_owned());
    let body = json!({
        "org_id": cp.org_id(),
        "workspace_id": id,
        "runtime": runtime,
        "tier": tier.clamp(1, 4),
        "platform_url": state.platform_url,
        "env": env,
    });
    let done = cp.provision(&body).await.map_err(|e| e.to_string())?;
    state
        .store
        .update_workspace(id, &[("instance_id", Val::Text(Some(done.instance_id)))])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Releases the workspace's control-plane instance, if it has one.
pub async fn release(state: &TenantState, ws: &Workspace) -> Result<(), String> {
    let (Some(cp), Some(instance)) = (&state.cp, &ws.instance_id) else {
        return Ok(());
    };
    cp.release(&ws.id, instance)
        .await
        .map_err(|e| e.to_string())?;
    state
        .store
        .update_workspace(&ws.id, &[("instance_id", Val::Text(None))])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs the provision-timeout and liveness sweeps until shutdown.
pub async fn sweeps(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(state.config.sweep_interval) => {}
        }
        sweep_once(&state).await;
    }
}

pub async fn sweep_once(state: &TenantState) {
    let now = now_ms();
    let timeout = state.config.provision_timeout;
    if let Ok(stuck) = state
        .store
        .stale_in_status(WsStatus::Provisioning, now - timeout.as_millis() as i64)
        .await
    {
        for ws in stuck {
            let error = format!("provisioning timed out after {} s", timeout.as_secs());
            let _ = state
                .store
                .update_workspace(
                    &ws.id,
                    &[("last_sample_error", Val::Text(Some(error.clone())))],
                )
                .await;
            transition(
                state,
                &ws.id,
                &[WsStatus::Provisioning],
                WsStatus::Failed,
                "WORKSPACE_PROVISION_FAILED",
                json!({ "error": error, "timeout_secs": timeout.as_secs(), "runtime": ws.runtime, "source": "provision_timeout_sweep" }),
            )
            .await;
        }
    }
    let silent_since = now - state.config.liveness_timeout.as_millis() as i64;
    for status in [WsStatus::Online, WsStatus::Degraded] {
        if let Ok(silent) = state.store.stale_in_status(status, silent_since).await {
            for ws in silent {
                transition(
                    state,
                    &ws.id,
                    &[status],
                    WsStatus::Offline,
                    "WORKSPACE_OFFLINE",
                    json!({}),
                )
                .await;
            }
        }
    }
}
