//! `POST /v1/stores/{id}/incidents/{iid}/notify`: the operator's notice to every shopper
//! whose alias an incident hit, written by the relay in each shopper's language around the
//! operator's words and sent through the normal queue from the null sender. The operator
//! gives a subject and a text and learns how many were told, never to which address.
//!
//! Idempotent per incident: each shopper is claimed (marked notified) before their notice
//! is queued, so a repeated or concurrent call tells only those not told yet (aliases the
//! incident hit since), and a notice that could not be queued is given back to the next
//! call.

use std::collections::HashMap;

use serde::Deserialize;
use tracing::{info, warn};

use crate::address::Side;
use crate::config::Config;
use crate::locale::{self, Locale};
use crate::queue::{self, Outgoing};
use crate::rewrite::NamedAddress;
use crate::rewrite::headers::{encode_text, mailbox, push};
use crate::store::audit::{self, Actor};
use crate::store::events::{self, EventKind, NewEvent};
use crate::store::threads::{self, Thread};
use crate::store::{Db, StoreError, incidents, stores};

/// A subject or text: one for every language, or one per language tag (`{"en": …,
/// "ja": …}`); a shopper whose language is missing gets `relay.locale`'s, else the first.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Localized {
    One(String),
    PerLocale(HashMap<String, String>),
}

impl Localized {
    /// The text for `locale`.
    pub fn get(&self, locale: Locale, fallback: Locale) -> &str {
        match self {
            Self::One(s) => s,
            Self::PerLocale(map) => {
                let find =
                    |l: Locale| map.iter().find(|(k, _)| Locale::from_tag(k) == Some(l)).map(|(_, v)| v);
                find(locale)
                    .or_else(|| find(fallback))
                    .or_else(|| map.iter().min_by_key(|(k, _)| k.as_str()).map(|(_, v)| v))
                    .map(String::as_str)
                    .unwrap_or("")
            }
        }
    }

    /// A problem a person can fix, or None: every text present and short enough, every
    /// tag a shipped language.
    pub fn problem(&self, field: &str, max: usize) -> Option<String> {
        let texts: Vec<(&str, &String)> = match self {
            Self::One(s) => vec![("", s)],
            Self::PerLocale(map) if map.is_empty() => {
                return Some(format!("{field}: give at least one language"));
            }
            Self::PerLocale(map) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        };
        for (tag, text) in texts {
            if !tag.is_empty() && Locale::from_tag(tag).is_none() {
                return Some(format!("{field}: {tag:?} is not a shipped language (en, ja)"));
            }
            if text.trim().is_empty() || text.chars().count() > max {
                return Some(format!("{field}: 1 to {max} characters"));
            }
        }
        None
    }
}

/// What a notify call did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub incident: String,
    /// Shoppers whose notice this call queued.
    pub notified: usize,
    /// Shoppers of the incident told by an earlier call.
    pub already_notified: i64,
    /// Shoppers who cannot be told: erased, their address is gone.
    pub unreachable: usize,
}

/// Why a notify call failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no such incident for this store")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tells the shoppers of `incident` (of `store`) not yet told.
pub async fn notify(
    db: &Db,
    config: &Config,
    store: &str,
    incident: &str,
    subject: &Localized,
    text: &Localized,
    by: Actor,
) -> Result<Outcome, NotifyError> {
    let found = match incidents::get(db, incident).await {
        Ok(i) if i.store == store => i,
        Ok(_) | Err(StoreError::NotFound) => return Err(NotifyError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let claimed = incidents::claim_unnotified(db, incident).await?;
    let store_row =
        stores::get_any(db, &crate::address::StoreId::parse(store).map_err(|_| NotifyError::NotFound)?)
            .await?;
    let mut outgoing = Vec::new();
    let mut unreachable = 0;
    for thread_id in &claimed {
        let thread = match threads::get(db, thread_id).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => {
                unreachable += 1;
                continue;
            }
            Err(e) => {
                incidents::unclaim(db, incident, &claimed).await?;
                return Err(e.into());
            }
        };
        match message(config, &thread, &store_row.name, subject, text) {
            Some(m) => outgoing.push(m),
            None => unreachable += 1,
        }
    }
    if let Err(e) = queue::enqueue(db, &config.relay.domain, &outgoing, &[]).await {
        warn!(incident, error = %e, "could not queue incident notices; the shoppers stay to be told");
        incidents::unclaim(db, incident, &claimed).await?;
        return Err(e.into());
    }
    let outcome = Outcome {
        incident: incident.to_owned(),
        notified: outgoing.len(),
        already_notified: found.shoppers_notified,
        unreachable,
    };
    info!(incident, store, notified = outcome.notified, unreachable, "incident notices queued");
    let detail = serde_json::json!({"incident": incident, "store": store, "notified": outcome.notified, "unreachable": unreachable});
    audit::record(db, by, "incident.notify", incident, detail.clone()).await?;
    events::record(
        db,
        &NewEvent {
            kind: EventKind::IncidentNotified,
            store_id: Some(store),
            thread_id: None,
            alias: None,
            detail,
        },
    )
    .await?;
    Ok(outcome)
}

/// The notice to one shopper, in their language; None when the address is gone.
fn message(
    config: &Config,
    thread: &Thread,
    store_name: &str,
    subject: &Localized,
    text: &Localized,
) -> Option<Outgoing> {
    let shopper = thread.shopper.clone()?;
    let domain = &config.relay.domain;
    let locale = thread.locale;
    let t = locale.texts();
    let marketplace = config.relay.marketplace.as_str();
    let revoke_url = format!("{}/r/{}", config.public_url(), thread.revoke_token);
    let values = [
        ("marketplace", marketplace),
        ("store", store_name),
        ("order", &thread.order),
        ("revoke_url", &revoke_url),
    ];
    let subject = locale::fill(subject.get(locale, config.relay.locale), &values);
    let text = locale::fill(text.get(locale, config.relay.locale), &values);
    let mut m = Vec::with_capacity(2048);
    let from = NamedAddress {
        name: Some(locale::fill(t.notice_from, &values)),
        address: format!("no-reply@{domain}"),
    };
    push(&mut m, "From", &mailbox(&from));
    push(
        &mut m,
        "To",
        &mailbox(&NamedAddress { name: thread.shopper_name.clone(), address: shopper.expose() }),
    );
    push(&mut m, "Subject", &encode_text(&subject));
    push(&mut m, "Date", &crate::time::rfc5322(crate::store::now()));
    push(&mut m, "Message-ID", &format!("<{}@{domain}>", crate::address::random_token(24)));
    // RFC 3834 5: written by the relay, not a person; autoresponders leave it alone.
    push(&mut m, "Auto-Submitted", "auto-generated");
    push(&mut m, "Content-Language", locale.tag());
    push(&mut m, "MIME-Version", "1.0");
    push(&mut m, "Content-Type", "text/plain; charset=utf-8");
    push(&mut m, "Content-Transfer-Encoding", "quoted-printable");
    m.extend_from_slice(b"\r\n");
    let body = format!(
        "{}\r\n\r\n{}\r\n\r\n-- \r\n{}\r\n",
        locale::fill(t.notice_intro, &values),
        text.replace("\r\n", "\n").replace('\n', "\r\n"),
        locale::fill(t.notice_footer, &values)
    );
    m.extend_from_slice(&quoted_printable::encode(body.as_bytes()));
    m.extend_from_slice(b"\r\n");
    Some(Outgoing {
        thread_id: thread.id.clone(),
        direction: Side::Shopper,
        rcpt_to: shopper,
        message: m,
        null_sender: true,
    })
}
