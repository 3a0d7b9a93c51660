//! `/cp/workspaces/*`: tenants ask the control plane to run their workspaces' instances. The
//! caller's org (from its admin token) must be the org named in the request; instances of
//! other orgs are invisible to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use molecule_shared::http::{ApiError, ApiJson, ApiQuery, ApiResult};
use molecule_shared::now_ms;
use serde::Deserialize;
use serde_json::json;

use super::auth::{deny, AdminCaller, PlatformCaller};
use crate::provider::{BootEnv, InstanceSpec, Observed, ObservedState, ProviderError, Role};
use crate::store::{Org, StoreError, WorkspaceInstance, WorkspaceState};
use crate::ControlPlane;

pub const PROVISION_BODY_LIMIT: usize = 256 * 1024;
/// Names the control plane sets itself; a request cannot override them.
const RESERVED_ENV: &[&str] = &[
    "WORKSPACE_ID",
    "PLATFORM_URL",
    "RUNTIME",
    "TIER",
    "MOLECULE_ORG_ID",
    "PORT",
];
const MAX_ENV_ENTRIES: usize = 256;
const MAX_ENV_VALUE: usize = 32 * 1024;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route(
            "/cp/workspaces/provision",
            post(provision).layer(DefaultBodyLimit::max(PROVISION_BODY_LIMIT)),
        )
        .route("/cp/workspaces/{id}", axum::routing::delete(release))
        .route("/cp/workspaces/{id}/status", get(status))
        .route("/cp/workspaces/{id}/console", get(console))
}

#[derive(Deserialize)]
struct ProvisionRequest {
    org_id: String,
    workspace_id: String,
    runtime: String,
    tier: i64,
    platform_url: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

pub fn valid_workspace_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate(req: &ProvisionRequest) -> ApiResult<()> {
    let bad = |m: &str| Err(ApiError::BadRequest(m.to_owned()));
    if !valid_workspace_id(&req.workspace_id) {
        return bad("workspace_id must be 1 to 64 letters, digits or '-'");
    }
    let runtime_ok = (1..=32).contains(&req.runtime.len())
        && req
            .runtime
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !runtime_ok {
        return bad("runtime must be 1 to 32 characters of a-z, 0-9, '_' or '-'");
    }
    if !(1..=4).contains(&req.tier) {
        return bad("tier must be an integer from 1 to 4");
    }
    if req.env.len() > MAX_ENV_ENTRIES {
        return bad("env has too many entries (at most 256)");
    }
    for (name, value) in &req.env {
        if !valid_env_name(name) {
            return Err(ApiError::BadRequest(format!(
                "env name {name:?} is invalid: it must match ^[A-Za-z_][A-Za-z0-9_]*$"
            )));
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "env name {name} is set by the control plane and cannot be overridden"
            )));
        }
        // The value is never echoed: it may be a secret.
        if value.contains('\0') || value.len() > MAX_ENV_VALUE {
            return Err(ApiError::BadRequest(format!(
                "env value of {name} contains NUL or exceeds 32 KiB"
            )));
        }
    }
    Ok(())
}

fn env_field(workspace_id: &str) -> String {
    format!("workspace_env:{workspace_id}")
}

/// Launches (or adopts) the instance of a recorded workspace.
pub async fn launch(cp: &ControlPlane, ws: &WorkspaceInstance) -> Result<Observed, ProviderError> {
    let plain = cp
        .keyring
        .open(&ws.org_id, &env_field(&ws.workspace_id), &ws.env_sealed)
        .await
        .map_err(|e| ProviderError::Launch {
            role: "workspace",
            reason: format!("stored env: {e}"),
        })?;
    let extra: BTreeMap<String, String> =
        serde_json::from_str(plain.expose()).map_err(|_| ProviderError::Launch {
            role: "workspace",
            reason: "stored env is not a string map".into(),
        })?;
    let mut env = BootEnv::from(extra);
    env.set("WORKSPACE_ID", &ws.workspace_id);
    env.set("PLATFORM_URL", &ws.platform_url);
    env.set("RUNTIME", &ws.runtime);
    env.set("TIER", ws.tier.to_string());
    env.set("MOLECULE_ORG_ID", &ws.org_id);
    let spec = InstanceSpec {
        role: Role::Workspace,
        name: ws.workspace_id.clone(),
        org_id: ws.org_id.clone(),
        env,
        tier: ws.tier,
    };
    cp.provider.ensure(&spec).await
}

fn state_of(observed: &Observed) -> WorkspaceState {
    match observed.state {
        ObservedState::Running => WorkspaceState::Running,
        ObservedState::Pending => WorkspaceState::Pending,
        ObservedState::Gone => WorkspaceState::Stopped,
    }
}

async fn provision(
    PlatformCaller(org): PlatformCaller,
    State(cp): State<Arc<ControlPlane>>,
    ApiJson(req): ApiJson<ProvisionRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if req.org_id != org.id {
        return Err(deny(
            &cp,
            "POST /cp/workspaces/provision",
            &req.workspace_id,
            "org_id does not match the caller's admin token",
            "",
        )
        .await);
    }
    validate(&req)?;
    molecule_shared::ssrf::check_url(&req.platform_url, cp.config.ssrf)
        .await
        .map_err(|e| ApiError::BadRequest(format!("platform_url is not allowed: {e}")))?;
    let env_json = serde_json::to_string(&req.env).map_err(ApiError::internal)?;
    let env_sealed = cp
        .keyring
        .seal(&org.id, &env_field(&req.workspace_id), &env_json)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "sealing a workspace env failed");
            ApiError::Unavailable("secrets cannot be sealed right now; retry later".into())
        })?;
    let now = now_ms();
    let mut ws = WorkspaceInstance {
        workspace_id: req.workspace_id.clone(),
        org_id: org.id.clone(),
        instance_id: format!("pending-{}", req.workspace_id),
        state: WorkspaceState::Pending,
        address: None,
        runtime: req.runtime,
        tier: req.tier,
        platform_url: req.platform_url,
        env_sealed,
        restarts: 0,
        created_at: now,
        updated_at: now,
    };
    match cp.store.insert_workspace(&ws).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            // A retry of the same provision is answered with the instance it made.
            match cp
                .store
                .workspace(&ws.workspace_id)
                .await
                .map_err(ApiError::internal)?
            {
                Some(existing) if existing.org_id == org.id => ws = existing,
                _ => return Err(ApiError::Conflict("workspace_id is already in use".into())),
            }
        }
        Err(e) => return Err(ApiError::internal(e)),
    }
    let observed = match launch(&cp, &ws).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(workspace = %ws.workspace_id, error = %e, "workspace launch failed");
            cp.audit(
                &format!("tenant:{}", org.id),
                "provision workspace",
                &ws.workspace_id,
                "failed",
                &e.to_string(),
            )
            .await;
            return Err(ApiError::Unavailable(
                "workspace instance could not be started; retry later".into(),
            ));
        }
    };
    ws.instance_id = observed.instance_id.clone();
    ws.state = state_of(&observed);
    ws.address = observed.address.clone();
    cp.store
        .save_workspace(&ws)
        .await
        .map_err(ApiError::internal)?;
    cp.audit(
        &format!("tenant:{}", org.id),
        "provision workspace",
        &ws.workspace_id,
        "ok",
        &ws.instance_id,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "instance_id": ws.instance_id, "private_ip": observed.private_ip, "state": ws.state }),
        ),
    ))
}

#[derive(Deserialize)]
struct InstanceQuery {
    instance_id: Option<String>,
}

/// The caller's workspace `id`, if it exists and (when given) has `instance_id`.
async fn owned(
    cp: &ControlPlane,
    org: &Org,
    id: &str,
    instance_id: Option<&str>,
) -> ApiResult<WorkspaceInstance> {
    let unknown = || ApiError::NotFound("no such workspace instance".into());
    if !valid_workspace_id(id) {
        return Err(unknown());
    }
    let ws = cp
        .store
        .workspace(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unknown)?;
    if ws.org_id != org.id || instance_id.is_some_and(|i| i != ws.instance_id) {
        return Err(unknown());
    }
    Ok(ws)
}

async fn release(
    PlatformCaller(org): PlatformCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<InstanceQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let ws = owned(&cp, &org, &id, q.instance_id.as_deref()).await?;
    cp.provider
        .terminate(Role::Workspace, &ws.workspace_id)
        .await
        .map_err(|e| {
            tracing::warn!(workspace = %ws.workspace_id, error = %e, "workspace terminate failed");
            ApiError::Unavailable("workspace instance could not be stopped; retry later".into())
        })?;
    cp.store
        .delete_workspace(&ws.workspace_id)
        .await
        .map_err(ApiError::internal)?;
    cp.audit(
        &format!("tenant:{}", org.id),
        "release workspace",
        &ws.workspace_id,
        "ok",
        &ws.instance_id,
    )
    .await;
    Ok(Json(
        json!({ "instance_id": ws.instance_id, "state": WorkspaceState::Terminated }),
    ))
}

async fn status(
    PlatformCaller(org): PlatformCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<InstanceQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let ws = owned(&cp, &org, &id, q.instance_id.as_deref()).await?;
    let observed = cp
        .provider
        .describe(Role::Workspace, &ws.workspace_id)
        .await
        .map_err(|_| ApiError::Unavailable("provider did not answer".into()))?;
    Ok(Json(json!({
        "instance_id": ws.instance_id,
        "state": state_of(&observed),
        "private_ip": observed.private_ip,
    })))
}

async fn console_of(
    cp: &ControlPlane,
    ws: &WorkspaceInstance,
) -> ApiResult<Json<serde_json::Value>> {
    let output = cp
        .provider
        .console(Role::Workspace, &ws.workspace_id)
        .await
        .map_err(|_| ApiError::Unavailable("console output is not available".into()))?;
    Ok(Json(json!({ "output": output })))
}

async fn console(
    PlatformCaller(org): PlatformCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let ws = owned(&cp, &org, &id, None).await?;
    console_of(&cp, &ws).await
}

pub async fn admin_console(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let unknown = || ApiError::NotFound("no such workspace instance".into());
    if !valid_workspace_id(&id) {
        return Err(unknown());
    }
    let ws = cp
        .store
        .workspace(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unknown)?;
    console_of(&cp, &ws).await
}
