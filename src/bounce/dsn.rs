//! Reading the DSNs that come back to a VERP address (RFC 3464), as far as the relay needs:
//! the status and whether the failure is final. The remote DSN itself is never forwarded:
//! it quotes the real recipient address.

use mail_parser::{MessagePart, MimeHeaders};

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
}
