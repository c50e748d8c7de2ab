//! The per-direction privacy policy: who the reader of one copy is, what they see as its
//! sender, which addresses must never reach them and what stands in for them. A pure
//! function of the thread, its store and the direction (plus the relay's settings and the
//! message's own sender), so the rule lives in one place and is tested without SMTP.

use super::{NamedAddress, Plan};
use crate::address::{Mailbox, Side};
use crate::store::stores::Store;
use crate::store::threads::Thread;

/// What the plan needs besides the thread, store and direction.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `relay.domain`: the aliases' domain.
    pub relay_domain: &'a str,
    /// `relay.marketplace`, for the shopper's "<name> via <marketplace>".
    pub marketplace: &'a str,
    /// Where the shopper's revoke page is served (no trailing slash).
    pub public_url: &'a str,
}

/// Who wrote this message, as it says: its From and its envelope sender. Neither ever
/// reaches the reader, whichever side wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender<'a> {
    pub header_from: Option<&'a Mailbox>,
    pub envelope: Option<&'a Mailbox>,
}

/// The plan for the copy going to `direction`'s party (`Side::Shopper`: mail to the
/// shopper alias, read by the shopper), and the envelope recipient it goes to. None when
/// the copy cannot go anywhere: the thread's shopper is erased, or (toward the store) the
/// store's contact is not a usable address.
pub fn plan_for(
    thread: &Thread,
    store: &Store,
    direction: Side,
    settings: &Settings<'_>,
    sender: &Sender<'_>,
    message_id: String,
) -> Option<(Plan, Mailbox)> {
    let domain = settings.relay_domain;
    let shopper = thread.shopper.clone()?;
    let shopper_alias = format!("{}@{domain}", thread.shopper_alias);
    let store_alias = format!("{}@{domain}", thread.store_alias);
    let mut hidden: Vec<String> =
        sender.header_from.into_iter().chain(sender.envelope).map(Mailbox::normalized).collect();
    match direction {
        Side::Shopper => {
            hidden.extend(store.contact_mailbox().ok().map(|c| c.normalized()));
            hidden.extend(store.senders.iter().filter(|s| !s.starts_with('@')).map(|s| s.to_lowercase()));
            hidden.dedup();
            let revoke = format!("{}/r/{}", settings.public_url, thread.revoke_token);
            let plan = Plan {
                from: NamedAddress { name: Some(store.name.clone()), address: store_alias.clone() },
                reply_to: store_alias,
                to: NamedAddress { name: thread.shopper_name.clone(), address: shopper.expose() },
                hidden_in_headers: hidden,
                // SPEC: store addresses are hidden in headers (part headers included), not
                // rewritten in the store's own text.
                replace_in_body: Vec::new(),
                message_id,
                // RFC 8058 one-click: the shopper's mail client can revoke the alias.
                extra_headers: vec![
                    ("List-Unsubscribe", format!("<{revoke}>")),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned()),
                ],
            };
            Some((plan, shopper))
        }
        Side::Store => {
            let contact = store.contact_mailbox().ok()?;
            hidden.push(shopper.normalized());
            hidden.dedup();
            let name =
                crate::locale::via(thread.locale, thread.shopper_name.as_deref(), settings.marketplace);
            let mut replace = vec![(shopper.normalized(), shopper_alias.clone())];
            // A shopper writing from another of their addresses: that one is hidden too.
            if let Some(f) = sender.header_from.filter(|f| f.normalized() != shopper.normalized()) {
                replace.push((f.normalized(), shopper_alias.clone()));
            }
            let plan = Plan {
                from: NamedAddress { name: Some(name), address: shopper_alias.clone() },
                reply_to: shopper_alias,
                to: NamedAddress { name: Some(store.name.clone()), address: store.contact.clone() },
                hidden_in_headers: hidden,
                replace_in_body: replace,
                message_id,
                extra_headers: Vec::new(),
            };
            Some((plan, contact))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::StoreId;
    use crate::locale::Locale;
    use crate::store::threads::ThreadStatus;

    fn store() -> Store {
        Store {
            id: StoreId::parse("acme").unwrap(),
            name: "Acme Shop".into(),
            contact: "support@acme.example".into(),
            senders: vec!["Orders@acme.example".into(), "@acme.example".into()],
            created_at: crate::time::Timestamp(0),
        }
    }

    fn thread(shopper: Option<&str>) -> Thread {
        Thread {
            id: "thr_1".into(),
            store_id: StoreId::parse("acme").unwrap(),
            order: "1001".into(),
            shopper: shopper.map(|s| Mailbox::parse(s).unwrap()),
            shopper_name: Some("Jane Doe".into()),
            shopper_alias: "s4k2alias".into(),
            store_alias: "acme.x7alias".into(),
            status: ThreadStatus::Active,
            revoke_token: "tok".into(),
            created_at: 0,
            expires_at: 1,
            locale: Locale::En,
        }
    }

    const SETTINGS: Settings<'static> =
        Settings { relay_domain: "relay.test", marketplace: "Test Market", public_url: "https://relay.test" };

    #[test]
    fn toward_the_store_the_shopper_is_hidden_and_replaced_by_the_alias() {
        let from = Mailbox::parse("Jane.Doe@shopper.example").unwrap();
        let other = Mailbox::parse("jane@work.example").unwrap();
        let t = thread(Some("jane.doe@shopper.example"));
        let (plan, rcpt) = plan_for(
            &t,
            &store(),
            Side::Store,
            &SETTINGS,
            &Sender { header_from: Some(&other), envelope: Some(&from) },
            "m1@relay.test".into(),
        )
        .unwrap();
        assert_eq!(rcpt.expose(), "support@acme.example");
        assert_eq!(plan.from.address, "s4k2alias@relay.test");
        assert_eq!(plan.from.name.as_deref(), Some("Jane Doe via Test Market"));
        assert_eq!(plan.reply_to, "s4k2alias@relay.test");
        assert_eq!(plan.to.address, "support@acme.example");
        for hidden in ["jane.doe@shopper.example", "jane@work.example"] {
            assert!(
                plan.hidden_in_headers.iter().any(|h| h == hidden),
                "{hidden}: {:?}",
                plan.hidden_in_headers
            );
        }
        assert_eq!(
            plan.replace_in_body,
            vec![
                ("jane.doe@shopper.example".to_owned(), "s4k2alias@relay.test".to_owned()),
                ("jane@work.example".to_owned(), "s4k2alias@relay.test".to_owned()),
            ]
        );
        assert!(plan.extra_headers.is_empty());
        assert_eq!(plan.message_id, "m1@relay.test");
    }

    #[test]
    fn toward_the_shopper_the_stores_addresses_are_hidden_in_headers() {
        let from = Mailbox::parse("orders@acme.example").unwrap();
        let t = thread(Some("jane.doe@shopper.example"));
        let (plan, rcpt) = plan_for(
            &t,
            &store(),
            Side::Shopper,
            &SETTINGS,
            &Sender { header_from: Some(&from), envelope: None },
            "m2@relay.test".into(),
        )
        .unwrap();
        assert_eq!(rcpt.expose(), "jane.doe@shopper.example");
        assert_eq!(plan.from.address, "acme.x7alias@relay.test");
        assert_eq!(plan.from.name.as_deref(), Some("Acme Shop"));
        assert_eq!(plan.to.address, "jane.doe@shopper.example");
        assert_eq!(plan.to.name.as_deref(), Some("Jane Doe"));
        let hidden = &plan.hidden_in_headers;
        for h in ["orders@acme.example", "support@acme.example"] {
            assert!(hidden.iter().any(|x| x == h), "{h}: {hidden:?}");
        }
        assert!(!hidden.iter().any(|x| x.starts_with('@')), "a domain pattern is no address: {hidden:?}");
        assert!(plan.replace_in_body.is_empty());
        assert!(
            plan.extra_headers
                .iter()
                .any(|(n, v)| *n == "List-Unsubscribe" && v == "<https://relay.test/r/tok>")
        );
    }

    #[test]
    fn an_erased_thread_or_a_broken_contact_has_no_plan() {
        let erased = thread(None);
        for side in [Side::Shopper, Side::Store] {
            assert!(plan_for(&erased, &store(), side, &SETTINGS, &Sender::default(), "m".into()).is_none());
        }
        let broken = Store { contact: "not an address".into(), ..store() };
        let t = thread(Some("jane.doe@shopper.example"));
        assert!(plan_for(&t, &broken, Side::Store, &SETTINGS, &Sender::default(), "m".into()).is_none());
        // Toward the shopper the contact is only hidden: the mail still goes.
        assert!(plan_for(&t, &broken, Side::Shopper, &SETTINGS, &Sender::default(), "m".into()).is_some());
    }
}
