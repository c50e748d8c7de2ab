//! The `task_leases` table: a background task that must run on one node at a time (the
//! retention sweep) holds its row for a while; another relay on the same database takes
//! it over only once it ran out, so a relay that died stops holding it by itself.

use super::{Db, StoreError, now};

/// Takes or renews the lease `name` for `holder` until `secs` from now. True when
/// `holder` has it: it was free, ran out, or was already `holder`'s.
pub async fn acquire(db: &Db, name: &str, holder: &str, secs: i64) -> Result<bool, StoreError> {
    let t = now();
    let n = sqlx::query(
        "INSERT INTO task_leases (name, holder, until) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE task_leases.until <= $4 OR task_leases.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(t + secs)
    .bind(t)
    .execute(&db.pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Gives the lease up (a relay that stops), so another may take it at once.
pub async fn release(db: &Db, name: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE task_leases SET until = 0 WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(&db.pool)
        .await?;
    Ok(())
}
