CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT,
    tier BIGINT NOT NULL,
    status TEXT NOT NULL,
    runtime TEXT NOT NULL,
    agent_card TEXT,
    url TEXT NOT NULL DEFAULT '',
    parent_id TEXT,
    active_tasks BIGINT NOT NULL DEFAULT 0,
    max_concurrent_tasks BIGINT NOT NULL DEFAULT 1,
    last_error_rate DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_sample_error TEXT NOT NULL DEFAULT '',
    uptime_seconds BIGINT NOT NULL DEFAULT 0,
    current_task TEXT NOT NULL DEFAULT '',
    workspace_dir TEXT,
    monthly_spend BIGINT NOT NULL DEFAULT 0,
    budget_limit BIGINT,
    x DOUBLE PRECISION NOT NULL DEFAULT 0,
    y DOUBLE PRECISION NOT NULL DEFAULT 0,
    collapsed BIGINT NOT NULL DEFAULT 0,
    instance_id TEXT,
    source_bundle_id TEXT,
    last_heartbeat_at BIGINT,
    last_outbound_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workspaces_parent ON workspaces (parent_id);
CREATE TABLE workspace_config (
    workspace_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE workspace_secrets (
    workspace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    encryption_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE TABLE global_secrets (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    encryption_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE workspace_tokens (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX workspace_tokens_ws ON workspace_tokens (workspace_id);
CREATE TABLE org_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT,
    org_id TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE TABLE structure_events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    workspace_id TEXT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX structure_events_ws ON structure_events (workspace_id, created_at);
CREATE TABLE activity_logs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    activity_type TEXT NOT NULL,
    source_id TEXT,
    target_id TEXT,
    method TEXT,
    summary TEXT,
    duration_ms BIGINT,
    status TEXT NOT NULL,
    error_detail TEXT,
    request_body TEXT,
    response_body TEXT,
    tool_trace TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX activity_logs_ws ON activity_logs (workspace_id, created_at);
CREATE TABLE channels (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    channel_type TEXT NOT NULL,
    config TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
)
