//! Workspaces: CRUD with hierarchy, pause/resume/restart, console, bootstrap failure.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use molecule_shared::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_id, error, internal, load, Body, Handled};
use crate::auth::{identify, Caller};
use crate::json::{go_time, ok, stored, GoFloat, GoJson};
use crate::lifecycle::{self, issue_token, transition};
use crate::state::AppState;
use crate::store::{new_id, Val, Workspace, WsStatus};

/// The workspace record, fields in the original's order. The reduced (public) view leaves out
/// the `Option<Option<_>>` / `Option<_>` fields marked "full".
#[derive(Serialize)]
pub struct Record {
    id: String,
    name: String,
    role: Option<String>,
    tier: i64,
    status: &'static str,
    agent_card: Value,
    url: String,
    parent_id: Option<String>,
    active_tasks: i64,
    max_concurrent_tasks: i64,
    last_error_rate: GoFloat,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sample_error: Option<String>,
    uptime_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_task: Option<String>,
    runtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_dir: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monthly_spend: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_limit: Option<Option<i64>>,
    x: GoFloat,
    y: GoFloat,
    collapsed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_outbound_at: Option<Option<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `GET /workspaces` items.
    List,
    /// Public `GET /workspaces/:id`.
    Public,
    /// Authenticated `GET /workspaces/:id`: everything.
    Full,
}

pub fn record(w: &Workspace, view: View) -> Record {
    let full = view != View::Public;
    Record {
        id: w.id.clone(),
        name: w.name.clone(),
        role: w.role.clone().filter(|r| !r.is_empty()),
        tier: w.tier,
        status: w.status.as_str(),
        agent_card: stored(w.agent_card.as_deref()),
        url: w.url.clone(),
        parent_id: w.parent_id.clone(),
        active_tasks: w.active_tasks,
        max_concurrent_tasks: w.max_concurrent_tasks.max(1),
        last_error_rate: GoFloat(w.last_error_rate),
        last_sample_error: full.then(|| w.last_sample_error.clone()),
        uptime_seconds: w.uptime_seconds,
        current_task: full.then(|| w.current_task.clone()),
        runtime: w.runtime.clone(),
        workspace_dir: full.then(|| w.workspace_dir.clone().filter(|d| !d.is_empty())),
        monthly_spend: full.then_some(w.monthly_spend),
        budget_limit: full.then_some(w.budget_limit),
        x: GoFloat(w.x),
        y: GoFloat(w.y),
        collapsed: w.collapsed,
        last_outbound_at: (view != View::List).then(|| w.last_outbound_at.map(go_time)),
    }
}

pub async fn list(State(state): State<AppState>) -> Handled {
    let all = state
        .store
        .list_workspaces()
        .await
        .map_err(|e| internal(e, "query failed"))?;
    Ok(ok(all
        .iter()
        .map(|w| record(w, View::List))
        .collect::<Vec<_>>())
    .into_response())
}

/// Public with the reduced field set; with a credential for this workspace (or an admin or org
/// token) the full record.
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    let w = load(&state, &id).await?;
    let caller = identify(&state, &headers).await?;
    let view = if caller.is_admin() || caller == Caller::Workspace(w.id.clone()) {
        View::Full
    } else {
        View::Public
    };
    Ok(ok(record(&w, view)).into_response())
}

const NAME_BANNED: &[char] = &['{', '}', '[', ']', '|', '>', '*', '&', '!'];

/// The original's field rules, with its specific messages.
pub fn check_text(field: &str, value: &str, max: usize, banned: bool) -> Result<(), String> {
    if value.contains('\n') || value.contains('\r') {
        return Err(format!("{field} must not contain newline characters"));
    }
    if banned && value.contains(NAME_BANNED) {
        return Err(format!("{field} contains invalid characters"));
    }
    if value.len() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    Ok(())
}

fn check_workspace_dir(dir: &str) -> bool {
    const SYSTEM: &[&str] = &[
        "/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/usr",
    ];
    dir.starts_with('/')
        && !dir.split('/').any(|seg| seg == "..")
        && !SYSTEM
            .iter()
            .any(|s| dir == *s || dir.starts_with(&format!("{s}/")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Canvas {
    x: f64,
    y: f64,
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tier: i64,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    external: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    workspace_dir: Option<String>,
    #[serde(default)]
    workspace_access: Option<String>,
    #[serde(default)]
    budget_limit: Option<i64>,
    #[serde(default)]
    max_concurrent_tasks: i64,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    canvas: Option<Canvas>,
}

/// A new workspace row with the original's defaults.
pub fn new_workspace(
    name: &str,
    role: Option<String>,
    tier: i64,
    runtime: &str,
    parent_id: Option<String>,
) -> Workspace {
    let now = now_ms();
    Workspace {
        id: new_id(),
        name: name.to_owned(),
        role: role.filter(|r| !r.is_empty()),
        tier: if tier == 0 { 3 } else { tier },
        status: WsStatus::Provisioning,
        runtime: runtime.to_owned(),
        agent_card: None,
        url: String::new(),
        parent_id,
        active_tasks: 0,
        max_concurrent_tasks: 1,
        last_error_rate: 0.0,
        last_sample_error: String::new(),
        uptime_seconds: 0,
        current_task: String::new(),
        workspace_dir: None,
        monthly_spend: 0,
        budget_limit: None,
        x: 0.0,
        y: 0.0,
        collapsed: false,
        instance_id: None,
        source_bundle_id: None,
        last_heartbeat_at: None,
        last_outbound_at: None,
        created_at: now,
        updated_at: now,
    }
}

pub async fn create(State(state): State<AppState>, body: Body) -> Handled {
    let b: CreateBody = body.json("invalid workspace payload")?;
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    if b.name.trim().is_empty()
        || check_text("name", &b.name, 255, true).is_err()
        || b.role
            .as_deref()
            .is_some_and(|r| check_text("role", r, 1000, true).is_err())
        || b.runtime
            .as_deref()
            .is_some_and(|r| check_text("runtime", r, 100, false).is_err())
        || b.model
            .as_deref()
            .is_some_and(|m| check_text("model", m, 100, false).is_err())
    {
        return Err(bad("invalid workspace fields"));
    }
    if let Some(dir) = b.workspace_dir.as_deref().filter(|d| !d.is_empty()) {
        if !check_workspace_dir(dir) {
            return Err(bad("invalid workspace directory"));
        }
    }
    let access = b.workspace_access.clone().unwrap_or_else(|| "none".into());
    let has_dir = b.workspace_dir.as_deref().is_some_and(|d| !d.is_empty());
    if !matches!(access.as_str(), "none" | "read_only" | "read_write")
        || (access != "none" && !has_dir)
    {
        return Err(bad("invalid workspace access"));
    }
    if let Some(parent) = &b.parent_id {
        check_id(parent)?;
        match state
            .store
            .workspace(parent)
            .await
            .map_err(|e| internal(e, "failed to create workspace"))?
        {
            Some(p) if p.status != WsStatus::Removed => {}
            _ => return Err(bad("parent workspace not found")),
        }
    }
    for key in b.secrets.keys() {
        if key.is_empty() {
            return Err(bad("invalid workspace fields"));
        }
    }
    let external = b.external || b.runtime.as_deref() == Some("external");
    let url = b.url.clone().filter(|u| !u.is_empty());
    if external {
        if let Some(u) = &url {
            molecule_shared::ssrf::check_url(u, state.config.ssrf)
                .await
                .map_err(|e| bad(&format!("invalid workspace url: {e}")))?;
        }
    }
    let runtime = if external {
        "external".to_owned()
    } else {
        b.runtime
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "langgraph".into())
    };
    let mut w = new_workspace(
        &b.name,
        b.role.clone(),
        b.tier,
        &runtime,
        b.parent_id.clone(),
    );
    w.workspace_dir = b.workspace_dir.clone().filter(|d| !d.is_empty());
    w.budget_limit = b.budget_limit;
    w.max_concurrent_tasks = b.max_concurrent_tasks.max(1);
    if let Some(c) = &b.canvas {
        (w.x, w.y) = (c.x, c.y);
    }
    state
        .store
        .insert_workspace(&w)
        .await
        .map_err(|e| internal(e, "failed to create workspace"))?;
    for (key, value) in &b.secrets {
        let (sealed, version) = crate::secrets::seal(&state, Some(&w.id), key, value);
        state
            .store
            .put_secret(Some(&w.id), key, &sealed, version)
            .await
            .map_err(|e| internal(e, &format!("failed to save secret: {key}")))?;
    }
    state
        .events
        .record(
            "WORKSPACE_PROVISIONING",
            &w.id,
            json!({ "name": w.name, "tier": w.tier, "runtime": w.runtime }),
        )
        .await;

    if external {
        if let Some(u) = url {
            let _ = state
                .store
                .update_workspace(&w.id, &[("url", Val::Text(Some(u)))])
                .await;
            transition(
                &state,
                &w.id,
                &[WsStatus::Provisioning],
                WsStatus::Online,
                "WORKSPACE_ONLINE",
                json!({ "name": w.name, "external": true }),
            )
            .await;
            return Ok(GoJson(
                StatusCode::CREATED,
                json!({ "external": true, "id": w.id, "status": "online" }),
            )
            .into_response());
        }
        transition(
            &state,
            &w.id,
            &[WsStatus::Provisioning],
            WsStatus::AwaitingAgent,
            "WORKSPACE_AWAITING_AGENT",
            json!({ "name": w.name, "external": true }),
        )
        .await;
        let token = issue_token(&state, &w.id)
            .await
            .map(|t| t.expose().to_owned())
            .unwrap_or_default();
        let platform = &state.platform_url;
        let connection = json!({
            "workspace_id": w.id,
            "platform_url": platform,
            "auth_token": token,
            "registry_endpoint": format!("{platform}/registry/register"),
            "heartbeat_endpoint": format!("{platform}/registry/heartbeat"),
            "curl_register_template": format!(
                "curl -X POST {platform}/registry/register -H 'Authorization: Bearer <paste from create response>' -H 'Content-Type: application/json' -d '{{\"id\":\"{}\",\"url\":\"<your agent url>\",\"agent_card\":{{}}}}'",
                w.id
            ),
            "python_snippet": format!("WORKSPACE_ID={} PLATFORM_URL={platform} MOLECULE_WORKSPACE_TOKEN=<paste from create response> python -m molecule_runtime", w.id),
        });
        return Ok(GoJson(StatusCode::CREATED, json!({ "connection": connection, "external": true, "id": w.id, "status": "awaiting_agent" })).into_response());
    }
    lifecycle::spawn_provision(&state, &w);
    Ok(GoJson(
        StatusCode::CREATED,
        json!({ "awareness_namespace": format!("workspace:{}", w.id), "id": w.id, "status": "provisioning", "workspace_access": access }),
    )
    .into_response())
}

/// Whether making `parent` the parent of `id` would create a cycle.
async fn creates_cycle(state: &AppState, id: &str, parent: &str) -> Result<bool, Response> {
    let mut cursor = Some(parent.to_owned());
    for _ in 0..64 {
        match cursor {
            None => return Ok(false),
            Some(c) if c == id => return Ok(true),
            Some(c) => {
                cursor = state
                    .store
                    .workspace(&c)
                    .await
                    .map_err(|e| internal(e, "query failed"))?
                    .and_then(|w| w.parent_id);
            }
        }
    }
    Ok(true)
}

pub async fn update(State(state): State<AppState>, Path(id): Path<String>, body: Body) -> Handled {
    let b: serde_json::Map<String, Value> = body.json("invalid request body")?;
    check_id(&id)?;
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    for (field, max, banned) in [
        ("name", 255, true),
        ("role", 1000, true),
        ("runtime", 100, false),
    ] {
        if let Some(Value::String(v)) = b.get(field) {
            check_text(field, v, max, banned).map_err(|m| bad(&m))?;
        }
    }
    let w = load(&state, &id).await?;
    let mut sets: Vec<(&'static str, Val)> = Vec::new();
    let mut needs_restart = false;
    if let Some(Value::String(name)) = b.get("name") {
        if name.trim().is_empty() {
            return Err(bad("name must not be empty"));
        }
        sets.push(("name", Val::Text(Some(name.clone()))));
    }
    match b.get("role") {
        Some(Value::String(r)) => {
            sets.push(("role", Val::Text(Some(r.clone()).filter(|r| !r.is_empty()))))
        }
        Some(Value::Null) => sets.push(("role", Val::Text(None))),
        _ => {}
    }
    if let Some(tier) = b.get("tier") {
        let tier = tier
            .as_i64()
            .ok_or_else(|| bad("tier must be an integer"))?;
        sets.push(("tier", Val::Int(Some(tier))));
    }
    if let Some(Value::String(r)) = b.get("runtime") {
        sets.push(("runtime", Val::Text(Some(r.clone()))));
    }
    match b.get("parent_id") {
        Some(Value::String(p)) => {
            check_id(p)?;
            match state
                .store
                .workspace(p)
                .await
                .map_err(|e| internal(e, "query failed"))?
            {
                Some(parent) if parent.status != WsStatus::Removed => {}
                _ => return Err(bad("parent workspace not found")),
            }
            if creates_cycle(&state, &id, p).await? {
                return Err(bad("parent_id would create a cycle"));
            }
            sets.push(("parent_id", Val::Text(Some(p.clone()))));
        }
        Some(Value::Null) => sets.push(("parent_id", Val::Text(None))),
        _ => {}
    }
    if let Some(c) = b.get("collapsed") {
        sets.push((
            "collapsed",
            Val::Int(Some(
                c.as_bool()
                    .ok_or_else(|| bad("collapsed must be a boolean"))? as i64,
            )),
        ));
    }
    match b.get("workspace_dir") {
        Some(Value::String(d)) if !d.is_empty() => {
            if !check_workspace_dir(d) {
                return Err(bad("invalid workspace directory"));
            }
            sets.push(("workspace_dir", Val::Text(Some(d.clone()))));
            needs_restart = true;
        }
        Some(Value::Null) | Some(Value::String(_)) => {
            sets.push(("workspace_dir", Val::Text(None)));
            needs_restart = true;
        }
        _ => {}
    }
    if let (Some(x), Some(y)) = (b.get("x"), b.get("y")) {
        let (x, y) = (
            x.as_f64().ok_or_else(|| bad("x must be a number"))?,
            y.as_f64().ok_or_else(|| bad("y must be a number"))?,
        );
        sets.push(("x", Val::Float(x)));
        sets.push(("y", Val::Float(y)));
    }
    state
        .store
        .update_workspace(&w.id, &sets)
        .await
        .map_err(|e| internal(e, "failed to update workspace"))?;
    Ok(if needs_restart {
        ok(json!({ "needs_restart": true, "status": "updated" })).into_response()
    } else {
        ok(json!({ "status": "updated" })).into_response()
    })
}

#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    confirm: Option<String>,
    purge: Option<String>,
}

pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Handled {
    let root = load(&state, &id).await?;
    let children = state
        .store
        .children(&id)
        .await
        .map_err(|e| internal(e, "failed to check children"))?;
    if !children.is_empty() && q.confirm.as_deref() != Some("true") {
        let list: Vec<Value> = children
            .iter()
            .map(|c| json!({ "id": c.id, "name": c.name }))
            .collect();
        return Err(GoJson(
            StatusCode::CONFLICT,
            json!({
                "status": "confirmation_required",
                "message": "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.",
                "children": list,
                "children_count": children.len(),
            }),
        )
        .into_response());
    }
    let descendants = state
        .store
        .descendants(&id)
        .await
        .map_err(|e| internal(e, "failed to check children"))?;
    let mut all: Vec<Workspace> = descendants;
    all.push(root.clone());
    let mut stop_failures = 0usize;
    let removable = [
        WsStatus::Provisioning,
        WsStatus::Online,
        WsStatus::Offline,
        WsStatus::Degraded,
        WsStatus::Failed,
        WsStatus::Paused,
        WsStatus::AwaitingAgent,
    ];
    let cascade = all.len() - 1;
    for w in &all {
        // Marked removed first, so nothing (a heartbeat, a sweep) brings it back meanwhile.
        let moved = state
            .store
            .transition(&w.id, &removable, WsStatus::Removed)
            .await
            .map_err(|e| internal(e, "delete failed"))?;
        state
            .store
            .revoke_all_workspace_tokens(&w.id)
            .await
            .map_err(|e| internal(e, "delete failed"))?;
        if let Err(reason) = lifecycle::release(&state, w).await {
            tracing::warn!(workspace = %w.id, error = %reason, "releasing the workspace instance failed");
            stop_failures += 1;
        }
        if moved {
            let payload = if w.id == id {
                json!({ "cascade_deleted": cascade })
            } else {
                json!({})
            };
            state
                .events
                .record("WORKSPACE_REMOVED", &w.id, payload)
                .await;
        }
    }
    if stop_failures > 0 {
        return Err(GoJson(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "error": format!("workspace marked removed, but {stop_failures} stop call(s) failed — please retry"),
                "removed_count": all.len(),
                "stop_failures": stop_failures,
            }),
        )
        .into_response());
    }
    if q.purge.as_deref() == Some("true") {
        let ids: Vec<String> = all.iter().map(|w| w.id.clone()).collect();
        state
            .store
            .purge_workspaces(&ids)
            .await
            .map_err(|e| internal(e, "purge failed"))?;
        return Ok(ok(json!({ "cascade_deleted": cascade, "status": "purged" })).into_response());
    }
    Ok(ok(json!({ "cascade_deleted": cascade, "status": "removed" })).into_response())
}

/// Whether any ancestor of `w` is paused (then it cannot be restarted or resumed alone).
async fn ancestor_paused(state: &AppState, w: &Workspace) -> Result<bool, Response> {
    let mut cursor = w.parent_id.clone();
    for _ in 0..64 {
        let Some(id) = cursor else { return Ok(false) };
        let Some(p) = state
            .store
            .workspace(&id)
            .await
            .map_err(|e| internal(e, "query failed"))?
        else {
            return Ok(false);
        };
        if p.status == WsStatus::Paused {
            return Ok(true);
        }
        cursor = p.parent_id;
    }
    Ok(false)
}

pub async fn pause(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    let w = load(&state, &id).await?;
    if matches!(w.status, WsStatus::Removed | WsStatus::Paused) {
        return Err(error(
            StatusCode::CONFLICT,
            &format!("workspace is {}", w.status.as_str()),
        ));
    }
    lifecycle::release(&state, &w).await.map_err(|reason| {
        tracing::warn!(workspace = %id, error = %reason, "releasing the workspace instance failed");
        error(
            StatusCode::BAD_GATEWAY,
            "control plane failed to stop the workspace instance; retry",
        )
    })?;
    let from = [w.status];
    transition(
        &state,
        &id,
        &from,
        WsStatus::Paused,
        "WORKSPACE_PAUSED",
        json!({ "name": w.name }),
    )
    .await;
    Ok(ok(json!({ "status": "paused" })).into_response())
}

async fn reprovision(state: &AppState, w: &Workspace, from: &[WsStatus]) -> Result<(), Response> {
    let _ = state
        .store
        .update_workspace(&w.id, &[("url", Val::Text(Some(String::new())))])
        .await;
    transition(
        state,
        &w.id,
        from,
        WsStatus::Provisioning,
        "WORKSPACE_PROVISIONING",
        json!({ "name": w.name, "tier": w.tier, "runtime": w.runtime }),
    )
    .await;
    let fresh = load(state, &w.id).await?;
    lifecycle::spawn_provision(state, &fresh);
    Ok(())
}

pub async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    let w = load(&state, &id).await?;
    if w.status != WsStatus::Paused {
        return Err(error(StatusCode::CONFLICT, "workspace is not paused"));
    }
    if ancestor_paused(&state, &w).await? {
        return Err(error(
            StatusCode::CONFLICT,
            "an ancestor workspace is paused",
        ));
    }
    reprovision(&state, &w, &[WsStatus::Paused]).await?;
    Ok(ok(json!({ "status": "provisioning" })).into_response())
}

pub async fn restart(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    let w = load(&state, &id).await?;
    if matches!(w.status, WsStatus::Removed | WsStatus::Paused) || w.runtime == "external" {
        return Err(error(
            StatusCode::CONFLICT,
            &format!(
                "workspace cannot be restarted (status {}, runtime {})",
                w.status.as_str(),
                w.runtime
            ),
        ));
    }
    if ancestor_paused(&state, &w).await? {
        return Err(error(
            StatusCode::CONFLICT,
            "an ancestor workspace is paused",
        ));
    }
    lifecycle::release(&state, &w).await.map_err(|reason| {
        tracing::warn!(workspace = %id, error = %reason, "releasing the workspace instance failed");
        error(
            StatusCode::BAD_GATEWAY,
            "control plane failed to stop the workspace instance; retry",
        )
    })?;
    reprovision(&state, &w, &[w.status]).await?;
    Ok(ok(json!({ "status": "provisioning" })).into_response())
}

pub async fn console(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    let w = load(&state, &id).await?;
    let Some(cp) = &state.cp else {
        return Err(error(
            StatusCode::NOT_IMPLEMENTED,
            "console output unavailable on this deployment (no control plane)",
        ));
    };
    match cp.console(&w.id).await {
        Ok(output) => Ok(ok(json!({ "output": output })).into_response()),
        Err(e) => {
            tracing::warn!(workspace = %id, error = %e, "console fetch failed");
            Err(error(
                StatusCode::BAD_GATEWAY,
                "control plane returned an error fetching console output",
            ))
        }
    }
}

#[derive(Deserialize)]
struct BootstrapFailed {
    #[serde(default)]
    error: String,
    #[serde(default)]
    log_tail: String,
}

const TAIL: usize = 8192;

fn last_bytes(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

pub async fn bootstrap_failed(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Handled {
    let b: BootstrapFailed = body.json("invalid request body")?;
    check_id(&id)?;
    let tail = if b.log_tail.len() > TAIL {
        format!("...(truncated)...\n{}", last_bytes(&b.log_tail, TAIL))
    } else {
        b.log_tail
    };
    let message = if b.error.is_empty() {
        "bootstrap failed — see log_tail".to_owned()
    } else {
        b.error
    };
    let combined = format!("{message}\n\n{tail}");
    let sample = last_bytes(&combined, TAIL).to_owned();
    let moved = state
        .store
        .transition(&id, &[WsStatus::Provisioning], WsStatus::Failed)
        .await
        .map_err(|e| internal(e, "db update failed"))?;
    if !moved {
        return Ok(ok(json!({ "no_change": true, "ok": true })).into_response());
    }
    let _ = state
        .store
        .update_workspace(&id, &[("last_sample_error", Val::Text(Some(sample)))])
        .await;
    state
        .events
        .record(
            "WORKSPACE_PROVISION_FAILED",
            &id,
            json!({ "error": message, "log_tail": tail, "source": "bootstrap_watcher" }),
        )
        .await;
    Ok(ok(json!({ "ok": true })).into_response())
}

/// The caller as resolved by the gate (handlers behind a gate always have one).
pub fn caller_of(ext: Option<Extension<Caller>>) -> Caller {
    ext.map(|Extension(c)| c).unwrap_or(Caller::Anonymous)
}
