//! The tenant's rows.

/// A workspace's status. `awaiting_agent` (an external workspace waiting for its agent) is a
/// real state here, unlike the original whose enum lacked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsStatus {
    Provisioning,
    Online,
    Offline,
    Degraded,
    Failed,
    Removed,
    Paused,
    AwaitingAgent,
}

impl WsStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WsStatus::Provisioning => "provisioning",
            WsStatus::Online => "online",
            WsStatus::Offline => "offline",
            WsStatus::Degraded => "degraded",
            WsStatus::Failed => "failed",
            WsStatus::Removed => "removed",
            WsStatus::Paused => "paused",
            WsStatus::AwaitingAgent => "awaiting_agent",
        }
    }
}

impl std::str::FromStr for WsStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "provisioning" => WsStatus::Provisioning,
            "online" => WsStatus::Online,
            "offline" => WsStatus::Offline,
            "degraded" => WsStatus::Degraded,
            "failed" => WsStatus::Failed,
            "removed" => WsStatus::Removed,
            "paused" => WsStatus::Paused,
            "awaiting_agent" => WsStatus::AwaitingAgent,
            _ => return Err(()),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub role: Option<String>,
    pub tier: i64,
    pub status: WsStatus,
    pub runtime: String,
    /// Raw JSON.
    pub agent_card: Option<String>,
    pub url: String,
    pub parent_id: Option<String>,
    pub active_tasks: i64,
    pub max_concurrent_tasks: i64,
    pub last_error_rate: f64,
    pub last_sample_error: String,
    pub uptime_seconds: i64,
    pub current_task: String,
    pub workspace_dir: Option<String>,
    pub monthly_spend: i64,
    pub budget_limit: Option<i64>,
    pub x: f64,
    pub y: f64,
    pub collapsed: bool,
    /// The CP instance running this workspace, when there is one.
    pub instance_id: Option<String>,
    pub source_bundle_id: Option<String>,
    pub last_heartbeat_at: Option<i64>,
    pub last_outbound_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct HeartbeatFigures {
    pub error_rate: f64,
    pub sample_error: String,
    pub active_tasks: i64,
    pub uptime_seconds: i64,
    pub current_task: String,
    pub monthly_spend: i64,
}

#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub key: String,
    /// Sealed (version 1) or plaintext (version 0, only without a key in development).
    pub value: String,
    pub encryption_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub prefix: String,
    pub name: Option<String>,
    pub org_id: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub workspace_id: Option<String>,
    pub payload: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Activity {
    pub id: String,
    pub workspace_id: String,
    pub activity_type: String,
    pub source_id: Option<String>,
    pub target_id: Option<String>,
    pub method: Option<String>,
    pub summary: Option<String>,
    pub duration_ms: Option<i64>,
    pub status: String,
    pub error_detail: Option<String>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub tool_trace: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub workspace_id: String,
    pub channel_type: String,
    /// JSON object: `app_public_key` (hex), `chat_id` (comma-separated), ...
    pub config: String,
    pub enabled: bool,
    pub created_at: i64,
}
