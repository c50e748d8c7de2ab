//! `/v1/stores`: create, read, change and delete stores.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::errors::{ApiError, ApiJson, ErrorBody};
use super::paging::{ListQuery, PageQuery, Paged};
use crate::address::{Mailbox, SenderPattern, StoreId};
use crate::store::audit::Actor;
use crate::store::credentials::NewCredential;
use crate::store::stores::{self, Store, StoreFields};

/// `POST /v1/stores` body; also what `maskrelay store add` builds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStore {
    /// Slug, `[a-z0-9-]{1,40}`; store aliases start with it.
    pub id: String,
    pub name: String,
    /// The real address mail to the store goes to; not an address of the relay domain.
    pub contact: String,
    /// Approved From addresses (`orders@acme.example`) or domains (`@acme.example`);
    /// none inside the relay domain.
    #[serde(default)]
    pub senders: Vec<String>,
}

/// `PATCH /v1/stores/{id}` body: the fields given change, the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorePatch {
    pub name: Option<String>,
    pub contact: Option<String>,
    pub senders: Option<Vec<String>>,
}

/// `GET /v1/stores` takes no filter besides paging.
#[derive(Debug, Deserialize, IntoParams)]
pub struct NoFilter {}

/// What `DELETE /v1/stores/{id}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
    /// Active or paused threads of the store, revoked with it.
    pub threads_revoked: u64,
}

pub fn parse_id(id: &str) -> Result<StoreId, ApiError> {
    StoreId::parse(id).map_err(|e| ApiError::invalid(format!("id: {e}")))
}

fn parse_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name: 1 to 200 characters, no control characters"));
    }
    Ok(name.to_owned())
}

/// Whether `domain` is the relay domain or one under it: mail there comes back to the relay.
fn in_relay_domain(domain: &str, relay_domain: &str) -> bool {
    let relay = relay_domain.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    domain == relay || domain.ends_with(&format!(".{relay}"))
}

/// A store's contact must be a real mailbox outside the relay domain: an alias there would
/// route the store's mail back into the relay, and mail from one thread would reach
/// another's shopper (issue 9, item 4).
fn parse_contact(contact: &str, relay_domain: &str) -> Result<Mailbox, ApiError> {
    let mailbox = Mailbox::parse(contact).map_err(|_| ApiError::invalid("contact: not an email address"))?;
    if in_relay_domain(mailbox.domain(), relay_domain) {
        return Err(ApiError::invalid(format!(
            "contact: {contact:?} is an address of the relay domain {relay_domain}; give the store's own mailbox"
        )));
    }
    Ok(mailbox)
}

/// Approved senders are the store's own addresses: one inside the relay domain would let
/// the relay's aliases (anyone who holds one) write to the store's shoppers as the store.
fn parse_senders(senders: &[String], relay_domain: &str) -> Result<Vec<SenderPattern>, ApiError> {
    senders
        .iter()
        .map(|s| {
            let pattern = SenderPattern::parse(s).map_err(|_| {
                ApiError::invalid(format!("senders: {s:?} is neither an address nor @domain"))
            })?;
            let domain = match &pattern {
                SenderPattern::Domain(d) => d.as_str(),
                SenderPattern::Address(a) => a.rsplit_once('@').map_or("", |(_, d)| d),
            };
            if in_relay_domain(domain, relay_domain) {
                return Err(ApiError::invalid(format!(
                    "senders: {s:?} is inside the relay domain {relay_domain}; list the store's own addresses"
                )));
            }
            Ok(pattern)
        })
        .collect()
}

impl NewStore {
    /// Validated fields, or an error naming the field.
    pub fn validate(&self, relay_domain: &str) -> Result<(StoreId, StoreFields), ApiError> {
        Ok((
            parse_id(&self.id)?,
            StoreFields {
                name: parse_name(&self.name)?,
                contact: parse_contact(&self.contact, relay_domain)?,
                senders: parse_senders(&self.senders, relay_domain)?,
            },
        ))
    }
}

/// The 404 of an unknown store, instead of the generic "resource not found".
fn found<T>(result: Result<T, crate::store::StoreError>) -> Result<T, ApiError> {
    match result {
        Err(crate::store::StoreError::NotFound) => Err(ApiError::not_found("store")),
        other => Ok(other?),
    }
}

#[utoipa::path(post, path = "/v1/stores", tag = "stores", request_body = NewStore,
    responses(
        (status = 201, description = "The store", body = Store),
        (status = 409, description = "The id is taken (also by a deleted store)", body = ErrorBody),
        (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewStore>,
) -> Result<(StatusCode, Json<Store>), ApiError> {
    let (id, fields) = body.validate(&state.config.relay.domain)?;
    let store = stores::create(&state.db, &id, &fields, Actor::Api).await?;
    tracing::info!(store = %store.id, "store created");
    Ok((StatusCode::CREATED, Json(store)))
}

/// Live stores by id.
#[utoipa::path(get, path = "/v1/stores", tag = "stores", params(PageQuery),
    responses(
        (status = 200, description = "One page of stores", body = Paged<Store>),
        (status = 400, description = "An unknown parameter or one of the wrong type", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    q: ListQuery<NoFilter>,
) -> Result<Json<Paged<Store>>, ApiError> {
    let rows = stores::list(&state.db, q.page.after.as_deref(), q.page.fetch()).await?;
    Ok(Json(Paged::new(rows, &q.page, |s| s.id.to_string())))
}

#[utoipa::path(get, path = "/v1/stores/{id}", tag = "stores",
    params(("id" = String, Path, description = "Store id")),
    responses(
        (status = 200, description = "The store", body = Store),
        (status = 404, description = "No such store", body = ErrorBody),
    ))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Store>, ApiError> {
    let id = parse_id(&id)?;
    found(stores::get(&state.db, &id).await).map(Json)
}

#[utoipa::path(patch, path = "/v1/stores/{id}", tag = "stores", request_body = StorePatch,
    params(("id" = String, Path, description = "Store id")),
    responses(
        (status = 200, description = "The store as changed", body = Store),
        (status = 404, description = "No such store", body = ErrorBody),
        (status = 422, description = "A field is invalid; the message names it", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<StorePatch>,
) -> Result<Json<Store>, ApiError> {
    let id = parse_id(&id)?;
    let relay = &state.config.relay.domain;
    let name = patch.name.as_deref().map(parse_name).transpose()?;
    let contact = patch.contact.as_deref().map(|c| parse_contact(c, relay)).transpose()?;
    let senders = patch.senders.as_deref().map(|s| parse_senders(s, relay)).transpose()?;
    found(
        stores::update(&state.db, &id, name.as_deref(), contact.as_ref(), senders.as_deref(), Actor::Api)
            .await,
    )
    .map(Json)
}

/// Deletes the store: its threads are revoked, its id stays reserved.
#[utoipa::path(delete, path = "/v1/stores/{id}", tag = "stores",
    params(("id" = String, Path, description = "Store id")),
    responses(
        (status = 200, description = "What was deleted", body = Deleted),
        (status = 404, description = "No such store", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let id = parse_id(&id)?;
    let threads_revoked = found(stores::delete(&state.db, &id, Actor::Api).await)?;
    Ok(Json(Deleted { deleted: id.to_string(), threads_revoked }))
}

/// `POST /v1/stores/{id}/credentials`: a new submission login for the store (replacing
/// any earlier one). The password is in this answer and nowhere else.
#[utoipa::path(post, path = "/v1/stores/{id}/credentials", tag = "stores",
    params(("id" = String, Path, description = "Store id")),
    responses(
        (status = 201, description = "The login; the password is shown this once", body = NewCredential),
        (status = 404, description = "No such store", body = ErrorBody),
    ))]
pub async fn credentials(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NewCredential>), ApiError> {
    let id = parse_id(&id)?;
    let credential = found(crate::store::credentials::create(&state.db, &id, Actor::Api).await)?;
    tracing::info!(store = %id, "submission credentials issued");
    Ok((StatusCode::CREATED, Json(credential)))
}
