//! The tenant's own database (SQLite file or PostgreSQL), migrated at start. One type, every
//! query written once in SQL both backends accept.

mod model;

pub use model::*;

use molecule_shared::db::{Db, DbError, Migration};
use molecule_shared::now_ms;
use sqlx::any::AnyRow;
use sqlx::Row;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "platform",
        sql: include_str!("../../migrations/0002_platform.sql"),
    },
];

pub type StoreResult<T> = Result<T, DbError>;

fn q(e: sqlx::Error) -> DbError {
    DbError::Query(e)
}

pub fn new_id() -> String {
    molecule_shared::token::new_uuid()
}

#[derive(Clone, Debug)]
pub struct TenantStore {
    db: Db,
}

const WS_COLS: &str = "id, name, role, tier, status, runtime, agent_card, url, parent_id, active_tasks, max_concurrent_tasks, last_error_rate, last_sample_error, uptime_seconds, current_task, workspace_dir, monthly_spend, budget_limit, x, y, collapsed, instance_id, source_bundle_id, last_heartbeat_at, last_outbound_at, created_at, updated_at";

/// A value for a column update: the column names themselves only ever come from code.
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Float(f64),
}

impl TenantStore {
    pub async fn open(url: &str) -> Result<TenantStore, DbError> {
        // A tenant serves one org: a few SQLite connections are plenty and keep its memory
        // small; PostgreSQL pays a round trip per statement, so more of them overlap.
        let connections = if url.starts_with("sqlite:") { 4 } else { 16 };
        let db = Db::connect(url, connections).await?;
        db.migrate(MIGRATIONS).await?;
        Ok(TenantStore { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO tenant_meta (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = $3")
            .bind(key)
            .bind(value)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM tenant_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(row.map(|r| r.0))
    }

    // ---- workspaces -------------------------------------------------------------------------

    pub async fn insert_workspace(&self, w: &Workspace) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO workspaces ({WS_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26,$27)"))
            .bind(&w.id)
            .bind(&w.name)
            .bind(w.role.clone())
            .bind(w.tier)
            .bind(w.status.as_str())
            .bind(&w.runtime)
            .bind(w.agent_card.clone())
            .bind(&w.url)
            .bind(w.parent_id.clone())
            .bind(w.active_tasks)
            .bind(w.max_concurrent_tasks)
            .bind(w.last_error_rate)
            .bind(&w.last_sample_error)
            .bind(w.uptime_seconds)
            .bind(&w.current_task)
            .bind(w.workspace_dir.clone())
            .bind(w.monthly_spend)
            .bind(w.budget_limit)
            .bind(w.x)
            .bind(w.y)
            .bind(w.collapsed as i64)
            .bind(w.instance_id.clone())
            .bind(w.source_bundle_id.clone())
            .bind(w.last_heartbeat_at)
            .bind(w.last_outbound_at)
            .bind(w.created_at)
            .bind(w.updated_at)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(())
    }

    pub async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        sqlx::query(&format!("SELECT {WS_COLS} FROM workspaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(q)?
            .map(|r| workspace_from_row(&r))
            .transpose()
    }

    /// Every workspace that is not removed, oldest first.
    pub async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.workspaces_where("status <> 'removed' ORDER BY created_at, id", None)
            .await
    }

    /// Direct children that are not removed.
    pub async fn children(&self, id: &str) -> StoreResult<Vec<Workspace>> {
        self.workspaces_where(
            "parent_id = $1 AND status <> 'removed' ORDER BY created_at, id",
            Some(id),
        )
        .await
    }

    /// Root workspaces (no parent) that are not removed.
    pub async fn roots(&self) -> StoreResult<Vec<Workspace>> {
        self.workspaces_where(
            "parent_id IS NULL AND status <> 'removed' ORDER BY created_at, id",
            None,
        )
        .await
    }

    /// Workspaces in `status` whose last update is older than `before_ms`.
    pub async fn stale_in_status(
        &self,
        status: WsStatus,
        before_ms: i64,
    ) -> StoreResult<Vec<Workspace>> {
        let rows = sqlx::query(&format!("SELECT {WS_COLS} FROM workspaces WHERE status = $1 AND COALESCE(last_heartbeat_at, updated_at) < $2"))
            .bind(status.as_str())
            .bind(before_ms)
            .fetch_all(&self.db.pool)
            .await
            .map_err(q)?;
        rows.iter().map(workspace_from_row).collect()
    }

    async fn workspaces_where(
        &self,
        clause: &str,
        arg: Option<&str>,
    ) -> StoreResult<Vec<Workspace>> {
        let sql = format!("SELECT {WS_COLS} FROM workspaces WHERE {clause}");
        let mut query = sqlx::query(&sql);
        if let Some(a) = arg {
            query = query.bind(a.to_owned());
        }
        let rows = query.fetch_all(&self.db.pool).await.map_err(q)?;
        rows.iter().map(workspace_from_row).collect()
    }

    /// All non-removed descendants of `id`, breadth first (bounded against cycles).
    pub async fn descendants(&self, id: &str) -> StoreResult<Vec<Workspace>> {
        let mut out: Vec<Workspace> = Vec::new();
        let mut frontier = vec![id.to_owned()];
        let mut seen = std::collections::HashSet::from([id.to_owned()]);
        while let Some(next) = frontier.pop() {
            for child in self.children(&next).await? {
                if seen.insert(child.id.clone()) {
                    frontier.push(child.id.clone());
                    out.push(child);
                }
            }
        }
        Ok(out)
    }

    /// Sets columns of one workspace (names from code only) and bumps `updated_at`.
    pub async fn update_workspace(
        &self,
        id: &str,
        sets: &[(&'static str, Val)],
    ) -> StoreResult<bool> {
        if sets.is_empty() {
            return Ok(self.workspace(id).await?.is_some());
        }
        let assignments: Vec<String> = sets
            .iter()
            .enumerate()
            .map(|(i, (col, _))| format!("{col} = ${}", i + 1))
            .collect();
        let sql = format!(
            "UPDATE workspaces SET {}, updated_at = ${} WHERE id = ${}",
            assignments.join(", "),
            sets.len() + 1,
            sets.len() + 2
        );
        let mut query = sqlx::query(&sql);
        for (_, v) in sets {
            query = match v {
                Val::Text(t) => query.bind(t.clone()),
                Val::Int(i) => query.bind(*i),
                Val::Float(f) => query.bind(*f),
            };
        }
        let done = query
            .bind(now_ms())
            .bind(id)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a workspace to `to` if it is in one of `from`; returns whether it moved.
    pub async fn transition(&self, id: &str, from: &[WsStatus], to: WsStatus) -> StoreResult<bool> {
        let Some(w) = self.workspace(id).await? else {
            return Ok(false);
        };
        if !from.contains(&w.status) {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE workspaces SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(now_ms())
        .bind(id)
        .bind(w.status.as_str())
        .execute(&self.db.pool)
        .await
        .map_err(q)?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a heartbeat's figures (not the status: the caller decides transitions).
    pub async fn record_heartbeat(&self, id: &str, hb: &HeartbeatFigures) -> StoreResult<()> {
        let now = now_ms();
        let mut sql = String::from("UPDATE workspaces SET last_error_rate = $1, last_sample_error = $2, active_tasks = $3, uptime_seconds = $4, current_task = $5, last_heartbeat_at = $6");
        if hb.monthly_spend > 0 {
            sql.push_str(", monthly_spend = $8");
        }
        sql.push_str(" WHERE id = $7 AND status <> 'removed'");
        let mut query = sqlx::query(&sql)
            .bind(hb.error_rate)
            .bind(&hb.sample_error)
            .bind(hb.active_tasks)
            .bind(hb.uptime_seconds)
            .bind(&hb.current_task)
            .bind(now)
            .bind(id);
        if hb.monthly_spend > 0 {
            query = query.bind(hb.monthly_spend);
        }
        query.execute(&self.db.pool).await.map_err(q)?;
        Ok(())
    }

    /// Deletes workspaces and every row that belongs to them.
    pub async fn purge_workspaces(&self, ids: &[String]) -> StoreResult<()> {
        let mut tx = self.db.pool.begin().await.map_err(q)?;
        for id in ids {
            for (table, col) in [
                ("activity_logs", "workspace_id"),
                ("workspace_secrets", "workspace_id"),
                ("workspace_config", "workspace_id"),
                ("workspace_tokens", "workspace_id"),
                ("channels", "workspace_id"),
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE {col} = $1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(q)?;
            }
            sqlx::query("UPDATE workspaces SET parent_id = NULL WHERE parent_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            sqlx::query("DELETE FROM workspaces WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
        }
        tx.commit().await.map_err(q)?;
        Ok(())
    }

    // ---- workspace config -------------------------------------------------------------------

    pub async fn config(&self, id: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT data FROM workspace_config WHERE workspace_id = $1")
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(q)?;
        Ok(row.map(|r| r.0))
    }

    pub async fn put_config(&self, id: &str, data: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO workspace_config (workspace_id, data, updated_at) VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO UPDATE SET data = $2, updated_at = $3")
            .bind(id)
            .bind(data)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(())
    }

    // ---- secrets ----------------------------------------------------------------------------

    /// Secrets of a workspace (`Some(id)`) or the global ones (`None`), sorted by key.
    pub async fn secrets(&self, workspace: Option<&str>) -> StoreResult<Vec<StoredSecret>> {
        let rows = match workspace {
            Some(id) => sqlx::query("SELECT key, value, encryption_version, created_at, updated_at FROM workspace_secrets WHERE workspace_id = $1 ORDER BY key")
                .bind(id)
                .fetch_all(&self.db.pool)
                .await,
            None => sqlx::query("SELECT key, value, encryption_version, created_at, updated_at FROM global_secrets ORDER BY key")
                .fetch_all(&self.db.pool)
                .await,
        }
        .map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(StoredSecret {
                    key: r.try_get("key").map_err(q)?,
                    value: r.try_get("value").map_err(q)?,
                    encryption_version: r.try_get("encryption_version").map_err(q)?,
                    created_at: r.try_get("created_at").map_err(q)?,
                    updated_at: r.try_get("updated_at").map_err(q)?,
                })
            })
            .collect()
    }

    pub async fn put_secret(
        &self,
        workspace: Option<&str>,
        key: &str,
        value: &str,
        version: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        match workspace {
            Some(id) => sqlx::query("INSERT INTO workspace_secrets (workspace_id, key, value, encryption_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (workspace_id, key) DO UPDATE SET value = $3, encryption_version = $4, updated_at = $5")
                .bind(id)
                .bind(key)
                .bind(value)
                .bind(version)
                .bind(now)
                .execute(&self.db.pool)
                .await,
            None => sqlx::query("INSERT INTO global_secrets (key, value, encryption_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (key) DO UPDATE SET value = $2, encryption_version = $3, updated_at = $4")
                .bind(key)
                .bind(value)
                .bind(version)
                .bind(now)
                .execute(&self.db.pool)
                .await,
        }
        .map_err(q)?;
        Ok(())
    }

    pub async fn delete_secret(&self, workspace: Option<&str>, key: &str) -> StoreResult<bool> {
        let done = match workspace {
            Some(id) => {
                sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = $1 AND key = $2")
                    .bind(id)
                    .bind(key)
                    .execute(&self.db.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM global_secrets WHERE key = $1")
                    .bind(key)
                    .execute(&self.db.pool)
                    .await
            }
        }
        .map_err(q)?;
        Ok(done.rows_affected() > 0)
    }

    // ---- tokens -----------------------------------------------------------------------------

    pub async fn insert_workspace_token(
        &self,
        workspace_id: &str,
        hash: &str,
        prefix: &str,
    ) -> StoreResult<String> {
        let id = new_id();
        sqlx::query("INSERT INTO workspace_tokens (id, workspace_id, token_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(workspace_id)
            .bind(hash)
            .bind(prefix)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(id)
    }

    pub async fn live_workspace_tokens(
        &self,
        workspace_id: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<TokenRow>> {
        let rows = sqlx::query("SELECT id, prefix, created_at, last_used_at FROM workspace_tokens WHERE workspace_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id LIMIT $2 OFFSET $3")
            .bind(workspace_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.db.pool)
            .await
            .map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    id: r.try_get("id").map_err(q)?,
                    prefix: r.try_get("prefix").map_err(q)?,
                    created_at: r.try_get("created_at").map_err(q)?,
                    last_used_at: r.try_get("last_used_at").map_err(q)?,
                    name: None,
                    org_id: None,
                    created_by: None,
                })
            })
            .collect()
    }

    pub async fn count_live_tokens(&self, workspace_id: &str) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM workspace_tokens WHERE workspace_id = $1 AND revoked_at IS NULL",
        )
        .bind(workspace_id)
        .fetch_one(&self.db.pool)
        .await
        .map_err(q)?;
        Ok(n)
    }

    /// The workspace a live token belongs to (and marks it used).
    pub async fn workspace_for_token(&self, hash: &str) -> StoreResult<Option<String>> {
        let row: Option<(String, String)> = sqlx::query_as("SELECT t.id, t.workspace_id FROM workspace_tokens t JOIN workspaces w ON w.id = t.workspace_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND w.status <> 'removed'")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(q)?;
        if let Some((token_id, _)) = &row {
            sqlx::query("UPDATE workspace_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(token_id)
                .execute(&self.db.pool)
                .await
                .map_err(q)?;
        }
        Ok(row.map(|r| r.1))
    }

    pub async fn revoke_workspace_token(
        &self,
        workspace_id: &str,
        token_id: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE workspace_tokens SET revoked_at = $1 WHERE id = $2 AND workspace_id = $3 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(token_id)
            .bind(workspace_id)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn revoke_all_workspace_tokens(&self, workspace_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE workspace_tokens SET revoked_at = $1 WHERE workspace_id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(workspace_id)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(())
    }

    pub async fn insert_org_token(
        &self,
        hash: &str,
        prefix: &str,
        name: Option<&str>,
        created_by: &str,
    ) -> StoreResult<String> {
        let id = new_id();
        sqlx::query("INSERT INTO org_tokens (id, token_hash, prefix, name, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(hash)
            .bind(prefix)
            .bind(name.map(str::to_owned))
            .bind(created_by)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(id)
    }

    pub async fn live_org_tokens(&self) -> StoreResult<Vec<TokenRow>> {
        let rows = sqlx::query("SELECT id, prefix, name, org_id, created_by, created_at, last_used_at FROM org_tokens WHERE revoked_at IS NULL ORDER BY created_at DESC, id LIMIT 500")
            .fetch_all(&self.db.pool)
            .await
            .map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    id: r.try_get("id").map_err(q)?,
                    prefix: r.try_get("prefix").map_err(q)?,
                    name: r.try_get("name").map_err(q)?,
                    org_id: r.try_get("org_id").map_err(q)?,
                    created_by: r.try_get("created_by").map_err(q)?,
                    created_at: r.try_get("created_at").map_err(q)?,
                    last_used_at: r.try_get("last_used_at").map_err(q)?,
                })
            })
            .collect()
    }

    /// Whether `hash` is a live org token (and marks it used).
    pub async fn org_token_live(&self, hash: &str) -> StoreResult<Option<String>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id, prefix FROM org_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(q)?;
        if let Some((id, _)) = &row {
            sqlx::query("UPDATE org_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(&self.db.pool)
                .await
                .map_err(q)?;
        }
        Ok(row.map(|r| r.1))
    }

    pub async fn revoke_org_token(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE org_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.db.pool)
        .await
        .map_err(q)?;
        Ok(done.rows_affected() == 1)
    }

    // ---- events and activity ----------------------------------------------------------------

    pub async fn insert_event(
        &self,
        event_type: &str,
        workspace_id: Option<&str>,
        payload: &str,
        at: i64,
    ) -> StoreResult<String> {
        let id = new_id();
        sqlx::query("INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(event_type)
            .bind(workspace_id.map(str::to_owned))
            .bind(payload)
            .bind(at)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(id)
    }

    /// The newest 100 recorded events, of one workspace or all.
    pub async fn events(&self, workspace_id: Option<&str>) -> StoreResult<Vec<EventRow>> {
        let rows = match workspace_id {
            Some(id) => sqlx::query("SELECT id, event_type, workspace_id, payload, created_at FROM structure_events WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100")
                .bind(id)
                .fetch_all(&self.db.pool)
                .await,
            None => sqlx::query("SELECT id, event_type, workspace_id, payload, created_at FROM structure_events ORDER BY created_at DESC, id DESC LIMIT 100")
                .fetch_all(&self.db.pool)
                .await,
        }
        .map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: r.try_get("id").map_err(q)?,
                    event_type: r.try_get("event_type").map_err(q)?,
                    workspace_id: r.try_get("workspace_id").map_err(q)?,
                    payload: r.try_get("payload").map_err(q)?,
                    created_at: r.try_get("created_at").map_err(q)?,
                })
            })
            .collect()
    }

    pub async fn insert_activity(&self, a: &Activity) -> StoreResult<()> {
        sqlx::query("INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, target_id, method, summary, duration_ms, status, error_detail, request_body, response_body, tool_trace, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)")
            .bind(&a.id)
            .bind(&a.workspace_id)
            .bind(&a.activity_type)
            .bind(a.source_id.clone())
            .bind(a.target_id.clone())
            .bind(a.method.clone())
            .bind(a.summary.clone())
            .bind(a.duration_ms)
            .bind(&a.status)
            .bind(a.error_detail.clone())
            .bind(a.request_body.clone())
            .bind(a.response_body.clone())
            .bind(a.tool_trace.clone())
            .bind(a.created_at)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(())
    }

    pub async fn activities(
        &self,
        workspace_id: &str,
        kind: Option<&str>,
        source: Option<bool>,
        limit: i64,
    ) -> StoreResult<Vec<Activity>> {
        let mut sql = String::from("SELECT id, workspace_id, activity_type, source_id, target_id, method, summary, duration_ms, status, error_detail, request_body, response_body, tool_trace, created_at FROM activity_logs WHERE workspace_id = $1");
        if kind.is_some() {
            sql.push_str(" AND activity_type = $3");
        }
        match source {
            Some(true) => sql.push_str(" AND source_id IS NOT NULL"),
            Some(false) => sql.push_str(" AND source_id IS NULL"),
            None => {}
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT $2");
        let mut query = sqlx::query(&sql).bind(workspace_id).bind(limit);
        if let Some(k) = kind {
            query = query.bind(k.to_owned());
        }
        let rows = query.fetch_all(&self.db.pool).await.map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(Activity {
                    id: r.try_get("id").map_err(q)?,
                    workspace_id: r.try_get("workspace_id").map_err(q)?,
                    activity_type: r.try_get("activity_type").map_err(q)?,
                    source_id: r.try_get("source_id").map_err(q)?,
                    target_id: r.try_get("target_id").map_err(q)?,
                    method: r.try_get("method").map_err(q)?,
                    summary: r.try_get("summary").map_err(q)?,
                    duration_ms: r.try_get("duration_ms").map_err(q)?,
                    status: r.try_get("status").map_err(q)?,
                    error_detail: r.try_get("error_detail").map_err(q)?,
                    request_body: r.try_get("request_body").map_err(q)?,
                    response_body: r.try_get("response_body").map_err(q)?,
                    tool_trace: r.try_get("tool_trace").map_err(q)?,
                    created_at: r.try_get("created_at").map_err(q)?,
                })
            })
            .collect()
    }

    // ---- channels ---------------------------------------------------------------------------

    pub async fn insert_channel(&self, c: &Channel) -> StoreResult<()> {
        sqlx::query("INSERT INTO channels (id, workspace_id, channel_type, config, enabled, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&c.id)
            .bind(&c.workspace_id)
            .bind(&c.channel_type)
            .bind(&c.config)
            .bind(c.enabled as i64)
            .bind(c.created_at)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(())
    }

    /// Channels of one workspace, or (with `None`) every enabled channel of `channel_type`.
    pub async fn channels(
        &self,
        workspace_id: Option<&str>,
        channel_type: &str,
    ) -> StoreResult<Vec<Channel>> {
        let rows = match workspace_id {
            Some(id) => sqlx::query("SELECT id, workspace_id, channel_type, config, enabled, created_at FROM channels WHERE workspace_id = $1 ORDER BY created_at, id")
                .bind(id)
                .fetch_all(&self.db.pool)
                .await,
            None => sqlx::query("SELECT c.id, c.workspace_id, c.channel_type, c.config, c.enabled, c.created_at FROM channels c JOIN workspaces w ON w.id = c.workspace_id WHERE c.channel_type = $1 AND c.enabled = 1 AND w.status <> 'removed' ORDER BY c.created_at, c.id")
                .bind(channel_type)
                .fetch_all(&self.db.pool)
                .await,
        }
        .map_err(q)?;
        rows.iter()
            .map(|r| {
                Ok(Channel {
                    id: r.try_get("id").map_err(q)?,
                    workspace_id: r.try_get("workspace_id").map_err(q)?,
                    channel_type: r.try_get("channel_type").map_err(q)?,
                    config: r.try_get("config").map_err(q)?,
                    enabled: r.try_get::<i64, _>("enabled").map_err(q)? != 0,
                    created_at: r.try_get("created_at").map_err(q)?,
                })
            })
            .collect()
    }

    pub async fn delete_channel(&self, workspace_id: &str, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM channels WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(workspace_id)
            .execute(&self.db.pool)
            .await
            .map_err(q)?;
        Ok(done.rows_affected() == 1)
    }
}

fn workspace_from_row(r: &AnyRow) -> StoreResult<Workspace> {
    let status: String = r.try_get("status").map_err(q)?;
    Ok(Workspace {
        id: r.try_get("id").map_err(q)?,
        name: r.try_get("name").map_err(q)?,
        role: r.try_get("role").map_err(q)?,
        tier: r.try_get("tier").map_err(q)?,
        status: status.parse().map_err(|_| {
            DbError::Query(sqlx::Error::Decode(
                format!("unknown status {status}").into(),
            ))
        })?,
        runtime: r.try_get("runtime").map_err(q)?,
        agent_card: r.try_get("agent_card").map_err(q)?,
        url: r.try_get("url").map_err(q)?,
        parent_id: r.try_get("parent_id").map_err(q)?,
        active_tasks: r.try_get("active_tasks").map_err(q)?,
        max_concurrent_tasks: r.try_get("max_concurrent_tasks").map_err(q)?,
        last_error_rate: r.try_get("last_error_rate").map_err(q)?,
        last_sample_error: r.try_get("last_sample_error").map_err(q)?,
        uptime_seconds: r.try_get("uptime_seconds").map_err(q)?,
        current_task: r.try_get("current_task").map_err(q)?,
        workspace_dir: r.try_get("workspace_dir").map_err(q)?,
        monthly_spend: r.try_get("monthly_spend").map_err(q)?,
        budget_limit: r.try_get("budget_limit").map_err(q)?,
        x: r.try_get("x").map_err(q)?,
        y: r.try_get("y").map_err(q)?,
        collapsed: r.try_get::<i64, _>("collapsed").map_err(q)? != 0,
        instance_id: r.try_get("instance_id").map_err(q)?,
        source_bundle_id: r.try_get("source_bundle_id").map_err(q)?,
        last_heartbeat_at: r.try_get("last_heartbeat_at").map_err(q)?,
        last_outbound_at: r.try_get("last_outbound_at").map_err(q)?,
        created_at: r.try_get("created_at").map_err(q)?,
        updated_at: r.try_get("updated_at").map_err(q)?,
    })
}
