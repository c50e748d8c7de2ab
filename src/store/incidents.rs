//! The `incidents` tables: outsider attempts on one store's shopper aliases, grouped. Each
//! shopper alias was handed to exactly one store, so a stranger writing to several of them
//! says that store's customer list got out; an incident is that stream of attempts as an
//! operator handles it: when it started, which aliases it hit, from which domains.
//!
//! Grouping: an attempt joins the store's most recent incident whose last attempt is
//! less than [`WINDOW_SECS`] old and that already saw the same sending domain or the same
//! alias (one leaked list used from a second domain is still one leak); otherwise it
//! opens a new incident. Rows hold thread ids and the outsiders' domains, never a
//! shopper's address or name.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Backend, Db, StoreError, now};

/// Quiet time after which the next attempt opens a new incident: 72 hours, long enough for
/// a spam run over a weekend to stay one incident, short enough that a list sold again
/// weeks later is a new one.
pub const WINDOW_SECS: i64 = 72 * 3600;

/// What one attempt did to the incidents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub incident: String,
    /// The attempt opened this incident.
    pub opened: bool,
    /// The alias was not part of this incident before.
    pub new_alias: bool,
}

/// Adds one outsider attempt on `thread`'s shopper alias `alias` to the incidents of
/// `store`, inside the caller's transaction (the one that records the event). None when
/// `alias` is not the thread's shopper alias: attempts on store aliases say nothing about
/// what the store leaked.
pub async fn attach(
    conn: &mut AnyConnection,
    backend: Backend,
    store: &str,
    thread: &str,
    alias: &str,
    sender_domain: Option<&str>,
    at: i64,
    window_secs: i64,
) -> Result<Option<Attached>, StoreError> {
    let is_shopper_alias = sqlx::query("SELECT 1 AS one FROM threads WHERE id = $1 AND shopper_alias = $2")
        .bind(thread)
        .bind(alias)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if !is_shopper_alias {
        return Ok(None);
    }
    // Two attempts at once must not open two incidents: PostgreSQL serializes them on the
    // store's row; SQLite already did, the caller's first statement took the write lock.
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM stores WHERE id = $1 FOR UPDATE").bind(store).execute(&mut *conn).await?;
    }
    let domain = sender_domain.unwrap_or("").to_ascii_lowercase();
    let open: Option<String> = sqlx::query(
        "SELECT i.id FROM incidents i WHERE i.store_id = $1 AND i.last_at > $2 AND ( \
           EXISTS (SELECT 1 FROM incident_domains d WHERE d.incident_id = i.id AND d.domain = $3) \
           OR EXISTS (SELECT 1 FROM incident_aliases a WHERE a.incident_id = i.id AND a.thread_id = $4)) \
         ORDER BY i.last_at DESC LIMIT 1",
    )
    .bind(store)
    .bind(at - window_secs)
    .bind(&domain)
    .bind(thread)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("id"))
    .transpose()?;
    let (incident, opened) = match open {
        Some(id) => {
            sqlx::query(
                "UPDATE incidents SET attempts = attempts + 1, \
                 last_at = CASE WHEN last_at > $2 THEN last_at ELSE $2 END WHERE id = $1",
            )
            .bind(&id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            (id, false)
        }
        None => {
            let id = format!("inc_{}", crate::address::random_token(16));
            sqlx::query(
                "INSERT INTO incidents (id, store_id, first_at, last_at, attempts) VALUES ($1, $2, $3, $3, 1)",
            )
            .bind(&id)
            .bind(store)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            (id, true)
        }
    };
    sqlx::query(
        "INSERT INTO incident_domains (incident_id, domain, attempts, first_at, last_at) \
         VALUES ($1, $2, 1, $3, $3) ON CONFLICT (incident_id, domain) \
         DO UPDATE SET attempts = incident_domains.attempts + 1, last_at = excluded.last_at",
    )
    .bind(&incident)
    .bind(&domain)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let seen = sqlx::query(
        "UPDATE incident_aliases SET attempts = attempts + 1, last_at = $3 \
         WHERE incident_id = $1 AND thread_id = $2",
    )
    .bind(&incident)
    .bind(thread)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if seen == 0 {
        sqlx::query(
            "INSERT INTO incident_aliases (incident_id, thread_id, attempts, first_at, last_at) \
             VALUES ($1, $2, 1, $3, $3)",
        )
        .bind(&incident)
        .bind(thread)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(Attached { incident, opened, new_alias: seen == 0 }))
}

/// One sending domain of an incident.
#[derive(Debug, Clone, Serialize)]
pub struct SendingDomain {
    /// None for the null sender `<>`.
    pub domain: Option<String>,
    pub attempts: i64,
    pub first_seen: String,
    pub last_seen: String,
}

/// An incident as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: String,
    pub store: String,
    /// Distinct shopper aliases hit.
    pub aliases_hit: i64,
    pub attempts: i64,
    pub first_seen: String,
    pub last_seen: String,
    pub sending_domains: Vec<SendingDomain>,
    /// Shoppers told about it so far (`/notify`), and when last.
    pub shoppers_notified: i64,
    pub notified_at: Option<String>,
    #[serde(skip)]
    pub first_at: i64,
}

const INCIDENT_COLUMNS: &str = "i.id, i.store_id, i.first_at, i.last_at, i.attempts, \
     (SELECT COUNT(*) FROM incident_aliases a WHERE a.incident_id = i.id) AS aliases_hit, \
     (SELECT COUNT(*) FROM incident_aliases a WHERE a.incident_id = i.id AND a.notified_at IS NOT NULL) AS notified, \
     (SELECT MAX(a.notified_at) FROM incident_aliases a WHERE a.incident_id = i.id) AS notified_at";

async fn with_domains(db: &Db, rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Incident>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get("id")?;
        let domains = sqlx::query(
            "SELECT domain, attempts, first_at, last_at FROM incident_domains WHERE incident_id = $1 \
             ORDER BY attempts DESC, domain LIMIT 100",
        )
        .bind(&id)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|d| {
            let domain: String = d.try_get("domain")?;
            Ok(SendingDomain {
                domain: (!domain.is_empty()).then_some(domain),
                attempts: d.try_get("attempts")?,
                first_seen: crate::time::rfc3339(d.try_get("first_at")?),
                last_seen: crate::time::rfc3339(d.try_get("last_at")?),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let first_at: i64 = r.try_get("first_at")?;
        out.push(Incident {
            store: r.try_get("store_id")?,
            aliases_hit: r.try_get("aliases_hit")?,
            attempts: r.try_get("attempts")?,
            first_seen: crate::time::rfc3339(first_at),
            last_seen: crate::time::rfc3339(r.try_get("last_at")?),
            sending_domains: domains,
            shoppers_notified: r.try_get("notified")?,
            notified_at: r.try_get::<Option<i64>, _>("notified_at")?.map(crate::time::rfc3339),
            first_at,
            id,
        });
    }
    Ok(out)
}

/// The sort key of an incident in a store's list (newest first), as the cursor holds it.
pub fn cursor_key(i: &Incident) -> String {
    format!("{:020}|{}", i.first_at, i.id)
}

/// A store's incidents, newest first, `limit` of them after the cursor key `after`.
pub async fn list(
    db: &Db,
    store: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Incident>, StoreError> {
    let (after_at, after_id) = match after.and_then(|a| a.split_once('|')) {
        Some((at, id)) => (at.parse::<i64>().map_err(|_| StoreError::NotFound)?, id.to_owned()),
        None => (i64::MAX, String::new()),
    };
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.store_id = $1 \
         AND (i.first_at < $2 OR (i.first_at = $2 AND i.id < $3) OR $4 = 0) \
         ORDER BY i.first_at DESC, i.id DESC LIMIT $5"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(store)
        .bind(after_at)
        .bind(&after_id)
        .bind(i64::from(after.is_some()))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    with_domains(db, rows).await
}

/// One incident.
pub async fn get(db: &Db, id: &str) -> Result<Incident, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.id = $1"
    )))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(with_domains(db, vec![row]).await?.remove(0))
}

/// Claims the shoppers of an incident not yet told about it: marks them notified now and
/// returns their thread ids. Two notify calls at once each get a disjoint share (the
/// guarded UPDATE decides), so nobody is told twice.
pub async fn claim_unnotified(db: &Db, incident: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "UPDATE incident_aliases SET notified_at = $2 WHERE incident_id = $1 AND notified_at IS NULL \
         RETURNING thread_id",
    )
    .bind(incident)
    .bind(now())
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("thread_id")?)).collect()
}

/// Gives claimed shoppers back (their notice could not be queued), so the next call tells
/// them.
pub async fn unclaim(db: &Db, incident: &str, threads: &[String]) -> Result<(), StoreError> {
    for thread in threads {
        sqlx::query(
            "UPDATE incident_aliases SET notified_at = NULL WHERE incident_id = $1 AND thread_id = $2",
        )
        .bind(incident)
        .bind(thread)
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

/// Deletes incidents whose last attempt is older than `before`; returns how many.
pub async fn prune(db: &Db, before: i64) -> Result<u64, StoreError> {
    let mut tx = db.pool.begin().await?;
    let old = "SELECT id FROM incidents WHERE last_at < $1";
    for table in ["incident_aliases", "incident_domains"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE incident_id IN ({old})")))
            .bind(before)
            .execute(&mut *tx)
            .await?;
    }
    let n = sqlx::query("DELETE FROM incidents WHERE last_at < $1").bind(before).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(n.rows_affected())
}
