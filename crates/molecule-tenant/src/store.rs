//! The tenant's own database (SQLite file or PostgreSQL), migrated at start.

use molecule_shared::db::{Db, DbError, Migration};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/0001_init.sql"),
}];

#[derive(Clone, Debug)]
pub struct TenantStore {
    db: Db,
}

impl TenantStore {
    pub async fn open(url: &str) -> Result<TenantStore, DbError> {
        // A tenant serves one org: two connections are plenty and keep its memory small.
        let db = Db::connect(url, 2).await?;
        db.migrate(MIGRATIONS).await?;
        Ok(TenantStore { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), DbError> {
        sqlx::query("INSERT INTO tenant_meta (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = $3")
            .bind(key)
            .bind(value)
            .bind(molecule_shared::now_ms())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, DbError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM tenant_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.map(|r| r.0))
    }
}
