//! `/v1/queue`: what waits for delivery, as the operator may see it: ids, threads, attempts
//! and the last remote reply with the recipient cut out; never an address or a body. And
//! the operator's tools on one message, as Postfix's postqueue/postsuper give them: show,
//! delete, hold and release, each recorded in the audit log.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::errors::{ApiError, ErrorBody};
use super::paging::{ListQuery, PageQuery, Paged};
use crate::queue::{self, QueuedInfo};
use crate::store::StoreError;
use crate::store::audit::Actor;

/// `GET /v1/queue` takes no filter besides paging.
#[derive(Debug, Deserialize, IntoParams)]
pub struct QueueFilter {}

/// What `DELETE /v1/queue/{id}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDeleted {
    pub deleted: String,
}

/// The cursor of the queue listing: `created_at:id` of the last message seen.
fn parse_key(key: &str) -> Option<(i64, String)> {
    let (at, id) = key.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

fn found<T>(result: Result<T, StoreError>) -> Result<T, ApiError> {
    match result {
        Err(StoreError::NotFound) => Err(ApiError::not_found("queued message")),
        other => Ok(other?),
    }
}

#[utoipa::path(get, path = "/v1/queue", tag = "queue", params(PageQuery),
    responses(
        (status = 200, description = "Queued messages, oldest first", body = Paged<QueuedInfo>),
        (status = 400, description = "An unknown parameter or one of the wrong type", body = ErrorBody),
        (status = 422, description = "A limit out of range, or a foreign cursor", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    q: ListQuery<QueueFilter>,
) -> Result<Json<Paged<QueuedInfo>>, ApiError> {
    let after = match q.page.after.as_deref() {
        None => None,
        Some(k) => Some(parse_key(k).ok_or_else(|| ApiError::invalid("after: not a cursor of this list"))?),
    };
    let rows = queue::list(&state.db, q.page.fetch(), after).await?;
    Ok(Json(Paged::new(rows, &q.page, queue::list_key)))
}

#[utoipa::path(get, path = "/v1/queue/{id}", tag = "queue",
    params(("id" = String, Path, description = "Queue id (as in `250 2.0.0 Message queued as …`)")),
    responses(
        (status = 200, description = "The queued message, without address or body", body = QueuedInfo),
        (status = 404, description = "Not queued (delivered, given up or deleted)", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedInfo>, ApiError> {
    Ok(Json(found(queue::show(&state.db, &id).await)?))
}

/// Deletes the message and its body without delivering it and without a notice. A
/// delivery attempt under way is stopped when its lease renewal finds the message gone.
#[utoipa::path(delete, path = "/v1/queue/{id}", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 200, description = "Deleted", body = QueueDeleted),
        (status = 404, description = "Not queued", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<QueueDeleted>, ApiError> {
    found(queue::delete(&state.db, &id, Actor::Api).await)?;
    tracing::info!(queue_id = %id, "queued message deleted by the operator");
    Ok(Json(QueueDeleted { deleted: id }))
}

/// Holds the message: no worker takes it until it is released.
#[utoipa::path(post, path = "/v1/queue/{id}/hold", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 200, description = "The message, held", body = QueuedInfo),
        (status = 404, description = "Not queued", body = ErrorBody),
    ))]
pub async fn hold(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedInfo>, ApiError> {
    Ok(Json(found(queue::hold(&state.db, &id, Actor::Api).await)?))
}

/// Releases a held message: it is due at once.
#[utoipa::path(post, path = "/v1/queue/{id}/release", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 200, description = "The message, due now", body = QueuedInfo),
        (status = 404, description = "Not queued", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedInfo>, ApiError> {
    Ok(Json(found(queue::release(&state.db, &id, Actor::Api).await)?))
}
