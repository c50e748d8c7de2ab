//! Bounces, both ways: DSNs that come back to a VERP address are read (RFC 3464) and tied
//! to the message and thread; and the relay writes its own short notice to the sender of
//! a message that could not be delivered. The remote DSN is never forwarded: it quotes the
//! real recipient address. Notices go out with the null sender, so they never bounce back.

use mail_parser::{MessagePart, MimeHeaders};

use crate::address::Side;
use crate::queue::Outgoing;
use crate::rewrite::NamedAddress;
use crate::rewrite::headers::{mailbox, push};
use crate::store::stores::Store;
use crate::store::threads::Thread;

/// What a bounce says, as far as the relay needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BounceReport {
    /// RFC 3463 status, e.g. `5.1.1`; None when the bounce is not a readable DSN.
    pub status: Option<String>,
    /// A 5.x.x failure: the message will not be delivered.
    pub permanent: bool,
}

/// Reads the delivery-status part of a DSN (RFC 3464 2.3: per-recipient `Action` and
/// `Status` fields). Anything else that reaches a bounce address is an unreadable bounce.
pub fn parse_dsn(raw: &[u8]) -> BounceReport {
    let Some(message) = crate::rewrite::parse(raw) else {
        return BounceReport { status: None, permanent: false };
    };
    let status_part = message.parts.iter().find(|p| is_delivery_status(p));
    let fields = status_part.map(|p| String::from_utf8_lossy(p.contents()).into_owned()).unwrap_or_default();
    let mut status = None;
    let mut failed = false;
    for line in fields.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "status" if status.is_none() => status = status_code(value),
            "action" => failed |= value.eq_ignore_ascii_case("failed"),
            _ => {}
        }
    }
    let permanent = failed || status.as_deref().is_some_and(|s| s.starts_with('5'));
    BounceReport { status, permanent }
}

/// The RFC 3463 status code a `Status` field starts with: class 2, 4 or 5, then a subject
/// and a detail of one to three digits each (`5.1.1`, `4.4.7 (comment)`). Anything else
/// (`9.0.0`, `..`, `5.1234.1`) is no status: the bounce is read as unreadable rather than
/// reported with a code that means nothing.
fn status_code(value: &str) -> Option<String> {
    let code: String = value.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let parts: Vec<&str> = code.split('.').collect();
    let valid = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()));
    valid.then_some(code)
}

fn is_delivery_status(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("delivery-status") || s.eq_ignore_ascii_case("global-delivery-status")
            })
    })
}

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

/// Whether a recipient local part is a VERP bounce address, and of which queue entry.
pub fn queue_id_of(local: &str) -> Option<&str> {
    let id = local.strip_prefix("bounce+")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dsn() {
        let dsn = b"From: MAILER-DAEMON@mx.example\r\nTo: bounce+abc@relay.test\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; jane@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n";
        assert_eq!(parse_dsn(dsn), BounceReport { status: Some("5.1.1".into()), permanent: true });
        let delayed = String::from_utf8_lossy(dsn)
            .replace("Action: failed", "Action: delayed")
            .replace("5.1.1", "4.4.1");
        assert_eq!(
            parse_dsn(delayed.as_bytes()),
            BounceReport { status: Some("4.4.1".into()), permanent: false }
        );
        assert_eq!(parse_dsn(b"Subject: out of office\r\n\r\nback monday\r\n").status, None);
    }

    /// Found by the dsn fuzz target: `Status: 9.0.0` (a real DSN of the cpython corpus) and
    /// `Status: ..` were reported as status codes.
    #[test]
    fn only_rfc_3463_status_codes_are_read() {
        let dsn = |status: &str| {
            format!(
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n\
                 Action: delayed\r\nStatus: {status}\r\n\r\n--b--\r\n"
            )
        };
        for bad in ["9.0.0", "..", "5..1", "5.1.", "1.1.1", "55.1.1", "5.1234.1", "5.1.1234", "5.1", "x"] {
            assert_eq!(parse_dsn(dsn(bad).as_bytes()).status, None, "{bad:?}");
        }
        for (good, permanent) in
            [("5.1.1", true), ("4.4.7 (timeout)", false), ("2.0.0", false), ("5.123.999", true)]
        {
            let report = parse_dsn(dsn(good).as_bytes());
            let code = good.split(' ').next().unwrap();
            assert_eq!(report, BounceReport { status: Some(code.into()), permanent }, "{good:?}");
        }
        // The first readable Status counts.
        let two = dsn("9.0.0\r\nStatus: 4.2.2");
        assert_eq!(parse_dsn(two.as_bytes()).status.as_deref(), Some("4.2.2"));
    }

    #[test]
    fn verp_addresses() {
        assert_eq!(queue_id_of("bounce+abc123"), Some("abc123"));
        assert_eq!(queue_id_of("bounce+"), None);
        assert_eq!(queue_id_of("bounce+a.b"), None);
        assert_eq!(queue_id_of("acme.xyz"), None);
    }
}
