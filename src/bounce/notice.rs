//! The relay's own short notice to the sender of a message that could not be delivered.
//! It goes out with the null sender, so it never bounces back.

use crate::address::Side;
use crate::queue::Outgoing;
use crate::rewrite::NamedAddress;
use crate::rewrite::headers::{mailbox, push};
use crate::store::stores::Store;
use crate::store::threads::Thread;

/// The notice to the sender of a message that could not be delivered. It names the
/// recipient only by the alias the sender knows, and the reason only by its status code.
pub fn notice(
    thread: &Thread,
    store: &Store,
    direction: Side,
    status: Option<&str>,
    relay_domain: &str,
) -> Option<Outgoing> {
    // `direction` is where the failed message was going; the notice goes the other way.
    let (rcpt, reader, unreachable_alias) = match direction {
        Side::Shopper => (
            store.contact_mailbox().ok()?,
            NamedAddress { name: Some(store.name.clone()), address: store.contact.clone() },
            format!("{}@{relay_domain}", thread.shopper_alias),
        ),
        Side::Store => {
            let shopper = thread.shopper.clone()?;
            let address = shopper.expose();
            (
                shopper,
                NamedAddress { name: thread.shopper_name.clone(), address },
                format!("{}@{relay_domain}", thread.store_alias),
            )
        }
    };
    // The thread's language: the shopper's, and the marketplace's for its stores.
    let t = thread.locale.texts();
    let fill = |template: &str, status: &str| {
        crate::locale::fill(
            template,
            &[("order", &thread.order), ("alias", &unreachable_alias), ("status", status)],
        )
    };
    let reason = match status {
        Some(s) => fill(t.bounce_refused, s),
        None => t.bounce_expired.to_owned(),
    };
    let mut message = Vec::with_capacity(1024);
    push(
        &mut message,
        "From",
        &mailbox(&NamedAddress {
            name: Some(t.bounce_from.into()),
            address: format!("mailer-daemon@{relay_domain}"),
        }),
    );
    push(&mut message, "To", &mailbox(&reader));
    push(&mut message, "Subject", &crate::rewrite::headers::encode_text(&fill(t.bounce_subject, "")));
    push(&mut message, "Date", &crate::time::rfc5322(crate::store::now()));
    push(&mut message, "Message-ID", &format!("<{}@{relay_domain}>", crate::address::random_token(24)));
    // RFC 3834 5: an automatic message; autoresponders must not answer it.
    push(&mut message, "Auto-Submitted", "auto-replied");
    push(&mut message, "MIME-Version", "1.0");
    push(&mut message, "Content-Type", "text/plain; charset=utf-8");
    push(&mut message, "Content-Transfer-Encoding", "quoted-printable");
    message.extend_from_slice(b"\r\n");
    let body = format!("{}\r\n{reason}\r\n\r\n{}\r\n", fill(t.bounce_body, ""), t.bounce_footer);
    message.extend_from_slice(&quoted_printable::encode(body.as_bytes()));
    message.extend_from_slice(b"\r\n");
    Some(Outgoing {
        thread_id: thread.id.clone(),
        // The notice travels opposite to the failed message.
        direction: match direction {
            Side::Shopper => Side::Store,
            Side::Store => Side::Shopper,
        },
        rcpt_to: rcpt,
        message,
        null_sender: true,
    })
}
