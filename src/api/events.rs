//! `/v1/events` and `/v1/stores/{id}/leaks`: what the relay refused or noticed.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::AppState;
use super::errors::ApiError;
use crate::store::events::{self, Event, EventKind, Leaks};

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    pub kind: Option<String>,
    pub store: Option<String>,
    pub limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<EventQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => Some(
            EventKind::parse(k)
                .ok_or_else(|| ApiError::invalid(format!("kind: unknown event kind {k:?}")))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = q.store.as_deref().filter(|s| !s.is_empty());
    Ok(Json(events::list(&state.db, kind, store, limit).await?))
}

pub async fn leaks(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Leaks>, ApiError> {
    let id = super::stores::parse_id(&id)?;
    crate::store::stores::get(&state.db, &id).await.map_err(|_| ApiError::not_found("store"))?;
    Ok(Json(events::leaks(&state.db, id.as_str()).await?))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub target: Option<String>,
    pub limit: Option<i64>,
}

/// `GET /v1/audit?target=&limit=`: who changed which store or thread, newest first.
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<crate::store::audit::AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let target = q.target.as_deref().filter(|t| !t.is_empty());
    Ok(Json(crate::store::audit::list(&state.db, target, limit).await?))
}
