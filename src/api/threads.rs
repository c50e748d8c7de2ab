//! `/v1/threads` and `/v1/shoppers`: issue alias pairs per order, revoke them, erase a
//! shopper. No response ever carries a real address.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::errors::{ApiError, ApiJson};
use crate::address::Mailbox;
use crate::config::Config;
use crate::locale::Locale;
use crate::store::StoreError;
use crate::store::threads::{self, Actor, NewThread, Thread, ThreadStatus};

/// The longest a thread may live, so a typo cannot create an alias for centuries.
const MAX_TTL_DAYS: u32 = 3650;

/// `POST /v1/threads` body; also what `maskrelay thread create` builds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewThreadRequest {
    pub order: String,
    pub store: String,
    pub shopper: ShopperInput,
    pub ttl_days: Option<u32>,
    /// The shopper's language (`en`, `ja`, or a tag such as `ja-JP`); default `relay.locale`.
    #[serde(default)]
    pub locale: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopperInput {
    pub email: String,
    pub name: Option<String>,
}

/// `POST /v1/shoppers/revoke` and `/erase` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopperRequest {
    pub email: String,
}

impl NewThreadRequest {
    pub fn validate(&self, config: &Config) -> Result<NewThread, ApiError> {
        let order = self.order.trim();
        if order.is_empty() || order.len() > 200 || order.chars().any(char::is_control) {
            return Err(ApiError::invalid("order: 1 to 200 characters, no control characters"));
        }
        let shopper = Mailbox::parse(&self.shopper.email)
            .map_err(|_| ApiError::invalid("shopper.email: not an email address"))?;
        if shopper.domain() == config.relay.domain {
            return Err(ApiError::invalid("shopper.email: must not be an address of the relay domain"));
        }
        let name = self.shopper.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.len() > 200) {
            return Err(ApiError::invalid("shopper.name: at most 200 characters"));
        }
        let ttl_days = self.ttl_days.unwrap_or(config.threads.ttl_days);
        if ttl_days == 0 || ttl_days > MAX_TTL_DAYS {
            return Err(ApiError::invalid(format!("ttl_days: 1 to {MAX_TTL_DAYS}")));
        }
        let locale = match self.locale.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            None => config.relay.locale,
            Some(tag) => Locale::from_tag(tag).ok_or_else(|| {
                ApiError::invalid(format!("locale: {tag:?} is not a shipped language (en, ja)"))
            })?,
        };
        Ok(NewThread {
            store: super::stores::parse_id(&self.store)
                .map_err(|_| ApiError::invalid("store: not a store id"))?,
            order: order.to_owned(),
            shopper,
            // Control characters would end up in a From header otherwise.
            shopper_name: name.map(|n| n.chars().filter(|c| !c.is_control()).collect()),
            ttl_days,
            locale,
        })
    }
}

/// A thread as the API shows it: aliases and state, never the real address.
#[derive(Debug, Serialize)]
pub struct ThreadView {
    pub id: String,
    pub order: String,
    pub store: String,
    pub shopper_alias: String,
    pub store_alias: String,
    pub status: ThreadStatus,
    pub created_at: String,
    pub expires_at: String,
    pub revoke_url: String,
    pub locale: Locale,
}

impl ThreadView {
    pub fn new(t: &Thread, config: &Config) -> Self {
        let domain = &config.relay.domain;
        Self {
            id: t.id.clone(),
            order: t.order.clone(),
            store: t.store_id.to_string(),
            shopper_alias: format!("{}@{domain}", t.shopper_alias),
            store_alias: format!("{}@{domain}", t.store_alias),
            status: t.status,
            created_at: crate::time::rfc3339(t.created_at),
            expires_at: crate::time::rfc3339(t.expires_at),
            revoke_url: format!("{}/r/{}", config.public_url(), t.revoke_token),
            locale: t.locale,
        }
    }
}

/// Creates the thread (201) or returns the one that exists for the same store, order and
/// shopper (200).
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewThreadRequest>,
) -> Result<(StatusCode, Json<ThreadView>), ApiError> {
    let new = body.validate(&state.config)?;
    match crate::store::stores::get(&state.db, &new.store).await {
        Err(StoreError::NotFound) => return Err(ApiError::invalid("store: no such store")),
        other => other?,
    };
    let (thread, created) = threads::create(&state.db, &new, Actor::Api).await?;
    if created {
        tracing::info!(thread = %thread.id, store = %thread.store_id, "thread created");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ThreadView::new(&thread, &state.config))))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadView>, ApiError> {
    match threads::get(&state.db, &id).await {
        Ok(t) => Ok(Json(ThreadView::new(&t, &state.config))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("thread")),
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadView>, ApiError> {
    let thread = match threads::revoke(&state.db, &id, Actor::Api).await {
        Err(StoreError::NotFound) => return Err(ApiError::not_found("thread")),
        other => other?,
    };
    Ok(Json(ThreadView::new(&thread, &state.config)))
}

fn shopper(body: &ShopperRequest) -> Result<Mailbox, ApiError> {
    Mailbox::parse(&body.email).map_err(|_| ApiError::invalid("email: not an email address"))
}

pub async fn revoke_shopper(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ShopperRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = threads::revoke_shopper(&state.db, &shopper(&body)?, Actor::Api).await?;
    Ok(Json(serde_json::json!({"revoked": n})))
}

pub async fn erase_shopper(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ShopperRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = threads::erase_shopper(&state.db, &shopper(&body)?, Actor::Api).await?;
    Ok(Json(serde_json::json!({"erased": n})))
}
