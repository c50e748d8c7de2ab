//! The `events` table: what the relay refused or noticed (unauthorized senders, bounces,
//! revocations), and the leak signal derived from it. Events never hold a real address.

use serde::Serialize;
use sqlx::Row;

use super::webhooks::{self, Notice};
use super::{Db, StoreError, incidents, now};

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
    /// The retention sweep erased a thread's shopper (address and name gone).
    ThreadErased,
    ShopperErased,
    StoreDeleted,
    /// The operator told an incident's shoppers (how many, never who).
    IncidentNotified,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnauthorizedSender => "unauthorized_sender",
            Self::DeliveryFailed => "delivery_failed",
            Self::Bounce => "bounce",
            Self::ThreadRevoked => "thread_revoked",
            Self::ThreadErased => "thread_erased",
            Self::ShopperErased => "shopper_erased",
            Self::StoreDeleted => "store_deleted",
            Self::IncidentNotified => "incident_notified",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::UnauthorizedSender,
            Self::DeliveryFailed,
            Self::Bounce,
            Self::ThreadRevoked,
            Self::ThreadErased,
            Self::ShopperErased,
            Self::StoreDeleted,
            Self::IncidentNotified,
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

/// Records an event, and in the same transaction what follows from it: an outsider
/// attempt on a shopper alias joins (or opens) an incident, and every webhook subscribed
/// to what happened gets an outbox row. Either all of it is stored or none.
pub async fn record(db: &Db, e: &NewEvent<'_>) -> Result<(), StoreError> {
    let at = now();
    let mut tx = db.pool.begin().await?;
    // The INSERT comes first: on SQLite it takes the write lock, so what the incident
    // lookup reads next cannot change under it.
    let id: i64 = sqlx::query(
        "INSERT INTO events (at, kind, store_id, thread_id, alias, detail) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(at)
    .bind(e.kind.as_str())
    .bind(e.store_id)
    .bind(e.thread_id)
    .bind(e.alias)
    .bind(e.detail.to_string())
    .fetch_one(&mut *tx)
    .await?
    .try_get("id")?;
    let mut notices = vec![Notice { kind: e.kind.as_str(), data: webhook_data(id, e) }];
    if let (EventKind::UnauthorizedSender, Some(store), Some(thread), Some(alias)) =
        (e.kind, e.store_id, e.thread_id, e.alias)
    {
        let domain = e.detail.get("sender_domain").and_then(|d| d.as_str());
        let window = incidents::WINDOW_SECS;
        if let Some(hit) =
            incidents::attach(&mut *tx, db.backend, store, thread, alias, domain, at, window).await?
        {
            let data = serde_json::json!({
                "incident": hit.incident, "store": store, "thread": thread, "sending_domain": domain,
            });
            if hit.opened {
                notices.push(Notice { kind: "incident", data: data.clone() });
            }
            if hit.new_alias {
                notices.push(Notice { kind: "leak", data });
            }
        }
    }
    webhooks::enqueue(&mut *tx, &notices).await?;
    tx.commit().await?;
    Ok(())
}

/// Detail fields a webhook may carry. Everything else stays in the database: a remote
/// server's reply (`reply`) can quote a shopper's local part or name.
const WEBHOOK_DETAIL: [&str; 13] = [
    "incident",
    "stage",
    "reason",
    "alias_side",
    "alias_status",
    "sender_domain",
    "status",
    "permanent",
    "direction",
    "attempts",
    "by",
    "threads",
    "notified",
];

/// What a webhook hears of an event: ids, kind and the allowed detail fields.
fn webhook_data(id: i64, e: &NewEvent<'_>) -> serde_json::Value {
    let detail: serde_json::Map<String, serde_json::Value> = WEBHOOK_DETAIL
        .iter()
        .filter_map(|k| e.detail.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    serde_json::json!({
        "event": id,
        "store": e.store_id,
        "thread": e.thread_id,
        "detail": detail,
    })
}

/// Deletes events older than `before` (Unix seconds); returns how many.
pub async fn prune(db: &Db, before: i64) -> Result<u64, StoreError> {
    let res = sqlx::query("DELETE FROM events WHERE at < $1").bind(before).execute(&db.pool).await?;
    Ok(res.rows_affected())
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
