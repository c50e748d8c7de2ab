//! Who may write to an alias. A shopper alias takes mail only from its store's approved
//! senders; a store alias only from the thread's shopper. Every path through the relay
//! asks here, whatever `auth.mode` says about how the sender is authenticated.

pub mod dmarc;

use crate::address::{Mailbox, Side};
use crate::config::AuthMode;
use crate::store::stores::Store;
use crate::store::threads::Thread;

/// The answer for one sender and one alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not this thread's party: 550 5.7.1, and recorded.
    Refuse(Refusal),
    /// Cannot tell now (DNS trouble): 451, the sender tries again.
    TryLater(String),
}

/// Why a sender was refused, for the event record (no address in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The envelope sender is not a party of the thread.
    EnvelopeSender,
    /// The RFC 5322 From is not a party of the thread.
    HeaderFrom,
    /// The message has no usable From.
    NoFrom,
    /// The From is a party but failed DMARC.
    NotAuthenticated,
}

/// Whether `sender` is the party allowed to write to the `side` alias of `thread`.
pub fn is_party(sender: &Mailbox, side: Side, thread: &Thread, store: &Store) -> bool {
    match side {
        Side::Shopper => store.approves(sender),
        Side::Store => thread.shopper.as_ref().is_some_and(|s| s.normalized() == sender.normalized()),
    }
}

/// Sender authorization as configured.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub mode: AuthMode,
}

impl Authorizer {
    /// At RCPT: refuse what the envelope already shows to be wrong. Only in envelope mode,
    /// where the envelope is trusted; with DMARC the RFC 5322 From decides (mailing
    /// services send with their own bounce domains in the envelope). A null sender is
    /// decided after DATA.
    pub fn at_rcpt(
        &self,
        envelope_from: Option<&Mailbox>,
        side: Side,
        thread: &Thread,
        store: &Store,
    ) -> Decision {
        match (self.mode, envelope_from) {
            (AuthMode::Envelope, Some(from)) if !is_party(from, side, thread, store) => {
                Decision::Refuse(Refusal::EnvelopeSender)
            }
            _ => Decision::Allow,
        }
    }

    /// After DATA: the From the reader will see replaced must be the thread's party.
    pub fn after_data(
        &self,
        header_from: Option<&Mailbox>,
        side: Side,
        thread: &Thread,
        store: &Store,
        dmarc: &DmarcOutcome,
    ) -> Decision {
        let Some(from) = header_from else { return Decision::Refuse(Refusal::NoFrom) };
        if !is_party(from, side, thread, store) {
            return Decision::Refuse(Refusal::HeaderFrom);
        }
        match (self.mode, dmarc) {
            (AuthMode::Envelope, _) | (AuthMode::Dmarc, DmarcOutcome::Pass) => Decision::Allow,
            (AuthMode::Dmarc, DmarcOutcome::Fail(_)) => Decision::Refuse(Refusal::NotAuthenticated),
            (AuthMode::Dmarc, DmarcOutcome::TempError(e)) => Decision::TryLater(e.clone()),
            (AuthMode::Dmarc, DmarcOutcome::NotChecked) => {
                Decision::TryLater("sender authentication did not run".into())
            }
        }
    }
}

/// What DMARC verification of the message said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmarcOutcome {
    Pass,
    /// With what SPF, DKIM and DMARC said, for the refusal's event.
    Fail(Box<dmarc::AuthReport>),
    TempError(String),
    NotChecked,
}
