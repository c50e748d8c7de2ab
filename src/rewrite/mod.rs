//! The privacy core, used by both directions: a new header block from an allowlist with
//! every address-bearing header written by the relay, mapped message ids, and text parts
//! rewritten only where a hidden address occurs. Everything else stays byte-for-byte.

pub mod body;
pub mod gate;
pub mod headers;
pub mod ids;
pub mod plan;
pub mod reader;
pub mod text;

use mail_parser::{Message, MessageParser, PartType};

pub use ids::IdMap;

/// Why a message cannot be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("message has no header section")]
    Unparseable,
    /// The rewritten message, read again, still shows a hidden address: it is not sent.
    #[error("a hidden address survived rewriting")]
    WouldLeak,
    /// A header field name with white space or a control character in it, in any part:
    /// mail-parser reads past it (`Content\t-Type` is Content-Type to it), other readers
    /// do not, so a part it takes for an attachment could be shown to a reader as text.
    #[error("a header field name holds white space or a control character")]
    AmbiguousFieldName,
    /// Toward a store: the strict MIME gate refused it (`gate::Refusal::sentence` says why).
    #[error("{0}")]
    Refused(gate::Refusal),
}

/// A mailbox as written in a header: display name and address.
#[derive(Debug, Clone)]
pub struct NamedAddress {
    pub name: Option<String>,
    pub address: String,
}

/// Everything the rewriter needs to know about one delivery; built by the session from
/// the thread, so this module never touches storage.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the reader sees as the sender (an alias).
    pub from: NamedAddress,
    /// Where replies go (the same alias).
    pub reply_to: String,
    /// The reader, as they know themselves.
    pub to: NamedAddress,
    /// Addresses (lowercase) that must not appear in any header of the output.
    pub hidden_in_headers: Vec<String>,
    /// `(real, alias)`: addresses that must not appear in the body either, and what stands
    /// in for them. Empty toward shoppers: the SPEC hides store addresses in headers only.
    pub replace_in_body: Vec<(String, String)>,
    /// The relay's Message-ID for this message (without brackets).
    pub message_id: String,
    /// Headers the relay adds (List-Unsubscribe…), already valid values.
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Plan {
    /// Mail toward a store: the only direction with addresses to replace in the body
    /// (the SPEC hides store addresses in headers only).
    pub fn toward_store(&self) -> bool {
        !self.replace_in_body.is_empty()
    }

    /// The addresses the reader must not see in the header block.
    fn head_needles(&self) -> reader::Needles {
        reader::Needles::new(
            self.hidden_in_headers
                .iter()
                .chain(self.replace_in_body.iter().map(|(real, _)| real))
                .map(String::as_str),
        )
    }
}

/// Parses a message the way the rest of the relay does.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// The rewritten message: new header block, then the body with every hidden address
/// replaced. Read back before it is handed on: if a hidden address still shows, the
/// message is refused rather than sent.
pub fn rewrite(message: &Message<'_>, raw: &[u8], plan: &Plan, ids: &IdMap) -> Result<Vec<u8>, RewriteError> {
    message.parts.first().ok_or(RewriteError::Unparseable)?;
    if has_ambiguous_field_name(message, 0) {
        return Err(RewriteError::AmbiguousFieldName);
    }
    if plan.toward_store() {
        gate::check(message).map_err(RewriteError::Refused)?;
    }
    let out = write(message, raw, plan, ids);
    verify(&out, plan)?;
    Ok(out)
}

/// The rewritten message, not yet read back. Toward a store every hidden address is
/// replaced wherever the rewriter reads (in both IDNA forms of its domain); toward a
/// shopper the store's addresses are replaced in the header fields of every part too.
fn write(message: &Message<'_>, raw: &[u8], plan: &Plan, ids: &IdMap) -> Vec<u8> {
    let body = if plan.toward_store() {
        body::rewrite(message, &with_idna_forms(&plan.replace_in_body))
    } else {
        let hidden: Vec<(String, String)> =
            plan.hidden_in_headers.iter().map(|h| (h.to_lowercase(), plan.from.address.clone())).collect();
        body::rewrite_part_headers(message, &with_idna_forms(&hidden))
    };
    let mut out = Vec::with_capacity(raw.len() + 512);
    headers::write(&mut out, message, plan, ids, body.content_headers.as_ref());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body.bytes);
    out
}

/// Each `(real, alias)` also with the real address's domain in its other IDNA form
/// (A-label for U-label and back): a reader's mail program shows and follows both.
fn with_idna_forms(replace: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = replace.to_vec();
    for (real, alias) in replace {
        let Some((local, domain)) = real.rsplit_once('@') else { continue };
        let ascii = idna::domain_to_ascii(domain).map(|d| d.to_lowercase()).ok();
        let unicode = Some(idna::domain_to_unicode(domain).0.to_lowercase());
        for d in [ascii, unicode].into_iter().flatten() {
            let other = format!("{local}@{d}");
            if !out.iter().any(|(r, _)| *r == other) {
                out.push((other, alias.clone()));
            }
        }
    }
    out
}

/// The rewritten message read back with the reader-side view (`reader`), which shares
/// nothing with the rewriter's matcher: no hidden address in the root header block, and
/// toward a store none of the shopper's anywhere a reader looks (every header field, text
/// as shown, HTML as rendered, reports, nested messages at any depth); toward a shopper
/// none of the store's in the header fields of any part. Attachments that are not text are
/// passed as they are and not looked into.
pub fn verify(out: &[u8], plan: &Plan) -> Result<(), RewriteError> {
    if parse(out).is_none() {
        return Err(RewriteError::WouldLeak);
    }
    let head = plan.head_needles();
    if reader::find_in_head(out, &head).is_some() {
        return Err(RewriteError::WouldLeak);
    }
    let found = if plan.toward_store() {
        let body = reader::Needles::new(plan.replace_in_body.iter().map(|(real, _)| real.as_str()));
        reader::find(out, &body, reader::Reach::Everything)
    } else {
        reader::find(out, &head, reader::Reach::Headers)
    };
    match found {
        Some(_) => Err(RewriteError::WouldLeak),
        None => Ok(()),
    }
}

/// The read-back as it was before the reader view: the rewriter's own matcher run again.
/// Not used by the relay; kept so a test can show what the reader view catches that the
/// matcher lets through (the mutation check in tests/hostile.rs).
#[doc(hidden)]
pub fn verify_by_matcher(out: &[u8], plan: &Plan) -> Result<(), RewriteError> {
    let message = parse(out).ok_or(RewriteError::WouldLeak)?;
    let root = &message.parts[0];
    let hidden: Vec<(String, String)> =
        plan.hidden_in_headers.iter().map(|h| (h.to_lowercase(), String::new())).collect();
    let head = &out[..(root.offset_body as usize).min(out.len())];
    let shows =
        |bytes: &[u8], replace: &[(String, String)]| text::contains(bytes, replace, text::Reading::default());
    if shows(head, &hidden) || root.headers.iter().any(|h| headers::value_shows(&h.value, &hidden)) {
        return Err(RewriteError::WouldLeak);
    }
    if !plan.replace_in_body.is_empty() && shows_below(&message, 0, &plan.replace_in_body, 0) {
        return Err(RewriteError::WouldLeak);
    }
    Ok(())
}

/// `rewrite` without the gate and the read-back, for the mutation check only.
#[doc(hidden)]
pub fn rewrite_unchecked(message: &Message<'_>, raw: &[u8], plan: &Plan, ids: &IdMap) -> Vec<u8> {
    write(message, raw, plan, ids)
}

fn shows_below(m: &Message<'_>, id: usize, replace: &[(String, String)], depth: usize) -> bool {
    let Some(p) = m.parts.get(id) else { return false };
    if depth > 64 {
        return true;
    }
    let buf: &[u8] = &m.raw_message;
    let shows = |bytes: &[u8], reading| text::contains(bytes, replace, reading);
    let field_shows = p.headers.iter().any(|h| {
        let field = buf.get(h.offset_field as usize..h.offset_end as usize).unwrap_or_default();
        shows(field, text::Reading::default()) || headers::value_shows(&h.value, replace)
    });
    if field_shows {
        return true;
    }
    let reading = body::reading(p);
    match &p.body {
        PartType::Text(t) | PartType::Html(t) => shows(t.as_bytes(), reading),
        PartType::Binary(b) | PartType::InlineBinary(b) => body::is_report(p) && shows(b, reading),
        PartType::Message(nested) => shows_below(nested, 0, replace, depth + 1),
        PartType::Multipart(children) => {
            let mut at = p.offset_body as usize;
            for &c in children.iter().filter(|c| **c as usize != id) {
                let Some(child) = m.parts.get(c as usize) else { continue };
                if shows(
                    buf.get(at..child.offset_header as usize).unwrap_or_default(),
                    text::Reading::default(),
                ) || shows_below(m, c as usize, replace, depth + 1)
                {
                    return true;
                }
                at = child.offset_end as usize;
            }
            shows(buf.get(at..p.offset_end as usize).unwrap_or_default(), text::Reading::default())
        }
    }
}

/// Whether a header field of any part, at any depth, has a name that is not RFC 5322
/// `ftext` (printable ASCII but the colon) up to its colon: readers disagree on what such a
/// field is. What lies deeper than the rewriter follows is left to `verify`.
fn has_ambiguous_field_name(m: &Message<'_>, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    let buf: &[u8] = &m.raw_message;
    m.parts.iter().enumerate().any(|(i, p)| {
        // The root header block is written anew from an allowlist: only the fields
        // mail-parser gives a meaning to (and so may pass or act on) count there. Below
        // it, every field does: the header blocks of parts pass as they are.
        let strict = depth > 0 || i > 0;
        let name_ok = |h: &mail_parser::Header<'_>| {
            if !strict && matches!(h.name, mail_parser::HeaderName::Other(_)) {
                return true;
            }
            let field = buf.get(h.offset_field as usize..h.offset_end as usize).unwrap_or_default();
            let name = field.split(|&b| b == b':').next().unwrap_or_default();
            // Every line of a field after its first is a fold (starts with white space):
            // mail-parser takes a line with no colon as more of the field above, other
            // readers as the end of the header block.
            let folds = field
                .split(|&b| b == b'\n')
                .skip(1)
                .all(|l| l.is_empty() || l.starts_with(b" ") || l.starts_with(b"\t"));
            !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic()) && folds
        };
        !p.headers.iter().all(name_ok)
            || matches!(&p.body, PartType::Message(nested) if has_ambiguous_field_name(nested, depth + 1))
    })
}

/// Every message id the message names (its own, In-Reply-To, References), in order.
pub fn referenced_ids<'a>(message: &'a Message<'a>) -> Vec<&'a str> {
    use mail_parser::HeaderValue;
    let mut out = Vec::new();
    for value in [message.in_reply_to(), message.references()] {
        match value {
            HeaderValue::Text(t) => out.push(t.as_ref()),
            HeaderValue::TextList(l) => out.extend(l.iter().map(|t| t.as_ref())),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            from: NamedAddress { name: Some("Jane via Market".into()), address: "k3x@relay.example".into() },
            reply_to: "k3x@relay.example".into(),
            to: NamedAddress { name: Some("Acme".into()), address: "support@acme.example".into() },
            hidden_in_headers: vec!["jane@example.com".into()],
            replace_in_body: vec![("jane@example.com".into(), "k3x@relay.example".into())],
            message_id: "m1@relay.example".into(),
            extra_headers: Vec::new(),
        }
    }

    #[test]
    fn rewritten_message_shows_no_hidden_address() {
        let raw = b"From: Jane <jane@example.com>\r\nSubject: =?utf-8?q?from_jane=40example.com?=\r\nContent-Type: text/plain\r\n\r\nwrite to JANE@example.com\r\n";
        let message = parse(raw).unwrap();
        let out = rewrite(&message, raw, &plan(), &IdMap::default()).unwrap();
        assert_eq!(verify(&out, &plan()), Ok(()));
        assert!(String::from_utf8_lossy(&out).ends_with("\r\n\r\nwrite to k3x@relay.example\r\n"));
    }

    /// Found by the rewrite fuzz target: mail-parser reads a field name with white space in
    /// it as if there were none, so `Content\t-Type: application/octet-stream` made a part
    /// an attachment, passed as it is, which a reader without that leniency shows as text.
    #[test]
    fn field_names_with_white_space_are_refused() {
        for name in ["Content\t-Type", "Content -Type", "Content-Type ", "Con\ttent-Type", "Content-Type\x01"]
        {
            let raw = format!(
                "From: Jane <jane@example.com>\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
                 --b\r\n{name}: application/octet-stream\r\n\r\nwrite to jane@example.com\r\n--b--\r\n"
            );
            let message = parse(raw.as_bytes()).unwrap();
            assert_eq!(
                rewrite(&message, raw.as_bytes(), &plan(), &IdMap::default()),
                Err(RewriteError::AmbiguousFieldName),
                "{name:?}"
            );
        }
        // In the root header block, and inside a forwarded message.
        for raw in [
            "M\t\tIME-Version: 1.0\r\nFrom: <jane@example.com>\r\n\r\nhi\r\n",
            "From: <jane@example.com>\r\nContent-Type: message/rfc822\r\n\r\nSub ject: x\r\n\r\nhi\r\n",
        ] {
            let message = parse(raw.as_bytes()).unwrap();
            assert_eq!(
                rewrite(&message, raw.as_bytes(), &plan(), &IdMap::default()),
                Err(RewriteError::AmbiguousFieldName),
                "{raw:?}"
            );
        }
        // A line that is neither a field nor a fold, read by mail-parser as part of the
        // field above it (found by the rewrite fuzz target: it was copied out as is).
        let raw = b"From: <jane@example.com>\r\nDate: Fri, 20 Apr 2001 19:3--b\r\n-040#\r\nSubject: x\r\n\r\nhi\r\n";
        let message = parse(raw).unwrap();
        assert_eq!(rewrite(&message, raw, &plan(), &IdMap::default()), Err(RewriteError::AmbiguousFieldName));
        // An mbox `From ` line atop the root is no field mail-parser acts on: dropped, not
        // refused (the cpython corpus has two).
        let raw = b"From MAILER-DAEMON Fri Apr 06 16:46:09 2001\r\nFrom: <jane@example.com>\r\n\r\nhi\r\n";
        let message = parse(raw).unwrap();
        assert!(rewrite(&message, raw, &plan(), &IdMap::default()).is_ok());
        // Ordinary names and folds still pass.
        let raw = b"From: <jane@example.com>\r\nX-Weird_Name.1: y\r\nSubject: x\r\n\ty\r\n z\r\n\r\nhi\r\n";
        let message = parse(raw).unwrap();
        assert!(rewrite(&message, raw, &plan(), &IdMap::default()).is_ok());
    }

    #[test]
    fn what_still_shows_an_address_is_refused_not_sent() {
        let leaky = b"From: <k3x@relay.example>\r\nSubject: hi\r\n\r\nwrite to jane&#64;example.com\r\n";
        assert_eq!(verify(leaky, &plan()), Err(RewriteError::WouldLeak));
        let leaky =
            b"From: <k3x@relay.example>\r\nX-Note: =?utf-8?b?amFuZUBleGFtcGxlLmNvbQ==?=\r\n\r\nhi\r\n";
        assert_eq!(verify(leaky, &plan()), Err(RewriteError::WouldLeak));
        // Forwards nested deeper than the rewriter follows: refused, not passed on.
        let mut raw = String::from("From: Jane <jane@example.com>\r\nSubject: fw\r\n");
        for _ in 0..40 {
            raw.push_str("Content-Type: message/rfc822\r\n\r\nSubject: fw\r\n");
        }
        raw.push_str("Content-Type: text/plain\r\n\r\nwrite to jane@example.com\r\n");
        let message = parse(raw.as_bytes()).unwrap();
        // (The MIME gate refuses such nesting before the read-back would.)
        assert!(matches!(
            rewrite(&message, raw.as_bytes(), &plan(), &IdMap::default()),
            Err(RewriteError::WouldLeak | RewriteError::Refused(gate::Refusal::TooDeep))
        ));
    }
}
