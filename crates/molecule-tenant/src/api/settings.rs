//! Workspace config (the JSON blob), workspace and global secrets, the model setting.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::workspaces::caller_of;
use super::{check_id, error, internal, load, Body, Handled};
use crate::auth::Caller;
use crate::json::{go_time, normalize, ok, GoJson};
use crate::secrets;
use crate::state::AppState;

pub async fn get_config(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    check_id(&id)?;
    let data = state
        .store
        .config(&id)
        .await
        .map_err(|e| internal(e, "query failed"))?;
    let data = data
        .and_then(|d| serde_json::from_str::<Value>(&d).ok())
        .map(normalize)
        .unwrap_or_else(|| json!({}));
    Ok(ok(json!({ "data": data })).into_response())
}

/// Shallow merge of a JSON object into the stored one. The body cap (256 KiB) is the router's
/// default; over it, 413. Non-object JSON is refused (the original accepted it and corrupted
/// the blob).
pub async fn patch_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Handled {
    let patch: Value = serde_json::from_slice(&body.0)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "invalid JSON"))?;
    let Value::Object(patch) = patch else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "config must be a JSON object",
        ));
    };
    load(&state, &id).await?;
    let mut current = match state
        .store
        .config(&id)
        .await
        .map_err(|e| internal(e, "failed to update config"))?
    {
        Some(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
        None => serde_json::Map::new(),
    };
    for (k, v) in patch {
        current.insert(k, v);
    }
    state
        .store
        .put_config(&id, &Value::Object(current).to_string())
        .await
        .map_err(|e| internal(e, "failed to update config"))?;
    Ok(ok(json!({ "status": "updated" })).into_response())
}

fn secret_item(s: &crate::store::StoredSecret, scope: &str) -> Value {
    json!({ "key": s.key, "has_value": true, "scope": scope, "created_at": go_time(s.created_at), "updated_at": go_time(s.updated_at) })
}

pub async fn list_secrets(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    check_id(&id)?;
    let own = state
        .store
        .secrets(Some(&id))
        .await
        .map_err(|e| internal(e, "query failed"))?;
    let mut out: Vec<Value> = own.iter().map(|s| secret_item(s, "workspace")).collect();
    let globals = state.store.secrets(None).await.unwrap_or_default();
    out.extend(
        globals
            .iter()
            .filter(|g| !own.iter().any(|o| o.key == g.key))
            .map(|g| secret_item(g, "global")),
    );
    Ok(ok(out).into_response())
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    value: String,
}

fn key_value(body: &Body) -> Result<KeyValue, Response> {
    let kv: KeyValue = body.json("invalid request body")?;
    if kv.key.is_empty()
        || kv.value.is_empty()
        || kv.key.len() > 256
        || kv.key.chars().any(char::is_control)
    {
        return Err(error(StatusCode::BAD_REQUEST, "invalid request body"));
    }
    Ok(kv)
}

pub async fn set_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Handled {
    check_id(&id)?;
    let kv = key_value(&body)?;
    load(&state, &id).await?;
    let (value, version) = secrets::seal(&state, Some(&id), &kv.key, &kv.value);
    state
        .store
        .put_secret(Some(&id), &kv.key, &value, version)
        .await
        .map_err(|e| internal(e, "failed to save secret"))?;
    Ok(ok(json!({ "key": kv.key, "status": "saved" })).into_response())
}

pub async fn delete_secret(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> Handled {
    check_id(&id)?;
    if !state
        .store
        .delete_secret(Some(&id), &key)
        .await
        .map_err(|e| internal(e, "failed to delete secret"))?
    {
        return Err(error(StatusCode::NOT_FOUND, "secret not found"));
    }
    Ok(ok(json!({ "key": key, "status": "deleted" })).into_response())
}

/// Decrypted values: only for the workspace's own token, never for admin or org tokens.
pub async fn secret_values(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Handled {
    check_id(&id)?;
    match caller_of(caller) {
        Caller::Workspace(w) if w == id => {}
        Caller::Anonymous
            if state
                .store
                .count_live_tokens(&id)
                .await
                .map_err(|e| internal(e, "auth check failed"))?
                == 0 => {}
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
    match secrets::merged(&state, &id).await {
        Ok(values) => Ok(ok(values).into_response()),
        Err(failed) => Err(GoJson(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": "one or more secrets failed to decrypt; refusing to return partial bundle", "failed_keys": failed }),
        )
        .into_response()),
    }
}

pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    check_id(&id)?;
    let own = state
        .store
        .secrets(Some(&id))
        .await
        .map_err(|e| internal(e, "query failed"))?;
    match own.iter().find(|s| s.key == "MODEL_PROVIDER") {
        Some(s) => {
            let model = secrets::open(&state, Some(&id), s)
                .ok_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "failed to decrypt"))?;
            Ok(ok(json!({ "model": model, "source": "workspace_secrets" })).into_response())
        }
        None => Ok(ok(json!({ "model": "", "source": "default" })).into_response()),
    }
}

#[derive(Deserialize)]
struct ModelBody {
    #[serde(default)]
    model: String,
}

pub async fn put_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Handled {
    check_id(&id)?;
    let b: ModelBody = body.json("invalid request body")?;
    load(&state, &id).await?;
    if b.model.is_empty() {
        state
            .store
            .delete_secret(Some(&id), "MODEL_PROVIDER")
            .await
            .map_err(|e| internal(e, "failed to clear model"))?;
        return Ok(ok(json!({ "status": "cleared" })).into_response());
    }
    let (value, version) = secrets::seal(&state, Some(&id), "MODEL_PROVIDER", &b.model);
    state
        .store
        .put_secret(Some(&id), "MODEL_PROVIDER", &value, version)
        .await
        .map_err(|e| internal(e, "failed to save model"))?;
    Ok(ok(json!({ "model": b.model, "status": "saved" })).into_response())
}

pub async fn list_global(State(state): State<AppState>) -> Handled {
    let all = state
        .store
        .secrets(None)
        .await
        .map_err(|e| internal(e, "query failed"))?;
    Ok(ok(all
        .iter()
        .map(|s| secret_item(s, "global"))
        .collect::<Vec<_>>())
    .into_response())
}

pub async fn set_global(State(state): State<AppState>, body: Body) -> Handled {
    let kv = key_value(&body)?;
    let (value, version) = secrets::seal(&state, None, &kv.key, &kv.value);
    state
        .store
        .put_secret(None, &kv.key, &value, version)
        .await
        .map_err(|e| internal(e, "failed to save"))?;
    Ok(ok(json!({ "key": kv.key, "scope": "global", "status": "saved" })).into_response())
}

pub async fn delete_global(State(state): State<AppState>, Path(key): Path<String>) -> Handled {
    if !state
        .store
        .delete_secret(None, &key)
        .await
        .map_err(|e| internal(e, "failed to delete"))?
    {
        return Err(error(StatusCode::NOT_FOUND, "secret not found"));
    }
    Ok(ok(json!({ "key": key, "scope": "global", "status": "deleted" })).into_response())
}
