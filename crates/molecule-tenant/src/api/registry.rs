//! The registry: agents register, heartbeat and publish their card with their workspace's
//! token; discovery follows the hierarchy rules. Unknown workspace ids cannot be registered.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::workspaces::caller_of;
use super::{error, internal, Body, Handled};
use crate::access::can_communicate;
use crate::auth::Caller;
use crate::config::Mode;
use crate::json::{normalize, ok, stored, GoFloat};
use crate::lifecycle::{issue_token, transition};
use crate::state::AppState;
use crate::store::{HeartbeatFigures, Val, Workspace, WsStatus};

/// The workspace `id` if the caller may act as it: its own token, or (open dev mode only) no
/// token while the workspace has none. Unknown and removed workspaces are 404.
async fn acting_as(state: &AppState, caller: &Caller, id: &str) -> Result<Workspace, Response> {
    let dev = state.config.mode == Mode::OpenDev;
    // The credential is judged before the id is looked up, so a token cannot probe for ids.
    match caller {
        Caller::Workspace(own) if own == id => {}
        Caller::Anonymous if dev => {}
        Caller::Anonymous => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "missing workspace auth token",
            ))
        }
        _ => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "invalid workspace auth token",
            ))
        }
    }
    let unknown = || error(StatusCode::NOT_FOUND, "workspace not found");
    if !molecule_shared::token::is_uuid(id) {
        return Err(unknown());
    }
    let w = state
        .store
        .workspace(id)
        .await
        .map_err(|e| internal(e, "lookup failed"))?
        .ok_or_else(unknown)?;
    if w.status == WsStatus::Removed {
        return Err(unknown());
    }
    if *caller == Caller::Anonymous
        && state
            .store
            .count_live_tokens(id)
            .await
            .map_err(|e| internal(e, "auth check failed"))?
            > 0
    {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing workspace auth token",
        ));
    }
    Ok(w)
}

#[derive(Deserialize)]
struct Register {
    id: String,
    url: String,
    #[serde(default)]
    agent_card: Value,
}

pub async fn register(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Body,
) -> Handled {
    let b: Register = body.json("invalid request body")?;
    if b.id.is_empty() || b.url.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid request body"));
    }
    let w = acting_as(&state, &caller_of(caller), &b.id).await?;
    molecule_shared::ssrf::check_url(&b.url, state.config.ssrf)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid agent url: {e}")))?;
    let card = normalize(b.agent_card);
    let card_text = (!card.is_null()).then(|| card.to_string());
    state
        .store
        .update_workspace(
            &w.id,
            &[
                ("url", Val::Text(Some(b.url.clone()))),
                ("agent_card", Val::Text(card_text)),
                (
                    "last_heartbeat_at",
                    Val::Int(Some(molecule_shared::now_ms())),
                ),
            ],
        )
        .await
        .map_err(|e| internal(e, "registration failed"))?;
    let from = [
        WsStatus::Provisioning,
        WsStatus::Online,
        WsStatus::Offline,
        WsStatus::Degraded,
        WsStatus::Failed,
        WsStatus::AwaitingAgent,
        WsStatus::Paused,
    ];
    state
        .store
        .transition(&w.id, &from, WsStatus::Online)
        .await
        .map_err(|e| internal(e, "registration failed"))?;
    state
        .events
        .record(
            "WORKSPACE_ONLINE",
            &w.id,
            json!({ "url": b.url, "agent_card": card }),
        )
        .await;
    // A workspace without a live token gets one now (open dev mode: the original's flow).
    if state
        .store
        .count_live_tokens(&w.id)
        .await
        .map_err(|e| internal(e, "registration failed"))?
        == 0
    {
        let token = issue_token(&state, &w.id)
            .await
            .map_err(|e| internal(e, "registration failed"))?;
        return Ok(
            ok(json!({ "auth_token": token.expose(), "status": "registered" })).into_response(),
        );
    }
    Ok(ok(json!({ "status": "registered" })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Capabilities {
    status_mgmt: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RuntimeMetadata {
    capabilities: Capabilities,
}

#[derive(Deserialize)]
struct Heartbeat {
    workspace_id: String,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    sample_error: String,
    #[serde(default)]
    active_tasks: i64,
    #[serde(default)]
    uptime_seconds: i64,
    #[serde(default)]
    current_task: String,
    #[serde(default)]
    monthly_spend: i64,
    #[serde(default)]
    runtime_state: String,
    #[serde(default)]
    runtime_metadata: Option<RuntimeMetadata>,
}

pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Body,
) -> Handled {
    let hb: Heartbeat = body.json("invalid request body")?;
    if hb.workspace_id.is_empty() || !hb.error_rate.is_finite() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid request body"));
    }
    let w = acting_as(&state, &caller_of(caller), &hb.workspace_id).await?;
    let figures = HeartbeatFigures {
        error_rate: hb.error_rate,
        sample_error: hb.sample_error.clone(),
        active_tasks: hb.active_tasks.max(0),
        uptime_seconds: hb.uptime_seconds.max(0),
        current_task: hb.current_task.clone(),
        monthly_spend: hb.monthly_spend.clamp(0, 1_000_000_000_000),
    };
    state
        .store
        .record_heartbeat(&w.id, &figures)
        .await
        .map_err(|e| internal(e, "failed to update"))?;
    let self_managed = hb
        .runtime_metadata
        .as_ref()
        .is_some_and(|m| m.capabilities.status_mgmt);
    let id = w.id.as_str();
    match w.status {
        WsStatus::Provisioning => {
            transition(
                &state,
                id,
                &[WsStatus::Provisioning],
                WsStatus::Online,
                "WORKSPACE_ONLINE",
                json!({ "recovered_from": "provisioning" }),
            )
            .await;
        }
        WsStatus::Offline => {
            transition(
                &state,
                id,
                &[WsStatus::Offline],
                WsStatus::Online,
                "WORKSPACE_ONLINE",
                json!({}),
            )
            .await;
        }
        WsStatus::Online if hb.runtime_state == "wedged" => {
            let payload = json!({ "runtime_state": "wedged", "sample_error": hb.sample_error });
            transition(
                &state,
                id,
                &[WsStatus::Online],
                WsStatus::Degraded,
                "WORKSPACE_DEGRADED",
                payload,
            )
            .await;
        }
        WsStatus::Online if hb.error_rate >= 0.5 && !self_managed => {
            let payload =
                json!({ "error_rate": GoFloat(hb.error_rate), "sample_error": hb.sample_error });
            transition(
                &state,
                id,
                &[WsStatus::Online],
                WsStatus::Degraded,
                "WORKSPACE_DEGRADED",
                payload,
            )
            .await;
        }
        WsStatus::Degraded
            if hb.error_rate < 0.1 && hb.runtime_state.is_empty() && !self_managed =>
        {
            transition(
                &state,
                id,
                &[WsStatus::Degraded],
                WsStatus::Online,
                "WORKSPACE_ONLINE",
                json!({}),
            )
            .await;
        }
        _ => {}
    }
    if hb.current_task != w.current_task {
        state.events.broadcast(
            "TASK_UPDATED",
            id,
            json!({ "current_task": hb.current_task, "active_tasks": figures.active_tasks }),
        );
    }
    state.events.broadcast(
        "WORKSPACE_HEARTBEAT",
        id,
        json!({ "active_tasks": figures.active_tasks, "uptime_seconds": figures.uptime_seconds }),
    );
    state.metrics.inc("tenant_heartbeats_total", &[]);
    Ok(ok(json!({ "status": "ok" })).into_response())
}

#[derive(Deserialize)]
struct UpdateCard {
    workspace_id: String,
    agent_card: Value,
}

pub async fn update_card(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Body,
) -> Handled {
    let b: UpdateCard = body.json("invalid request body")?;
    let w = acting_as(&state, &caller_of(caller), &b.workspace_id).await?;
    let card = normalize(b.agent_card);
    state
        .store
        .update_workspace(
            &w.id,
            &[(
                "agent_card",
                Val::Text((!card.is_null()).then(|| card.to_string())),
            )],
        )
        .await
        .map_err(|e| internal(e, "failed to update card"))?;
    state
        .events
        .record("AGENT_CARD_UPDATED", &w.id, json!({ "agent_card": card }))
        .await;
    Ok(ok(json!({ "status": "updated" })).into_response())
}

/// The caller may speak for workspace `id`: its own token, or an admin or org token.
fn speaks_for(caller: &Caller, id: &str, dev: bool) -> bool {
    caller.is_admin()
        || *caller == Caller::Workspace(id.to_owned())
        || (dev && *caller == Caller::Anonymous)
}

pub async fn discover(
    State(state): State<AppState>,
    Path(target): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Handled {
    let me = headers
        .get("x-workspace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if me.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "X-Workspace-ID header is required",
        ));
    }
    if !speaks_for(&caller_of(caller), me, state.config.mode == Mode::OpenDev) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid workspace auth token",
        ));
    }
    if !can_communicate(&state.store, me, &target)
        .await
        .map_err(|e| internal(e, "lookup failed"))?
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not authorized to discover this workspace",
        ));
    }
    let w = state
        .store
        .workspace(&target)
        .await
        .map_err(|e| internal(e, "lookup failed"))?
        .filter(|w| w.status != WsStatus::Removed)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "workspace not found"))?;
    let serving = matches!(w.status, WsStatus::Online | WsStatus::Degraded)
        || (w.runtime == "external" && !w.url.is_empty());
    if !serving || w.url.is_empty() {
        return Err(crate::json::GoJson(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "workspace not available", "status": w.status.as_str() }),
        )
        .into_response());
    }
    if molecule_shared::ssrf::check_url(&w.url, state.config.ssrf)
        .await
        .is_err()
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "workspace URL failed safety check",
        ));
    }
    Ok(ok(json!({ "id": w.id, "name": w.name, "url": w.url })).into_response())
}

#[derive(Deserialize, Default)]
pub struct PeerQuery {
    q: Option<String>,
}

pub async fn peers(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
    Query(pq): Query<PeerQuery>,
) -> Handled {
    if !speaks_for(&caller_of(caller), &id, state.config.mode == Mode::OpenDev) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid workspace auth token",
        ));
    }
    let me = super::load(&state, &id).await?;
    let lookup = |e| internal(e, "lookup failed");
    let mut out: Vec<Workspace> = match &me.parent_id {
        Some(p) => state.store.children(p).await.map_err(lookup)?,
        None => state.store.roots().await.map_err(lookup)?,
    };
    out.retain(|w| w.id != me.id);
    out.extend(state.store.children(&me.id).await.map_err(lookup)?);
    if let Some(p) = &me.parent_id {
        if let Some(parent) = state
            .store
            .workspace(p)
            .await
            .map_err(lookup)?
            .filter(|p| p.status != WsStatus::Removed)
        {
            out.push(parent);
        }
    }
    if let Some(q) = pq.q.map(|q| q.to_lowercase()).filter(|q| !q.is_empty()) {
        out.retain(|w| {
            w.name.to_lowercase().contains(&q)
                || w.role
                    .as_deref()
                    .is_some_and(|r| r.to_lowercase().contains(&q))
        });
    }
    let items: Vec<Value> = out
        .iter()
        .map(|w| {
            json!({
                "id": w.id, "name": w.name, "role": w.role, "tier": w.tier, "status": w.status.as_str(),
                "agent_card": stored(w.agent_card.as_deref()), "url": w.url, "parent_id": w.parent_id, "active_tasks": w.active_tasks,
            })
        })
        .collect();
    Ok(ok(items).into_response())
}

#[derive(Deserialize)]
struct CheckAccess {
    caller_id: String,
    target_id: String,
}

pub async fn check_access(State(state): State<AppState>, body: Body) -> Handled {
    let b: CheckAccess = body.json("invalid request body")?;
    if b.caller_id.is_empty() || b.target_id.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid request body"));
    }
    let allowed = can_communicate(&state.store, &b.caller_id, &b.target_id)
        .await
        .map_err(|e| internal(e, "lookup failed"))?;
    Ok(ok(json!({ "allowed": allowed })).into_response())
}
