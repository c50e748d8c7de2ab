//! Persistence through sqlx's Any driver: one SQL text serves SQLite and PostgreSQL
//! (`$N` placeholders, times as i64 Unix seconds). One module per table.

pub mod audit;
pub mod credentials;
pub mod events;
pub mod incidents;
pub mod leases;
pub mod message_ids;
pub mod rekey;
pub mod stores;
pub mod threads;
pub mod vault;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use vault::{Field, Vault, VaultError};

/// Which database is behind the pool, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the write: callers answer 451 / 503.
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A sealed value cannot be opened: a missing key or a damaged value.
    #[error(transparent)]
    Sealed(#[from] VaultError),
}

/// The connection pool, which backend it talks to, and the keys that seal shopper data.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    pub vault: Arc<Vault>,
}

impl Db {
    /// Connects, runs the migrations of the backend the URL names, and checks that the
    /// keyring opens what the database holds (a wrong key file fails here, not later at
    /// the first delivery).
    pub async fn connect(url: &str, max_connections: u32, vault: Vault) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        if backend == Backend::Sqlite {
            create_private_file(url)?;
        }
        let url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options =
            AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(5));
        let options = match backend {
            Backend::Sqlite => options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL for readers beside the writer; synchronous=FULL so a commit is on
                    // disk before the 250 goes out (NORMAL may lose the last commits on
                    // power loss); busy_timeout so concurrent writers wait, not fail;
                    // secure_delete so a delivered message's body and recipient are
                    // overwritten, not left in free pages of the file.
                    sqlx::raw_sql(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                         PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options,
        };
        let options = match backend {
            // No ping before each acquisition: a SQLite connection is a file handle on a
            // thread of this process, which nothing outside can break while it sits idle,
            // and the ping is one more hand-off to that thread and back on the path of
            // every query (the RCPT lookup's among them). The pool still pings it, and
            // `sqlite_reusable` checks it, when it comes back.
            Backend::Sqlite => options
                .test_before_acquire(false)
                .after_release(|conn, _meta| Box::pin(sqlite_reusable(conn))),
            Backend::Postgres => options,
        };
        let pool = options.connect(&url).await?;
        let db = Self { pool, backend, vault: Arc::new(vault) };
        db.migrate().await?;
        rekey::check(&db).await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Whether a SQLite connection that comes back to the pool may serve the next caller:
/// false when SQLite and sqlx disagree about an open transaction, and the pool closes it
/// (closing rolls back whatever it held and frees the write lock).
///
/// A full disk (SQLITE_FULL) or an I/O error may or may not roll the transaction back in
/// SQLite (<https://sqlite.org/lang_transaction.html>, "Response To Errors Within A
/// Transaction"), and sqlx 0.9 does not check which. When SQLite did, sqlx's own ROLLBACK
/// fails and it still counts the connection as in a transaction, so its next `begin()`
/// is a `SAVEPOINT` and a failure there ends in `ROLLBACK TO SAVEPOINT`, which leaves a
/// real transaction open: the connection then holds the write lock for good (every other
/// writer gets "database is locked" until a restart) and what it "commits" afterwards
/// is only a savepoint release, acknowledged with 250 and lost at the restart.
async fn sqlite_reusable(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    // Runs after the rollback the dropped transaction queued on this connection's worker,
    // so it sees the state the next caller would get. BEGIN fails inside a transaction;
    // a deferred BEGIN and its ROLLBACK touch neither the file nor the locks.
    let open_in_sqlite = sqlx::raw_sql("BEGIN; ROLLBACK").execute(&mut *conn).await.is_err();
    let open_in_sqlx = conn.is_in_transaction();
    if open_in_sqlite || open_in_sqlx {
        tracing::warn!(
            open_in_sqlite,
            open_in_sqlx,
            "SQLite connection left in a failed transaction; closed"
        );
        return Ok(false);
    }
    Ok(true)
}

/// Creates a missing SQLite file readable by its owner only (it holds sealed shopper data
/// and the stores' contacts); SQLite gives its -wal and -shm files the same mode.
fn create_private_file(url: &str) -> Result<(), StoreError> {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') || std::path::Path::new(path).exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(sqlx::Error::Io(e))),
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A JSON text column (event and audit details); unreadable JSON reads as null rather than
/// failing the whole listing.
pub(crate) fn json_column(row: &sqlx::any::AnyRow, name: &str) -> Result<serde_json::Value, StoreError> {
    use sqlx::Row;
    let text: String = row.try_get(name)?;
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}
