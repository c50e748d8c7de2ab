//! `/v1/threads` and `/v1/shoppers`: issue alias pairs per order, revoke them, erase a
//! shopper. No response ever carries a real address.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::errors::{ApiError, ApiJson, ErrorBody};
use super::paging::{ListQuery, PageQuery, Paged, given};
use crate::address::Mailbox;
use crate::config::Config;
use crate::locale::Locale;
use crate::store::StoreError;
use crate::store::threads::{self, Actor, NewThread, Thread, ThreadFilter, ThreadKey, ThreadStatus};
use crate::time::Timestamp;

/// The longest a thread may live, so a typo cannot create an alias for centuries.
const MAX_TTL_DAYS: u32 = 3650;

/// `POST /v1/threads` body; also what `maskrelay thread create` builds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewThreadRequest {
    /// The marketplace's order reference, 1 to 200 characters.
    pub order: String,
    /// The store id.
    pub store: String,
    pub shopper: ShopperInput,
    /// Days until the aliases expire (1 to 3650); default `threads.ttl_days`.
    pub ttl_days: Option<u32>,
    /// The shopper's language (`en`, `ja`, or a tag such as `ja-JP`); default `relay.locale`.
    #[serde(default)]
    pub locale: Option<String>,
}

/// The shopper of a new thread. The address is sealed at rest and never shown again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShopperInput {
    pub email: String,
    /// Display name for the "via" From of mail to the store.
    pub name: Option<String>,
}

/// `POST /v1/shoppers/revoke` and `/erase` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShopperRequest {
    pub email: String,
}

/// `{"revoked": n}`: threads of the shopper that were revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// `{"erased": n}`: threads of the shopper whose address and name are gone.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    pub erased: u64,
}

/// The filters of `GET /v1/threads`; also what `maskrelay thread list` takes.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadQuery {
    /// Only threads of this store id.
    pub store: Option<String>,
    /// Only threads of this order reference.
    pub order: Option<String>,
    /// Only threads in this state.
    #[param(value_type = Option<ThreadStatus>)]
    pub status: Option<String>,
    /// Only threads of this shopper address, matched through the blind index (an erased
    /// shopper's threads no longer match).
    pub email: Option<String>,
}

impl ThreadQuery {
    /// The checked filter, or an error naming the parameter.
    pub fn filter(&self) -> Result<ThreadFilter, ApiError> {
        Ok(ThreadFilter {
            store: given(&self.store)
                .map(|s| super::stores::parse_id(s).map_err(|_| ApiError::invalid("store: not a store id")))
                .transpose()?,
            order: given(&self.order).map(str::to_owned),
            status: given(&self.status)
                .map(|s| {
                    ThreadStatus::parse(s).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "status: {s:?} is not one of active, disabled, revoked, expired, erased"
                        ))
                    })
                })
                .transpose()?,
            shopper: given(&self.email)
                .map(|e| Mailbox::parse(e).map_err(|_| ApiError::invalid("email: not an email address")))
                .transpose()?,
        })
    }
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
        // The name goes into the From the store reads: one that shows the address would
        // have every later message refused (554 5.6.0), so it is refused here instead.
        // Checked as stored, without control characters (which could split the address).
        let stored = |n: &str| -> String { n.chars().filter(|c| !c.is_control()).collect() };
        if name.is_some_and(|n| crate::privacy::name_shows_address(&stored(n), &shopper)) {
            return Err(ApiError::invalid(
                "shopper.name: must not contain the shopper's email address (the store would read it)",
            ));
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
            shopper_name: name.map(stored),
            ttl_days,
            locale,
        })
    }
}

/// A thread as the API shows it: aliases and state, never the real address.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadView {
    pub id: String,
    pub order: String,
    pub store: String,
    /// Handed to the store in place of the shopper's address.
    pub shopper_alias: String,
    /// Handed to the shopper as the store's address for this order.
    pub store_alias: String,
    pub status: ThreadStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The shopper's page to switch the aliases off.
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
            created_at: Timestamp(t.created_at),
            expires_at: Timestamp(t.expires_at),
            revoke_url: format!("{}/r/{}", config.public_url(), t.revoke_token),
            locale: t.locale,
        }
    }
}

/// Creates the thread (201) or returns the one that exists for the same store, order and
/// shopper (200).
#[utoipa::path(post, path = "/v1/threads", tag = "threads", request_body = NewThreadRequest,
    responses(
        (status = 201, description = "A new alias pair", body = ThreadView),
        (status = 200, description = "The thread of this store, order and shopper, issued before", body = ThreadView),
        (status = 422, description = "A field is invalid (the message names it), or no such store", body = ErrorBody),
    ))]
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

/// Threads, newest first, filtered by store, order, state and shopper address.
#[utoipa::path(get, path = "/v1/threads", tag = "threads", params(ThreadQuery, PageQuery),
    responses(
        (status = 200, description = "One page of threads", body = Paged<ThreadView>),
        (status = 400, description = "An unknown parameter or one of the wrong type", body = ErrorBody),
        (status = 422, description = "A filter value is invalid (the message names it), or a foreign cursor", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    q: ListQuery<ThreadQuery>,
) -> Result<Json<Paged<ThreadView>>, ApiError> {
    let filter = q.filter.filter()?;
    let after = q.page.after_key::<ThreadKey>()?;
    let rows = threads::list(&state.db, &filter, after.as_ref(), q.page.fetch()).await?;
    let page = Paged::new(rows, &q.page, |t| ThreadKey::of(t).to_string());
    Ok(Json(page.map(|t| ThreadView::new(&t, &state.config))))
}

/// A thread answer, or the 404 of an unknown id.
fn view(state: &AppState, found: Result<Thread, StoreError>) -> Result<Json<ThreadView>, ApiError> {
    match found {
        Ok(t) => Ok(Json(ThreadView::new(&t, &state.config))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("thread")),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v1/threads/{id}", tag = "threads",
    params(("id" = String, Path, description = "Thread id (`thr_…`)")),
    responses(
        (status = 200, description = "The thread, without the real address", body = ThreadView),
        (status = 404, description = "No such thread", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadView>, ApiError> {
    view(&state, threads::get(&state.db, &id).await)
}

/// Ends the thread for good: its aliases refuse mail with `550 5.1.1`.
#[utoipa::path(post, path = "/v1/threads/{id}/revoke", tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    responses(
        (status = 200, description = "The thread, `status: revoked` (an erased thread stays erased)", body = ThreadView),
        (status = 404, description = "No such thread", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadView>, ApiError> {
    view(&state, threads::revoke(&state.db, &id, Actor::Api).await)
}

/// Pauses an active thread: mail is refused with `550 5.1.1`, as after a revoke, until it
/// is enabled again. Disabling a paused thread changes nothing; a revoked, expired or
/// erased one stays as it is (the answer shows its status).
#[utoipa::path(post, path = "/v1/threads/{id}/disable", tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    responses(
        (status = 200, description = "The thread, `status: disabled` if it was active", body = ThreadView),
        (status = 404, description = "No such thread", body = ErrorBody),
    ))]
pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadView>, ApiError> {
    view(&state, threads::disable(&state.db, &id, Actor::Api).await)
}

/// Lifts a pause: the thread takes mail again (if it has not expired meanwhile).
#[utoipa::path(post, path = "/v1/threads/{id}/enable", tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    responses(
        (status = 200, description = "The thread, `status: active` if it was disabled", body = ThreadView),
        (status = 404, description = "No such thread", body = ErrorBody),
    ))]
pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadView>, ApiError> {
    view(&state, threads::enable(&state.db, &id, Actor::Api).await)
}

fn shopper(body: &ShopperRequest) -> Result<Mailbox, ApiError> {
    Mailbox::parse(&body.email).map_err(|_| ApiError::invalid("email: not an email address"))
}

/// Revokes every thread of a shopper (active or paused).
#[utoipa::path(post, path = "/v1/shoppers/revoke", tag = "shoppers", request_body = ShopperRequest,
    responses(
        (status = 200, description = "How many threads were revoked", body = Revoked),
        (status = 422, description = "Not an email address", body = ErrorBody),
    ))]
pub async fn revoke_shopper(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ShopperRequest>,
) -> Result<Json<Revoked>, ApiError> {
    let revoked = threads::revoke_shopper(&state.db, &shopper(&body)?, Actor::Api).await?;
    Ok(Json(Revoked { revoked }))
}

/// Forgets a shopper for good: address and name gone, threads erased.
#[utoipa::path(post, path = "/v1/shoppers/erase", tag = "shoppers", request_body = ShopperRequest,
    responses(
        (status = 200, description = "How many threads were erased", body = Erased),
        (status = 422, description = "Not an email address", body = ErrorBody),
    ))]
pub async fn erase_shopper(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ShopperRequest>,
) -> Result<Json<Erased>, ApiError> {
    let erased = threads::erase_shopper(&state.db, &shopper(&body)?, Actor::Api).await?;
    Ok(Json(Erased { erased }))
}
