//! The strict MIME gate for mail toward a store: what different readers would split or
//! decode differently, or what the relay cannot read, is refused before rewriting
//! (`554 5.6.0`), with a sentence that says what to send instead. Rewriting what one
//! reader sees is no guarantee when another reader sees something else.

use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

/// Why a message cannot pass toward a store. Each reason carries only what its sentence
/// needs, already reduced to safe characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A part has this structural field twice: readers take the first or the last.
    DuplicateField(StructuralField),
    /// A multipart part without a boundary parameter, or with an empty one.
    NoBoundary,
    /// A multipart part whose boundary never occurs in its body.
    BoundaryNotFound,
    /// A base64 text part with characters outside the base64 alphabet.
    InvalidBase64,
    /// A text part in a charset the relay cannot decode (name reduced to safe characters).
    UndecodableCharset(String),
    /// Transfer-encoded message/rfc822 nested deeper than the parser reads.
    TooDeep,
    /// A message/* type the relay does not rewrite (subtype reduced to safe characters).
    UnreadableMessageType(String),
    /// Microsoft TNEF (winmail.dat).
    Tnef,
    /// A part the parser could not decode or delimit (it kept it as raw text).
    Broken,
}

/// The fields that decide how a part is split and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructuralField {
    ContentType,
    ContentTransferEncoding,
}

impl StructuralField {
    fn name(self) -> &'static str {
        match self {
            Self::ContentType => "Content-Type",
            Self::ContentTransferEncoding => "Content-Transfer-Encoding",
        }
    }
}

impl Refusal {
    /// The reply text after `554 5.6.0 `: what was wrong and what to send instead.
    pub fn sentence(&self) -> String {
        match self {
            Self::DuplicateField(f) => format!(
                "A MIME part has two {} fields, which mail programs read differently; send it with one {} per part",
                f.name(),
                f.name()
            ),
            Self::NoBoundary => "A multipart part has no usable boundary parameter, so its parts cannot be told apart; send it again from a standard mail program".into(),
            Self::BoundaryNotFound => "A multipart part's boundary never occurs in its body, so its parts cannot be told apart; send it again from a standard mail program".into(),
            Self::InvalidBase64 => "A text part's base64 holds characters outside the base64 alphabet, which mail programs decode differently; encode it again or send it as plain text".into(),
            Self::UndecodableCharset(c) => format!(
                "A text part is in the charset {c}, which this relay cannot read; send it as UTF-8"
            ),
            Self::TooDeep => format!(
                "Forwarded messages are nested more than {ENCODED_NESTING} levels deep in encoded form, deeper than this relay reads; forward the innermost message on its own"
            ),
            Self::UnreadableMessageType(t) => format!(
                "A part of type message/{t} cannot be read and rewritten by this relay; send its content as text or forward it as message/rfc822"
            ),
            Self::Broken => "A MIME part could not be read (its encoding or its boundaries are broken), so readers would show it differently; send it again from a standard mail program".into(),
            Self::Tnef => "The message holds a Microsoft TNEF part (winmail.dat), which this relay cannot read; send it as HTML or plain text (turn off Rich Text Format)".into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sentence())
    }
}

/// mail-parser reads transfer-encoded message/rfc822 parts this many levels deep; below,
/// a forwarded message stays opaque bytes.
pub const ENCODED_NESTING: usize = 3;

/// message/* types the relay reads and rewrites (as a message or as header fields).
const READ_MESSAGE_TYPES: &[&str] = &[
    "rfc822",
    "global",
    "delivery-status",
    "global-delivery-status",
    "disposition-notification",
    "global-disposition-notification",
    "feedback-report",
    "global-headers",
    "rfc822-headers",
];

/// Nesting deeper than this (of any kind) is refused.
const MAX_DEPTH: usize = 32;

/// Whether `message` may pass toward a store.
pub fn check(message: &Message<'_>) -> Result<(), Refusal> {
    part(message, 0, 0)
}

fn part(m: &Message<'_>, id: usize, depth: usize) -> Result<(), Refusal> {
    let Some(p) = m.parts.get(id) else { return Ok(()) };
    if depth > MAX_DEPTH {
        return Err(Refusal::TooDeep);
    }
    structural_fields(p)?;
    let buf: &[u8] = &m.raw_message;
    let (ctype, subtype) = p
        .content_type()
        .map(|ct| (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or("").to_ascii_lowercase()))
        .unwrap_or_else(|| ("text".into(), "plain".into()));
    let forward = ctype == "message" && (subtype == "rfc822" || subtype == "global");
    if forward && !matches!(p.body, PartType::Message(_)) && p.offset_end > p.offset_body {
        // The parser stopped reading: a forward nested past its limit.
        return Err(Refusal::TooDeep);
    }
    if p.is_encoding_problem {
        return Err(if declares_base64(p) { Refusal::InvalidBase64 } else { Refusal::Broken });
    }
    if ctype == "multipart" {
        let boundary = p.content_type().and_then(|ct| ct.attribute("boundary")).unwrap_or("");
        if boundary.is_empty() {
            return Err(Refusal::NoBoundary);
        }
        let body =
            buf.get(p.offset_body as usize..(p.offset_end as usize).min(buf.len())).unwrap_or_default();
        let marker = format!("--{boundary}");
        if !body.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            return Err(Refusal::BoundaryNotFound);
        }
    }
    if ctype == "application" && (subtype == "ms-tnef" || subtype == "vnd.ms-tnef")
        || p.attachment_name().is_some_and(|n| n.eq_ignore_ascii_case("winmail.dat"))
    {
        return Err(Refusal::Tnef);
    }
    if ctype == "message" && !READ_MESSAGE_TYPES.contains(&subtype.as_str()) {
        return Err(Refusal::UnreadableMessageType(safe(&subtype)));
    }
    match &p.body {
        PartType::Text(_) | PartType::Html(_) => {
            text_part(p, buf)?;
        }
        PartType::Binary(_) | PartType::InlineBinary(_) => {
            if ctype == "text" {
                text_part(p, buf)?;
            }
        }
        PartType::Message(nested) => part(nested, 0, depth + 1)?,
        PartType::Multipart(children) => {
            for &c in children.iter().filter(|c| **c as usize != id) {
                part(m, c as usize, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// One Content-Type and one Content-Transfer-Encoding at most.
fn structural_fields(p: &MessagePart<'_>) -> Result<(), Refusal> {
    for (name, field) in [
        ("content-type", StructuralField::ContentType),
        ("content-transfer-encoding", StructuralField::ContentTransferEncoding),
    ] {
        if p.headers.iter().filter(|h| h.name.as_str().eq_ignore_ascii_case(name)).count() > 1 {
            return Err(Refusal::DuplicateField(field));
        }
    }
    Ok(())
}

fn text_part(p: &MessagePart<'_>, buf: &[u8]) -> Result<(), Refusal> {
    // mail-parser gives up on base64 it cannot decode and keeps the part as raw text.
    if p.encoding == Encoding::Base64 || declares_base64(p) {
        let body =
            buf.get(p.offset_body as usize..(p.offset_end as usize).min(buf.len())).unwrap_or_default();
        if !valid_base64(body) {
            return Err(Refusal::InvalidBase64);
        }
    }
    let charset = p.content_type().and_then(|ct| ct.attribute("charset")).unwrap_or("").trim();
    if !decodable(charset) {
        return Err(Refusal::UndecodableCharset(safe(charset)));
    }
    Ok(())
}

fn declares_base64(p: &MessagePart<'_>) -> bool {
    p.headers.iter().any(|h| {
        h.name.as_str().eq_ignore_ascii_case("content-transfer-encoding")
            && matches!(&h.value, mail_parser::HeaderValue::Text(t) if t.trim().eq_ignore_ascii_case("base64"))
    })
}

/// Base64 alphabet, `=` padding only at the end, and line white space.
fn valid_base64(body: &[u8]) -> bool {
    let mut padding = false;
    for &b in body {
        match b {
            b'\r' | b'\n' | b' ' | b'\t' => {}
            b'=' => padding = true,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' if !padding => {}
            _ => return false,
        }
    }
    true
}

/// Charsets the relay decodes (mail-parser's decoders, with `full_encoding`). UTF-32 and
/// EBCDIC code pages are not among them.
pub fn decodable(charset: &str) -> bool {
    let c = charset.to_ascii_lowercase();
    if c.is_empty() || ["us-ascii", "ascii", "utf-8", "utf8"].contains(&c.as_str()) {
        return true;
    }
    if c.starts_with("utf-32") || c.starts_with("utf32") || c.starts_with("ucs-4") {
        return false;
    }
    mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()).is_some()
}

/// A name from the message, safe to put in a reply line.
fn safe(s: &str) -> String {
    let s: String = s.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.+".contains(*c)).take(40).collect();
    if s.is_empty() { "(unnamed)".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::parse;

    fn gate(raw: &str) -> Result<(), Refusal> {
        check(&parse(raw.as_bytes()).unwrap())
    }

    const LEGIT: &str = "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\nhi\r\n--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--x--\r\n";

    #[test]
    fn ordinary_mail_passes() {
        assert_eq!(gate(LEGIT), Ok(()));
        assert_eq!(gate("From: a@b.example\r\n\r\nhello\r\n"), Ok(()));
    }

    #[test]
    fn each_refusal() {
        let cases: &[(&str, Refusal)] = &[
            (
                "Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n",
                Refusal::DuplicateField(StructuralField::ContentType),
            ),
            (
                "Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx\r\n",
                Refusal::DuplicateField(StructuralField::ContentTransferEncoding),
            ),
            ("Content-Type: multipart/mixed\r\n\r\nx\r\n", Refusal::NoBoundary),
            ("Content-Type: multipart/mixed; boundary=\"\"\r\n\r\nx\r\n", Refusal::NoBoundary),
            ("Content-Type: multipart/mixed; boundary=q\r\n\r\nno parts here\r\n", Refusal::BoundaryNotFound),
            (
                "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs!bG8=\r\n",
                Refusal::InvalidBase64,
            ),
            (
                "Content-Type: text/plain; charset=utf-32\r\n\r\nx\r\n",
                Refusal::UndecodableCharset("utf-32".into()),
            ),
            (
                "Content-Type: text/plain; charset=ibm037\r\n\r\nx\r\n",
                Refusal::UndecodableCharset("ibm037".into()),
            ),
            (
                "Content-Type: message/partial; id=1; number=1\r\n\r\nx\r\n",
                Refusal::UnreadableMessageType("partial".into()),
            ),
            ("Content-Type: application/ms-tnef\r\n\r\nx\r\n", Refusal::Tnef),
        ];
        for (raw, want) in cases {
            let raw = format!("From: a@b.example\r\n{raw}");
            assert_eq!(gate(&raw).as_ref(), Err(want), "{raw}");
            let s = want.sentence();
            assert!(!s.contains('\n') && s.len() < 300, "{s}");
        }
    }

    #[test]
    fn nesting_past_the_parser() {
        use base64::Engine;
        let mut inner = "From: x@y.example\r\n\r\nhi\r\n".to_owned();
        for _ in 0..(ENCODED_NESTING + 1) {
            inner = format!(
                "From: x@y.example\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64::engine::general_purpose::STANDARD.encode(&inner)
            );
        }
        assert_eq!(gate(&inner), Err(Refusal::TooDeep));
    }
}
