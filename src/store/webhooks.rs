//! The `webhooks` and `webhook_outbox` tables: where the operator wants events POSTed,
//! and each event waiting to be POSTed to one of them. Outbox rows are written in the
//! transaction that records the event, so an event is never lost between the two, and
//! leased by one sender at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so relays
//! sharing a database never both send one. Bodies hold ids, kinds and outsider domains:
//! never a shopper's address or name.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Backend, Db, Field, StoreError, now};

/// The event types a webhook can subscribe to.
pub const EVENT_TYPES: [&str; 10] = [
    "leak",
    "incident",
    "unauthorized_sender",
    "bounce",
    "delivery_failed",
    "thread_revoked",
    "thread_erased",
    "shopper_erased",
    "store_deleted",
    "incident_notified",
];

/// A webhook as the API shows it (never its secret, which is shown once at creation).
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    /// Events waiting to be sent to it.
    pub pending: i64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
}

/// A new webhook and its signing secret, shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Webhook, StoreError> {
    let events: String = r.try_get("events")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        events: serde_json::from_str(&events).map_err(|_| StoreError::Corrupt("webhook events".into()))?,
        created_at: crate::time::rfc3339(r.try_get("created_at")?),
        pending: r.try_get("pending")?,
        last_success_at: r.try_get::<Option<i64>, _>("last_success_at")?.map(crate::time::rfc3339),
        last_failure_at: r.try_get::<Option<i64>, _>("last_failure_at")?.map(crate::time::rfc3339),
        last_error: r.try_get("last_error")?,
    })
}

const SELECT: &str = "SELECT w.id, w.url, w.events, w.created_at, w.last_success_at, w.last_failure_at, \
     w.last_error, (SELECT COUNT(*) FROM webhook_outbox o WHERE o.webhook_id = w.id) AS pending \
     FROM webhooks w WHERE w.deleted_at IS NULL";

/// Registers a webhook; `url` and `events` are checked by the caller.
pub async fn create(
    db: &Db,
    url: &str,
    events: &[String],
    by: super::audit::Actor,
) -> Result<Created, StoreError> {
    let id = format!("whk_{}", crate::address::random_token(16));
    // 160 bits from the CSPRNG, in the alias alphabet so it survives any copy and paste.
    let secret = format!("whsec_{}", crate::address::random_token(32));
    sqlx::query("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(url)
        .bind(serde_json::Value::from(events.to_vec()).to_string())
        .bind(db.vault.seal_text(Field::WebhookSecret, &id, &secret))
        .bind(now())
        .execute(&db.pool)
        .await?;
    super::audit::record(db, by, "webhook.create", &id, serde_json::json!({"url": url, "events": events}))
        .await?;
    Ok(Created { webhook: get(db, &id).await?, secret })
}

/// Live webhooks, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Webhook>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY w.created_at, w.id")))
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(db: &Db, id: &str) -> Result<Webhook, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} AND w.id = $1")))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

/// Deletes a webhook and what still waited for it.
pub async fn delete(db: &Db, id: &str, by: super::audit::Actor) -> Result<(), StoreError> {
    let mut tx = db.pool.begin().await?;
    let n = sqlx::query("UPDATE webhooks SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM webhook_outbox WHERE webhook_id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    super::audit::record(db, by, "webhook.delete", id, serde_json::json!({})).await
}

/// One event on its way to the webhooks that want its type.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: &'static str,
    pub data: serde_json::Value,
}

/// Writes one outbox row per (notice, webhook subscribed to its type), in the caller's
/// transaction.
pub async fn enqueue(conn: &mut AnyConnection, notices: &[Notice]) -> Result<(), StoreError> {
    let t = now();
    for notice in notices {
        let uid = format!("evt_{}", crate::address::random_token(20));
        let body = serde_json::json!({
            "id": uid,
            "type": notice.kind,
            "created_at": crate::time::rfc3339(t),
            "data": notice.data,
        })
        .to_string();
        // Types are [a-z_] words, so the quoted type matches one element of the JSON list.
        sqlx::query(
            "INSERT INTO webhook_outbox (id, webhook_id, body, created_at, next_attempt_at) \
             SELECT $1 || '.' || w.id, w.id, $2, $3, $3 FROM webhooks w \
             WHERE w.deleted_at IS NULL AND w.events LIKE $4",
        )
        .bind(&uid)
        .bind(&body)
        .bind(t)
        .bind(format!("%\"{}\"%", notice.kind))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// An outbox row a sender holds under lease, with where it goes.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub webhook_id: String,
    pub url: String,
    pub secret: String,
    pub body: String,
    pub attempts: i64,
    pub created_at: i64,
}

const LEASE_SQLITE: &str = "UPDATE webhook_outbox SET locked_until = $1, locked_by = $2 WHERE id IN \
     (SELECT id FROM webhook_outbox WHERE next_attempt_at <= $3 AND locked_until <= $3 \
      ORDER BY next_attempt_at LIMIT $4) RETURNING id, webhook_id, body, attempts, created_at";

const LEASE_POSTGRES: &str = "UPDATE webhook_outbox SET locked_until = $1, locked_by = $2 WHERE id IN \
     (SELECT id FROM webhook_outbox WHERE next_attempt_at <= $3 AND locked_until <= $3 \
      ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, webhook_id, body, attempts, created_at";

/// Takes up to `limit` due rows for `lease_secs`. Only an expired lease is taken over, so
/// two live senders never hold the same row.
pub async fn lease(db: &Db, holder: &str, limit: i64, lease_secs: i64) -> Result<Vec<Leased>, StoreError> {
    let t = now();
    let sql = match db.backend {
        Backend::Sqlite => LEASE_SQLITE,
        Backend::Postgres => LEASE_POSTGRES,
    };
    let rows =
        sqlx::query(sql).bind(t + lease_secs).bind(holder).bind(t).bind(limit).fetch_all(&db.pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let webhook_id: String = r.try_get("webhook_id")?;
        let id: String = r.try_get("id")?;
        let Some(hook) = sqlx::query("SELECT url, secret FROM webhooks WHERE id = $1 AND deleted_at IS NULL")
            .bind(&webhook_id)
            .fetch_optional(&db.pool)
            .await?
        else {
            // Deleted meanwhile: nothing to send it to.
            sqlx::query("DELETE FROM webhook_outbox WHERE id = $1").bind(&id).execute(&db.pool).await?;
            continue;
        };
        let sealed: String = hook.try_get("secret")?;
        out.push(Leased {
            url: hook.try_get("url")?,
            secret: db.vault.open_text(Field::WebhookSecret, &webhook_id, &sealed)?,
            body: r.try_get("body")?,
            attempts: r.try_get("attempts")?,
            created_at: r.try_get("created_at")?,
            webhook_id,
            id,
        });
    }
    Ok(out)
}

/// Delivered: the row goes. Written only while `holder` still holds the lease, so a
/// sender that outlived its lease changes nothing; false then.
pub async fn delivered(db: &Db, row: &Leased, holder: &str) -> Result<bool, StoreError> {
    let mut tx = db.pool.begin().await?;
    let n = sqlx::query("DELETE FROM webhook_outbox WHERE id = $1 AND locked_by = $2")
        .bind(&row.id)
        .bind(holder)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE webhooks SET last_success_at = $2 WHERE id = $1")
        .bind(&row.webhook_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Not delivered: try again at `next_attempt_at`, or, when that is None, give it up.
pub async fn failed(
    db: &Db,
    row: &Leased,
    holder: &str,
    error: &str,
    next_attempt_at: Option<i64>,
) -> Result<(), StoreError> {
    let mut tx = db.pool.begin().await?;
    match next_attempt_at {
        Some(at) => {
            sqlx::query(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = $3, locked_until = 0, \
                 locked_by = NULL, last_error = $4 WHERE id = $1 AND locked_by = $2",
            )
            .bind(&row.id)
            .bind(holder)
            .bind(at)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM webhook_outbox WHERE id = $1 AND locked_by = $2")
                .bind(&row.id)
                .bind(holder)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query("UPDATE webhooks SET last_failure_at = $2, last_error = $3 WHERE id = $1")
        .bind(&row.webhook_id)
        .bind(now())
        .bind(error)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives back the leases `holder` has (a relay that stops), so its rows go out at once
/// from the next sender instead of after the lease time.
pub async fn release(db: &Db, holder: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_outbox SET locked_until = 0, locked_by = NULL WHERE locked_by = $1")
        .bind(holder)
        .execute(&db.pool)
        .await?;
    Ok(())
}
