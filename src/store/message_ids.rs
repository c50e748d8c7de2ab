//! The `message_ids` table: relay Message-IDs and the originals they stand for, per thread,
//! so a reply's In-Reply-To/References can be mapped back for its reader.

use std::collections::HashMap;

use sqlx::Row;

use super::{Db, StoreError};

/// Every mapping of a thread, relay id (lowercase) → original. Threads are one order's
/// conversation, so this is small, and one query serves the whole message.
pub async fn for_thread(db: &Db, thread_id: &str) -> Result<HashMap<String, String>, StoreError> {
    let rows = sqlx::query("SELECT relay_id, original FROM message_ids WHERE thread_id = $1")
        .bind(thread_id)
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            let relay: String = r.try_get("relay_id")?;
            Ok((relay.to_ascii_lowercase(), r.try_get("original")?))
        })
        .collect()
}
