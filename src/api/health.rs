//! `/healthz` and `/metrics` (Prometheus text).
//!
//! Health means "can serve mail": the database answers, and the privacy keys in this
//! process open what the database holds. A relay whose keys were rotated away by another
//! node (or whose key file was swapped) accepts connections but cannot read a single
//! thread; it must fail its health check so a load balancer or orchestrator takes it out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::errors::{ApiError, ErrorBody};
use crate::store::{Db, StoreError};

/// How long the privacy key check is reused: probes every second from several checkers
/// must not each cost six queries. The database itself is pinged at every probe, so an
/// outage shows at once.
const KEY_CHECK_TTL: Duration = Duration::from_secs(5);

/// The last privacy key verdict and when it was reached.
#[derive(Debug, Default)]
pub struct HealthCache(Mutex<Option<(Instant, Result<(), Unhealthy>)>>);

/// Why the relay cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    Database,
    /// The configured keys do not open a sampled sealed value; the message says which key
    /// id is missing (ids, never data).
    PrivacyKeys(String),
}

impl Unhealthy {
    fn into_error(self) -> ApiError {
        match self {
            Self::Database => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database does not answer",
            ),
            Self::PrivacyKeys(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "privacy_keys_unusable",
                format!("the configured privacy keys cannot open stored data: {why}"),
            ),
        }
    }
}

impl HealthCache {
    /// The database answers now, and the keys opened a sample within `KEY_CHECK_TTL`.
    async fn verdict(&self, db: &Db) -> Result<(), Unhealthy> {
        if !db.ping().await {
            return Err(Unhealthy::Database);
        }
        if let Ok(guard) = self.0.lock()
            && let Some((at, verdict)) = guard.as_ref()
            && at.elapsed() < KEY_CHECK_TTL
        {
            return verdict.clone();
        }
        let verdict = keys_open(db).await;
        // A database error during the sample says nothing about the keys: not cached.
        if verdict != Err(Unhealthy::Database)
            && let Ok(mut guard) = self.0.lock()
        {
            *guard = Some((Instant::now(), verdict.clone()));
        }
        verdict
    }
}

/// A sample of sealed values (both ends of each sealed table's key index, as at start)
/// opens with this process's keys.
async fn keys_open(db: &Db) -> Result<(), Unhealthy> {
    match crate::store::rekey::check(db).await {
        Ok(()) => Ok(()),
        Err(StoreError::Unavailable(_)) => Err(Unhealthy::Database),
        Err(StoreError::Sealed(e)) => Err(Unhealthy::PrivacyKeys(e.to_string())),
        Err(e @ StoreError::Corrupt(_)) => {
            // The message names the row; that stays in the log, off the public endpoint.
            tracing::error!(error = %e, "health check: a sampled sealed value does not open");
            Err(Unhealthy::PrivacyKeys("a sampled value does not open (see the log)".into()))
        }
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            Err(Unhealthy::Database)
        }
    }
}

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Whether this relay can serve: 200, or 503 with the reason.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The database answers and the privacy keys open its data", body = Health),
        (status = 503, description = "`database_unavailable` or `privacy_keys_unusable`", body = ErrorBody),
    ))]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match state.health.verdict(&state.db).await {
        Ok(()) => Ok(Json(Health { status: "ok" })),
        Err(why) => Err(why.into_error()),
    }
}

/// Prometheus text exposition: counters by reason, outcome and direction; latency
/// histograms; `maskrelay_build_info`. See `crate::metrics` for every name.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok((depth, oldest)) = crate::queue::depth(&state.db).await {
        crate::metrics::queue(depth, oldest);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::install().render())
}
