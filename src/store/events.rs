//! The `events` table: what the relay refused or noticed (unauthorized senders, bounces,
//! revocations), and the leak signal derived from it. Events never hold a real address.

use serde::Serialize;
use sqlx::Row;

use super::{Db, StoreError, now};
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: Timestamp,
    /// One of the event kinds (`unauthorized_sender`, `bounce`, …).
    pub kind: String,
    pub store: Option<String>,
    pub thread: Option<String>,
    /// The alias local part concerned, if any.
    pub alias: Option<String>,
    /// What else is known, never a shopper's address (e.g. the stage and reason of a refusal).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Which events a listing shows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter<'a> {
    pub kind: Option<EventKind>,
    pub store: Option<&'a str>,
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

/// Events, newest first, filtered as asked: at most `limit` of those older than the event
/// `before` (the cursor, an event id). Ids only grow, so a page never shifts.
pub async fn list(
    db: &Db,
    filter: &EventFilter<'_>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, kind, store_id, thread_id, alias, detail FROM events \
         WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR store_id = $2) AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(filter.kind.map(EventKind::as_str))
    .bind(filter.store)
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Event {
                id: r.try_get("id")?,
                at: Timestamp(r.try_get("at")?),
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Leaks {
    pub store: String,
    /// Distinct shopper aliases of this store that received mail from outsiders.
    pub leaked_aliases: i64,
    /// Attempts in all.
    pub attempts: i64,
    /// The first and latest attempt.
    pub first_at: Option<Timestamp>,
    pub last_at: Option<Timestamp>,
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
        first_at: row.try_get::<Option<i64>, _>("first_at")?.map(Timestamp),
        last_at: row.try_get::<Option<i64>, _>("last_at")?.map(Timestamp),
    })
}
