//! Egress: delivery workers lease queued messages and hand them to a `Dispatcher`
//! (a smarthost, or direct MX delivery). Transient failures are retried with backoff;
//! permanent ones and messages too old are given up and recorded.

pub mod bounce;
pub mod dkim;
pub mod mx;
pub mod smarthost;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::Egress;
use crate::queue::{self, Leased};
use crate::store::events::{self, EventKind, NewEvent};
use crate::store::{Db, now};

/// Why a delivery attempt failed, split the way retrying needs it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// A 4xx reply, a connection or DNS failure: try again later.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// A 5xx reply: this will never work.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// The SMTP envelope of one delivery.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt_to: String,
}

/// Boxed future, so a dispatcher can sit behind `Arc<dyn Dispatcher>`.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// Sends one message to its next hop.
pub trait Dispatcher: Send + Sync {
    fn deliver<'a>(&'a self, envelope: &'a Envelope, message: &'a [u8]) -> DeliveryFuture<'a>;
}

/// What the workers share.
pub struct Workers {
    pub db: Db,
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Signs every message on its way out (the relay domain's DKIM key).
    pub signer: Arc<dkim::Signer>,
    pub config: Egress,
    /// Woken on every enqueue, so delivery starts at once instead of at the next poll.
    pub wake: Arc<Notify>,
    pub node: String,
    /// For the notices the workers write.
    pub relay_domain: String,
}

/// How often an idle worker looks at the queue anyway (retries come due, leases expire).
const POLL: Duration = Duration::from_secs(1);

impl Workers {
    /// Runs `egress.workers` workers until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let mut handles = Vec::new();
        let me = self.clone();
        let mut stop = shutdown.clone();
        handles.push(tokio::spawn(async move {
            loop {
                if let Err(e) = queue::prune_sent(&me.db).await {
                    warn!(error = %e, "pruning sent-message records failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = stop.wait() => return,
                }
            }
        }));
        for n in 0..self.config.workers {
            let me = self.clone();
            let shutdown = shutdown.clone();
            handles.push(tokio::spawn(async move { me.worker(n, shutdown).await }));
        }
        for h in handles {
            let _ = h.await;
        }
    }

    async fn worker(&self, n: usize, mut shutdown: crate::shutdown::Shutdown) {
        let name = format!("{}/{n}", self.node);
        let lease = Duration::from_secs(self.config.lease_secs.max(1));
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let batch = match queue::lease(&self.db, &name, 8, lease).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "queue lease failed");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.wait() => return,
                }
                continue;
            }
            for msg in batch {
                // Finish the message in hand even during shutdown: its lease would
                // otherwise hold it back until it expires.
                self.attempt(msg).await;
            }
        }
    }

    async fn attempt(&self, msg: Leased) {
        let envelope = Envelope { mail_from: msg.mail_from.clone(), rcpt_to: msg.rcpt_to.clone() };
        let started = std::time::Instant::now();
        // Signed at each attempt, not at enqueue: a rotated key takes effect for mail
        // already queued, and nothing unsigned ever leaves.
        let result = match self.signer.sign(&msg.message) {
            Ok(signed) => self.dispatcher.deliver(&envelope, &signed).await,
            Err(e) => Err(DeliveryError::Transient(e.to_string())),
        };
        crate::metrics::delivery_attempt(msg.direction, &result, started.elapsed());
        let outcome = match result {
            Ok(()) => {
                crate::metrics::delivery(msg.direction, crate::metrics::Outcome::Delivered);
                info!(queue_id = %msg.id, attempts = msg.attempts + 1, "delivered");
                queue::complete(&self.db, &msg).await
            }
            Err(DeliveryError::Transient(e)) => {
                let max_age = (self.config.max_queue_days * 86_400.0) as i64;
                if now() - msg.created_at >= max_age {
                    self.give_up(&msg, &format!("expired in queue: {e}"), None).await
                } else {
                    let delay = queue::backoff(
                        msg.attempts,
                        Duration::from_secs(self.config.retry_base_secs),
                        Duration::from_secs(self.config.retry_max_secs),
                    );
                    crate::metrics::delivery(msg.direction, crate::metrics::Outcome::Deferred);
                    info!(queue_id = %msg.id, attempts = msg.attempts + 1,
                          retry_in_secs = delay.as_secs(), "deferred");
                    debug!(queue_id = %msg.id, error = %e, "deferral reason");
                    queue::retry_later(
                        &self.db,
                        &msg.id,
                        now() + delay.as_secs() as i64,
                        &redact_reply(&e, &msg.rcpt_to),
                    )
                    .await
                }
            }
            Err(DeliveryError::Permanent(e)) => {
                let status = enhanced_status(&e);
                self.give_up(&msg, &e, status.as_deref()).await
            }
        };
        if let Err(e) = outcome {
            // The lease runs out and the message is tried again: at worst sent twice,
            // never lost.
            warn!(queue_id = %msg.id, error = %e, "could not record delivery outcome");
        }
    }

    async fn give_up(
        &self,
        msg: &Leased,
        reason: &str,
        status: Option<&str>,
    ) -> Result<(), crate::store::StoreError> {
        crate::metrics::delivery(msg.direction, crate::metrics::Outcome::Failed);
        warn!(queue_id = %msg.id, "delivery failed for good");
        let thread = crate::store::threads::get(&self.db, &msg.thread_id).await.ok();
        // Tell the sender, unless this was itself a notice (null sender): no loops.
        if !msg.mail_from.is_empty()
            && let Some(t) = &thread
            && let Ok(store) = crate::store::stores::get_any(&self.db, &t.store_id).await
            && let Some(notice) = bounce::notice(t, &store, msg.direction, status, &self.relay_domain)
        {
            queue::enqueue(&self.db, &self.relay_domain, &[notice], &[]).await?;
            self.wake.notify_waiters();
        }
        events::record(
            &self.db,
            &NewEvent {
                kind: EventKind::DeliveryFailed,
                store_id: thread.as_ref().map(|t| t.store_id.as_str()),
                thread_id: Some(&msg.thread_id),
                alias: None,
                // The remote reply can quote the recipient address: keep only its code.
                detail: serde_json::json!({
                    "queue_id": msg.id,
                    "attempts": msg.attempts + 1,
                    "reply": redact_reply(reason, &msg.rcpt_to),
                }),
            },
        )
        .await?;
        queue::complete(&self.db, msg).await
    }
}

/// A remote reply with the recipient's address cut out, for events, the queue listing and
/// logs: servers often quote it ("550 5.1.1 <jane@…>: unknown user"). ASCII-only case
/// folding keeps byte offsets aligned whatever else the reply contains.
pub fn redact_reply(reply: &str, rcpt: &str) -> String {
    let needle = rcpt.to_ascii_lowercase();
    let mut out = String::with_capacity(reply.len());
    if needle.is_empty() {
        out.push_str(reply);
    } else {
        let folded = reply.to_ascii_lowercase();
        let mut last = 0;
        for (i, _) in folded.match_indices(&needle) {
            out.push_str(&reply[last..i]);
            out.push_str("<recipient>");
            last = i + needle.len();
        }
        out.push_str(&reply[last..]);
    }
    out.chars().take(300).collect()
}

/// The RFC 3463 code in a remote reply ("550 5.1.1 …" → "5.1.1"), or the basic code.
fn enhanced_status(reply: &str) -> Option<String> {
    let words: Vec<&str> =
        reply.split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == ')').collect();
    let enhanced = words.iter().find(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    enhanced.map(|s| s.to_string()).or_else(|| {
        words
            .iter()
            .find(|w| w.len() == 3 && w.starts_with('5') && w.chars().all(|c| c.is_ascii_digit()))
            .map(|s| s.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_lose_the_recipient_in_any_case() {
        let r = redact_reply(
            "550 5.1.1 <Jane.Doe@Shopper.EXAMPLE>: Recipient ünknown",
            "jane.doe@shopper.example",
        );
        assert_eq!(r, "550 5.1.1 <<recipient>>: Recipient ünknown");
        assert_eq!(enhanced_status(&r).as_deref(), Some("5.1.1"));
    }
}
