//! Bundles: a workspace subtree exported as one JSON document and imported as a new subtree.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::workspaces::new_workspace;
use super::{error, internal, Body, Handled};
use crate::json::{stored, GoJson};
use crate::lifecycle;
use crate::state::AppState;
use crate::store::{Val, WsStatus};

const MAX_DEPTH: usize = 16;

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Bundle {
    schema: String,
    id: String,
    name: String,
    description: String,
    tier: i64,
    model: String,
    system_prompt: String,
    skills: Vec<Value>,
    tools: Vec<Value>,
    prompts: serde_json::Map<String, Value>,
    sub_workspaces: Vec<Bundle>,
    agent_card: Value,
    author: String,
    version: String,
    /// Not in the original's bundles; carried so a round trip keeps the runtime.
    #[serde(skip_serializing_if = "String::is_empty")]
    runtime: String,
}

async fn export_tree(
    state: &AppState,
    id: &str,
    depth: usize,
) -> Result<Bundle, axum::response::Response> {
    let not_found = || error(StatusCode::NOT_FOUND, "bundle not found");
    let w = state
        .store
        .workspace(id)
        .await
        .map_err(|_| not_found())?
        .filter(|w| w.status != WsStatus::Removed)
        .ok_or_else(not_found)?;
    let mut subs = Vec::new();
    if depth < MAX_DEPTH {
        for child in state.store.children(id).await.map_err(|_| not_found())? {
            subs.push(Box::pin(export_tree(state, &child.id, depth + 1)).await?);
        }
    }
    Ok(Bundle {
        schema: "1.0".into(),
        id: w.id.clone(),
        name: w.name.clone(),
        description: w.role.clone().unwrap_or_default(),
        tier: w.tier,
        prompts: serde_json::Map::new(),
        sub_workspaces: subs,
        agent_card: stored(w.agent_card.as_deref()),
        version: "1.0.0".into(),
        runtime: w.runtime.clone(),
        ..Bundle::default()
    })
}

pub async fn export(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    if !molecule_shared::token::is_uuid(&id) {
        return Err(error(StatusCode::NOT_FOUND, "bundle not found"));
    }
    Ok(crate::json::ok(export_tree(&state, &id, 0).await?).into_response())
}

async fn import_tree(
    state: &AppState,
    b: &Bundle,
    parent: Option<String>,
    depth: usize,
) -> Result<Value, axum::response::Response> {
    let runtime = if b.runtime.is_empty() {
        "langgraph"
    } else {
        b.runtime.as_str()
    };
    let mut w = new_workspace(
        &b.name,
        Some(b.description.clone()),
        b.tier,
        runtime,
        parent,
    );
    w.tier = b.tier;
    w.source_bundle_id = Some(b.id.clone()).filter(|i| !i.is_empty());
    state
        .store
        .insert_workspace(&w)
        .await
        .map_err(|e| internal(e, "import failed"))?;
    state
        .events
        .record(
            "WORKSPACE_PROVISIONING",
            &w.id,
            json!({ "name": w.name, "tier": w.tier, "source_bundle_id": b.id }),
        )
        .await;
    lifecycle::spawn_provision(state, &w);
    let mut children = Vec::new();
    if depth < MAX_DEPTH {
        for sub in &b.sub_workspaces {
            children.push(Box::pin(import_tree(state, sub, Some(w.id.clone()), depth + 1)).await?);
        }
    }
    let _ = state
        .store
        .update_workspace(&w.id, &[("role", Val::Text(w.role.clone()))])
        .await;
    let mut out = json!({ "name": w.name, "status": "provisioning", "workspace_id": w.id });
    if !children.is_empty() {
        out["children"] = Value::Array(children);
    }
    Ok(out)
}

pub async fn import(State(state): State<AppState>, body: Body) -> Handled {
    let b: Bundle = body.json("invalid bundle")?;
    let mut check = vec![(&b, 0usize)];
    while let Some((node, depth)) = check.pop() {
        if depth > MAX_DEPTH
            || super::workspaces::check_text("name", &node.name, 255, true).is_err()
        {
            return Err(error(StatusCode::BAD_REQUEST, "invalid bundle"));
        }
        check.extend(node.sub_workspaces.iter().map(|s| (s, depth + 1)));
    }
    let result = import_tree(&state, &b, None, 0).await?;
    Ok(GoJson(StatusCode::CREATED, result).into_response())
}
