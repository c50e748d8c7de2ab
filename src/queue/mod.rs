//! The durable outbound queue: rewritten messages are committed here before the `250`,
//! leased by delivery workers (several processes may share one PostgreSQL database), and
//! deleted once delivered or given up, so message bodies do not outlive their delivery.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::address::{Mailbox, Side};
use crate::store::{Backend, Db, Field, StoreError, Vault, now};

/// One message for one recipient, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub thread_id: String,
    /// Which alias the mail came in on, so which way it goes.
    pub direction: Side,
    pub rcpt_to: Mailbox,
    pub message: Vec<u8>,
    /// Sent with the null reverse-path `<>` (RFC 5321 4.5.5): the relay's own delivery
    /// notices, which must never cause a bounce themselves.
    pub null_sender: bool,
}

/// A Message-ID mapping to remember with the messages that introduce it.
#[derive(Debug, Clone)]
pub struct IdMapping {
    pub thread_id: String,
    pub relay_id: String,
    pub original: String,
}

/// A queued message a worker holds under lease.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub thread_id: String,
    /// Where it is going.
    pub direction: Side,
    pub mail_from: String,
    pub rcpt_to: String,
    pub message: Vec<u8>,
    pub attempts: i64,
    pub created_at: i64,
}

/// The VERP bounce address of a queued message: bounces name the message, never a person.
pub fn bounce_address(queue_id: &str, relay_domain: &str) -> String {
    format!("bounce+{queue_id}@{relay_domain}")
}

fn direction_str(side: Side) -> &'static str {
    match side {
        Side::Shopper => "to_shopper",
        Side::Store => "to_store",
    }
}

fn parse_direction(s: &str) -> Result<Side, StoreError> {
    match s {
        "to_shopper" => Ok(Side::Shopper),
        "to_store" => Ok(Side::Store),
        other => Err(StoreError::Corrupt(format!("queue direction {other:?}"))),
    }
}

/// Commits all messages of one SMTP transaction and their id mappings in one database
/// transaction. Only when this returns Ok may the session answer 250.
pub async fn enqueue(
    db: &Db,
    relay_domain: &str,
    items: &[Outgoing],
    mappings: &[IdMapping],
) -> Result<Vec<String>, StoreError> {
    let t = now();
    let mut ids = Vec::with_capacity(items.len());
    let mut tx = db.pool.begin().await?;
    for item in items {
        let id = crate::address::random_token(24);
        sqlx::query(
            "INSERT INTO queue (id, thread_id, direction, mail_from, rcpt_to, message, attempts, \
             created_at, next_attempt_at, locked_until) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7, 0)",
        )
        .bind(&id)
        .bind(&item.thread_id)
        .bind(direction_str(item.direction))
        .bind(if item.null_sender { String::new() } else { bounce_address(&id, relay_domain) })
        .bind(db.vault.seal_text(Field::QueueRecipient, &id, &item.rcpt_to.expose()))
        .bind(db.vault.seal(Field::QueueMessage, &id, &item.message))
        .bind(t)
        .execute(&mut *tx)
        .await?;
        ids.push(id);
    }
    for m in mappings {
        let relay_id = m.relay_id.to_ascii_lowercase();
        sqlx::query(
            "INSERT INTO message_ids (relay_id, thread_id, original, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (relay_id) DO NOTHING",
        )
        .bind(&relay_id)
        .bind(&m.thread_id)
        .bind(db.vault.seal_text(Field::OriginalMessageId, &relay_id, &m.original))
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(ids)
}

const LEASE_SQLITE: &str = "UPDATE queue SET locked_until = $1, locked_by = $2 WHERE id IN \
     (SELECT id FROM queue WHERE next_attempt_at <= $3 AND locked_until <= $3 \
      ORDER BY next_attempt_at LIMIT $4) \
     RETURNING id, thread_id, direction, mail_from, rcpt_to, message, attempts, created_at";

// SKIP LOCKED: two relays on one database never take the same row, and neither waits.
const LEASE_POSTGRES: &str = "UPDATE queue SET locked_until = $1, locked_by = $2 WHERE id IN \
     (SELECT id FROM queue WHERE next_attempt_at <= $3 AND locked_until <= $3 \
      ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, thread_id, direction, mail_from, rcpt_to, message, attempts, created_at";

fn leased_from_row(vault: &Vault, r: &AnyRow) -> Result<Leased, StoreError> {
    let id: String = r.try_get("id")?;
    Ok(Leased {
        thread_id: r.try_get("thread_id")?,
        direction: parse_direction(&r.try_get::<String, _>("direction")?)?,
        mail_from: r.try_get("mail_from")?,
        rcpt_to: vault.open_text(Field::QueueRecipient, &id, &r.try_get::<String, _>("rcpt_to")?)?,
        message: vault.open(Field::QueueMessage, &id, &r.try_get::<Vec<u8>, _>("message")?)?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        id,
    })
}

/// Takes up to `limit` due messages for `lease` time. A worker that dies lets its lease
/// run out and another takes the messages over: nothing is lost, and since a lease is
/// only taken over after it expired, nothing is sent twice by two live workers.
pub async fn lease(db: &Db, worker: &str, limit: i64, lease: Duration) -> Result<Vec<Leased>, StoreError> {
    let t = now();
    let sql = match db.backend {
        Backend::Sqlite => LEASE_SQLITE,
        Backend::Postgres => LEASE_POSTGRES,
    };
    let rows = sqlx::query(sql)
        .bind(t + lease.as_secs() as i64)
        .bind(worker)
        .bind(t)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(|r| leased_from_row(&db.vault, r)).collect()
}

/// Done (delivered or given up): the message leaves the queue with its body and
/// recipient. What stays is its id, thread and direction, so a late bounce to its VERP
/// address can still be tied to the thread; notices (null sender) cannot be bounced to.
pub async fn complete(db: &Db, msg: &Leased) -> Result<(), StoreError> {
    let mut tx = db.pool.begin().await?;
    if !msg.mail_from.is_empty() {
        sqlx::query(
            "INSERT INTO sent_messages (queue_id, thread_id, direction, sent_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (queue_id) DO NOTHING",
        )
        .bind(&msg.id)
        .bind(&msg.thread_id)
        .bind(direction_str(msg.direction))
        .bind(now())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM queue WHERE id = $1").bind(&msg.id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// How long a sent message can still be bounced to.
const SENT_RETENTION_SECS: i64 = 30 * 86_400;

/// The thread and direction of a message the relay queued or sent under `queue_id`.
pub async fn find_sent(db: &Db, queue_id: &str) -> Result<Option<(String, Side)>, StoreError> {
    let row = sqlx::query(
        "SELECT thread_id, direction FROM queue WHERE id = $1 AND mail_from <> '' \
         UNION ALL SELECT thread_id, direction FROM sent_messages WHERE queue_id = $1 AND sent_at > $2",
    )
    .bind(queue_id)
    .bind(now() - SENT_RETENTION_SECS)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| Ok((r.try_get("thread_id")?, parse_direction(&r.try_get::<String, _>("direction")?)?)))
        .transpose()
}

/// Forgets sent-message records older than the bounce window.
pub async fn prune_sent(db: &Db) -> Result<u64, StoreError> {
    let res = sqlx::query("DELETE FROM sent_messages WHERE sent_at <= $1")
        .bind(now() - SENT_RETENTION_SECS)
        .execute(&db.pool)
        .await?;
    Ok(res.rows_affected())
}

/// A transient failure: try again at `next_attempt_at`. `error` is what the operator sees
/// in `queue list`: callers pass it with the recipient's address cut out.
pub async fn retry_later(db: &Db, id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE queue SET attempts = attempts + 1, next_attempt_at = $2, locked_until = 0, \
         locked_by = NULL, last_error = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(next_attempt_at)
    .bind(error)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// When the next attempt is due after `attempts` failures: exponential backoff from
/// `base`, capped at `max` (RFC 5321 4.5.4.1: at least 30 minutes apart is the norm for
/// the internet; the base is configurable so tests can shorten it).
pub fn backoff(attempts: i64, base: Duration, max: Duration) -> Duration {
    let factor = 2u64.saturating_pow(attempts.clamp(0, 30) as u32);
    base.saturating_mul(factor as u32).min(max)
}

/// A queued message as the operator sees it (no recipient address, no body).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueuedInfo {
    pub id: String,
    pub thread: String,
    pub direction: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub size: i64,
    pub last_error: Option<String>,
}

/// The queue as the operator sees it, oldest first.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<QueuedInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, thread_id, direction, attempts, created_at, next_attempt_at, \
         LENGTH(message) AS size, last_error FROM queue ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QueuedInfo {
                id: r.try_get("id")?,
                thread: r.try_get("thread_id")?,
                direction: r.try_get("direction")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                size: r.try_get::<i64, _>("size")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .collect()
}

/// How many messages wait, and the age in seconds of the oldest.
pub async fn depth(db: &Db) -> Result<(i64, i64), StoreError> {
    let row =
        sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM queue").fetch_one(&db.pool).await?;
    let n: i64 = row.try_get("n")?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    Ok((n, oldest.map(|o| now() - o).unwrap_or(0)))
}

/// Makes every queued message due now (the operator's "flush").
pub async fn retry_all_now(db: &Db) -> Result<u64, StoreError> {
    let res = sqlx::query("UPDATE queue SET next_attempt_at = $1 WHERE locked_until <= $1")
        .bind(now())
        .execute(&db.pool)
        .await?;
    Ok(res.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (b, m) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(backoff(0, b, m), Duration::from_secs(60));
        assert_eq!(backoff(1, b, m), Duration::from_secs(120));
        assert_eq!(backoff(10, b, m), Duration::from_secs(3600));
        assert_eq!(backoff(1000, b, m), Duration::from_secs(3600));
    }
}
