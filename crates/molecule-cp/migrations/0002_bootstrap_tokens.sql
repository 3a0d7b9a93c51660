CREATE TABLE bootstrap_tokens (
    token_hash TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX bootstrap_tokens_org ON bootstrap_tokens (org_id)
