//! `/v1/queue`: what waits for delivery, as the operator may see it: ids, threads, attempts
//! and the last remote reply with the recipient cut out; never an address or a body.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::AppState;
use super::errors::ApiError;
use crate::queue::{self, QueuedInfo};

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    pub limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<QueueQuery>,
) -> Result<Json<Vec<QueuedInfo>>, ApiError> {
    Ok(Json(queue::list(&state.db, q.limit.unwrap_or(100).clamp(1, 1000)).await?))
}
