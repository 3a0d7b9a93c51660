//! Workspace events: recorded ones become a `structure_events` row and a broadcast; the
//! frequent ones (heartbeats, task updates, activity) are broadcast only, as in the original.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::json::{go_time, normalize};
use crate::store::TenantStore;

/// The envelope every stream client receives, fields in this order (contract 2.3).
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub event: String,
    pub workspace_id: String,
    pub timestamp: String,
    pub payload: Value,
}

#[derive(Clone)]
pub struct Events {
    store: TenantStore,
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Events {
    pub fn new(store: TenantStore) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { store, tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }

    /// Records the event (a row) and broadcasts it. A failed write is logged: the state change
    /// it describes has already happened.
    pub async fn record(&self, event: &str, workspace_id: &str, payload: Value) {
        let payload = normalize(payload);
        let at = molecule_shared::now_ms();
        if let Err(e) = self
            .store
            .insert_event(event, Some(workspace_id), &payload.to_string(), at)
            .await
        {
            tracing::warn!(event, error = %e, "recording an event failed");
        }
        self.send(event, workspace_id, payload, at);
    }

    /// Broadcasts without recording.
    pub fn broadcast(&self, event: &str, workspace_id: &str, payload: Value) {
        self.send(
            event,
            workspace_id,
            normalize(payload),
            molecule_shared::now_ms(),
        );
    }

    fn send(&self, event: &str, workspace_id: &str, payload: Value, at: i64) {
        let _ = self.tx.send(Arc::new(Envelope {
            event: event.to_owned(),
            workspace_id: workspace_id.to_owned(),
            timestamp: go_time(at),
            payload,
        }));
    }
}
