//! Webhook delivery: a sender task per relay leases outbox rows, POSTs each as JSON with
//! a `Maskrelay-Signature`, deletes it on a 2xx and retries it with doubling backoff
//! otherwise, giving it up after `webhooks.give_up_hours`. Several relays on one database
//! share the outbox through leases, so no live relay POSTs a row another holds.

pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::Webhooks as Config;
use crate::shutdown::Shutdown;
use crate::store::webhooks::{self, Leased};
use crate::store::{Db, now};

/// How often an idle sender looks at the outbox (retries come due, leases run out).
const POLL: Duration = Duration::from_secs(1);
/// Rows per lease.
const BATCH: i64 = 16;

/// Why the sender could not be built.
#[derive(Debug, thiserror::Error)]
#[error("webhook client: {0}")]
pub struct ClientError(String);

/// The sender of one relay.
pub struct Sender {
    pub db: Db,
    pub config: Config,
    pub holder: String,
    client: reqwest::Client,
    /// Woken when the API writes a row, so a test event goes out at once.
    pub wake: Arc<Notify>,
}

impl Sender {
    pub fn new(db: Db, config: Config, node: &str, wake: Arc<Notify>) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(5)))
            // A webhook answers where it was registered; a redirect elsewhere is a failure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("maskrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self { db, config, holder: format!("{node}/webhooks"), client, wake })
    }

    /// Sends until `shutdown`; then gives back its leases so another relay (or this one
    /// restarted) sends them at once.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let lease_secs = (self.config.timeout_secs as i64) * 2 + 30;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let rows = match webhooks::lease(&self.db, &self.holder, BATCH, lease_secs).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(error = %e, "webhook outbox lease failed");
                    Vec::new()
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.wait() => break,
                }
                continue;
            }
            for row in rows {
                self.attempt(&row).await;
            }
        }
        if let Err(e) = webhooks::release(&self.db, &self.holder).await {
            warn!(error = %e, "could not release webhook leases");
        }
    }

    async fn attempt(&self, row: &Leased) {
        let result = self.post(row).await;
        let outcome = match result {
            Ok(()) => {
                metrics::counter!("maskrelay_webhooks_total", "outcome" => "delivered").increment(1);
                info!(webhook = %row.webhook_id, outbox = %row.id, attempts = row.attempts + 1, "webhook delivered");
                webhooks::delivered(&self.db, row, &self.holder).await.map(|_| ())
            }
            Err(error) => {
                let age = now() - row.created_at;
                let next = if age >= i64::from(self.config.give_up_hours) * 3600 {
                    metrics::counter!("maskrelay_webhooks_total", "outcome" => "given_up").increment(1);
                    warn!(webhook = %row.webhook_id, outbox = %row.id, attempts = row.attempts + 1, error = %error,
                          "webhook event given up");
                    None
                } else {
                    let delay = crate::queue::backoff(
                        row.attempts,
                        Duration::from_secs(self.config.retry_base_secs),
                        Duration::from_secs(self.config.retry_max_secs),
                    );
                    metrics::counter!("maskrelay_webhooks_total", "outcome" => "deferred").increment(1);
                    info!(webhook = %row.webhook_id, outbox = %row.id, attempts = row.attempts + 1,
                          retry_in_secs = delay.as_secs(), error = %error, "webhook deferred");
                    Some(now() + delay.as_secs() as i64)
                };
                webhooks::failed(&self.db, row, &self.holder, &error, next).await
            }
        };
        if let Err(e) = outcome {
            // The lease runs out and the row is tried again: at worst POSTed twice (the
            // body's `id` lets the receiver see that), never lost.
            warn!(outbox = %row.id, error = %e, "could not record webhook outcome");
        }
    }

    /// One POST. Ok on any 2xx; otherwise what went wrong, in words an operator reads in
    /// `GET /v1/webhooks` (status and the first bytes of the answer, or the I/O error).
    async fn post(&self, row: &Leased) -> Result<(), String> {
        let header = signature::header(&row.secret, now(), row.body.as_bytes());
        let answer = self
            .client
            .post(&row.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, header)
            .body(row.body.clone())
            .send()
            .await
            .map_err(|e| format!("request failed: {}", without_url(&e)))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        debug!(outbox = %row.id, status = %status, "webhook refused");
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        Err(format!("HTTP {}: {text}", status.as_u16()))
    }
}

/// reqwest's error text without the URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirected"
    } else {
        "error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind} ({detail})") }
}
