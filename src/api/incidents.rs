//! `/v1/stores/{id}/incidents`, `/v1/incidents/{iid}` and `…/notify`: the leak response.
//! An incident groups outsider attempts on one store's shopper aliases (see
//! `store::incidents`); notify mails every shopper it hit, from the relay, in their
//! language, and answers with counts, never addresses.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::AppState;
use super::errors::{ApiError, ApiJson};
use super::paging::{PageQuery, Paged};
use crate::leak::notify::{self, Localized, NotifyError, Outcome};
use crate::store::StoreError;
use crate::store::audit::Actor;
use crate::store::incidents::{self, Incident};

async fn live_store(state: &AppState, id: &str) -> Result<crate::address::StoreId, ApiError> {
    let id = super::stores::parse_id(id)?;
    match crate::store::stores::get_any(&state.db, &id).await {
        Ok(_) => Ok(id),
        Err(StoreError::NotFound) => Err(ApiError::not_found("store")),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/stores/{id}/incidents?limit=&after=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Paged<Incident>>, ApiError> {
    let store = live_store(&state, &id).await?;
    let page = q.page()?;
    if let Some(after) = &page.after
        && !after.split_once('|').is_some_and(|(at, _)| at.parse::<i64>().is_ok())
    {
        return Err(ApiError::invalid("after: not a cursor of this list"));
    }
    let rows = incidents::list(&state.db, store.as_str(), page.after.as_deref(), page.fetch()).await?;
    Ok(Json(Paged::new(rows, &page, incidents::cursor_key)))
}

/// `GET /v1/incidents/{iid}`.
pub async fn get(State(state): State<AppState>, Path(iid): Path<String>) -> Result<Json<Incident>, ApiError> {
    match incidents::get(&state.db, &iid).await {
        Ok(i) => Ok(Json(i)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("incident")),
        Err(e) => Err(e.into()),
    }
}

/// `POST …/notify` body: what to tell the shoppers. Both may be one text or one per
/// language (`{"en": …, "ja": …}`), and may use `{store}`, `{order}`, `{marketplace}` and
/// `{revoke_url}`, filled per shopper.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    pub subject: Localized,
    pub text: Localized,
}

impl NotifyRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(p) = self.subject.problem("subject", 200).or_else(|| self.text.problem("text", 20_000)) {
            return Err(ApiError::invalid(p));
        }
        Ok(())
    }
}

/// `POST /v1/stores/{id}/incidents/{iid}/notify`: tells the shoppers not told yet;
/// calling it again tells only those the incident hit since.
pub async fn notify(
    State(state): State<AppState>,
    Path((id, iid)): Path<(String, String)>,
    ApiJson(body): ApiJson<NotifyRequest>,
) -> Result<Json<Outcome>, ApiError> {
    let store = live_store(&state, &id).await?;
    body.validate()?;
    match notify::notify(
        &state.db,
        &state.config,
        store.as_str(),
        &iid,
        &body.subject,
        &body.text,
        Actor::Api,
    )
    .await
    {
        Ok(outcome) => Ok(Json(outcome)),
        Err(NotifyError::NotFound) => Err(ApiError::not_found("incident")),
        Err(NotifyError::Store(e)) => Err(e.into()),
    }
}
