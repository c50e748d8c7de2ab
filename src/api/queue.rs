//! `/v1/queue`: what waits for delivery, as the operator may see it: ids, threads, attempts
//! and the last remote reply with the recipient cut out; never an address or a body.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::AppState;
use super::errors::ApiError;
use crate::queue::{self, QueuedInfo};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/queue", tag = "queue", params(QueueQuery),
    responses(
        (status = 200, description = "Queued messages, oldest first", body = [QueuedInfo]),
        (status = 400, description = "A parameter of the wrong type", body = super::errors::ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<QueueQuery>,
) -> Result<Json<Vec<QueuedInfo>>, ApiError> {
    Ok(Json(queue::list(&state.db, q.limit.unwrap_or(100).clamp(1, 1000)).await?))
}
