//! The leak response: evidence kept even when an alias no longer takes mail, and the
//! operator's notice to the shoppers an incident touched.
//!
//! A shopper alias was handed to one store only. Mail to it from an outsider after the
//! thread was revoked, paused or expired is still evidence that store's list got out:
//! refused with `550 5.1.1` like any inactive alias, and recorded like any outsider
//! attempt, so revoking the affected threads does not wipe the trail.

pub mod notify;

use tracing::info;

use crate::address::{Mailbox, Side};
use crate::store::Db;
use crate::store::events::{self, EventKind, NewEvent};
use crate::store::stores::Store;
use crate::store::threads::Thread;

/// Records an attempt on an alias that takes no mail (revoked, paused, expired, erased),
/// when the envelope sender is not the party the alias is for: on a shopper alias anyone
/// but the store's approved senders, on a store alias anyone but the thread's shopper.
/// Best effort: the reply is `550 5.1.1` whatever happens here.
pub async fn record_inactive_attempt(
    db: &Db,
    thread: &Thread,
    side: Side,
    store: &Store,
    sender: Option<&Mailbox>,
) {
    let outsider = match side {
        Side::Shopper => !sender.is_some_and(|s| store.approves(s)),
        // An erased thread no longer knows its shopper: nobody can be told apart.
        Side::Store => match (&thread.shopper, sender) {
            (None, _) => return,
            (Some(shopper), Some(s)) => shopper.normalized() != s.normalized(),
            (Some(_), None) => true,
        },
    };
    if !outsider {
        return;
    }
    metrics::counter!("maskrelay_refused_senders_total").increment(1);
    info!(thread = %thread.id, store = %store.id, status = thread.status.as_str(),
          "outsider wrote to an inactive alias; refused and recorded");
    let alias = match side {
        Side::Shopper => &thread.shopper_alias,
        Side::Store => &thread.store_alias,
    };
    let event = NewEvent {
        kind: EventKind::UnauthorizedSender,
        store_id: Some(store.id.as_str()),
        thread_id: Some(&thread.id),
        alias: Some(alias),
        detail: serde_json::json!({
            "stage": "rcpt",
            "reason": "alias_inactive",
            "alias_status": thread.status.as_str(),
            "alias_side": side,
            "sender_domain": sender.map(|s| s.domain().to_owned()),
        }),
    };
    if let Err(e) = events::record(db, &event).await {
        tracing::warn!(error = %e, "could not record attempt on an inactive alias");
    }
}
