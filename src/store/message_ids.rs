//! The `message_ids` table: relay Message-IDs and the originals they stand for, per thread,
//! so a reply's In-Reply-To/References can be mapped back for its reader.

use std::collections::HashMap;

use sqlx::Row;

use super::{Db, Field, StoreError};

/// At most this many ids of one message are looked up (a References header can list a
/// whole conversation; the most recent ids are the ones that thread it).
const MAX_LOOKUP: usize = 100;

/// The originals of those `ids` that are relay ids of this thread: relay id (lowercase) →
/// original. Only ids in the relay domain can be relay ids, so most messages need no query
/// at all, and the cost per message does not grow with the thread (one query, bounded).
pub async fn lookup(
    db: &Db,
    thread_id: &str,
    relay_domain: &str,
    ids: &[&str],
) -> Result<HashMap<String, String>, StoreError> {
    let suffix = format!("@{}", relay_domain.to_ascii_lowercase());
    let mut candidates: Vec<String> =
        ids.iter().map(|id| id.to_ascii_lowercase()).filter(|id| id.ends_with(&suffix)).collect();
    candidates.sort();
    candidates.dedup();
    if candidates.len() > MAX_LOOKUP {
        candidates.drain(..candidates.len() - MAX_LOOKUP);
    }
    if candidates.is_empty() {
        return Ok(HashMap::new());
    }
    // Only placeholders are formatted into the text; the ids themselves are bound.
    let placeholders: Vec<String> = (0..candidates.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT relay_id, original FROM message_ids WHERE thread_id = $1 AND relay_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(thread_id);
    for c in &candidates {
        query = query.bind(c);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            let relay: String = r.try_get("relay_id")?;
            let relay = relay.to_ascii_lowercase();
            let original =
                db.vault.open_text(Field::OriginalMessageId, &relay, &r.try_get::<String, _>("original")?)?;
            Ok((relay, original))
        })
        .collect()
}
