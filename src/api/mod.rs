//! The HTTP API (operator, bearer token) and the shopper's revoke page.

pub mod errors;
pub mod events;
pub mod health;
pub mod incidents;
pub mod paging;
pub mod queue;
pub mod revoke_page;
pub mod stores;
pub mod threads;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::config::Config;
use crate::store::Db;
use errors::ApiError;

/// What the handlers share.
pub struct ApiState {
    pub config: Arc<Config>,
    pub db: Db,
    pub token: String,
}

pub type AppState = Arc<ApiState>;

/// Every route of the SPEC on one listener: the operator API and the shopper pages.
pub fn router(state: AppState) -> Router {
    operator_routes(&state)
        .merge(shopper_routes())
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}

/// Only the shopper pages (`/r/…`), for `api.public_listen`: what a reverse proxy may
/// publish to the internet while the operator API stays on a private address.
pub fn public_router(state: AppState) -> Router {
    shopper_routes().fallback(|| async { ApiError::not_found("route") }).with_state(state)
}

/// The operator routes (bearer token), health and metrics.
fn operator_routes(state: &AppState) -> Router<AppState> {
    let operator = Router::new()
        .route("/v1/stores", post(stores::create).get(stores::list))
        .route("/v1/stores/{id}", get(stores::get).patch(stores::update).delete(stores::delete))
        .route("/v1/stores/{id}/leaks", get(events::leaks))
        .route("/v1/stores/{id}/credentials", post(stores::credentials))
        .route("/v1/threads", post(threads::create))
        .route("/v1/threads/{id}", get(threads::get))
        .route("/v1/threads/{id}/revoke", post(threads::revoke))
        .route("/v1/shoppers/revoke", post(threads::revoke_shopper))
        .route("/v1/shoppers/erase", post(threads::erase_shopper))
        .route("/v1/events", get(events::list))
        .route("/v1/audit", get(events::audit))
        .route("/v1/queue", get(queue::list))
        .route("/v1/stores/{id}/incidents", get(incidents::list))
        .route("/v1/stores/{id}/incidents/{iid}/notify", post(incidents::notify))
        .route("/v1/incidents/{iid}", get(incidents::get))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", get(webhooks::get).delete(webhooks::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(operator)
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
}

/// The shopper's pages: no token, the revoke token in the path is the credential.
fn shopper_routes() -> Router<AppState> {
    Router::new().route("/r/{token}", get(revoke_page::show).post(revoke_page::confirm))
}

async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(req).await)
}

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
