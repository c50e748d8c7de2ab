//! Egress: delivery workers lease queued messages and hand them to a `Dispatcher`
//! (a smarthost, or direct MX delivery). Transient failures are retried with backoff;
//! permanent ones and messages too old are given up and recorded.

pub mod client;
pub mod dkim;
pub mod downgrade;
pub mod mx;
pub mod pool;
pub mod settle;
pub mod smarthost;
pub mod tls;
pub mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::Egress;
use crate::privacy::{Identity, redact, redact_reply};
use crate::queue::{self, Leased};
use crate::store::events::{self, EventKind, NewEvent};
use crate::store::{Db, now};

/// An RFC 3463 enhanced status code, e.g. 5.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Status {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self { class, subject, detail }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply of the next hop, as its parser read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The basic code (RFC 5321 4.2), e.g. 550.
    pub code: u16,
    /// The enhanced code (RFC 3463, RFC 2034), when the reply starts with one whose class
    /// agrees with the basic code.
    pub status: Option<Status>,
    /// The text after the codes; the lines of a multi-line reply joined by `\n`.
    pub text: String,
}

impl Reply {
    /// From smtp-proto's parts (`esc` all zero when the reply has no enhanced code).
    pub fn from_parts(code: u16, esc: [u8; 3], text: String) -> Self {
        let status = Status::new(esc[0], esc[1].into(), esc[2].into());
        // RFC 3463 2: the class must agree with the basic code's first digit.
        let status = (esc[0] != 0 && u16::from(esc[0]) == code / 100).then_some(status);
        Self { code, status, text }
    }

    /// The enhanced code, or the one the basic code implies (X.0.0).
    pub fn status_or_default(&self) -> Status {
        self.status.unwrap_or(Status::new((self.code / 100).min(9) as u8, 0, 0))
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = self.status {
            write!(f, " {status}")?;
        }
        for (i, line) in self.text.lines().enumerate() {
            write!(f, "{}{}", if i == 0 { " " } else { " / " }, line.trim())?;
        }
        Ok(())
    }
}

/// Where in the delivery a failure came (RFC 5321 4.5.3.2 times each SMTP stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Finding the next hop (MX and address lookups).
    Resolve,
    Connect,
    TlsHandshake,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Rset,
    MailFrom,
    RcptTo,
    /// The DATA command, up to its 354.
    Data,
    /// Writing the message itself.
    Message,
    /// The reply after the final dot.
    DataEnd,
    Quit,
}

impl Stage {
    /// Stages that concern this message, not the session: a 5xx here is final. A refusal
    /// earlier (greeting, EHLO, STARTTLS, AUTH) says nothing about the message: another MX
    /// host or a later attempt may take it (as Postfix's smtp_skip_5xx_greeting and
    /// smtp_sasl_auth_soft_bounce do).
    fn concerns_the_message(self) -> bool {
        matches!(self, Stage::MailFrom | Stage::RcptTo | Stage::Data | Stage::DataEnd)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "finding the next hop",
            Stage::Connect => "connecting",
            Stage::TlsHandshake => "TLS handshake",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Rset => "RSET",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Message => "sending the message",
            Stage::DataEnd => "end of data",
            Stage::Quit => "QUIT",
        })
    }
}

/// Why a delivery attempt failed. Whether to try again is decided from codes
/// (`is_permanent`), never from the text, which is for operators.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The next hop answered with a refusal (4xx, 5xx, or an unexpected code).
    #[error("{stage}: {reply}")]
    Refused { stage: Stage, reply: Reply },
    /// No answer to work with: DNS, connection, TLS handshake, timeout, a lost
    /// connection, an unreadable reply. Always worth another try.
    #[error("{stage}: {reason}")]
    Unreachable { stage: Stage, reason: String },
    /// Decided here, without (or before) asking the next hop: too big for it, a null MX,
    /// an address it cannot carry. The status's class says transient (4) or final (5).
    #[error("{status} {reason}")]
    Local { status: Status, reason: String },
    /// Every connection this destination may have is in use
    /// (`egress.max_per_destination`): not an attempt, put the message back for a moment.
    #[error("{reason}")]
    Busy { reason: String, retry_after: std::time::Duration },
}

impl DeliveryError {
    pub fn unreachable(stage: Stage, reason: impl Into<String>) -> Self {
        Self::Unreachable { stage, reason: reason.into() }
    }

    pub fn local(status: Status, reason: impl Into<String>) -> Self {
        Self::Local { status, reason: reason.into() }
    }

    /// Whether it will never work: a 5xx to this message, or a final local verdict.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Refused { stage, reply } => reply.code >= 500 && stage.concerns_the_message(),
            Self::Local { status, .. } => status.class == 5,
            Self::Unreachable { .. } | Self::Busy { .. } => false,
        }
    }

    /// The RFC 3463 status for notices and events.
    pub fn status(&self) -> Status {
        match self {
            Self::Refused { reply, .. } => reply.status_or_default(),
            Self::Local { status, .. } => *status,
            // X.4.3 routing server failure, X.4.1 no answer, X.7.5 cryptographic failure,
            // X.4.2 bad connection.
            Self::Unreachable { stage: Stage::Resolve, .. } => Status::new(4, 4, 3),
            Self::Unreachable { stage: Stage::Connect, .. } => Status::new(4, 4, 1),
            Self::Unreachable { stage: Stage::TlsHandshake, .. } => Status::new(4, 7, 5),
            Self::Unreachable { .. } => Status::new(4, 4, 2),
            // X.4.5 mail system congestion.
            Self::Busy { .. } => Status::new(4, 4, 5),
        }
    }

    /// The next hop's basic reply code, when it answered.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Refused { reply, .. } => Some(reply.code),
            _ => None,
        }
    }

    /// The whole message went out and no reply came: the next hop may have it. Another
    /// host must not be tried now (it would likely deliver a second copy).
    pub fn may_have_been_delivered(&self) -> bool {
        matches!(self, Self::Unreachable { stage: Stage::DataEnd, .. })
    }
}

/// The SMTP envelope of one delivery.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt_to: String,
}

/// Boxed future, so a dispatcher can sit behind `Arc<dyn Dispatcher>`.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// Sends one message to its next hop. The message comes unsigned: the dispatcher first
/// fits it to what the next hop supports (8BITMIME, SMTPUTF8), then signs exactly the
/// bytes it sends, so no conversion can break the DKIM signature.
pub trait Dispatcher: Send + Sync {
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
        signer: &'a dkim::Signer,
    ) -> DeliveryFuture<'a>;
}

/// What the workers share.
pub struct Workers {
    pub db: Db,
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Signs every message on its way out (the relay domain's DKIM key).
    pub signer: Arc<dkim::Signer>,
    pub config: Egress,
    /// Woken on every enqueue (`notify_one`: a wake-up given while every worker is busy is
    /// kept for the next one that waits, never lost), so delivery starts at once instead of
    /// at the next poll.
    pub wake: Arc<Notify>,
    /// This relay's node id (`queue.node_id`): its leases carry it.
    pub node: String,
    /// For the notices the workers write.
    pub relay_domain: String,
    /// Group commit: every queue write of the workers (claims, completions, deferrals,
    /// give-ups) goes through the process's one writer task.
    pub writer: crate::queue::writer::Writer,
}

/// How often an idle worker looks at the queue anyway (retries come due, leases expire).
const POLL: Duration = Duration::from_secs(1);

/// What became of the write-back of one attempt.
enum Recorded {
    Written,
    /// The lease was no longer this worker's: nothing was written.
    LeaseLost,
}

impl Workers {
    /// Takes back the leases this node held when it stopped (a crash mid-delivery), then
    /// runs `egress.workers` workers until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        match queue::release_node(&self.db, &self.node).await {
            Ok(0) => {}
            Ok(n) => {
                info!(node = %self.node, messages = n, "took back the messages in flight at the last stop")
            }
            Err(e) => warn!(error = %e, "could not take back this node's leases; they run out by themselves"),
        }
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
        for _ in 0..self.config.workers {
            let me = self.clone();
            let shutdown = shutdown.clone();
            handles.push(tokio::spawn(async move { me.worker(shutdown).await }));
        }
        for h in handles {
            let _ = h.await;
        }
    }

    fn lease_time(&self) -> Duration {
        Duration::from_secs(self.config.lease_secs.max(1))
    }

    async fn worker(&self, mut shutdown: crate::shutdown::Shutdown) {
        loop {
            if shutdown.is_triggered() {
                return;
            }
            // One message at a time, leased just before its attempt: nothing waits under a
            // lease while the messages before it are sent.
            // Through the writer: claims share the batch commits of enqueues and
            // completions instead of each taking SQLite's write lock on its own.
            let msg = match self.writer.claim(&self.node, self.lease_time()).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "queue claim failed");
                    None
                }
            };
            let Some(msg) = msg else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.wait() => return,
                }
                continue;
            };
            // Already in this process's hands (its lease ran out while the database refused
            // writes, or it was delivered and its completion is still being written): not
            // sent again; the lease just taken is handed over to that write (`settle`).
            if !settle::begin(&msg) {
                continue;
            }
            // There may be more: pass the wake-up on to another idle worker.
            self.wake.notify_one();
            // Finish the message in hand even during shutdown: its lease would otherwise
            // hold it back until it expires.
            let id = msg.id.clone();
            self.attempt(msg).await;
            settle::end(&id);
        }
    }

    /// One attempt under a lease that a companion task renews every third of
    /// `lease_secs`. When renewal finds the lease gone (or cannot confirm it before it
    /// runs out) the attempt is dropped and nothing is written back.
    async fn attempt(&self, msg: Leased) {
        let lease = self.lease_time();
        let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
        let renewer = {
            let db = self.db.clone();
            let msg = msg.clone();
            tokio::spawn(async move {
                let every = (lease / 3).max(Duration::from_millis(200));
                let mut valid_until = std::time::Instant::now() + lease;
                loop {
                    tokio::time::sleep(every).await;
                    match queue::renew(&db, &msg, lease).await {
                        Ok(true) => valid_until = std::time::Instant::now() + lease,
                        Ok(false) => break,
                        Err(e) => {
                            warn!(queue_id = %msg.id, error = %e, "lease renewal failed");
                            // Stop before the lease can run out under us and another take it.
                            if std::time::Instant::now() + every >= valid_until {
                                break;
                            }
                        }
                    }
                }
                let _ = lost_tx.send(true);
            })
        };
        let envelope = Envelope { mail_from: msg.mail_from.clone(), rcpt_to: msg.rcpt_to.clone() };
        let started = std::time::Instant::now();
        // Signed at each attempt, not at enqueue: a rotated key takes effect for mail
        // already queued, and nothing unsigned ever leaves. The dispatcher signs, once it
        // knows what the next hop takes (an 8BITMIME downgrade must come before signing).
        let result = tokio::select! {
            r = self.dispatcher.deliver(&envelope, &msg.message, &self.signer) => Some(r),
            _ = lost_rx.wait_for(|lost| *lost) => None,
        };
        renewer.abort();
        let Some(result) = result else {
            warn!(queue_id = %msg.id, "lease lost during the attempt; stopped it, nothing written back");
            return;
        };
        crate::metrics::delivery_attempt(msg.direction, &result, started.elapsed());
        match self.record(&msg, result).await {
            Ok(Recorded::Written) => {}
            Ok(Recorded::LeaseLost) => {
                warn!(queue_id = %msg.id, "lease lost before the outcome was written; nothing written back")
            }
            Err(e) => {
                // The lease runs out and the message is tried again: at worst sent twice,
                // never lost.
                warn!(queue_id = %msg.id, error = %e, "could not record delivery outcome");
            }
        }
    }

    async fn record(
        &self,
        msg: &Leased,
        result: Result<(), DeliveryError>,
    ) -> Result<Recorded, crate::store::StoreError> {
        // Under the newest lease this process holds for it (`settle`: another worker may
        // have claimed it again while the database refused the renewal).
        let msg = &settle::current(msg);
        let written = match result {
            Ok(()) => {
                // Delivered: never sent again by this relay (`settle` writes the completion
                // under the newest lease, and keeps writing it until the database takes it).
                let written = settle::complete(&self.db, &self.writer, msg).await?;
                if written {
                    crate::metrics::delivery(msg.direction, crate::metrics::Outcome::Delivered);
                    info!(queue_id = %msg.id, attempts = msg.attempts + 1, "delivered");
                }
                written
            }
            Err(DeliveryError::Busy { reason, retry_after }) => {
                // Not an attempt at the next hop: back into the queue for a moment, the
                // attempt count unchanged.
                let reason = redact_reply(&reason, &self.identity(msg).await);
                debug!(queue_id = %msg.id, reason = %reason, "destination busy");
                let at = now() + retry_after.as_secs().max(1) as i64;
                self.writer.retry_later(msg, at, &reason, false).await?
            }
            Err(e) if !e.is_permanent() => {
                // The next hop's words can quote the shopper: cut before anything keeps them.
                let e = redact(&e.to_string(), &self.identity(msg).await);
                let max_age = (self.config.max_queue_days * 86_400.0) as i64;
                if now() - msg.created_at >= max_age {
                    self.give_up(msg, &format!("expired in queue: {e}"), None).await?
                } else {
                    let delay = queue::backoff(
                        msg.attempts,
                        Duration::from_secs(self.config.retry_base_secs),
                        Duration::from_secs(self.config.retry_max_secs),
                    );
                    let at = now() + delay.as_secs() as i64;
                    let kept: String = e.chars().take(crate::privacy::redact::MAX_REPLY_CHARS).collect();
                    let written = self.writer.retry_later(msg, at, &kept, true).await?;
                    if written {
                        crate::metrics::delivery(msg.direction, crate::metrics::Outcome::Deferred);
                        info!(queue_id = %msg.id, attempts = msg.attempts + 1,
                              retry_in_secs = delay.as_secs(), "deferred");
                        debug!(queue_id = %msg.id, error = %e, "deferral reason");
                    }
                    written
                }
            }
            Err(e) => {
                let status = e.status().to_string();
                let reason = redact(&e.to_string(), &self.identity(msg).await);
                self.give_up(msg, &reason, Some(&status)).await?
            }
        };
        Ok(if written { Recorded::Written } else { Recorded::LeaseLost })
    }

    /// Whom the text about this delivery must not name: the thread's shopper (address,
    /// local part, name, domain) and the envelope recipient. A thread that cannot be read
    /// leaves only the recipient to cut: the reply is then kept as its status code alone.
    async fn identity(&self, msg: &Leased) -> Identity {
        match crate::store::threads::get(&self.db, &msg.thread_id).await {
            Ok(t) => {
                Identity::shopper(t.shopper.as_ref(), t.shopper_name.as_deref()).with_address(&msg.rcpt_to)
            }
            Err(e) => {
                warn!(queue_id = %msg.id, error = %e, "thread unreadable; the remote reply is not kept");
                Identity::withholding()
            }
        }
    }

    /// `reason` comes redacted (`identity`).
    /// Given up: the message leaves the queue and, in the same transaction, the notice to
    /// its sender is queued; then the event is recorded. With the lease lost, nothing is
    /// written (no notice, no event): false.
    async fn give_up(
        &self,
        msg: &Leased,
        reason: &str,
        status: Option<&str>,
    ) -> Result<bool, crate::store::StoreError> {
        let thread = crate::store::threads::get(&self.db, &msg.thread_id).await.ok();
        // Tell the sender, unless this was itself a notice (null sender): no loops.
        let mut notices = Vec::new();
        if !msg.mail_from.is_empty()
            && let Some(t) = &thread
            && let Ok(store) = crate::store::stores::get_any(&self.db, &t.store_id).await
            && let Some(notice) = crate::bounce::notice(t, &store, msg.direction, status, &self.relay_domain)
        {
            notices.push(notice);
        }
        if !self.writer.give_up(msg, &notices).await? {
            return Ok(false);
        }
        crate::metrics::delivery(msg.direction, crate::metrics::Outcome::Failed);
        warn!(queue_id = %msg.id, "delivery failed for good");
        events::record(
            &self.db,
            &NewEvent {
                kind: EventKind::DeliveryFailed,
                store_id: thread.as_ref().map(|t| t.store_id.as_str()),
                thread_id: Some(&msg.thread_id),
                alias: None,
                // The remote reply, with the shopper and the recipient cut out.
                detail: serde_json::json!({
                    "queue_id": msg.id,
                    "attempts": msg.attempts + 1,
                    "reply": reason.chars().take(crate::privacy::redact::MAX_REPLY_CHARS).collect::<String>(),
                }),
            },
        )
        .await?;
        // Woken after the event: the notice's delivery follows what it reports.
        if !notices.is_empty() {
            self.wake.notify_one();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_code_comes_from_the_parser_not_the_redacted_text() {
        let id = Identity::shopper(
            Some(&crate::address::Mailbox::parse("jane.doe@shopper.example").unwrap()),
            None,
        );
        let r = redact_reply("550 5.1.1 <Jane.Doe@Shopper.EXAMPLE>: Recipient ünknown", &id);
        assert_eq!(r, "550 5.1.1 <<shopper>>: Recipient ünknown");
        let reply = Reply::from_parts(550, [5, 1, 1], r);
        assert_eq!(reply.status, Some(Status::new(5, 1, 1)));
    }
}
