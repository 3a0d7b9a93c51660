//! The control plane's persistence: one type over SQLite or PostgreSQL, every query written once
//! in the SQL both accept. Rows are plain structs; states are enums with one string form.

mod model;

pub use model::*;

use molecule_shared::db::{is_unique_violation, Db, DbError, Migration};
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
        name: "bootstrap_tokens",
        sql: include_str!("../../migrations/0002_bootstrap_tokens.sql"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(DbError::Query(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

const ORG_COLS: &str =
    "id, slug, name, plan, owner_user_id, status, is_canary, created_at, updated_at";
const INSTANCE_COLS: &str = "org_id, provider, instance_id, address, security_group_id, status, desired_version, observed_version, config_generation, restarts, last_error, created_at, updated_at";
const WS_COLS: &str = "workspace_id, org_id, instance_id, state, address, runtime, tier, platform_url, env_sealed, restarts, created_at, updated_at";
const PURGE_COLS: &str = "id, org_id, slug, status, last_step, attempts, last_error, requested_by, created_at, updated_at";

impl Store {
    /// Connects and applies the embedded migrations.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let db = Db::connect(url, 8).await?;
        db.migrate(MIGRATIONS).await?;
        Ok(Store { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // ---- orgs -------------------------------------------------------------------------------

    /// Creates an org with its credentials and its (not yet launched) tenant instance, in one
    /// transaction: the credentials exist before anything can be launched that would use them.
    pub async fn create_org(
        &self,
        org: &Org,
        creds: &TenantCredentials,
        instance: &TenantInstance,
    ) -> StoreResult<()> {
        let mut tx = self.db.pool.begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO orgs ({ORG_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&org.id)
        .bind(&org.slug)
        .bind(&org.name)
        .bind(&org.plan)
        .bind(org.owner_user_id.clone())
        .bind(org.status.as_str())
        .bind(org.is_canary as i64)
        .bind(org.created_at)
        .bind(org.updated_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict("an org with this slug"))
            }
            other => other?,
        };
        sqlx::query("INSERT INTO tenant_credentials (org_id, admin_token_hash, admin_token_sealed, encryption_key_sealed, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&creds.org_id)
            .bind(&creds.admin_token_hash)
            .bind(&creds.admin_token_sealed)
            .bind(&creds.encryption_key_sealed)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO tenant_instances ({INSTANCE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&instance.org_id)
        .bind(&instance.provider)
        .bind(instance.instance_id.clone())
        .bind(instance.address.clone())
        .bind(instance.security_group_id.clone())
        .bind(instance.status.as_str())
        .bind(&instance.desired_version)
        .bind(instance.observed_version.clone())
        .bind(instance.config_generation)
        .bind(instance.restarts)
        .bind(instance.last_error.clone())
        .bind(instance.created_at)
        .bind(instance.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn org_by_slug(&self, slug: &str) -> StoreResult<Option<Org>> {
        sqlx::query(&format!("SELECT {ORG_COLS} FROM orgs WHERE slug = $1"))
            .bind(slug)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| org_from_row(&r))
            .transpose()
    }

    pub async fn org_by_id(&self, id: &str) -> StoreResult<Option<Org>> {
        sqlx::query(&format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| org_from_row(&r))
            .transpose()
    }

    pub async fn list_orgs(&self) -> StoreResult<Vec<Org>> {
        sqlx::query(&format!(
            "SELECT {ORG_COLS} FROM orgs ORDER BY created_at, slug"
        ))
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(org_from_row)
        .collect()
    }

    pub async fn set_org_status(&self, org_id: &str, status: OrgStatus) -> StoreResult<()> {
        sqlx::query("UPDATE orgs SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now_ms())
            .bind(org_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Moves an org from one of `from` to `to`; returns whether it was in one of `from`.
    pub async fn transition_org(
        &self,
        org_id: &str,
        from: &[OrgStatus],
        to: OrgStatus,
    ) -> StoreResult<bool> {
        let Some(org) = self.org_by_id(org_id).await? else {
            return Ok(false);
        };
        if !from.contains(&org.status) {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE orgs SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(now_ms())
        .bind(org_id)
        .bind(org.status.as_str())
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- credentials ------------------------------------------------------------------------

    pub async fn credentials(&self, org_id: &str) -> StoreResult<Option<TenantCredentials>> {
        let row = sqlx::query("SELECT org_id, admin_token_hash, admin_token_sealed, encryption_key_sealed FROM tenant_credentials WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| {
            Ok(TenantCredentials {
                org_id: r.try_get("org_id")?,
                admin_token_hash: r.try_get("admin_token_hash")?,
                admin_token_sealed: r.try_get("admin_token_sealed")?,
                encryption_key_sealed: r.try_get("encryption_key_sealed")?,
            })
        })
        .transpose()
    }

    /// The org whose tenant admin token hashes to `hash`.
    pub async fn org_by_admin_token_hash(&self, hash: &str) -> StoreResult<Option<Org>> {
        let cols = ORG_COLS
            .split(", ")
            .map(|c| format!("o.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "SELECT {cols} FROM orgs o JOIN tenant_credentials c ON c.org_id = o.id WHERE c.admin_token_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.db.pool)
        .await?
        .map(|r| org_from_row(&r))
        .transpose()
    }

    // ---- bootstrap tokens -------------------------------------------------------------------

    /// Records a bootstrap token (by its hash) for `org_id`, valid until `expires_at` (ms).
    /// Expired tokens of every org are dropped on the way.
    pub async fn insert_bootstrap_token(
        &self,
        org_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM bootstrap_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        sqlx::query("INSERT INTO bootstrap_tokens (token_hash, org_id, expires_at, used_at, created_at) VALUES ($1, $2, $3, NULL, $4)")
            .bind(token_hash)
            .bind(org_id)
            .bind(expires_at)
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Whether the bootstrap token with `token_hash` for `org_id` is unused and unexpired at
    /// `now` (ms). Only [`Store::consume_bootstrap_token`] decides; this lets the caller do its
    /// work first, so a failure does not burn the token.
    pub async fn bootstrap_token_usable(
        &self,
        org_id: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let row = sqlx::query("SELECT org_id FROM bootstrap_tokens WHERE token_hash = $1 AND org_id = $2 AND used_at IS NULL AND expires_at > $3")
            .bind(token_hash)
            .bind(org_id)
            .bind(now)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Uses the bootstrap token with `token_hash` for `org_id`: true exactly once, while it has
    /// not expired at `now` (ms). One conditional UPDATE, so two concurrent uses cannot both win.
    pub async fn consume_bootstrap_token(
        &self,
        org_id: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE bootstrap_tokens SET used_at = $1 WHERE token_hash = $2 AND org_id = $3 AND used_at IS NULL AND expires_at > $1")
            .bind(now)
            .bind(token_hash)
            .bind(org_id)
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- tenant instances -------------------------------------------------------------------

    pub async fn instance(&self, org_id: &str) -> StoreResult<Option<TenantInstance>> {
        sqlx::query(&format!(
            "SELECT {INSTANCE_COLS} FROM tenant_instances WHERE org_id = $1"
        ))
        .bind(org_id)
        .fetch_optional(&self.db.pool)
        .await?
        .map(|r| instance_from_row(&r))
        .transpose()
    }

    pub async fn save_instance(&self, i: &TenantInstance) -> StoreResult<()> {
        sqlx::query("UPDATE tenant_instances SET provider = $1, instance_id = $2, address = $3, security_group_id = $4, status = $5, desired_version = $6, observed_version = $7, config_generation = $8, restarts = $9, last_error = $10, updated_at = $11 WHERE org_id = $12")
            .bind(&i.provider)
            .bind(i.instance_id.clone())
            .bind(i.address.clone())
            .bind(i.security_group_id.clone())
            .bind(i.status.as_str())
            .bind(&i.desired_version)
            .bind(i.observed_version.clone())
            .bind(i.config_generation)
            .bind(i.restarts)
            .bind(i.last_error.clone())
            .bind(now_ms())
            .bind(&i.org_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    // ---- boot events ------------------------------------------------------------------------

    pub async fn add_boot_event(&self, e: &BootEvent) -> StoreResult<()> {
        sqlx::query("INSERT INTO boot_events (id, org_id, stage, status, detail, source, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(new_id())
            .bind(&e.org_id)
            .bind(&e.stage)
            .bind(&e.status)
            .bind(&e.detail)
            .bind(&e.source)
            .bind(e.at)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn boot_events(&self, org_id: &str) -> StoreResult<Vec<BootEvent>> {
        let rows = sqlx::query("SELECT org_id, stage, status, detail, source, at FROM boot_events WHERE org_id = $1 ORDER BY at, id")
            .bind(org_id)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BootEvent {
                    org_id: r.try_get("org_id")?,
                    stage: r.try_get("stage")?,
                    status: r.try_get("status")?,
                    detail: r.try_get("detail")?,
                    source: r.try_get("source")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    // ---- workspace instances ----------------------------------------------------------------

    /// Records a workspace instance; `Conflict` if the workspace id is already taken.
    pub async fn insert_workspace(&self, w: &WorkspaceInstance) -> StoreResult<()> {
        let res = sqlx::query(&format!(
            "INSERT INTO workspace_instances ({WS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&w.workspace_id)
        .bind(&w.org_id)
        .bind(&w.instance_id)
        .bind(w.state.as_str())
        .bind(w.address.clone())
        .bind(&w.runtime)
        .bind(w.tier)
        .bind(&w.platform_url)
        .bind(&w.env_sealed)
        .bind(w.restarts)
        .bind(w.created_at)
        .bind(w.updated_at)
        .execute(&self.db.pool)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict("a workspace instance with this id"))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub async fn workspace(&self, workspace_id: &str) -> StoreResult<Option<WorkspaceInstance>> {
        sqlx::query(&format!(
            "SELECT {WS_COLS} FROM workspace_instances WHERE workspace_id = $1"
        ))
        .bind(workspace_id)
        .fetch_optional(&self.db.pool)
        .await?
        .map(|r| workspace_from_row(&r))
        .transpose()
    }

    pub async fn workspaces_of_org(&self, org_id: &str) -> StoreResult<Vec<WorkspaceInstance>> {
        sqlx::query(&format!(
            "SELECT {WS_COLS} FROM workspace_instances WHERE org_id = $1 ORDER BY created_at"
        ))
        .bind(org_id)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(workspace_from_row)
        .collect()
    }

    pub async fn all_workspaces(&self) -> StoreResult<Vec<WorkspaceInstance>> {
        sqlx::query(&format!(
            "SELECT {WS_COLS} FROM workspace_instances ORDER BY created_at"
        ))
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(workspace_from_row)
        .collect()
    }

    pub async fn save_workspace(&self, w: &WorkspaceInstance) -> StoreResult<()> {
        sqlx::query("UPDATE workspace_instances SET instance_id = $1, state = $2, address = $3, restarts = $4, updated_at = $5 WHERE workspace_id = $6")
            .bind(&w.instance_id)
            .bind(w.state.as_str())
            .bind(w.address.clone())
            .bind(w.restarts)
            .bind(now_ms())
            .bind(&w.workspace_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_workspace(&self, workspace_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM workspace_instances WHERE workspace_id = $1")
            .bind(workspace_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    // ---- purges -----------------------------------------------------------------------------

    /// The purge of `org_id` that has not finished, if any.
    pub async fn open_purge(&self, org_id: &str) -> StoreResult<Option<Purge>> {
        sqlx::query(&format!("SELECT {PURGE_COLS} FROM purges WHERE org_id = $1 AND status <> 'done' ORDER BY created_at DESC"))
            .bind(org_id)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| purge_from_row(&r))
            .transpose()
    }

    pub async fn latest_purge_by_slug(&self, slug: &str) -> StoreResult<Option<Purge>> {
        sqlx::query(&format!(
            "SELECT {PURGE_COLS} FROM purges WHERE slug = $1 ORDER BY created_at DESC"
        ))
        .bind(slug)
        .fetch_optional(&self.db.pool)
        .await?
        .map(|r| purge_from_row(&r))
        .transpose()
    }

    pub async fn unfinished_purges(&self) -> StoreResult<Vec<Purge>> {
        sqlx::query(&format!(
            "SELECT {PURGE_COLS} FROM purges WHERE status <> 'done' ORDER BY created_at"
        ))
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(purge_from_row)
        .collect()
    }

    pub async fn insert_purge(&self, p: &Purge) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO purges ({PURGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&p.id)
        .bind(&p.org_id)
        .bind(&p.slug)
        .bind(p.status.as_str())
        .bind(&p.last_step)
        .bind(p.attempts)
        .bind(p.last_error.clone())
        .bind(&p.requested_by)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn save_purge(&self, p: &Purge) -> StoreResult<()> {
        sqlx::query("UPDATE purges SET status = $1, last_step = $2, attempts = $3, last_error = $4, updated_at = $5 WHERE id = $6")
            .bind(p.status.as_str())
            .bind(&p.last_step)
            .bind(p.attempts)
            .bind(p.last_error.clone())
            .bind(now_ms())
            .bind(&p.id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The last purge step: every row of the org goes, in one transaction, children first.
    /// The purge row and the audit log outlive the org.
    pub async fn delete_org_rows(&self, org_id: &str) -> StoreResult<()> {
        let mut tx = self.db.pool.begin().await?;
        for table in [
            "workspace_instances",
            "boot_events",
            "bootstrap_tokens",
            "tenant_instances",
            "tenant_credentials",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE org_id = $1"))
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- audit ------------------------------------------------------------------------------

    pub async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        sqlx::query("INSERT INTO audit_log (id, at, actor, action, target, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(new_id())
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .bind(&e.detail)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT at, actor, action, target, outcome, detail FROM audit_log ORDER BY at DESC, id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    // ---- leases -----------------------------------------------------------------------------

    /// Takes or renews the lease `name` for `holder` for `ttl_ms`. Only one holder at a time
    /// gets `true`, across every replica sharing the database.
    pub async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool> {
        let now = now_ms();
        sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(holder)
            .bind(now + ttl_ms)
            .execute(&self.db.pool)
            .await?;
        let taken = sqlx::query("UPDATE leases SET holder = $1, expires_at = $2 WHERE name = $3 AND (holder = $1 OR expires_at < $4)")
            .bind(holder)
            .bind(now + ttl_ms)
            .bind(name)
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Row counts of the tables that hold org state (not the audit log, which records even
    /// refused requests): what tests compare to prove a bad request changed nothing.
    pub async fn state_counts(&self) -> StoreResult<Vec<(&'static str, i64)>> {
        let mut out = Vec::new();
        for table in [
            "orgs",
            "tenant_instances",
            "tenant_credentials",
            "workspace_instances",
            "purges",
        ] {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&self.db.pool)
                .await?;
            out.push((table, n));
        }
        Ok(out)
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn parse<T: std::str::FromStr>(value: String, what: &str) -> StoreResult<T> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {value:?}")))
}

fn org_from_row(r: &AnyRow) -> StoreResult<Org> {
    Ok(Org {
        id: r.try_get("id")?,
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        plan: r.try_get("plan")?,
        owner_user_id: r.try_get("owner_user_id")?,
        status: parse(r.try_get("status")?, "org status")?,
        is_canary: r.try_get::<i64, _>("is_canary")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn instance_from_row(r: &AnyRow) -> StoreResult<TenantInstance> {
    Ok(TenantInstance {
        org_id: r.try_get("org_id")?,
        provider: r.try_get("provider")?,
        instance_id: r.try_get("instance_id")?,
        address: r.try_get("address")?,
        security_group_id: r.try_get("security_group_id")?,
        status: parse(r.try_get("status")?, "instance status")?,
        desired_version: r.try_get("desired_version")?,
        observed_version: r.try_get("observed_version")?,
        config_generation: r.try_get("config_generation")?,
        restarts: r.try_get("restarts")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn workspace_from_row(r: &AnyRow) -> StoreResult<WorkspaceInstance> {
    Ok(WorkspaceInstance {
        workspace_id: r.try_get("workspace_id")?,
        org_id: r.try_get("org_id")?,
        instance_id: r.try_get("instance_id")?,
        state: parse(r.try_get("state")?, "workspace state")?,
        address: r.try_get("address")?,
        runtime: r.try_get("runtime")?,
        tier: r.try_get("tier")?,
        platform_url: r.try_get("platform_url")?,
        env_sealed: r.try_get("env_sealed")?,
        restarts: r.try_get("restarts")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn purge_from_row(r: &AnyRow) -> StoreResult<Purge> {
    Ok(Purge {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        slug: r.try_get("slug")?,
        status: parse(r.try_get("status")?, "purge status")?,
        last_step: r.try_get("last_step")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        requested_by: r.try_get("requested_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}
