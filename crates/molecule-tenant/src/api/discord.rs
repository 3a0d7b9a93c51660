//! Channels and the Discord interactions webhook: the body is capped at 1 MiB before the
//! signature is checked (413 over it), the signature is Ed25519 over timestamp + body with the
//! channel's public key, stale timestamps are refused, and PING is answered `{"type":1}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_id, error, internal, load, Body, Handled};
use crate::json::{go_time, ok, GoJson};
use crate::state::AppState;
use crate::store::{new_id, Activity, Channel};

pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;
/// How far a signed timestamp may be from now.
const TOLERANCE_SECS: i64 = 300;

#[derive(Deserialize)]
struct NewChannel {
    channel_type: String,
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn channel_item(c: &Channel) -> Value {
    json!({
        "id": c.id, "workspace_id": c.workspace_id, "channel_type": c.channel_type,
        "config": crate::json::stored(Some(&c.config)), "enabled": c.enabled, "created_at": go_time(c.created_at),
    })
}

pub async fn add_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Handled {
    let b: NewChannel = body.json("invalid request body")?;
    load(&state, &id).await?;
    if b.channel_type != "discord" {
        return Err(error(StatusCode::BAD_REQUEST, "unknown channel type"));
    }
    let key = b
        .config
        .get("app_public_key")
        .and_then(Value::as_str)
        .unwrap_or("");
    if parse_key(key).is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "config.app_public_key must be a 32-byte Ed25519 public key in hex",
        ));
    }
    let c = Channel {
        id: new_id(),
        workspace_id: id,
        channel_type: b.channel_type,
        config: Value::Object(b.config).to_string(),
        enabled: b.enabled,
        created_at: molecule_shared::now_ms(),
    };
    state
        .store
        .insert_channel(&c)
        .await
        .map_err(|e| internal(e, "failed to save channel"))?;
    Ok(GoJson(StatusCode::CREATED, channel_item(&c)).into_response())
}

pub async fn list_channels(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    check_id(&id)?;
    let rows = state
        .store
        .channels(Some(&id), "")
        .await
        .map_err(|e| internal(e, "query failed"))?;
    Ok(ok(rows.iter().map(channel_item).collect::<Vec<_>>()).into_response())
}

pub async fn remove_channel(
    State(state): State<AppState>,
    Path((id, channel_id)): Path<(String, String)>,
) -> Handled {
    check_id(&id)?;
    if !state
        .store
        .delete_channel(&id, &channel_id)
        .await
        .map_err(|e| internal(e, "failed to delete channel"))?
    {
        return Err(error(StatusCode::NOT_FOUND, "channel not found"));
    }
    Ok(ok(json!({ "status": "deleted" })).into_response())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The interaction's text: `/<command> <option values…>`.
fn command_text(v: &Value) -> String {
    let data = &v["data"];
    let mut text = format!("/{}", data["name"].as_str().unwrap_or(""));
    for o in data["options"].as_array().into_iter().flatten() {
        match &o["value"] {
            Value::String(s) => text.push_str(&format!(" {s}")),
            Value::Null => {}
            other => text.push_str(&format!(" {other}")),
        }
    }
    text
}

pub async fn webhook(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Handled {
    if kind != "discord" {
        return Err(error(StatusCode::NOT_FOUND, "unknown channel type"));
    }
    let invalid = || error(StatusCode::UNAUTHORIZED, "invalid signature");
    let timestamp = header(&headers, "x-signature-timestamp");
    let signature = hex::decode(header(&headers, "x-signature-ed25519"))
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    let ts: i64 = timestamp.parse().map_err(|_| invalid())?;
    if (molecule_shared::now_ms() / 1000 - ts).abs() > TOLERANCE_SECS {
        return Err(error(StatusCode::UNAUTHORIZED, "stale timestamp"));
    }
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(&body.0);
    let channels = state
        .store
        .channels(None, "discord")
        .await
        .map_err(|e| internal(e, "channel lookup failed"))?;
    let verifies =
        |hex_key: &str| parse_key(hex_key).is_some_and(|k| k.verify(&message, &signature).is_ok());
    let key_of = |c: &Channel| {
        crate::json::stored(Some(&c.config))["app_public_key"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let matched: Vec<&Channel> = channels.iter().filter(|c| verifies(&key_of(c))).collect();
    let env_ok = state
        .config
        .discord_public_key
        .as_deref()
        .is_some_and(verifies);
    if matched.is_empty() && !env_ok {
        return Err(invalid());
    }
    let v: Value = serde_json::from_slice(&body.0)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "webhook parse failed"))?;
    match v["type"].as_i64() {
        Some(1) => return Ok(ok(json!({ "type": 1 })).into_response()),
        Some(2 | 3) => {}
        _ => return Ok(ok(json!({ "status": "ignored" })).into_response()),
    }
    let text = command_text(&v);
    let chat = v["channel_id"].as_str().unwrap_or("");
    let target = matched.into_iter().find(|c| {
        let cfg = crate::json::stored(Some(&c.config));
        let ids = cfg["chat_id"].as_str().unwrap_or("");
        ids.is_empty() || ids.split(',').any(|i| i.trim() == chat)
    });
    let Some(channel) = target else {
        return Ok(ok(json!({ "status": "no_channel" })).into_response());
    };
    let username = v["member"]["user"]["username"]
        .as_str()
        .or(v["user"]["username"].as_str())
        .unwrap_or("");
    let activity = Activity {
        id: new_id(),
        workspace_id: channel.workspace_id.clone(),
        activity_type: "a2a_receive".into(),
        source_id: None,
        target_id: Some(channel.workspace_id.clone()),
        method: Some("channel/discord".into()),
        summary: Some(text.chars().take(256).collect()),
        duration_ms: None,
        status: "ok".into(),
        error_detail: None,
        request_body: Some(
            json!({ "text": text, "channel_id": chat, "username": username }).to_string(),
        ),
        response_body: None,
        tool_trace: None,
        created_at: molecule_shared::now_ms(),
    };
    state
        .store
        .insert_activity(&activity)
        .await
        .map_err(|e| internal(e, "channel message failed"))?;
    state
        .events
        .record("CHANNEL_MESSAGE", &channel.workspace_id, json!({ "channel_id": channel.id, "channel_type": "discord", "username": username, "direction": "inbound" }))
        .await;
    Ok(ok(json!({ "status": "accepted" })).into_response())
}
