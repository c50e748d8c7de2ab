//! Keeping sealed data and the keyring in step: a check at start that the configured keys
//! open what the database holds, and rotation, which re-seals every value (and recomputes
//! every blind index) under the current key so older keys can be dropped.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Db, Field, StoreError, VaultError};

/// Rows read per round trip while rotating.
const BATCH: i64 = 500;

/// The sealed columns: table, key column, sealed columns and how each is stored.
struct Table {
    name: &'static str,
    key: &'static str,
    /// (column, field, stored as base64 text rather than bytes)
    sealed: &'static [(&'static str, Field, bool)],
}

const TABLES: &[Table] = &[
    Table {
        name: "threads",
        key: "id",
        sealed: &[("shopper_email", Field::ShopperEmail, true), ("shopper_name", Field::ShopperName, true)],
    },
    Table { name: "queue", key: "id", sealed: &[("rcpt_to", Field::QueueRecipient, true)] },
    Table { name: "queue_bodies", key: "id", sealed: &[("message", Field::QueueMessage, false)] },
    Table { name: "message_ids", key: "relay_id", sealed: &[("original", Field::OriginalMessageId, true)] },
    Table { name: "webhooks", key: "id", sealed: &[("secret", Field::WebhookSecret, true)] },
];

/// A sealed column's value as read, text or bytes.
enum Sealed {
    Text(String),
    Bytes(Vec<u8>),
}

fn read_sealed(row: &AnyRow, column: &str, text: bool) -> Result<Option<Sealed>, StoreError> {
    Ok(if text {
        row.try_get::<Option<String>, _>(column)?.map(Sealed::Text)
    } else {
        row.try_get::<Option<Vec<u8>>, _>(column)?.map(Sealed::Bytes)
    })
}

/// The row of `keyring_check`.
const CHECK_ROW: &str = "keyring";

/// Opens one value at each end of each sealed table's primary key (ids are random, so these
/// are two arbitrary rows, found through the index without a scan): a key file from another
/// installation, or an old key dropped before rotation finished, stops the start with a
/// message that says which key is missing. The first relay on a database plants a sealed
/// check value, so a second relay with other keys is stopped even while no shopper data
/// exists yet (two relays started together on an empty database).
pub async fn check(db: &Db) -> Result<(), StoreError> {
    let planted = db.vault.seal_text(Field::KeyringCheck, CHECK_ROW, "maskrelay keyring check");
    // Whoever inserts first wins; everyone then opens the one stored value.
    sqlx::query(
        "INSERT INTO keyring_check (id, sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(CHECK_ROW)
    .bind(planted)
    .bind(super::now())
    .execute(&db.pool)
    .await?;
    let stored: String = sqlx::query("SELECT sealed FROM keyring_check WHERE id = $1")
        .bind(CHECK_ROW)
        .fetch_one(&db.pool)
        .await?
        .try_get("sealed")?;
    db.vault.open_text(Field::KeyringCheck, CHECK_ROW, &stored).map_err(|e| match e {
        VaultError::Damaged => {
            StoreError::Corrupt("keyring_check does not open with the configured privacy keys".into())
        }
        other => StoreError::Sealed(other),
    })?;
    for table in TABLES {
        let (column, field, text) = table.sealed[0];
        for order in ["ASC", "DESC"] {
            let sql = format!(
                "SELECT {key}, {column} FROM {name} WHERE {column} IS NOT NULL ORDER BY {key} {order} LIMIT 1",
                key = table.key,
                name = table.name
            );
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&db.pool).await? else {
                continue;
            };
            let row_key: String = row.try_get(table.key)?;
            open(db, field, &row_key, read_sealed(&row, column, text)?.as_ref()).map_err(|e| match e {
                StoreError::Sealed(VaultError::Damaged) => StoreError::Corrupt(format!(
                    "{}.{column} of {row_key} does not open with the configured privacy keys",
                    table.name
                )),
                other => other,
            })?;
        }
    }
    Ok(())
}

fn open(db: &Db, field: Field, row: &str, value: Option<&Sealed>) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(match value {
        None => None,
        Some(Sealed::Text(t)) => Some(db.vault.open_text(field, row, t)?.into_bytes()),
        Some(Sealed::Bytes(b)) => Some(db.vault.open(field, row, b)?),
    })
}

fn is_current(db: &Db, value: Option<&Sealed>) -> bool {
    match value {
        None => true,
        Some(Sealed::Text(t)) => db.vault.is_current_text(t),
        Some(Sealed::Bytes(b)) => db.vault.is_current(b),
    }
}

/// How far a rotation has come, for its progress report.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub table: &'a str,
    pub scanned: u64,
    pub total: u64,
    pub resealed: u64,
}

/// What a rotation did, per table: (table, rows scanned, rows re-sealed).
pub type Report = Vec<(&'static str, u64, u64)>;

/// Re-seals every value not under the current key, and recomputes blind indexes, table by
/// table in batches; `progress` hears after each batch. Safe beside a running relay: each
/// row is updated only if it still holds what was read, so a concurrent erase or delivery
/// wins, and running it again finishes what an interrupted run left.
pub async fn rotate(db: &Db, mut progress: impl FnMut(Progress<'_>)) -> Result<Report, StoreError> {
    let mut report = Vec::new();
    for table in TABLES {
        let total: i64 =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {}", table.name)))
                .fetch_one(&db.pool)
                .await?
                .try_get("n")?;
        let columns: Vec<&str> = table.sealed.iter().map(|(c, _, _)| *c).collect();
        let index_column = if table.name == "threads" { ", shopper_key" } else { "" };
        let select = format!(
            "SELECT {key}, {cols}{index_column} FROM {name} WHERE {key} > $1 ORDER BY {key} LIMIT $2",
            key = table.key,
            cols = columns.join(", "),
            name = table.name
        );
        let (mut after, mut scanned, mut resealed) = (String::new(), 0u64, 0u64);
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                .bind(&after)
                .bind(BATCH)
                .fetch_all(&db.pool)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get(table.key)?;
            for row in &rows {
                scanned += 1;
                if reseal_row(db, table, row).await? {
                    resealed += 1;
                }
            }
            progress(Progress { table: table.name, scanned, total: total.max(0) as u64, resealed });
        }
        report.push((table.name, scanned, resealed));
    }
    reseal_check(db).await?;
    Ok(report)
}

/// The check value under the current key, so the older keys can go.
async fn reseal_check(db: &Db) -> Result<(), StoreError> {
    let stored: Option<String> = sqlx::query("SELECT sealed FROM keyring_check WHERE id = $1")
        .bind(CHECK_ROW)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| r.try_get("sealed"))
        .transpose()?;
    let Some(stored) = stored.filter(|s| !db.vault.is_current_text(s)) else { return Ok(()) };
    let plain = db.vault.open_text(Field::KeyringCheck, CHECK_ROW, &stored)?;
    sqlx::query("UPDATE keyring_check SET sealed = $1 WHERE id = $2 AND sealed = $3")
        .bind(db.vault.seal_text(Field::KeyringCheck, CHECK_ROW, &plain))
        .bind(CHECK_ROW)
        .bind(stored)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Re-seals one row if any of its values is under an older key (or, for threads, its
/// blind index is). Returns whether it changed.
async fn reseal_row(db: &Db, table: &Table, row: &AnyRow) -> Result<bool, StoreError> {
    let row_key: String = row.try_get(table.key)?;
    let mut values = Vec::new();
    for &(column, field, text) in table.sealed {
        values.push((column, field, text, read_sealed(row, column, text)?));
    }
    let blind = if table.name == "threads" {
        let email = values[0].3.as_ref();
        let plain = open(db, Field::ShopperEmail, &row_key, email)?;
        let current = plain
            .map(|p| crate::address::Mailbox::parse(&String::from_utf8_lossy(&p)))
            .transpose()
            .map_err(|_| StoreError::Corrupt(format!("threads.shopper_email of {row_key}")))?
            .map(|m| db.vault.blind_index(&m.normalized()));
        let stored: Option<String> = row.try_get("shopper_key")?;
        (current != stored).then_some(current)
    } else {
        None
    };
    if blind.is_none() && values.iter().all(|(_, _, _, v)| is_current(db, v.as_ref())) {
        return Ok(false);
    }
    // One UPDATE per row, guarded by the first sealed value as read.
    let mut sets = Vec::new();
    let mut query_binds: Vec<Option<Sealed>> = Vec::new();
    for (column, field, text, value) in &values {
        let plain = open(db, *field, &row_key, value.as_ref())?;
        sets.push(format!("{column} = ${}", sets.len() + 1));
        query_binds.push(plain.map(|p| {
            if *text {
                Sealed::Text(db.vault.seal_text(*field, &row_key, &String::from_utf8_lossy(&p)))
            } else {
                Sealed::Bytes(db.vault.seal(*field, &row_key, &p))
            }
        }));
    }
    let mut index_bind = None;
    if let Some(index) = blind {
        sets.push(format!("shopper_key = ${}", sets.len() + 1));
        index_bind = Some(index);
    }
    let (guard_column, _, _, guard_value) = &values[0];
    let n = sets.len();
    let guard = match guard_value {
        Some(_) => format!("{guard_column} = ${}", n + 2),
        None => format!("{guard_column} IS NULL"),
    };
    let sql =
        format!("UPDATE {} SET {} WHERE {} = ${} AND {guard}", table.name, sets.join(", "), table.key, n + 1);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in query_binds {
        query = match value {
            Some(Sealed::Text(t)) => query.bind(t),
            Some(Sealed::Bytes(b)) => query.bind(b),
            None => query.bind(None::<String>),
        };
    }
    if let Some(index) = index_bind {
        query = query.bind(index);
    }
    query = query.bind(row_key);
    query = match guard_value {
        Some(Sealed::Text(t)) => query.bind(t.clone()),
        Some(Sealed::Bytes(b)) => query.bind(b.clone()),
        None => query,
    };
    Ok(query.execute(&db.pool).await?.rows_affected() == 1)
}
