//! The `audit_log` table: every change to a store or thread, with who made it and when.
//! Written by the store functions themselves, so no caller can forget it.

use serde::Serialize;
use sqlx::Row;

use super::{Db, StoreError, now};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The operator, through the HTTP API (bearer token).
    Api,
    /// The operator, at a shell (`maskrelay store|thread …`).
    Cli,
    /// The shopper, on their revoke page.
    Shopper,
    /// The relay itself: the retention sweep.
    Retention,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "operator:api",
            Self::Cli => "operator:cli",
            Self::Shopper => "shopper:revoke_page",
            Self::Retention => "relay:retention",
        }
    }
}

/// One audit record as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// Records a change. `target` is a store or thread id, never an address.
pub async fn record(
    db: &Db,
    actor: Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(now())
        .bind(actor.as_str())
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// The newest entries first, optionally for one target.
pub async fn list(db: &Db, target: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, target, detail FROM audit_log \
         WHERE ($1 IS NULL OR target = $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(target)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: crate::time::rfc3339(r.try_get("at")?),
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                detail: super::json_column(r, "detail")?,
            })
        })
        .collect()
}
