//! The `submission_credentials` table: per-store SMTP AUTH logins, argon2-hashed.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::Row;

use super::{Db, StoreError, now};
use crate::address::StoreId;

/// A new login: the username is the store id, the password is random and shown once.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NewCredential {
    pub username: String,
    pub password: String,
}

/// Creates (or replaces) the store's login and returns the password in clear, once.
/// Hashing is deliberately slow (argon2): it runs on a blocking thread.
pub async fn create(db: &Db, store: &StoreId, by: super::audit::Actor) -> Result<NewCredential, StoreError> {
    super::stores::get(db, store).await?;
    let password = crate::address::random_token(32);
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
        .map_err(StoreError::Corrupt)?
    };
    sqlx::query(
        "INSERT INTO submission_credentials (username, store_id, password_hash, created_at) VALUES ($1, $1, $2, $3) \
         ON CONFLICT (username) DO UPDATE SET password_hash = $2, created_at = $3",
    )
    .bind(store.as_str())
    .bind(&hash)
    .bind(now())
    .execute(&db.pool)
    .await?;
    super::audit::record(db, by, "store.credentials", store.as_str(), serde_json::json!({})).await?;
    Ok(NewCredential { username: store.as_str().to_owned(), password })
}

/// The store a username and password log in as, if they are right.
pub async fn verify(db: &Db, username: &str, password: &str) -> Result<Option<StoreId>, StoreError> {
    let row = sqlx::query(
        "SELECT c.store_id, c.password_hash FROM submission_credentials c \
         JOIN stores s ON s.id = c.store_id WHERE c.username = $1 AND s.deleted_at IS NULL",
    )
    .bind(username)
    .fetch_optional(&db.pool)
    .await?;
    // A missing user costs the same hashing work as a wrong password, so response time
    // does not tell which usernames exist.
    let (store, hash) = match row {
        Some(r) => (Some(r.try_get::<String, _>("store_id")?), r.try_get::<String, _>("password_hash")?),
        None => (None, DUMMY_HASH.to_owned()),
    };
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false);
    Ok(store.filter(|_| ok).and_then(|s| StoreId::parse(&s).ok()))
}

/// An argon2 hash of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0HkiE7iY0d1fYHlZnUEzxmBCk5PwPFhpsrVBt4Q3t3s";
