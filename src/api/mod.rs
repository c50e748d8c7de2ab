//! The HTTP API (operator, bearer token) and the shopper's revoke page.
//!
//! # Adding a route
//!
//! Every route is registered through [`Routes::path`] from a handler annotated with
//! `#[utoipa::path]`, so the router and `GET /v1/openapi.json` are built from the same
//! list and cannot disagree (`tests/openapi.rs` checks both ways). To add one:
//!
//! 1. Annotate the handler:
//!    ```ignore
//!    #[utoipa::path(post, path = "/v1/stores/{id}/incidents/{iid}/notify", tag = "incidents",
//!        params(("id" = String, Path, description = "Store id"), ("iid" = String, Path)),
//!        request_body = NotifyRequest,
//!        responses(
//!            (status = 200, description = "…", body = NotifyResult),
//!            (status = 404, description = "No such incident", body = ErrorBody),
//!        ))]
//!    pub async fn notify(…) -> Result<Json<NotifyResult>, ApiError> { … }
//!    ```
//!    Bodies and answers derive `serde` and `utoipa::ToSchema`; query filters derive
//!    `utoipa::IntoParams` (a list takes `paging::ListQuery<Filter>` and documents
//!    `params(Filter, PageQuery)`); timestamps are `crate::time::Timestamp`; every error
//!    answer is `body = ErrorBody`.
//! 2. Register it in [`operator_routes`] (bearer token; the document marks it so),
//!    [`operations_routes`] (no token, not for the internet: health, metrics) or
//!    [`shopper_routes`] (no token, published: the pages shoppers open), one
//!    `.path(routes!(…))` per URL path listing every handler of that path:
//!    `.path(routes!(get_it, change_it))`.
//!    A path with a bare `.route()` would answer but be missing from the document; the
//!    OpenAPI test fails on it.

pub mod errors;
pub mod events;
pub mod health;
pub mod incidents;
pub mod openapi;
pub mod paging;
pub mod queue;
pub mod revoke_page;
pub mod stores;
pub mod threads;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::config::Config;
use crate::store::Db;
use errors::ApiError;

/// What the handlers share.
pub struct ApiState {
    pub config: Arc<Config>,
    pub db: Db,
    pub token: String,
    /// The last `/healthz` verdict, reused for a few seconds.
    pub health: health::HealthCache,
}

impl ApiState {
    pub fn new(config: Arc<Config>, db: Db, token: String) -> Self {
        Self { config, db, token, health: health::HealthCache::default() }
    }
}

pub type AppState = Arc<ApiState>;

/// Routes and their OpenAPI description, built together (see the module doc).
pub struct Routes(OpenApiRouter<AppState>);

impl Routes {
    fn new() -> Self {
        Self(OpenApiRouter::new())
    }

    /// The handlers of one URL path. `routes!` gives every handler it lists to every
    /// path it lists, so two paths in one call would answer each other's methods: one path
    /// per call, checked here (a mistake fails at start, in every test).
    pub fn path(self, handlers: UtoipaMethodRouter<AppState>) -> Self {
        let paths: Vec<&String> = handlers.1.paths.keys().collect();
        assert_eq!(paths.len(), 1, "one URL path per Routes::path call, got {paths:?}");
        Self(self.0.routes(handlers))
    }

    fn split(self) -> (Router<AppState>, utoipa::openapi::OpenApi) {
        self.0.split_for_parts()
    }
}

/// The operator API: everything under `/v1`, behind the bearer token.
pub fn operator_routes() -> Routes {
    Routes::new()
        .path(routes!(stores::create, stores::list))
        .path(routes!(stores::get, stores::update, stores::delete))
        .path(routes!(events::leaks))
        .path(routes!(stores::credentials))
        .path(routes!(threads::create, threads::list))
        .path(routes!(threads::get))
        .path(routes!(threads::revoke))
        .path(routes!(threads::disable))
        .path(routes!(threads::enable))
        .path(routes!(threads::revoke_shopper))
        .path(routes!(threads::erase_shopper))
        .path(routes!(events::list))
        .path(routes!(events::audit))
        .path(routes!(queue::list))
        .path(routes!(queue::show, queue::delete))
        .path(routes!(queue::hold))
        .path(routes!(queue::release))
        .path(routes!(incidents::list))
        .path(routes!(incidents::notify))
        .path(routes!(incidents::get))
        .path(routes!(webhooks::create, webhooks::list))
        .path(routes!(webhooks::get, webhooks::delete))
        .path(routes!(openapi::document))
}

/// Health and metrics: no token (probes and scrapers have none), but beside the operator
/// API, not on the public listener.
pub fn operations_routes() -> Routes {
    Routes::new().path(routes!(health::healthz)).path(routes!(health::metrics))
}

/// The pages shoppers open from their mail: no token, the revoke token in the path is the
/// credential. The only routes meant to be published to the internet.
pub fn shopper_routes() -> Routes {
    Routes::new().path(routes!(revoke_page::show, revoke_page::confirm))
}

/// The operator routes behind the token, without fallbacks (see `finish`).
fn operator_part(state: &AppState) -> Router<AppState> {
    let (router, _) = operator_routes().split();
    router.route_layer(middleware::from_fn_with_state(state.clone(), require_token))
}

/// Every route of the SPEC on one listener (`api.listen`).
pub fn router(state: AppState) -> Router {
    let merged = operator_part(&state).merge(operations_routes().split().0).merge(shopper_routes().split().0);
    finish(merged, state)
}

/// Only the shopper pages, for a listener of their own (`api.public_listen`): what a
/// reverse proxy may publish while the operator API stays on a private address.
pub fn public_router(state: AppState) -> Router {
    finish(shopper_routes().split().0, state)
}

/// JSON 404 and 405 answers, JSON for every other error, and request metrics. Applied once
/// to a whole router: axum refuses to merge two routers that both have a fallback.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(errors::no_route)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(middleware::from_fn(errors::json_errors))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Records each request's duration by matched route template, never by raw path.
async fn observe(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    let route = route.as_deref().unwrap_or("unmatched");
    crate::metrics::api_request(route, &method, resp.status().as_u16(), started.elapsed());
    resp
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
