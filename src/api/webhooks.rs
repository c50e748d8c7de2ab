//! `/v1/webhooks`: where events are POSTed. The signing secret is in the answer to the
//! POST that creates a webhook and nowhere else, ever.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::errors::{ApiError, ApiJson};
use crate::store::StoreError;
use crate::store::audit::Actor;
use crate::store::webhooks::{self, Created, EVENT_TYPES, Webhook};

/// `POST /v1/webhooks` body; also what `maskrelay webhook add` builds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
}

impl NewWebhook {
    /// An http(s) URL without credentials in it, and known event types (deduplicated).
    pub fn validate(&self) -> Result<(String, Vec<String>), ApiError> {
        let url = self.url.trim();
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
        match host {
            Some(h)
                if !h.is_empty()
                    && !h.contains('@')
                    && url.len() <= 2000
                    && !url.chars().any(char::is_control) => {}
            _ => {
                return Err(ApiError::invalid(
                    "url: an http:// or https:// URL with a host, no user:password@",
                ));
            }
        }
        if self.events.is_empty() {
            return Err(ApiError::invalid(format!("events: at least one of {}", EVENT_TYPES.join(", "))));
        }
        let mut events = Vec::new();
        for e in &self.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(ApiError::invalid(format!(
                    "events: unknown type {e:?}; known: {}",
                    EVENT_TYPES.join(", ")
                )));
            }
            if !events.contains(e) {
                events.push(e.clone());
            }
        }
        Ok((url.to_owned(), events))
    }
}

/// 201 with the webhook and its `secret`, shown this once.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let (url, events) = body.validate()?;
    let created = webhooks::create(&state.db, &url, &events, Actor::Api).await?;
    tracing::info!(webhook = %created.webhook.id, "webhook created");
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Webhook>>, ApiError> {
    Ok(Json(webhooks::list(&state.db).await?))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Webhook>, ApiError> {
    match webhooks::get(&state.db, &id).await {
        Ok(w) => Ok(Json(w)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("webhook")),
        Err(e) => Err(e.into()),
    }
}

/// 204; what still waited for it is dropped.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match webhooks::delete(&state.db, &id, Actor::Api).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("webhook")),
        Err(e) => Err(e.into()),
    }
}
