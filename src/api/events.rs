//! `/v1/events`, `/v1/audit` and `/v1/stores/{id}/leaks`: what the relay refused or noticed,
//! and who changed what.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::errors::{ApiError, ErrorBody};
use super::paging::{ListQuery, PageQuery, Paged, given};
use crate::store::audit::{self, AuditEntry};
use crate::store::events::{self, Event, EventFilter, EventKind, Leaks};

/// The filters of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this kind.
    #[param(value_type = Option<EventKind>)]
    pub kind: Option<String>,
    /// Only events of this store id.
    pub store: Option<String>,
}

/// Recorded events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery, PageQuery),
    responses(
        (status = 200, description = "One page of events", body = Paged<Event>),
        (status = 400, description = "An unknown parameter or one of the wrong type", body = ErrorBody),
        (status = 422, description = "An unknown kind, or a foreign cursor", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    q: ListQuery<EventQuery>,
) -> Result<Json<Paged<Event>>, ApiError> {
    let kind = given(&q.filter.kind)
        .map(|k| {
            EventKind::parse(k).ok_or_else(|| ApiError::invalid(format!("kind: unknown event kind {k:?}")))
        })
        .transpose()?;
    let filter = EventFilter { kind, store: given(&q.filter.store) };
    let rows = events::list(&state.db, &filter, q.page.after_key()?, q.page.fetch()).await?;
    Ok(Json(Paged::new(rows, &q.page, |e| e.id.to_string())))
}

/// The leak signal of one store: how many distinct shopper aliases of that store received
/// mail from outsiders, and when first and last.
#[utoipa::path(get, path = "/v1/stores/{id}/leaks", tag = "events",
    params(("id" = String, Path, description = "Store id")),
    responses(
        (status = 200, description = "The leak signal", body = Leaks),
        (status = 404, description = "No such store", body = ErrorBody),
    ))]
pub async fn leaks(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Leaks>, ApiError> {
    let id = super::stores::parse_id(&id)?;
    match crate::store::stores::get(&state.db, &id).await {
        Err(crate::store::StoreError::NotFound) => return Err(ApiError::not_found("store")),
        other => other?,
    };
    Ok(Json(events::leaks(&state.db, id.as_str()).await?))
}

/// The filters of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this store or thread id.
    pub target: Option<String>,
}

/// Who changed which store or thread, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "events", params(AuditQuery, PageQuery),
    responses(
        (status = 200, description = "One page of audit entries", body = Paged<AuditEntry>),
        (status = 400, description = "An unknown parameter or one of the wrong type", body = ErrorBody),
        (status = 422, description = "A foreign cursor", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    q: ListQuery<AuditQuery>,
) -> Result<Json<Paged<AuditEntry>>, ApiError> {
    let rows = audit::list(&state.db, given(&q.filter.target), q.page.after_key()?, q.page.fetch()).await?;
    Ok(Json(Paged::new(rows, &q.page, |e| e.id.to_string())))
}
