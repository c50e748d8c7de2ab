//! The `stores` table: a store's name, the real contact address mail to it goes to, and
//! the sender patterns allowed to write to its shoppers.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::Actor;
use super::{Db, StoreError, now};
use crate::address::{Mailbox, SenderPattern, StoreId};
use crate::time::Timestamp;

/// A store as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Store {
    /// The store's slug, `[a-z0-9-]{1,40}`.
    #[schema(value_type = String)]
    pub id: StoreId,
    pub name: String,
    /// The real address mail to the store goes to (never shown to shoppers).
    pub contact: String,
    /// Approved From addresses: `orders@acme.example`, or `@acme.example` for a whole domain.
    pub senders: Vec<String>,
    pub created_at: Timestamp,
}

impl Store {
    /// Whether `from` is one of the store's approved senders.
    pub fn approves(&self, from: &Mailbox) -> bool {
        self.senders.iter().filter_map(|s| SenderPattern::parse(s).ok()).any(|p| p.matches(from))
    }
    pub fn contact_mailbox(&self) -> Result<Mailbox, StoreError> {
        Mailbox::parse(&self.contact).map_err(|_| StoreError::Corrupt("store contact".into()))
    }
}

/// What a caller may set on a store.
#[derive(Debug, Clone)]
pub struct StoreFields {
    pub name: String,
    pub contact: Mailbox,
    pub senders: Vec<SenderPattern>,
}

fn patterns_json(senders: &[SenderPattern]) -> String {
    let list: Vec<String> = senders
        .iter()
        .map(|p| match p {
            SenderPattern::Address(a) => a.clone(),
            SenderPattern::Domain(d) => format!("@{d}"),
        })
        .collect();
    serde_json::Value::from(list).to_string()
}

fn from_row(row: &AnyRow) -> Result<Store, StoreError> {
    from_prefixed_row(row, "")
}

/// A store from a row whose store columns carry `prefix` (for joins).
pub(crate) fn from_prefixed_row(row: &AnyRow, prefix: &str) -> Result<Store, StoreError> {
    let col = |name: &str| format!("{prefix}{name}");
    let id: String = row.try_get(col("id").as_str())?;
    let senders: String = row.try_get(col("senders").as_str())?;
    Ok(Store {
        id: StoreId::parse(&id).map_err(|_| StoreError::Corrupt("store id".into()))?,
        name: row.try_get(col("name").as_str())?,
        contact: row.try_get(col("contact").as_str())?,
        senders: serde_json::from_str(&senders).map_err(|_| StoreError::Corrupt("store senders".into()))?,
        created_at: Timestamp(row.try_get(col("created_at").as_str())?),
    })
}

/// Creates a store; a conflict when the id is taken (also by a deleted store).
pub async fn create(db: &Db, id: &StoreId, f: &StoreFields, by: Actor) -> Result<Store, StoreError> {
    let res = sqlx::query(
        "INSERT INTO stores (id, name, contact, senders, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(&f.name)
    .bind(f.contact.expose())
    .bind(patterns_json(&f.senders))
    .bind(now())
    .execute(&db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!("store {id} exists or existed")));
    }
    let store = get(db, id).await?;
    // The contact and senders are the store's business addresses, not a shopper's.
    let detail = serde_json::json!({"name": store.name, "contact": store.contact, "senders": store.senders});
    super::audit::record(db, by, "store.create", id.as_str(), detail).await?;
    Ok(store)
}

/// A live store.
pub async fn get(db: &Db, id: &StoreId) -> Result<Store, StoreError> {
    let row = sqlx::query(
        "SELECT id, name, contact, senders, created_at FROM stores \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.as_str())
    .fetch_optional(&db.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

/// A store, deleted or not (a notice about an old thread still needs its name).
pub async fn get_any(db: &Db, id: &StoreId) -> Result<Store, StoreError> {
    let row = sqlx::query("SELECT id, name, contact, senders, created_at FROM stores WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&db.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

/// Live stores by id: at most `limit` of those after the store id `after` (the cursor).
pub async fn list(db: &Db, after: Option<&str>, limit: i64) -> Result<Vec<Store>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, contact, senders, created_at FROM stores \
         WHERE deleted_at IS NULL AND ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Changes the fields given.
pub async fn update(
    db: &Db,
    id: &StoreId,
    name: Option<&str>,
    contact: Option<&Mailbox>,
    senders: Option<&[SenderPattern]>,
    by: Actor,
) -> Result<Store, StoreError> {
    let res = sqlx::query(
        "UPDATE stores SET name = COALESCE($2, name), contact = COALESCE($3, contact), \
         senders = COALESCE($4, senders) WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(contact.map(Mailbox::expose))
    .bind(senders.map(patterns_json))
    .execute(&db.pool)
    .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let store = get(db, id).await?;
    let detail = serde_json::json!({"name": store.name, "contact": store.contact, "senders": store.senders});
    super::audit::record(db, by, "store.update", id.as_str(), detail).await?;
    Ok(store)
}

/// Deletes a store: its active threads are revoked, its contact forgotten, and its id kept
/// reserved so no alias that carries it is ever issued again.
pub async fn delete(db: &Db, id: &StoreId, by: Actor) -> Result<u64, StoreError> {
    let mut tx = db.pool.begin().await?;
    let t = now();
    let res = sqlx::query(
        "UPDATE stores SET deleted_at = $2, contact = '', senders = '[]' \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.as_str())
    .bind(t)
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let revoked = sqlx::query(
        "UPDATE threads SET status = 'revoked', updated_at = $2 \
         WHERE store_id = $1 AND status IN ('active', 'disabled')",
    )
    .bind(id.as_str())
    .bind(t)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    super::events::record(
        db,
        &super::events::NewEvent {
            kind: super::events::EventKind::StoreDeleted,
            store_id: Some(id.as_str()),
            thread_id: None,
            alias: None,
            detail: serde_json::json!({"threads_revoked": revoked}),
        },
    )
    .await?;
    super::audit::record(
        db,
        by,
        "store.delete",
        id.as_str(),
        serde_json::json!({"threads_revoked": revoked}),
    )
    .await?;
    Ok(revoked)
}
