//! The `threads` table: one order between one store and one shopper, its two aliases and
//! its state. The shopper's real address lives here and nowhere else.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit;
pub use super::audit::Actor;
use super::events::{self, EventKind, NewEvent};
use super::stores::Store;
use super::{Db, Field, StoreError, Vault, now};
use crate::address::{self, Mailbox, Side, StoreId};
use crate::locale::Locale;

/// A thread's state as the SPEC names it. `Expired` is derived from `expires_at`, so a
/// thread expires on time without a sweeper having to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThreadStatus {
    Active,
    /// Paused by the shopper or operator: refuses mail like a revoke, but can be enabled again.
    Disabled,
    Revoked,
    Expired,
    Erased,
}

impl ThreadStatus {
    fn from_stored(s: &str, expires_at: i64, at: i64) -> Result<Self, StoreError> {
        Ok(match s {
            "active" if expires_at <= at => Self::Expired,
            "active" => Self::Active,
            "disabled" => Self::Disabled,
            "revoked" => Self::Revoked,
            "erased" => Self::Erased,
            other => return Err(StoreError::Corrupt(format!("thread status {other:?}"))),
        })
    }
    /// The one place that says whether an alias of the thread takes mail.
    pub fn accepts_mail(self) -> bool {
        self == Self::Active
    }
    /// The stored text (`Expired` is never stored: it is derived from `expires_at`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Erased => "erased",
        }
    }
    /// Parses a status as the API names it (`?status=`).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Disabled, Self::Revoked, Self::Expired, Self::Erased]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A thread. Deliberately not `Serialize`: the API builds its own view without the address.
#[derive(Debug, Clone)]
pub struct Thread {
    pub id: String,
    pub store_id: StoreId,
    pub order: String,
    /// None once erased.
    pub shopper: Option<Mailbox>,
    pub shopper_name: Option<String>,
    /// Local parts; the domain is the relay domain.
    pub shopper_alias: String,
    pub store_alias: String,
    pub status: ThreadStatus,
    pub revoke_token: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The shopper's language: the one given at creation, else `relay.locale` then.
    pub locale: Locale,
}

const COLUMNS: &str = "id, store_id, order_ref, shopper_email, shopper_name, shopper_alias, \
                       store_alias, status, revoke_token, created_at, expires_at, locale";

fn from_row(vault: &Vault, row: &AnyRow) -> Result<Thread, StoreError> {
    let id: String = row.try_get("id")?;
    let store_id: String = row.try_get("store_id")?;
    let sealed_email: Option<String> = row.try_get("shopper_email")?;
    let sealed_name: Option<String> = row.try_get("shopper_name")?;
    let status: String = row.try_get("status")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let shopper = sealed_email
        .map(|s| vault.open_text(Field::ShopperEmail, &id, &s))
        .transpose()?
        .map(|s| Mailbox::parse(&s))
        .transpose()
        .map_err(|_| StoreError::Corrupt("shopper address".into()))?;
    Ok(Thread {
        store_id: StoreId::parse(&store_id).map_err(|_| StoreError::Corrupt("store id".into()))?,
        order: row.try_get("order_ref")?,
        shopper,
        shopper_name: sealed_name.map(|s| vault.open_text(Field::ShopperName, &id, &s)).transpose()?,
        shopper_alias: row.try_get("shopper_alias")?,
        store_alias: row.try_get("store_alias")?,
        status: ThreadStatus::from_stored(&status, expires_at, now())?,
        revoke_token: row.try_get("revoke_token")?,
        created_at: row.try_get("created_at")?,
        expires_at,
        // Threads from before languages were stored read as the default language.
        locale: row
            .try_get::<Option<String>, _>("locale")?
            .and_then(|l| Locale::from_tag(&l))
            .unwrap_or_default(),
        id,
    })
}

/// `shopper_key IN ($first, …)` for the blind indexes of one address under every key, so a
/// lookup also finds threads not yet rotated to the current key.
fn shopper_key_in(count: usize, first: usize) -> String {
    let placeholders: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!("shopper_key IN ({})", placeholders.join(", "))
}

/// What a new thread needs.
#[derive(Debug, Clone)]
pub struct NewThread {
    pub store: StoreId,
    pub order: String,
    pub shopper: Mailbox,
    pub shopper_name: Option<String>,
    pub ttl_days: u32,
    pub locale: Locale,
}

/// Creates the thread, or returns the existing one for the same (store, order, shopper):
/// `(thread, created)`. Idempotent under concurrent calls (the unique index decides).
pub async fn create(db: &Db, new: &NewThread, by: Actor) -> Result<(Thread, bool), StoreError> {
    let normalized = new.shopper.normalized();
    if let Some(existing) = find_identity(db, new, &normalized).await? {
        return Ok((existing, false));
    }
    let t = now();
    let expires_at = t + i64::from(new.ttl_days) * 86_400;
    let id = format!("thr_{}", address::random_token(20));
    let vault = &db.vault;
    let res = sqlx::query(
        "INSERT INTO threads (id, store_id, order_ref, shopper_key, shopper_email, shopper_name, \
         shopper_alias, store_alias, status, revoke_token, created_at, updated_at, expires_at, locale) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $10, $11, $12) \
         ON CONFLICT (store_id, order_ref, shopper_key) DO NOTHING",
    )
    .bind(&id)
    .bind(new.store.as_str())
    .bind(&new.order)
    .bind(vault.blind_index(&normalized))
    .bind(vault.seal_text(Field::ShopperEmail, &id, &new.shopper.expose()))
    .bind(new.shopper_name.as_deref().map(|n| vault.seal_text(Field::ShopperName, &id, n)))
    .bind(address::new_shopper_alias_local())
    .bind(address::new_store_alias_local(&new.store))
    .bind(address::random_token(32))
    .bind(t)
    .bind(expires_at)
    .bind(new.locale.tag())
    .execute(&db.pool)
    .await?;
    let created = res.rows_affected() == 1;
    // Lost a race with a concurrent create of the same thread: the unique index decided.
    let thread = find_identity(db, new, &normalized).await?.ok_or(StoreError::NotFound)?;
    if created {
        let detail = serde_json::json!({"store": thread.store_id.as_str(), "order": thread.order, "ttl_days": new.ttl_days, "locale": new.locale});
        audit::record(db, by, "thread.create", &thread.id, detail).await?;
    }
    Ok((thread, created))
}

/// The thread of this (store, order, shopper), under any key of the ring.
async fn find_identity(db: &Db, new: &NewThread, normalized: &str) -> Result<Option<Thread>, StoreError> {
    let indexes = db.vault.blind_indexes(normalized);
    let sql = select_where(&format!(
        "WHERE store_id = $1 AND order_ref = $2 AND {}",
        shopper_key_in(indexes.len(), 3)
    ));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(new.store.as_str()).bind(&new.order);
    for index in &indexes {
        query = query.bind(index);
    }
    query.fetch_optional(&db.pool).await?.map(|row| from_row(&db.vault, &row)).transpose()
}

fn select_where(where_clause: &str) -> String {
    format!("SELECT {COLUMNS} FROM threads {where_clause}")
}

/// A thread by id.
pub async fn get(db: &Db, id: &str) -> Result<Thread, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(select_where("WHERE id = $1")))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&db.vault, &row)
}

/// The thread behind an alias local part (case-insensitive), which side it stands for,
/// and its store: one round trip, as it runs once per RCPT.
pub async fn find_by_alias(db: &Db, local: &str) -> Result<Option<(Thread, Side, Store)>, StoreError> {
    let local = local.to_ascii_lowercase();
    let row = sqlx::query(
        "SELECT t.id, t.store_id, t.order_ref, t.shopper_email, t.shopper_name, t.shopper_alias, \
         t.store_alias, t.status, t.revoke_token, t.created_at, t.expires_at, t.locale, \
         s.id AS s_id, s.name AS s_name, s.contact AS s_contact, s.senders AS s_senders, \
         s.created_at AS s_created_at \
         FROM threads t JOIN stores s ON s.id = t.store_id \
         WHERE t.shopper_alias = $1 OR t.store_alias = $1",
    )
    .bind(&local)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let thread = from_row(&db.vault, &row)?;
    let store = super::stores::from_prefixed_row(&row, "s_")?;
    let side = if thread.shopper_alias == local { Side::Shopper } else { Side::Store };
    Ok(Some((thread, side, store)))
}

/// A thread by the token of its revoke page.
pub async fn find_by_revoke_token(db: &Db, token: &str) -> Result<Thread, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(select_where("WHERE revoke_token = $1")))
        .bind(token)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&db.vault, &row)
}

/// Which threads a listing shows; every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct ThreadFilter {
    pub store: Option<StoreId>,
    pub order: Option<String>,
    pub status: Option<ThreadStatus>,
    /// Matched through the blind index under every key of the ring, never in clear.
    pub shopper: Option<Mailbox>,
}

/// Where a listing of threads (newest first) continues: the creation time and id of the
/// last thread already seen. Written `created_at:id` inside the API's cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadKey {
    pub created_at: i64,
    pub id: String,
}

impl ThreadKey {
    pub fn of(thread: &Thread) -> Self {
        Self { created_at: thread.created_at, id: thread.id.clone() }
    }
}

impl std::fmt::Display for ThreadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.created_at, self.id)
    }
}

impl std::str::FromStr for ThreadKey {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (at, id) = s.split_once(':').ok_or(())?;
        if !id.starts_with("thr_") {
            return Err(());
        }
        Ok(Self { created_at: at.parse().map_err(|_| ())?, id: id.to_owned() })
    }
}

/// A value bound to a listing's SQL, in placeholder order.
enum Bind {
    Text(String),
    Int(i64),
}

/// Threads matching `filter`, newest first (ties by id): at most `limit` of those after
/// `after`. The SQL names only the filters given, so each listing can use its index.
pub async fn list(
    db: &Db,
    filter: &ThreadFilter,
    after: Option<&ThreadKey>,
    limit: i64,
) -> Result<Vec<Thread>, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let next = |binds: &mut Vec<Bind>, value: Bind| {
        binds.push(value);
        format!("${}", binds.len())
    };
    if let Some(store) = &filter.store {
        clauses.push(format!("store_id = {}", next(&mut binds, Bind::Text(store.as_str().to_owned()))));
    }
    if let Some(order) = &filter.order {
        clauses.push(format!("order_ref = {}", next(&mut binds, Bind::Text(order.clone()))));
    }
    if let Some(status) = filter.status {
        // `expired` is not stored: an active thread past its expires_at (see ThreadStatus).
        clauses.push(match status {
            ThreadStatus::Active => {
                format!("status = 'active' AND expires_at > {}", next(&mut binds, Bind::Int(now())))
            }
            ThreadStatus::Expired => {
                format!("status = 'active' AND expires_at <= {}", next(&mut binds, Bind::Int(now())))
            }
            other => format!("status = {}", next(&mut binds, Bind::Text(other.as_str().to_owned()))),
        });
    }
    if let Some(shopper) = &filter.shopper {
        let keys: Vec<String> = db
            .vault
            .blind_indexes(&shopper.normalized())
            .into_iter()
            .map(|index| next(&mut binds, Bind::Text(index)))
            .collect();
        clauses.push(format!("shopper_key IN ({})", keys.join(", ")));
    }
    if let Some(key) = after {
        let at = next(&mut binds, Bind::Int(key.created_at));
        let id = next(&mut binds, Bind::Text(key.id.clone()));
        clauses.push(format!("(created_at < {at} OR (created_at = {at} AND id < {id}))"));
    }
    let where_clause = match clauses.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", clauses.join(" AND ")),
    };
    let limit_at = next(&mut binds, Bind::Int(limit));
    let sql = select_where(&format!("{where_clause} ORDER BY created_at DESC, id DESC LIMIT {limit_at}"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bind in binds {
        query = match bind {
            Bind::Text(t) => query.bind(t),
            Bind::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter().map(|r| from_row(&db.vault, r)).collect()
}

async fn record(
    db: &Db,
    kind: EventKind,
    thread: Option<&Thread>,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    events::record(
        db,
        &NewEvent {
            kind,
            store_id: thread.map(|t| t.store_id.as_str()),
            thread_id: thread.map(|t| t.id.as_str()),
            alias: None,
            detail,
        },
    )
    .await
}

/// Revokes one thread; revoking twice is harmless and recorded once. Erased threads stay
/// erased.
pub async fn revoke(db: &Db, id: &str, by: Actor) -> Result<Thread, StoreError> {
    let changed = sqlx::query(
        "UPDATE threads SET status = 'revoked', updated_at = $2 WHERE id = $1 \
         AND status IN ('active', 'disabled')",
    )
    .bind(id)
    .bind(now())
    .execute(&db.pool)
    .await?
    .rows_affected();
    let thread = get(db, id).await?;
    if changed > 0 {
        let who = if by == Actor::Shopper { "shopper" } else { "operator" };
        record(db, EventKind::ThreadRevoked, Some(&thread), serde_json::json!({"by": who})).await?;
        audit::record(db, by, "thread.revoke", &thread.id, serde_json::json!({})).await?;
    }
    Ok(thread)
}

/// Pauses one active thread: its aliases refuse mail (`550 5.1.1`) until it is enabled
/// again. Disabling twice is harmless and recorded once.
pub async fn disable(db: &Db, id: &str, by: Actor) -> Result<Thread, StoreError> {
    set_paused(db, id, by, "active", "disabled", "thread.disable").await
}

/// Lifts a pause; a revoked, erased or expired thread stays as it is.
pub async fn enable(db: &Db, id: &str, by: Actor) -> Result<Thread, StoreError> {
    set_paused(db, id, by, "disabled", "active", "thread.enable").await
}

async fn set_paused(
    db: &Db,
    id: &str,
    by: Actor,
    from: &'static str,
    to: &'static str,
    action: &str,
) -> Result<Thread, StoreError> {
    let changed =
        sqlx::query("UPDATE threads SET status = $3, updated_at = $2 WHERE id = $1 AND status = $4")
            .bind(id)
            .bind(now())
            .bind(to)
            .bind(from)
            .execute(&db.pool)
            .await?
            .rows_affected();
    let thread = get(db, id).await?;
    if changed > 0 {
        audit::record(db, by, action, &thread.id, serde_json::json!({})).await?;
    }
    Ok(thread)
}

/// Revokes every active thread of a shopper; returns how many changed.
pub async fn revoke_shopper(db: &Db, shopper: &Mailbox, by: Actor) -> Result<u64, StoreError> {
    let indexes = db.vault.blind_indexes(&shopper.normalized());
    let sql = format!(
        "UPDATE threads SET status = 'revoked', updated_at = $1 \
         WHERE status IN ('active', 'disabled') AND {}",
        shopper_key_in(indexes.len(), 2)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now());
    for index in &indexes {
        query = query.bind(index);
    }
    let n = query.execute(&db.pool).await?.rows_affected();
    let who = if by == Actor::Shopper { "shopper" } else { "operator" };
    record(db, EventKind::ThreadRevoked, None, serde_json::json!({"by": who, "threads": n})).await?;
    audit::record(db, by, "shopper.revoke", "shopper", serde_json::json!({"threads": n})).await?;
    Ok(n)
}

/// Forgets a shopper for good: address and name gone, threads erased (so their aliases
/// refuse mail and are never reissued), queued mail of those threads and their
/// Message-ID mappings deleted. Returns how many threads were erased. What stays of an
/// erased thread is its aliases, store, order reference and times: what keeps the aliases
/// from being issued again and the store's leak counts true.
pub async fn erase_shopper(db: &Db, shopper: &Mailbox, by: Actor) -> Result<u64, StoreError> {
    let indexes = db.vault.blind_indexes(&shopper.normalized());
    let of_shopper = format!("SELECT id FROM threads WHERE {}", shopper_key_in(indexes.len(), 1));
    let mut tx = db.pool.begin().await?;
    for delete in THREAD_DATA {
        let sql = delete.replace("{threads}", &of_shopper);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for index in &indexes {
            query = query.bind(index);
        }
        query.execute(&mut *tx).await?;
    }
    let sql = format!(
        "UPDATE threads SET status = 'erased', shopper_key = NULL, shopper_email = NULL, \
         shopper_name = NULL, updated_at = $1 WHERE {}",
        shopper_key_in(indexes.len(), 2)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now());
    for index in &indexes {
        query = query.bind(index);
    }
    let n = query.execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    record(db, EventKind::ShopperErased, None, serde_json::json!({"threads": n})).await?;
    audit::record(db, by, "shopper.erase", "shopper", serde_json::json!({"threads": n})).await?;
    Ok(n)
}

/// Another active thread of the same shopper, as their revoke page lists it.
#[derive(Debug, Clone)]
pub struct OtherThread {
    pub thread: Thread,
    pub store_name: String,
}

/// The shopper's other active threads (found through the blind index under every key),
/// newest first, with their stores' names; empty for an erased thread.
pub async fn others_of_shopper(db: &Db, thread: &Thread) -> Result<Vec<OtherThread>, StoreError> {
    let Some(shopper) = &thread.shopper else { return Ok(Vec::new()) };
    let indexes = db.vault.blind_indexes(&shopper.normalized());
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("t.{}", c.trim())).collect();
    let sql = format!(
        "SELECT {}, s.name AS store_name FROM threads t JOIN stores s ON s.id = t.store_id \
         WHERE t.status = 'active' AND t.expires_at > $1 AND t.id <> $2 AND t.{} \
         ORDER BY t.created_at DESC, t.id LIMIT 200",
        columns.join(", "),
        shopper_key_in(indexes.len(), 3)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now()).bind(&thread.id);
    for index in &indexes {
        query = query.bind(index);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| Ok(OtherThread { thread: from_row(&db.vault, r)?, store_name: r.try_get("store_name")? }))
        .collect()
}

/// Whether two threads belong to the same shopper (the blind index decides; an erased
/// thread belongs to nobody).
pub fn same_shopper(a: &Thread, b: &Thread) -> bool {
    match (&a.shopper, &b.shopper) {
        (Some(x), Some(y)) => x.normalized() == y.normalized(),
        _ => false,
    }
}

/// What a thread leaves behind in other tables, deleted when it is erased: each a DELETE
/// whose `{threads}` is the list (or sub-select) of the erased threads' ids. Queued bodies
/// go first, found through their queue rows.
const THREAD_DATA: [&str; 4] = [
    "DELETE FROM queue_bodies WHERE id IN (SELECT id FROM queue WHERE thread_id IN ({threads}))",
    "DELETE FROM queue WHERE thread_id IN ({threads})",
    "DELETE FROM message_ids WHERE thread_id IN ({threads})",
    "DELETE FROM sent_messages WHERE thread_id IN ({threads})",
];

/// Erases, at most `limit` at a time, the threads whose shopper has been gone long enough:
/// revoked or paused at or before `before` (Unix seconds), or expired by then. Returns the
/// ids erased. A thread resumed or changed meanwhile is left alone: the guarded UPDATE
/// decides, and only the rows it changed lose their data.
pub async fn erase_due(db: &Db, before: i64, limit: i64) -> Result<Vec<String>, StoreError> {
    const DUE: &str = "((status IN ('revoked', 'disabled') AND updated_at <= $1) \
                       OR (status = 'active' AND expires_at <= $1))";
    // Each kind of due thread from its own index, oldest first (`threads_status`,
    // `threads_expiry`): one query with the OR read every active thread to test its
    // expiry, 3.5 s a sweep at 10 million threads.
    let mut candidates: Vec<String> = sqlx::query(
        "SELECT id FROM (SELECT id FROM threads WHERE status IN ('revoked', 'disabled') \
         AND updated_at <= $1 ORDER BY updated_at, id LIMIT $2) AS gone \
         UNION ALL \
         SELECT id FROM (SELECT id FROM threads WHERE status = 'active' AND expires_at <= $1 \
         ORDER BY expires_at, id LIMIT $2) AS expired",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| r.try_get("id"))
    .collect::<Result<_, _>>()?;
    candidates.truncate(usize::try_from(limit).unwrap_or(0));
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (0..candidates.len()).map(|i| format!("${}", i + 3)).collect();
    let list = placeholders.join(", ");
    let mut tx = db.pool.begin().await?;
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE threads SET status = 'erased', shopper_key = NULL, shopper_email = NULL, \
         shopper_name = NULL, updated_at = $2 WHERE {DUE} AND id IN ({list}) RETURNING id"
    )))
    .bind(before)
    .bind(now());
    for id in &candidates {
        query = query.bind(id);
    }
    let erased: Vec<String> =
        query.fetch_all(&mut *tx).await?.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
    if !erased.is_empty() {
        let list: Vec<String> = (0..erased.len()).map(|i| format!("${}", i + 1)).collect();
        for delete in THREAD_DATA {
            let sql = delete.replace("{threads}", &list.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in &erased {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(erased)
}
