CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    owner_user_id TEXT,
    status TEXT NOT NULL,
    is_canary BIGINT NOT NULL DEFAULT 0,
    stripe_customer_id TEXT,
    stripe_subscription_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE tenant_instances (
    org_id TEXT PRIMARY KEY REFERENCES orgs(id),
    provider TEXT NOT NULL,
    instance_id TEXT,
    address TEXT,
    security_group_id TEXT,
    status TEXT NOT NULL,
    desired_version TEXT NOT NULL,
    observed_version TEXT,
    config_generation BIGINT NOT NULL DEFAULT 1,
    restarts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE tenant_credentials (
    org_id TEXT PRIMARY KEY REFERENCES orgs(id),
    admin_token_hash TEXT NOT NULL UNIQUE,
    admin_token_sealed TEXT NOT NULL,
    encryption_key_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE boot_events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    source TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX boot_events_org ON boot_events (org_id, at);
CREATE TABLE workspace_instances (
    workspace_id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    state TEXT NOT NULL,
    address TEXT,
    runtime TEXT NOT NULL,
    tier BIGINT NOT NULL,
    platform_url TEXT NOT NULL,
    env_sealed TEXT NOT NULL,
    restarts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workspace_instances_org ON workspace_instances (org_id);
CREATE TABLE purges (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    status TEXT NOT NULL,
    last_step TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    requested_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX purges_slug ON purges (slug);
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
)
