//! One SMTP transaction (MAIL, RCPT…, DATA) and what happens when its data is complete:
//! authorize the From, rewrite one copy per recipient, commit them all to the queue, and
//! only then say 250.

use std::net::IpAddr;
use std::sync::Arc;

use tracing::{info, warn};

use super::Context;
use super::reply::{self, Reply};
use crate::address::{Mailbox, Side, StoreId};
use crate::auth::dmarc::Origin;
use crate::auth::{Decision, DmarcOutcome, Refusal};
use crate::queue::{IdMapping, Outgoing};
use crate::rewrite::plan::{Sender, Settings, plan_for};
use crate::rewrite::{self, IdMap, Plan};
use crate::store::events::{self, EventKind, NewEvent};
use crate::store::message_ids;
use crate::store::stores::Store;
use crate::store::threads::Thread;

/// A recipient accepted at RCPT: an active alias, its thread and store.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub thread: Thread,
    pub side: Side,
    pub store: Store,
}

impl Recipient {
    /// The alias local part the mail was addressed to.
    pub fn alias(&self) -> &str {
        match self.side {
            Side::Shopper => &self.thread.shopper_alias,
            Side::Store => &self.thread.store_alias,
        }
    }
}

/// The envelope so far. `sender` is None for the null reverse-path `<>`.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub sender: Option<Mailbox>,
    pub recipients: Vec<Recipient>,
    /// The store logged in on the submission listener: the login authorizes the message.
    pub login: Option<StoreId>,
    /// VERP bounce addresses among the recipients: the messages they stand for.
    pub bounces: Vec<BounceTarget>,
}

/// A message the relay sent, named by the VERP address a bounce came back to.
#[derive(Debug, Clone)]
pub struct BounceTarget {
    pub queue_id: String,
    pub thread: Thread,
    pub store: Store,
    /// Where the bounced message was going.
    pub direction: Side,
}

impl Transaction {
    pub fn has_recipients(&self) -> bool {
        !self.recipients.is_empty() || !self.bounces.is_empty()
    }
}

/// Records each bounce and writes the notices for the permanent ones. The DSN itself goes
/// no further: it names the real recipient.
async fn bounces(ctx: &Context, tx: &Transaction, raw: &[u8]) -> Vec<Outgoing> {
    if tx.bounces.is_empty() {
        return Vec::new();
    }
    let report = crate::bounce::parse_dsn(raw);
    let mut notices = Vec::new();
    for b in &tx.bounces {
        crate::metrics::bounce_received();
        info!(queue_id = %b.queue_id, thread = %b.thread.id, permanent = report.permanent, "bounce received");
        let event = NewEvent {
            kind: EventKind::Bounce,
            store_id: Some(b.store.id.as_str()),
            thread_id: Some(&b.thread.id),
            alias: None,
            detail: serde_json::json!({"queue_id": b.queue_id, "status": report.status, "permanent": report.permanent, "direction": b.direction}),
        };
        if let Err(e) = events::record(&ctx.db, &event).await {
            warn!(error = %e, "could not record bounce");
        }
        if report.permanent {
            notices.extend(crate::bounce::notice(
                &b.thread,
                &b.store,
                b.direction,
                report.status.as_deref(),
                &ctx.config.relay.domain,
            ));
        }
    }
    notices
}

/// Records an attempt by someone who is not the thread's party.
pub async fn record_refusal(
    ctx: &Context,
    rcpt: &Recipient,
    refusal: Refusal,
    stage: &str,
    sender: Option<&Mailbox>,
) {
    record_refusal_with(ctx, rcpt, refusal, stage, sender, None).await;
}

/// The same, with the sender authentication results when DMARC refused the mail.
async fn record_refusal_with(
    ctx: &Context,
    rcpt: &Recipient,
    refusal: Refusal,
    stage: &str,
    sender: Option<&Mailbox>,
    authentication: Option<&crate::auth::dmarc::AuthReport>,
) {
    crate::metrics::refused_sender(stage, refusal);
    info!(thread = %rcpt.thread.id, store = %rcpt.store.id, stage, "unauthorized sender refused");
    // The outsider's domain says where the leak went; their full address is kept out
    // like every other address. A shopper's own mail that failed authentication is no
    // outsider's: their domain stays out too.
    let shoppers_own = rcpt.side == Side::Store && refusal == Refusal::NotAuthenticated;
    let mut detail = serde_json::json!({
        "stage": stage,
        "reason": refusal,
        "alias_side": rcpt.side,
        "sender_domain": sender.filter(|_| !shoppers_own).map(|s| s.domain().to_owned()),
    });
    if let (Some(report), Some(map)) = (authentication, detail.as_object_mut()) {
        map.insert("authentication".into(), serde_json::to_value(report).unwrap_or_default());
    }
    let event = NewEvent {
        kind: EventKind::UnauthorizedSender,
        store_id: Some(rcpt.store.id.as_str()),
        thread_id: Some(&rcpt.thread.id),
        alias: Some(rcpt.alias()),
        detail,
    };
    if let Err(e) = events::record(&ctx.db, &event).await {
        warn!(error = %e, "could not record refusal event");
    }
}

/// Everything after the end of DATA. Returns the reply to the DATA command.
/// Parsing and rewriting run on tokio's blocking pool (`off_runtime`): a 25 MB message
/// takes long enough to stall every session on the same worker thread otherwise.
pub async fn accept(ctx: &Context, tx: &Transaction, raw: Arc<Vec<u8>>, peer: IpAddr, helo: &str) -> Reply {
    let notices = bounces(ctx, tx, &raw).await;
    if tx.recipients.is_empty() {
        return match ctx.writer.enqueue(&notices, &[]).await {
            Ok(ids) => {
                ctx.backpressure.added(ids.len());
                ctx.wake.notify_one();
                Reply::new(250, "2.0.0 Bounce received")
            }
            Err(e) => {
                warn!(error = %e, "enqueue of notices failed");
                reply::STORAGE_UNAVAILABLE
            }
        };
    }
    let Some(Some(facts)) = parse_here_or_off_runtime(raw.clone(), HeaderFacts::read).await else {
        return reply::UNPARSEABLE;
    };
    let header_from = facts.from;
    let dmarc = match (&tx.login, &ctx.dmarc) {
        // Submitted mail is authorized by the login (checked at RCPT), not by DNS.
        (Some(_), _) => DmarcOutcome::NotChecked,
        (None, Some(v)) => v.verify(&raw, &Origin { ip: peer, helo, mail_from: tx.sender.as_ref() }).await,
        (None, None) => DmarcOutcome::NotChecked,
    };
    let host = ctx.config.smtp_hostname();
    let auth_results = match tx.login {
        Some(_) => format!("{host}; auth=pass (submitted by the store's login)"),
        None => authentication_results(host, &dmarc),
    };

    let mut refused = None;
    for rcpt in tx.recipients.iter().filter(|_| tx.login.is_none()) {
        match ctx.auth.after_data(header_from.as_ref(), rcpt.side, &rcpt.thread, &rcpt.store, &dmarc) {
            Decision::Allow => {}
            Decision::TryLater(reason) => {
                info!(reason, "sender authentication deferred");
                return reply::AUTH_TEMPFAIL;
            }
            Decision::Refuse(r) => {
                // What SPF, DKIM and DMARC said, when the claimed sender is a store: a
                // shopper's domain stays out of events like their address.
                let report = match (&dmarc, rcpt.side) {
                    (DmarcOutcome::Fail(report), Side::Shopper) => Some(report.as_ref()),
                    _ => None,
                };
                record_refusal_with(ctx, rcpt, r, "data", header_from.as_ref(), report).await;
                refused = Some(r);
            }
        }
    }
    // One reply covers all recipients: if any alias refuses this sender, none gets it.
    if let Some(r) = refused {
        return match r {
            Refusal::NoFrom => reply::NO_FROM,
            Refusal::NotAuthenticated => reply::SENDER_NOT_AUTHENTICATED,
            Refusal::EnvelopeSender | Refusal::HeaderFrom => reply::SENDER_NOT_ALLOWED,
        };
    }

    let mut outgoing = notices;
    let mut mappings = Vec::new();
    let own_id = facts.message_id.unwrap_or_else(|| {
        // No Message-ID: give it one, so replies to it still thread.
        format!("{}@{}", crate::address::random_token(24), ctx.config.relay.domain)
    });
    let referenced: Vec<&str> = facts.referenced.iter().map(String::as_str).collect();
    let mut copies = Vec::with_capacity(tx.recipients.len());
    let public_url = ctx.config.public_url();
    let settings = Settings {
        relay_domain: &ctx.config.relay.domain,
        marketplace: &ctx.config.relay.marketplace,
        public_url: &public_url,
    };
    for rcpt in &tx.recipients {
        let known = match message_ids::lookup(&ctx.db, &rcpt.thread.id, &ctx.config.relay.domain, &referenced)
            .await
        {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "message id lookup failed");
                return reply::STORAGE_UNAVAILABLE;
            }
        };
        let ids = std::iter::once(own_id.as_str()).chain(referenced.iter().copied());
        let idmap = IdMap::plan(&rcpt.thread.id, &ctx.config.relay.domain, &known, ids);
        let message_id = idmap.get(&own_id).unwrap_or(own_id.as_str()).to_owned();
        let sender = Sender { header_from: header_from.as_ref(), envelope: tx.sender.as_ref() };
        let Some((mut plan, rcpt_to)) =
            plan_for(&rcpt.thread, &rcpt.store, rcpt.side, &settings, &sender, message_id)
        else {
            return reply::NO_SUCH_ALIAS;
        };
        plan.extra_headers.push(("Authentication-Results", auth_results.clone()));
        copies.push((plan, idmap, rcpt_to));
    }
    let Some(copies) = off_runtime(raw.clone(), move |raw| rewrite_copies(raw, copies)).await else {
        return reply::UNPARSEABLE;
    };
    for (rcpt, (bytes, idmap, rcpt_to)) in tx.recipients.iter().zip(copies) {
        let bytes = match bytes {
            Ok(b) => b,
            Err(rewrite::RewriteError::WouldLeak) => {
                warn!(thread = %rcpt.thread.id, "rewritten message still showed a hidden address; refused");
                return reply::CANNOT_REWRITE;
            }
            Err(rewrite::RewriteError::Unparseable) => return reply::UNPARSEABLE,
            Err(rewrite::RewriteError::AmbiguousFieldName) => return reply::AMBIGUOUS_FIELD_NAME,
            Err(rewrite::RewriteError::Refused(why)) => {
                info!(thread = %rcpt.thread.id, reason = ?why, "MIME gate refused the message");
                return Reply::new(554, format!("5.6.0 {}", why.sentence()));
            }
        };
        mappings.extend(idmap.new_mappings.iter().map(|(relay, original)| IdMapping {
            thread_id: rcpt.thread.id.clone(),
            relay_id: relay.clone(),
            original: original.clone(),
        }));
        outgoing.push(Outgoing {
            thread_id: rcpt.thread.id.clone(),
            direction: rcpt.side,
            rcpt_to,
            message: bytes,
            null_sender: false,
        });
    }
    match ctx.writer.enqueue(&outgoing, &mappings).await {
        Ok(ids) => {
            ctx.backpressure.added(ids.len());
            ctx.wake.notify_one();
            crate::metrics::message_accepted();
            info!(queue_ids = ?ids, recipients = ids.len(), bytes = raw.len(), "message queued");
            Reply::new(250, format!("2.0.0 Message queued as {}", ids.join(",")))
        }
        Err(e) => {
            warn!(error = %e, "enqueue failed");
            reply::STORAGE_UNAVAILABLE
        }
    }
}

/// What the decisions after DATA need from the message's header block.
struct HeaderFacts {
    from: Option<Mailbox>,
    message_id: Option<String>,
    /// In-Reply-To and References.
    referenced: Vec<String>,
}

impl HeaderFacts {
    fn read(raw: &[u8]) -> Option<Self> {
        let message = rewrite::parse(raw)?;
        let from = message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address.as_deref())
            .and_then(|a| Mailbox::parse(a).ok());
        Some(Self {
            from,
            message_id: message.message_id().map(str::to_owned),
            referenced: rewrite::referenced_ids(&message).into_iter().map(str::to_owned).collect(),
        })
    }
}

/// One copy to write per recipient: its plan, ids and envelope recipient.
type Copy = (Plan, IdMap, Mailbox);

/// Rewrites every copy from one parse of the message (on the blocking pool).
fn rewrite_copies(
    raw: &[u8],
    copies: Vec<Copy>,
) -> Vec<(Result<Vec<u8>, rewrite::RewriteError>, IdMap, Mailbox)> {
    let message = rewrite::parse(raw);
    copies
        .into_iter()
        .map(|(plan, idmap, rcpt_to)| {
            let bytes = match &message {
                Some(m) => rewrite::rewrite(m, raw, &plan, &idmap),
                None => Err(rewrite::RewriteError::Unparseable),
            };
            (bytes, idmap, rcpt_to)
        })
        .collect()
}

/// Messages up to this size are parsed for `HeaderFacts` on the session's own worker: that
/// takes tens of microseconds, less than the hand-off to the blocking pool and back,
/// which on a busy machine waits for a CPU twice.
const PARSE_INLINE_BYTES: usize = 32 * 1024;

/// `off_runtime`, except that a small message is parsed where the session runs. A panic
/// gives None either way (the message is refused, not lost).
async fn parse_here_or_off_runtime<T: Send + 'static>(
    raw: Arc<Vec<u8>>,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Option<T> {
    if raw.len() > PARSE_INLINE_BYTES {
        return off_runtime(raw, f).await;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&raw))) {
        Ok(t) => Some(t),
        Err(_) => {
            warn!("parsing a message failed");
            None
        }
    }
}

/// Runs `f` over the message on tokio's blocking pool, so the async workers keep serving
/// other sessions. None if it panicked (the message is then refused, not lost: no 250).
async fn off_runtime<T: Send + 'static>(
    raw: Arc<Vec<u8>>,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(move || f(&raw)).await {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "parsing or rewriting a message failed");
            None
        }
    }
}

/// RFC 8601 Authentication-Results for what was verified on the way in. It names no
/// domain or address: either would tell the reader something about the other side.
fn authentication_results(host: &str, dmarc: &DmarcOutcome) -> String {
    match dmarc {
        DmarcOutcome::Pass => format!("{host}; dmarc=pass (sender verified by the relay)"),
        DmarcOutcome::NotChecked => format!("{host}; dmarc=none (auth.mode=envelope: sender not verified)"),
        // Mail that failed is refused before this is written.
        DmarcOutcome::Fail(_) | DmarcOutcome::TempError(_) => format!("{host}; dmarc=fail"),
    }
}
