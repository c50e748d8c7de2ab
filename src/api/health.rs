//! `/healthz` and `/metrics` (Prometheus text).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed (a test process may start several
        // relays): the handle still renders what this recorder sees.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.db.ping().await {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "database unavailable"})))
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok((depth, oldest)) = crate::queue::depth(&state.db).await {
        metrics::gauge!("maskrelay_queue_depth").set(depth as f64);
        metrics::gauge!("maskrelay_queue_oldest_seconds").set(oldest as f64);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus().render())
}
