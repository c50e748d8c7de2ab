//! `/v1/stores`: create, read, change and delete stores.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::errors::{ApiError, ApiJson};
use crate::address::{Mailbox, SenderPattern, StoreId};
use crate::store::audit::Actor;
use crate::store::stores::{self, Store, StoreFields};

/// `POST /v1/stores` body; also what `maskrelay store add` builds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStore {
    pub id: String,
    pub name: String,
    pub contact: String,
    #[serde(default)]
    pub senders: Vec<String>,
}

/// `PATCH /v1/stores/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorePatch {
    pub name: Option<String>,
    pub contact: Option<String>,
    pub senders: Option<Vec<String>>,
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

fn parse_contact(contact: &str) -> Result<Mailbox, ApiError> {
    Mailbox::parse(contact).map_err(|_| ApiError::invalid("contact: not an email address"))
}

fn parse_senders(senders: &[String]) -> Result<Vec<SenderPattern>, ApiError> {
    senders
        .iter()
        .map(|s| {
            SenderPattern::parse(s)
                .map_err(|_| ApiError::invalid(format!("senders: {s:?} is neither an address nor @domain")))
        })
        .collect()
}

impl NewStore {
    /// Validated fields, or an error naming the field.
    pub fn validate(&self) -> Result<(StoreId, StoreFields), ApiError> {
        Ok((
            parse_id(&self.id)?,
            StoreFields {
                name: parse_name(&self.name)?,
                contact: parse_contact(&self.contact)?,
                senders: parse_senders(&self.senders)?,
            },
        ))
    }
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewStore>,
) -> Result<(StatusCode, Json<Store>), ApiError> {
    let (id, fields) = body.validate()?;
    let store = stores::create(&state.db, &id, &fields, Actor::Api).await?;
    tracing::info!(store = %store.id, "store created");
    Ok((StatusCode::CREATED, Json(store)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Store>>, ApiError> {
    Ok(Json(stores::list(&state.db).await?))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Store>, ApiError> {
    let id = parse_id(&id)?;
    stores::get(&state.db, &id).await.map(Json).map_err(|_| ApiError::not_found("store"))
}

pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<StorePatch>,
) -> Result<Json<Store>, ApiError> {
    let id = parse_id(&id)?;
    let name = patch.name.as_deref().map(parse_name).transpose()?;
    let contact = patch.contact.as_deref().map(parse_contact).transpose()?;
    let senders = patch.senders.as_deref().map(parse_senders).transpose()?;
    match stores::update(&state.db, &id, name.as_deref(), contact.as_ref(), senders.as_deref(), Actor::Api)
        .await
    {
        Err(crate::store::StoreError::NotFound) => Err(ApiError::not_found("store")),
        other => Ok(Json(other?)),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    match stores::delete(&state.db, &id, Actor::Api).await {
        Err(crate::store::StoreError::NotFound) => Err(ApiError::not_found("store")),
        other => Ok(Json(serde_json::json!({"deleted": id.as_str(), "threads_revoked": other?}))),
    }
}

/// `POST /v1/stores/{id}/credentials`: a new submission login for the store (replacing
/// any earlier one). The password is in this answer and nowhere else.
pub async fn credentials(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<crate::store::credentials::NewCredential>), ApiError> {
    let id = parse_id(&id)?;
    match crate::store::credentials::create(&state.db, &id, Actor::Api).await {
        Err(crate::store::StoreError::NotFound) => Err(ApiError::not_found("store")),
        other => {
            tracing::info!(store = %id, "submission credentials issued");
            Ok((StatusCode::CREATED, Json(other?)))
        }
    }
}
