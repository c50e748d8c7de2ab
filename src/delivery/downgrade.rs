//! Fitting a message to a next hop that cannot take 8-bit octets, and to every next hop
//! the 998-octet line limit.
//!
//! - Without 8BITMIME (RFC 6152 3): every leaf part sent as 7bit/8bit/binary that holds
//!   octets above 127 is re-encoded, text as quoted-printable (line breaks kept, as
//!   Postfix's 8BITMIME downgrade does), anything else as base64, and its
//!   Content-Transfer-Encoding says so. Multiparts and forwarded messages are entered,
//!   never encoded themselves (RFC 2045 6.4), and labelled 7bit.
//! - Without SMTPUTF8 (RFC 6532 3.7 gives no in-band way to send 8-bit header fields):
//!   each 8-bit header field, of the message or of any part, is written anew in ASCII,
//!   unstructured text and display names as RFC 2047 encoded words, MIME parameters (file
//!   names) in RFC 2231 form; raw 8-bit that is not UTF-8 is read as UTF-8, with
//!   replacement characters for what is not. An address that is itself internationalized
//!   has no ASCII form and stays as it is (the envelope check refuses the recipient's).
//!
//! - Lines over 998 octets (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6), for every next hop
//!   (`long_lines`): a leaf part with such a line is re-encoded the same way, text as
//!   quoted-printable in its own charset (the octets are kept, only the transfer encoding
//!   changes), anything else as base64; a part already in base64 or quoted-printable is
//!   decoded and encoded again in lines of 76. A header field with such a line is folded
//!   at white space, or, unstructured text without any, written as RFC 2047 encoded words.
//!
//! All of them splice into the original bytes: what needs no change stays byte for byte. Both
//! run before DKIM signing, so the signature covers the converted message. For a
//! forwarded message/rfc822 that is not transfer-encoded, mail-parser gives its parts'
//! offsets from the start of the outer message, so all offsets refer to one buffer.

use base64::Engine;
use mail_parser::{
    Encoding, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use crate::rewrite::body::{Splice, apply, ending_like};

/// Nested messages deeper than this are not entered (their 8-bit octets go as they are).
const MAX_DEPTH: usize = 32;

/// The header block of a message: everything up to and including the empty line.
pub fn header_block(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => &message[..at + 4],
        None => message,
    }
}

/// RFC 5322 2.1.1: at most 998 octets on a line, without its CRLF.
pub const MAX_LINE: usize = 998;

/// Why a part body is re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The next hop takes no 8-bit octets (no 8BITMIME).
    SevenBit,
    /// No line may exceed `MAX_LINE` octets.
    ShortLines,
}

impl Need {
    fn unmet_by(self, body: &[u8]) -> bool {
        match self {
            Need::SevenBit => !body.is_ascii(),
            Need::ShortLines => has_long_line(body),
        }
    }
}

/// Whether any line of `bytes` is longer than `MAX_LINE` octets (CR LF not counted).
pub fn has_long_line(bytes: &[u8]) -> bool {
    bytes.split(|b| *b == b'\n').any(|l| l.strip_suffix(b"\r").unwrap_or(l).len() > MAX_LINE)
}

/// The message with every 8-bit part re-encoded in 7 bits, or `None` when there is none.
pub fn body(message: &[u8]) -> Option<Vec<u8>> {
    if message[header_block(message).len()..].is_ascii() {
        return None;
    }
    let parsed = MessageParser::default().parse(message)?;
    let mut splices = Vec::new();
    part_body(&parsed, 0, message, &mut splices, 0, Need::SevenBit);
    (!splices.is_empty()).then(|| apply(message, 0, splices))
}

/// The message with no line over 998 octets, or `None` when it has none: long header
/// lines folded, parts with long lines re-encoded (see the module notes).
pub fn long_lines(message: &[u8]) -> Option<Vec<u8>> {
    if !has_long_line(message) {
        return None;
    }
    let parsed = MessageParser::default().parse(message)?;
    let mut splices = Vec::new();
    long_header_lines(&parsed, message, &mut splices, 0);
    part_body(&parsed, 0, message, &mut splices, 0, Need::ShortLines);
    (!splices.is_empty()).then(|| apply(message, 0, splices))
}

fn long_header_lines(m: &Message<'_>, buf: &[u8], out: &mut Vec<Splice>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for p in &m.parts {
        for h in &p.headers {
            let (start, end) = (h.offset_field as usize, (h.offset_end as usize).min(buf.len()));
            let Some(field) = buf.get(start..end) else { continue };
            // Content-Transfer-Encoding may be rewritten by the body pass: never both.
            if !has_long_line(field) || h.name == HeaderName::ContentTransferEncoding {
                continue;
            }
            let folded = fold(field).or_else(|| match &h.value {
                HeaderValue::Text(t) => {
                    let mut f = Vec::new();
                    crate::rewrite::headers::push(&mut f, h.name.as_str(), &encoded_words(t));
                    Some(f)
                }
                _ => None,
            });
            if let Some(f) = folded.filter(|f| !has_long_line(f)) {
                out.push((start, end, ending_like(f, field)));
            }
        }
        if let PartType::Message(nested) = &p.body
            && p.encoding == Encoding::None
        {
            long_header_lines(nested, buf, out, depth + 1);
        }
    }
}

/// A header field with its lines folded to 78 octets where white space allows (RFC 5322
/// 2.2.3: CRLF before white space already there), or `None` when a line over `MAX_LINE`
/// octets has no white space to fold at.
fn fold(field: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len() + field.len() / 40);
    for line in field.split_inclusive(|b| *b == b'\n') {
        let eol_len = if line.ends_with(b"\r\n") { 2 } else { usize::from(line.ends_with(b"\n")) };
        let (mut text, eol) = line.split_at(line.len() - eol_len);
        while text.len() > 78 {
            // The last white space within 78 octets, else within 998, with something
            // other than white space on both sides (a line of white space alone would
            // end the header block).
            let blank = |b: &u8| *b == b' ' || *b == b'\t';
            let within = |limit: usize| {
                text[1..=limit.min(text.len() - 1)]
                    .iter()
                    .rposition(blank)
                    .map(|p| p + 1)
                    .filter(|p| !text[..*p].iter().all(blank) && !text[*p..].iter().all(blank))
            };
            match within(78).or_else(|| within(MAX_LINE)) {
                Some(at) => {
                    out.extend_from_slice(&text[..at]);
                    out.extend_from_slice(b"\r\n");
                    text = &text[at..];
                }
                None if text.len() > MAX_LINE => return None,
                None => break,
            }
        }
        out.extend_from_slice(text);
        out.extend_from_slice(eol);
    }
    Some(out)
}

/// RFC 2047 B-encoded words of at most 75 characters, separated by spaces (which a reader
/// drops between encoded words, RFC 2047 6.2), so the value can be folded anywhere.
fn encoded_words(text: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(w)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The message with every 8-bit header field written in ASCII, or `None` when there is
/// none.
pub fn headers(message: &[u8]) -> Option<Vec<u8>> {
    if message.is_ascii() {
        return None;
    }
    let parsed = MessageParser::default().parse(message)?;
    let mut splices = Vec::new();
    message_headers(&parsed, message, &mut splices, 0);
    (!splices.is_empty()).then(|| apply(message, 0, splices))
}

fn message_headers(m: &Message<'_>, buf: &[u8], out: &mut Vec<Splice>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for p in &m.parts {
        for h in &p.headers {
            let (start, end) = (h.offset_field as usize, (h.offset_end as usize).min(buf.len()));
            let Some(field) = buf.get(start..end) else { continue };
            if field.is_ascii() {
                continue;
            }
            if let Some(ascii) =
                crate::rewrite::headers::rebuild(h.name.as_str(), &h.value, &[]).filter(|f| f.is_ascii())
            {
                out.push((start, end, ending_like(ascii, field)));
            }
        }
        if let PartType::Message(nested) = &p.body
            && p.encoding == Encoding::None
        {
            message_headers(nested, buf, out, depth + 1);
        }
    }
}

fn part_body(m: &Message<'_>, id: usize, buf: &[u8], out: &mut Vec<Splice>, depth: usize, need: Need) {
    let Some(p) = m.parts.get(id) else { return };
    if depth > MAX_DEPTH {
        return;
    }
    if p.encoding != Encoding::None {
        // Quoted-printable and base64 are 7-bit already; long lines in them are
        // encoded again.
        if need == Need::ShortLines {
            reencode_encoded(p, buf, out);
        }
        return;
    }
    match &p.body {
        PartType::Multipart(children) => {
            for &child in children.iter().filter(|c| **c as usize != id) {
                part_body(m, child as usize, buf, out, depth + 1, need);
            }
            label_7bit(p, buf, out);
        }
        PartType::Message(nested) => {
            part_body(nested, 0, buf, out, depth + 1, need);
            label_7bit(p, buf, out);
        }
        PartType::Text(_) | PartType::Html(_) | PartType::Binary(_) | PartType::InlineBinary(_) => {
            let end = (p.offset_end as usize).min(buf.len());
            let start = (p.offset_body as usize).min(end);
            let body = &buf[start..end];
            if !need.unmet_by(body) {
                return;
            }
            let readable = p.content_type().is_none_or(|ct| {
                ct.ctype().eq_ignore_ascii_case("text") || ct.ctype().eq_ignore_ascii_case("message")
            });
            let (encoding, encoded) = if readable {
                ("quoted-printable", quoted_printable::encode(body))
            } else {
                ("base64", base64_lines(body))
            };
            out.push((start, end, ending_like(encoded, body)));
            set_transfer_encoding(p, buf, encoding, out);
        }
    }
}

/// A base64 or quoted-printable leaf part whose encoded lines are too long: decoded from
/// its own bytes (not mail-parser's text, which is converted to UTF-8) and encoded again
/// the same way in lines of 76, so its charset and contents stay what they were.
fn reencode_encoded(p: &MessagePart<'_>, buf: &[u8], out: &mut Vec<Splice>) {
    if matches!(p.body, PartType::Multipart(_) | PartType::Message(_)) {
        return;
    }
    let end = (p.offset_end as usize).min(buf.len());
    let start = (p.offset_body as usize).min(end);
    let body = &buf[start..end];
    if !has_long_line(body) {
        return;
    }
    let encoded = match p.encoding {
        Encoding::Base64 => {
            let clean: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            let Ok(bytes) = crate::rewrite::text::lenient_base64().decode(&clean) else { return };
            base64_lines(&bytes)
        }
        Encoding::QuotedPrintable => {
            let Ok(bytes) = quoted_printable::decode(body, quoted_printable::ParseMode::Robust) else {
                return;
            };
            quoted_printable::encode(&bytes)
        }
        Encoding::None => return,
    };
    out.push((start, end, ending_like(encoded, body)));
}

/// A multipart or message part said to be 8bit or binary, once what it holds is 7-bit.
fn label_7bit(p: &MessagePart<'_>, buf: &[u8], out: &mut Vec<Splice>) {
    let labelled_8bit = p.headers.iter().any(|h| {
        h.name == HeaderName::ContentTransferEncoding
            && h.value.as_text().is_some_and(|v| {
                v.trim().eq_ignore_ascii_case("8bit") || v.trim().eq_ignore_ascii_case("binary")
            })
    });
    if labelled_8bit {
        set_transfer_encoding(p, buf, "7bit", out);
    }
}

/// Replaces the part's Content-Transfer-Encoding fields, or adds one at the top of its
/// header block.
fn set_transfer_encoding(p: &MessagePart<'_>, buf: &[u8], encoding: &str, out: &mut Vec<Splice>) {
    let field = format!("Content-Transfer-Encoding: {encoding}\r\n").into_bytes();
    let existing: Vec<_> =
        p.headers.iter().filter(|h| h.name == HeaderName::ContentTransferEncoding).collect();
    if existing.is_empty() {
        let at = (p.offset_header as usize).min(buf.len());
        out.push((at, at, field));
        return;
    }
    for (i, h) in existing.iter().enumerate() {
        let (start, end) = (h.offset_field as usize, (h.offset_end as usize).min(buf.len()));
        let old = buf.get(start..end).unwrap_or_default();
        let new = if i == 0 { ending_like(field.clone(), old) } else { Vec::new() };
        out.push((start, end, new));
    }
}

/// Base64 in lines of 76 (RFC 2045 6.8).
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for (i, line) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Message<'_> {
        MessageParser::default().parse(bytes).unwrap()
    }

    #[test]
    fn an_8bit_text_body_becomes_quoted_printable() {
        let original = "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\
                        Content-Transfer-Encoding: 8bit\r\n\r\nGrüße, Jürgen\r\n.dot = sign\r\n";
        let out = body(original.as_bytes()).unwrap();
        assert!(out.is_ascii(), "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n"), "{text}");
        assert!(!text.contains("8bit"), "{text}");
        assert!(text.ends_with("Gr=C3=BC=C3=9Fe, J=C3=BCrgen\r\n.dot =3D sign\r\n"), "{text}");
        assert_eq!(parse(&out).body_text(0).unwrap(), "Grüße, Jürgen\r\n.dot = sign\r\n");
    }

    #[test]
    fn parts_are_encoded_each_in_place_and_the_rest_stays_byte_for_byte() {
        let original = concat!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n",
            "Content-Transfer-Encoding: 8bit\r\n\r\n",
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄpfel\r\n",
            "--b\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n",
            "--b\r\nContent-Type: application/octet-stream\r\n\r\n\u{ff}\u{fe}bin\r\n",
            "--b--\r\n",
        );
        let out = body(original.as_bytes()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(out.is_ascii(), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: 7bit\r\n\r\n--b\r\n"), "{text}");
        assert!(
            text.contains("--b\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n=C3=84pfel\r\n--b"),
            "{text}"
        );
        assert!(text.contains("--b\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b"), "{text}");
        let m = parse(&out);
        assert_eq!(m.body_text(0).unwrap(), "Äpfel");
        let bin = m.attachment(0).unwrap();
        assert_eq!(bin.contents(), "\u{ff}\u{fe}bin".as_bytes());
    }

    #[test]
    fn a_forwarded_message_is_entered() {
        let original = concat!(
            "Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n",
            "--o\r\nContent-Type: message/rfc822\r\n\r\n",
            "Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve\r\n",
            "--o--\r\n",
        );
        let out = body(original.as_bytes()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\nSubject: inner\r\n"), "{text}");
        assert!(text.contains("na=C3=AFve\r\n--o--"), "{text}");
    }

    #[test]
    fn seven_bit_mail_is_left_alone() {
        assert!(body(b"Subject: x\r\n\r\nplain\r\n").is_none());
        assert!(headers(b"Subject: x\r\n\r\nplain\r\n").is_none());
        // Already encoded parts are 7-bit whatever they decode to.
        assert!(body(b"Content-Transfer-Encoding: base64\r\n\r\nw6Q=\r\n").is_none());
    }

    #[test]
    fn eight_bit_header_fields_are_written_in_ascii() {
        let original = concat!(
            "From: \"Acme\" <a@relay.example>\r\nSubject: Grüße aus Köln\r\n",
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
            "--b\r\nContent-Type: application/pdf\r\n",
            "Content-Disposition: attachment; filename=\"Rechnung März.pdf\"\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--b--\r\n",
        );
        let out = headers(original.as_bytes()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(out.is_ascii(), "{text}");
        assert!(text.starts_with("From: \"Acme\" <a@relay.example>\r\nSubject: =?utf-8?b?"), "{text}");
        assert!(text.contains("filename*=utf-8''Rechnung%20M%C3%A4rz.pdf"), "{text}");
        let m = parse(&out);
        assert_eq!(m.subject(), Some("Grüße aus Köln"));
        assert_eq!(m.attachment(0).unwrap().attachment_name(), Some("Rechnung März.pdf"));
        assert_eq!(m.attachment(0).unwrap().contents(), b"%PDF");
    }

    fn longest_line(bytes: &[u8]) -> usize {
        bytes.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max().unwrap_or(0)
    }

    #[test]
    fn a_long_text_line_becomes_quoted_printable_in_its_own_charset() {
        let mut original =
            b"Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nshort\r\n".to_vec();
        let long: Vec<u8> =
            std::iter::repeat_n(b"caf\xe9 au lait ".as_slice(), 150).flatten().copied().collect();
        original.extend_from_slice(&long);
        original.extend_from_slice(b"\r\nend\r\n");
        assert!(longest_line(&original) > MAX_LINE);
        let out = long_lines(&original).unwrap();
        assert!(longest_line(&out) <= 76 + 2, "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("Content-Transfer-Encoding: quoted-printable\r\nSubject: x\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=iso-8859-1\r\n"),
            "the charset is kept: {text}"
        );
        assert!(text.contains("caf=E9 au lait"), "the octets are kept, not converted: {text}");
        let m = parse(&out);
        let expected = format!("short\r\n{}\r\nend\r\n", "café au lait ".repeat(150));
        assert_eq!(m.body_text(0).unwrap(), expected);
    }

    #[test]
    fn long_header_lines_are_folded_or_encoded() {
        let words = "word ".repeat(300);
        let token = "x".repeat(1200);
        let original = format!(
            "Subject: {words}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\nContent-Description: {token}\r\n\r\nhi\r\n--b--\r\n"
        );
        let out = long_lines(original.as_bytes()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(longest_line(&out) <= MAX_LINE, "{text}");
        assert!(text.starts_with("Subject: word word"), "{text}");
        assert!(text.lines().next().unwrap().len() <= 78, "folded where white space allows: {text}");
        let m = parse(&out);
        assert_eq!(m.subject(), Some(words.trim_end()));
        let part = &m.parts[1];
        let description =
            part.headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case("Content-Description"));
        assert_eq!(description.and_then(|h| h.value.as_text()), Some(token.as_str()), "{text}");
        assert_eq!(m.body_text(0).unwrap(), "hi");
    }

    #[test]
    fn encoded_parts_with_long_lines_are_encoded_again() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let one_line = base64::engine::general_purpose::STANDARD.encode(&data);
        let original = format!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{one_line}\r\n--b--\r\n"
        );
        let out = long_lines(original.as_bytes()).unwrap();
        assert!(longest_line(&out) <= 76);
        assert_eq!(parse(&out).attachment(0).unwrap().contents(), data.as_slice());
        // Nothing long: nothing to do.
        assert!(long_lines(b"Subject: x\r\n\r\nshort\r\n").is_none());
    }
}
