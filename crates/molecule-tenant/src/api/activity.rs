//! Events (recorded), activity logs, and the `/ws` event stream (which needs a credential:
//! the original streamed every event of the tenant to anyone).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::workspaces::caller_of;
use super::{check_id, error, internal, Body, Handled};
use crate::access::can_communicate;
use crate::auth::Caller;
use crate::json::{go_time, normalize, ok, stored};
use crate::state::AppState;
use crate::store::{new_id, Activity, EventRow};

fn event_item(e: &EventRow) -> Value {
    json!({
        "id": e.id, "event_type": e.event_type, "workspace_id": e.workspace_id,
        "payload": stored(Some(&e.payload)), "created_at": go_time(e.created_at),
    })
}

pub async fn events(State(state): State<AppState>) -> Handled {
    let rows = state
        .store
        .events(None)
        .await
        .map_err(|e| internal(e, "query failed"))?;
    Ok(ok(rows.iter().map(event_item).collect::<Vec<_>>()).into_response())
}

pub async fn events_of(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    check_id(&id)?;
    let rows = state
        .store
        .events(Some(&id))
        .await
        .map_err(|e| internal(e, "query failed"))?;
    Ok(ok(rows.iter().map(event_item).collect::<Vec<_>>()).into_response())
}

pub const ACTIVITY_TYPES: &[&str] = &[
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "skill_promotion",
    "memory_write",
    "error",
];

#[derive(Deserialize)]
struct LogBody {
    #[serde(default)]
    activity_type: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    target_id: String,
    #[serde(default)]
    error_detail: String,
    #[serde(default)]
    source_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    duration_ms: Option<i64>,
    #[serde(default)]
    request_body: Value,
    #[serde(default)]
    response_body: Value,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    tool_trace: Value,
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn opt_json(v: Value) -> Option<String> {
    (!v.is_null()).then(|| normalize(v).to_string())
}

pub async fn log(State(state): State<AppState>, Path(id): Path<String>, body: Body) -> Handled {
    check_id(&id)?;
    let b: LogBody = body.json("invalid request body")?;
    if b.activity_type.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid request body"));
    }
    if !ACTIVITY_TYPES.contains(&b.activity_type.as_str()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!(
                "invalid activity_type, must be one of: {}",
                ACTIVITY_TYPES.join(", ")
            ),
        ));
    }
    if !b.source_id.is_empty() && b.source_id != id {
        return Err(error(
            StatusCode::FORBIDDEN,
            "source_id must match authenticated workspace",
        ));
    }
    if !b.target_id.is_empty() && !molecule_shared::token::is_uuid(&b.target_id) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "target_id must be a workspace ID",
        ));
    }
    super::load(&state, &id).await?;
    let request_body = if b.request_body.is_null() {
        b.metadata
    } else {
        b.request_body
    };
    let a = Activity {
        id: new_id(),
        workspace_id: id.clone(),
        activity_type: b.activity_type.clone(),
        source_id: Some(id.clone()),
        target_id: opt(b.target_id),
        method: opt(b.method),
        summary: opt(b.summary),
        duration_ms: b.duration_ms,
        status: opt(b.status).unwrap_or_else(|| "ok".into()),
        error_detail: opt(b.error_detail),
        request_body: opt_json(request_body),
        response_body: opt_json(b.response_body),
        tool_trace: opt_json(b.tool_trace),
        created_at: molecule_shared::now_ms(),
    };
    state
        .store
        .insert_activity(&a)
        .await
        .map_err(|e| internal(e, "failed to log activity"))?;
    state.events.broadcast(
        "ACTIVITY_LOGGED",
        &id,
        json!({
            "activity_type": a.activity_type, "method": a.method, "summary": a.summary, "status": a.status,
            "source_id": a.source_id, "target_id": a.target_id, "duration_ms": a.duration_ms,
        }),
    );
    Ok(ok(json!({ "status": "logged" })).into_response())
}

#[derive(Deserialize, Default)]
pub struct ActivityQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    limit: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ActivityQuery>,
) -> Handled {
    check_id(&id)?;
    let source = match q.source.as_deref() {
        None | Some("") => None,
        Some("agent") => Some(true),
        Some("canvas") => Some(false),
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "source must be 'canvas' or 'agent'",
            ))
        }
    };
    let limit = q
        .limit
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map(|l| l.min(500))
        .unwrap_or(100);
    let rows = state
        .store
        .activities(
            &id,
            q.kind.as_deref().filter(|k| !k.is_empty()),
            source,
            limit,
        )
        .await
        .map_err(|e| internal(e, "query failed"))?;
    let items: Vec<Value> = rows
        .iter()
        .map(|a| {
            let mut item = json!({
                "id": a.id, "workspace_id": a.workspace_id, "activity_type": a.activity_type, "source_id": a.source_id,
                "target_id": a.target_id, "method": a.method, "summary": a.summary, "duration_ms": a.duration_ms,
                "status": a.status, "error_detail": a.error_detail, "created_at": go_time(a.created_at),
            });
            for (k, v) in [("request_body", &a.request_body), ("response_body", &a.response_body), ("tool_trace", &a.tool_trace)] {
                if v.is_some() {
                    item[k] = stored(v.as_deref());
                }
            }
            item
        })
        .collect();
    Ok(ok(items).into_response())
}

/// The event stream. Admin and org tokens see every event; a workspace token (with
/// `X-Workspace-ID`) sees the events of workspaces it may talk to.
pub async fn stream(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let caller = caller_of(caller);
    let scope = match &caller {
        Caller::Workspace(w) => {
            let claimed = headers
                .get("x-workspace-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(w);
            if claimed != w {
                return error(StatusCode::UNAUTHORIZED, "invalid workspace auth token");
            }
            Some(w.clone())
        }
        _ => None,
    };
    upgrade
        .on_upgrade(move |socket| pump(state, socket, scope))
        .into_response()
}

async fn pump(state: AppState, mut socket: WebSocket, scope: Option<String>) {
    let mut events = state.events.subscribe();
    state
        .metrics
        .set_gauge("tenant_websocket_connections_active", &[], 1);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(envelope) => {
                    if let Some(me) = &scope {
                        if !can_communicate(&state.store, me, &envelope.workspace_id).await.unwrap_or(false) {
                            continue;
                        }
                    }
                    let Ok(text) = serde_json::to_string(&*envelope) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // A slow client misses events rather than holding everyone back.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}
