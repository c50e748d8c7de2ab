//! The `events` table: what the relay refused or noticed (unauthorized senders, bounces,
//! revocations), and the leak signal derived from it. Events never hold a real address.

use serde::Serialize;
use sqlx::Row;

use super::{Db, StoreError, now};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Mail to an alias from someone the thread did not introduce.
    UnauthorizedSender,
    /// The next hop refused a message for good, or it aged out of the queue.
    DeliveryFailed,
    /// A bounce (DSN) came back to a VERP address.
    Bounce,
    ThreadRevoked,
    ShopperErased,
    StoreDeleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnauthorizedSender => "unauthorized_sender",
            Self::DeliveryFailed => "delivery_failed",
            Self::Bounce => "bounce",
            Self::ThreadRevoked => "thread_revoked",
            Self::ShopperErased => "shopper_erased",
            Self::StoreDeleted => "store_deleted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::UnauthorizedSender,
            Self::DeliveryFailed,
            Self::Bounce,
            Self::ThreadRevoked,
            Self::ShopperErased,
            Self::StoreDeleted,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub store_id: Option<&'a str>,
    pub thread_id: Option<&'a str>,
    /// The alias local part concerned, if any.
    pub alias: Option<&'a str>,
    pub detail: serde_json::Value,
}

/// A recorded event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub store: Option<String>,
    pub thread: Option<String>,
    pub alias: Option<String>,
    pub detail: serde_json::Value,
}

pub async fn record(db: &Db, e: &NewEvent<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (at, kind, store_id, thread_id, alias, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now())
    .bind(e.kind.as_str())
    .bind(e.store_id)
    .bind(e.thread_id)
    .bind(e.alias)
    .bind(e.detail.to_string())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Events, newest first, filtered by kind and store when given.
pub async fn list(
    db: &Db,
    kind: Option<EventKind>,
    store: Option<&str>,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, kind, store_id, thread_id, alias, detail FROM events \
         WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR store_id = $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(kind.map(EventKind::as_str))
    .bind(store)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Event {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                store: r.try_get("store_id")?,
                thread: r.try_get("thread_id")?,
                alias: r.try_get("alias")?,
                detail: super::json_column(r, "detail")?,
            })
        })
        .collect()
}

/// The leak signal of one store.
#[derive(Debug, Clone, Serialize)]
pub struct Leaks {
    pub store: String,
    /// Distinct shopper aliases of this store that received mail from outsiders.
    pub leaked_aliases: i64,
    /// Attempts in all.
    pub attempts: i64,
    /// Unix seconds of the first and latest attempt.
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
}

/// Only attempts on *shopper* aliases count: each was handed to exactly this store.
pub async fn leaks(db: &Db, store: &str) -> Result<Leaks, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(DISTINCT e.alias) AS aliases, COUNT(*) AS attempts, \
         MIN(e.at) AS first_at, MAX(e.at) AS last_at \
         FROM events e JOIN threads t ON t.shopper_alias = e.alias \
         WHERE e.kind = 'unauthorized_sender' AND t.store_id = $1",
    )
    .bind(store)
    .fetch_one(&db.pool)
    .await?;
    Ok(Leaks {
        store: store.to_owned(),
        leaked_aliases: row.try_get("aliases")?,
        attempts: row.try_get("attempts")?,
        first_at: row.try_get("first_at")?,
        last_at: row.try_get("last_at")?,
    })
}
