//! Body rewriting: every place below the root header block where a hidden address can be
//! read is rewritten, and nothing else. That is the text parts (in whatever transfer
//! encoding or charset), the header fields of every part, preambles and epilogues,
//! forwarded messages (also when sent base64-encoded) and delivery or read reports.
//! Every other part stays byte-for-byte.
//!
//! Changes are splices into the original bytes. For a forwarded message/rfc822 that is
//! not transfer-encoded, mail-parser gives its parts' offsets from the start of the
//! *outer* message (`Message::raw_message`, not `raw_message()`), so all offsets here
//! refer to that one buffer.

use base64::Engine;
use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

use super::headers::{self, Field};
use super::text::{self, Reading};

/// A part's new Content-Type and Content-Transfer-Encoding, as (name, value).
pub type ContentHeaders = Vec<(String, String)>;

/// The body as the reader gets it.
#[derive(Debug)]
pub struct BodyRewrite {
    /// The root's new Content-Type and Content-Transfer-Encoding, when a single-part
    /// body had to be re-encoded (the caller writes the root header block).
    pub content_headers: Option<ContentHeaders>,
    /// Everything after the root header block.
    pub bytes: Vec<u8>,
}

/// Nesting deeper than this is not followed; what lies below is checked by
/// `super::verify` and the message refused if it shows an address.
const MAX_DEPTH: usize = 32;

/// The body of `message` with every real address of `replace` (lowercase, alias) replaced.
pub fn rewrite(message: &Message<'_>, replace: &[(String, String)]) -> BodyRewrite {
    run(message, &Job { replace, headers_only: false })
}

/// The body of `message` with every address of `replace` replaced in the header fields of
/// its parts (attachment names, descriptions, forwarded messages' headers) only: toward a
/// shopper, whose bodies the SPEC leaves alone.
pub fn rewrite_part_headers(message: &Message<'_>, replace: &[(String, String)]) -> BodyRewrite {
    run(message, &Job { replace, headers_only: true })
}

/// What one rewrite replaces, and where.
struct Job<'a> {
    replace: &'a [(String, String)],
    headers_only: bool,
}

fn run(message: &Message<'_>, job: &Job<'_>) -> BodyRewrite {
    let buf: &[u8] = &message.raw_message;
    let body_start = message.parts.first().map_or(buf.len(), |p| (p.offset_body as usize).min(buf.len()));
    let mut splices = Vec::new();
    let content_headers =
        if job.replace.is_empty() { None } else { part(message, buf, 0, job, &mut splices, 0, true) };
    BodyRewrite { content_headers, bytes: apply(buf, body_start, splices) }
}

/// Replace `buf[.0..buf.1]` with `.2`.
pub(crate) type Splice = (usize, usize, Vec<u8>);

/// The bytes of `buf` from `from` on, with the splices made. Splices never overlap by
/// construction; one that would is left out (and `super::verify` judges the result).
pub(crate) fn apply(buf: &[u8], from: usize, mut splices: Vec<Splice>) -> Vec<u8> {
    // An insertion (start == end) goes before a splice starting at the same place.
    splices.sort_by_key(|s| (s.0, s.1));
    let mut out = Vec::with_capacity(buf.len().saturating_sub(from) + 256);
    let mut at = from;
    for (start, end, bytes) in splices {
        if start < at || end > buf.len() || start > end {
            continue;
        }
        out.extend_from_slice(&buf[at..start]);
        out.extend_from_slice(&bytes);
        at = end;
    }
    out.extend_from_slice(&buf[at.min(buf.len())..]);
    out
}

/// The splices for part `id` of `m`: its body, and its header fields unless it is the
/// root of the whole message (`top`), whose header block the caller writes. Returns the
/// new content headers of a re-encoded top part.
fn part(
    m: &Message<'_>,
    buf: &[u8],
    id: usize,
    job: &Job<'_>,
    out: &mut Vec<Splice>,
    depth: usize,
    top: bool,
) -> Option<ContentHeaders> {
    let p = m.parts.get(id)?;
    if depth > MAX_DEPTH {
        return None;
    }
    let reencoded = body(m, buf, id, job, out, depth);
    let content = reencoded.map(|(headers, bytes)| {
        let (start, end) = body_range(p, buf);
        out.push((start, end, ending_like(bytes, &buf[start..end])));
        headers
    });
    if top {
        return content;
    }
    // A forwarded message's own header block (id 0 below the top): its trace fields name
    // the shopper's hosts and addresses, and a reader needs none of them.
    let forwarded = id == 0 && !job.headers_only;
    header_fields(p, buf, job.replace, content.as_deref(), out, forwarded);
    None
}

/// Where a part's body lies in `buf`.
fn body_range(p: &MessagePart<'_>, buf: &[u8]) -> (usize, usize) {
    let end = (p.offset_end as usize).min(buf.len());
    ((p.offset_body as usize).min(end), end)
}

/// Splices for the body of part `id`, or the new content headers and body of a text part
/// that had to be re-encoded.
fn body(
    m: &Message<'_>,
    buf: &[u8],
    id: usize,
    job: &Job<'_>,
    out: &mut Vec<Splice>,
    depth: usize,
) -> Option<(ContentHeaders, Vec<u8>)> {
    let p = &m.parts[id];
    let (start, end) = body_range(p, buf);
    let replace = job.replace;
    match &p.body {
        PartType::Text(_) | PartType::Html(_) | PartType::Binary(_) | PartType::InlineBinary(_)
            if job.headers_only =>
        {
            None
        }
        PartType::Text(t) | PartType::Html(t) => match text_part(p, t, &buf[start..end], replace) {
            TextChange::None => None,
            TextChange::InPlace(bytes) => {
                out.push((start, end, bytes));
                None
            }
            TextChange::Reencoded(headers, bytes) => Some((headers, bytes)),
        },
        PartType::Binary(decoded) | PartType::InlineBinary(decoded) if is_report(p) => {
            if let Some(bytes) = report_part(p, decoded, &buf[start..end], replace) {
                out.push((start, end, bytes));
            }
            None
        }
        PartType::Binary(_) | PartType::InlineBinary(_) => None,
        PartType::Message(nested) => {
            nested_message(p, nested, buf, job, out, depth);
            None
        }
        PartType::Multipart(children) => {
            // Preamble, the text between parts, epilogue (RFC 2046 5.1.1): a reader
            // without MIME shows them.
            let mut at = start;
            for &c in children.iter().filter(|c| **c as usize != id) {
                let Some(child) = m.parts.get(c as usize) else { continue };
                if !job.headers_only {
                    gap(buf, at, child.offset_header as usize, replace, out);
                }
                part(m, buf, c as usize, job, out, depth + 1, false);
                at = child.offset_end as usize;
            }
            if !job.headers_only {
                gap(buf, at, end, replace, out);
            }
            None
        }
    }
}

fn gap(buf: &[u8], start: usize, end: usize, replace: &[(String, String)], out: &mut Vec<Splice>) {
    if start < end
        && end <= buf.len()
        && let Some(bytes) = text::rewrite(&buf[start..end], replace, Reading::default())
    {
        out.push((start, end, bytes));
    }
}

/// The header fields of a part below the root. `content` replaces Content-Type and
/// Content-Transfer-Encoding when the body was re-encoded.
fn header_fields(
    p: &MessagePart<'_>,
    buf: &[u8],
    replace: &[(String, String)],
    content: Option<&[(String, String)]>,
    out: &mut Vec<Splice>,
    forwarded: bool,
) {
    let mut content_written = false;
    for h in &p.headers {
        let (start, end) = (h.offset_field as usize, (h.offset_end as usize).min(buf.len()));
        if start >= end {
            continue;
        }
        let name = h.name.as_str();
        if forwarded && FORWARDED_TRACE.iter().any(|t| name.eq_ignore_ascii_case(t)) {
            out.push((start, end, Vec::new()));
            continue;
        }
        let is_content = name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-transfer-encoding");
        if let (Some(content), true) = (content, is_content) {
            // The new pair takes the place of the first of the two; the other goes.
            let mut bytes = Vec::new();
            if !content_written {
                for (n, v) in content {
                    headers::push(&mut bytes, n, v);
                }
                content_written = true;
            }
            out.push((start, end, bytes));
            continue;
        }
        match headers::rewrite_field(name, &buf[start..end], &h.value, replace) {
            Field::Keep => {}
            Field::Replace(mut bytes) => {
                if !bytes.ends_with(b"\n") && buf[..end].ends_with(b"\n") {
                    bytes.extend_from_slice(b"\r\n");
                }
                out.push((start, end, bytes));
            }
            Field::Drop => out.push((start, end, Vec::new())),
        }
    }
    if let (Some(content), false) = (content, content_written) {
        let mut bytes = Vec::new();
        for (n, v) in content {
            headers::push(&mut bytes, n, v);
        }
        let at = (p.offset_header as usize).min(buf.len());
        out.push((at, at, bytes));
    }
}

/// Trace fields of a forwarded message, dropped: they name the sender's hosts and IPs.
const FORWARDED_TRACE: &[&str] = &[
    "received",
    "x-received",
    "x-originating-ip",
    "x-forwarded-for",
    "return-path",
    "delivered-to",
    "x-original-to",
];

enum TextChange {
    None,
    /// The body's own bytes with the addresses replaced: transfer encoding and charset
    /// unchanged.
    InPlace(Vec<u8>),
    /// New Content-Type / Content-Transfer-Encoding and body.
    Reencoded(ContentHeaders, Vec<u8>),
}

/// A text part: its decoded text decides whether an address is there. When the raw
/// bytes are that text (no transfer encoding, a charset in which ASCII stays ASCII), the
/// address is replaced right there; otherwise the text is re-encoded as UTF-8.
fn text_part(p: &MessagePart<'_>, decoded: &str, raw: &[u8], replace: &[(String, String)]) -> TextChange {
    let reading = reading(p);
    if is_directory(p)
        && let Some(new) = directory(decoded, replace)
    {
        let (headers, body) = encode_part(p, &new, replace);
        return TextChange::Reencoded(headers, body);
    }
    if !text::contains(decoded.as_bytes(), replace, reading) {
        return TextChange::None;
    }
    let charset = p.content_type().and_then(|ct| ct.attribute("charset")).unwrap_or("");
    if p.encoding == Encoding::None
        && ascii_transparent(charset)
        && let Some(bytes) = text::rewrite(raw, replace, reading)
        && !text::contains(text::decode_charset(&bytes, charset.as_bytes()).as_bytes(), replace, reading)
        // An alias longer than the address must not push a line past RFC 5322 2.1.1's
        // 998 characters; quoted-printable wraps lines.
        && longest_line(&bytes) <= longest_line(raw).max(998)
    {
        return TextChange::InPlace(bytes);
    }
    let new =
        text::rewrite(decoded.as_bytes(), replace, reading).unwrap_or_else(|| decoded.as_bytes().to_vec());
    let (headers, body) = encode_part(p, &String::from_utf8_lossy(&new), replace);
    TextChange::Reencoded(headers, body)
}

/// iCalendar and vCard parts, whose readers unfold content lines before they read them.
fn is_directory(p: &MessagePart<'_>) -> bool {
    p.content_type().is_some_and(|ct| {
        let t = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase();
        ["text/calendar", "text/vcard", "text/x-vcard", "text/directory", "text/x-vcalendar"]
            .contains(&t.as_str())
    })
}

/// An iCalendar (RFC 5545 3.1) or vCard (RFC 6350 3.2) text read the way its readers read
/// it: content lines unfolded, vCard 2.1 quoted-printable values (soft breaks `=` CRLF)
/// decoded. When a hidden address shows there, the text with it replaced: quoted-printable
/// values encoded again, other lines folded again at 75 octets. None when none shows.
fn directory(text: &str, replace: &[(String, String)]) -> Option<String> {
    let unfolded = text.replace("\r\n", "\n").replace("\n ", "").replace("\n\t", "");
    let mut lines = unfolded.split('\n');
    let mut out = Vec::new();
    let mut changed = false;
    while let Some(line) = lines.next() {
        let qp =
            line.split_once(':').filter(|(head, _)| head.to_ascii_uppercase().contains("QUOTED-PRINTABLE"));
        if let Some((head, value)) = qp {
            let mut value = value.to_owned();
            while value.ends_with('=') {
                value.pop();
                match lines.next() {
                    Some(next) => value.push_str(next),
                    None => break,
                }
            }
            let bytes = quoted_printable::decode(value.as_bytes(), quoted_printable::ParseMode::Robust)
                .unwrap_or_else(|_| value.clone().into_bytes());
            match text::rewrite(&bytes, replace, Reading::default()) {
                Some(new) => {
                    changed = true;
                    out.push(format!("{head}:{}", qp_value(&new)));
                }
                None => out.push(format!("{head}:{value}")),
            }
            continue;
        }
        match text::rewrite(line.as_bytes(), replace, Reading::default()) {
            Some(new) => {
                changed = true;
                out.push(fold_content_line(&String::from_utf8_lossy(&new)));
            }
            None => out.push(fold_content_line(line)),
        }
    }
    changed.then(|| out.join("\r\n"))
}

/// A vCard 2.1 quoted-printable value on one line: `=XX` for all but printable ASCII.
fn qp_value(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b' '..=b'~').contains(&b) && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// A content line folded so no line exceeds 75 octets (RFC 5545 3.1), at character
/// boundaries, continuation lines starting with a space.
fn fold_content_line(line: &str) -> String {
    if line.len() <= 75 {
        return line.to_owned();
    }
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3);
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out
}

fn longest_line(bytes: &[u8]) -> usize {
    bytes.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max().unwrap_or(0)
}

/// How a text part is read: RFC 3676 format=flowed with DelSp=yes joins soft-broken lines.
pub fn reading(p: &MessagePart<'_>) -> Reading {
    let attr = |name: &str| p.content_type().and_then(|ct| ct.attribute(name)).map(str::to_ascii_lowercase);
    Reading {
        flowed_delsp: attr("format").as_deref() == Some("flowed") && attr("delsp").as_deref() == Some("yes"),
    }
}

/// Charsets in which every byte below 0x80 is that ASCII character and no byte of a
/// non-ASCII character is below 0x80: an address found in the bytes is the address in
/// the text, and replacing it touches nothing else. (Not so UTF-16, UTF-7, ISO-2022-*,
/// Shift_JIS, Big5 or GBK: those are decoded and re-encoded.)
fn ascii_transparent(charset: &str) -> bool {
    let c = charset.trim().to_ascii_lowercase().replace('_', "-");
    c.is_empty()
        || ["us-ascii", "ascii", "utf-8", "utf8"].contains(&c.as_str())
        || ["iso-8859-", "iso8859-", "latin", "windows-12", "cp12", "koi8-", "euc-"]
            .iter()
            .any(|p| c.starts_with(p))
}

/// New content headers and body for rewritten text, in the part's own transfer encoding
/// family (base64 stays base64, anything else becomes quoted-printable, which keeps lines
/// short and 7-bit safe). The charset becomes UTF-8, as the text now is.
fn encode_part(p: &MessagePart<'_>, text: &str, replace: &[(String, String)]) -> (ContentHeaders, Vec<u8>) {
    let clean = |s: &str| {
        text::rewrite(s.as_bytes(), replace, Reading::default())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| s.to_owned())
    };
    let (ctype, subtype) = p
        .content_type()
        .map(|ct| (ct.ctype().to_owned(), ct.subtype().unwrap_or("plain").to_owned()))
        .unwrap_or_else(|| ("text".into(), "plain".into()));
    let mut content_type = format!("{ctype}/{subtype}; charset=utf-8");
    for a in p.content_type().and_then(|ct| ct.attributes()).unwrap_or(&[]) {
        if !a.name.eq_ignore_ascii_case("charset") {
            content_type.push_str("; ");
            content_type.push_str(&headers::parameter(&a.name, &clean(&a.value)));
        }
    }
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let (cte, body) = if p.encoding == Encoding::Base64 {
        ("base64", base64_lines(text.as_bytes()))
    } else {
        ("quoted-printable", quoted_printable::encode(text.as_bytes()))
    };
    let headers = vec![
        ("Content-Type".to_owned(), content_type),
        ("Content-Transfer-Encoding".to_owned(), cte.to_owned()),
    ];
    (headers, body)
}

/// Base64 in lines of 76 characters (RFC 2045 6.8), each ending in CRLF.
fn base64_lines(data: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(b64.len() + b64.len() / 76 * 2 + 2);
    for line in b64.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A part's bytes end where the next boundary's CRLF begins; mail-parser's offset_end may
/// or may not include that CRLF, so the replacement ends the way the original did.
pub(crate) fn ending_like(mut bytes: Vec<u8>, original: &[u8]) -> Vec<u8> {
    if original.ends_with(b"\n") {
        if !bytes.ends_with(b"\n") {
            bytes.extend_from_slice(b"\r\n");
        }
    } else {
        while bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
    }
    bytes
}

/// Delivery and read reports (RFC 3464, RFC 8098, RFC 6533): header-like text that names
/// the recipient, sent as message/* so mail-parser keeps it as bytes.
pub fn is_report(p: &MessagePart<'_>) -> bool {
    p.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct.subtype().is_some_and(|s| {
                [
                    "delivery-status",
                    "disposition-notification",
                    "global-delivery-status",
                    "global-disposition-notification",
                    "feedback-report",
                    "global-headers",
                    "rfc822-headers",
                ]
                .iter()
                .any(|r| s.eq_ignore_ascii_case(r))
            })
    })
}

/// A report's body with the addresses replaced, in its own transfer encoding.
fn report_part(
    p: &MessagePart<'_>,
    decoded: &[u8],
    raw: &[u8],
    replace: &[(String, String)],
) -> Option<Vec<u8>> {
    match p.encoding {
        Encoding::None => text::rewrite(raw, replace, Reading::default()),
        Encoding::Base64 => text::rewrite(decoded, replace, Reading::default()).map(|t| base64_lines(&t)),
        Encoding::QuotedPrintable => {
            text::rewrite(decoded, replace, Reading::default()).map(quoted_printable::encode_binary)
        }
    }
}

/// A forwarded message. One that is not transfer-encoded lies in `buf` and is rewritten
/// like any part; one sent base64 or quoted-printable (RFC 2046 5.2.1 forbids it, readers
/// decode it anyway) is rewritten in its decoded bytes and encoded again.
fn nested_message(
    p: &MessagePart<'_>,
    nested: &Message<'_>,
    buf: &[u8],
    job: &Job<'_>,
    out: &mut Vec<Splice>,
    depth: usize,
) {
    let inner: &[u8] = &nested.raw_message;
    if inner.len() == buf.len() && (std::ptr::eq(inner.as_ptr(), buf.as_ptr()) || inner == buf) {
        part(nested, buf, 0, job, out, depth + 1, false);
        return;
    }
    let mut inner_splices = Vec::new();
    part(nested, inner, 0, job, &mut inner_splices, depth + 1, false);
    if inner_splices.is_empty() {
        return;
    }
    let from = nested.parts.first().map_or(0, |r| (r.offset_header as usize).min(inner.len()));
    let rewritten = apply(inner, from, inner_splices);
    let encoded = match p.encoding {
        Encoding::Base64 => base64_lines(&rewritten),
        Encoding::QuotedPrintable => quoted_printable::encode_binary(&rewritten),
        Encoding::None => rewritten,
    };
    let (start, end) = body_range(p, buf);
    out.push((start, end, ending_like(encoded, &buf[start..end])));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::parse;

    fn replace() -> Vec<(String, String)> {
        vec![("jane@example.com".into(), "k3x@relay.example".into())]
    }

    fn body_of(raw: &[u8]) -> BodyRewrite {
        rewrite(&parse(raw).unwrap(), &replace())
    }

    #[test]
    fn untouched_when_address_absent() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n";
        let out = body_of(raw);
        assert!(out.content_headers.is_none());
        assert_eq!(out.bytes, raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..].to_vec());
    }

    #[test]
    fn qp_soft_break_inside_address() {
        let raw = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nwrite to ja=\r\nne@example.com please\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let out = body_of(raw).bytes;
        let text = String::from_utf8_lossy(&out);
        assert!(!text.to_lowercase().contains("jane"), "{text}");
        assert!(text.contains("JVBERi0=\r\n--b--"), "{text}");
        let mut whole = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n".to_vec();
        whole.extend_from_slice(&out);
        let again = parse(&whole).unwrap();
        assert_eq!(again.parts.len(), 3);
        assert!(again.body_text(0).unwrap().contains("write to k3x@relay.example please"));
    }

    #[test]
    fn base64_html_with_entities() {
        let html = "<a href=\"mailto:jane%40example.com\">jane&#64;example.com</a>";
        let b64 = base64::engine::general_purpose::STANDARD.encode(html);
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        );
        let out = body_of(raw.as_bytes()).bytes;
        let mut whole = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        whole.extend_from_slice(&out);
        let again = parse(&whole).unwrap();
        let body = again.body_html(0).unwrap();
        assert!(!body.contains("jane"), "{body}");
        assert!(body.contains("k3x@relay.example"));
    }

    #[test]
    fn plain_text_is_rewritten_in_place_keeping_charset_and_encoding() {
        let raw = b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nGr\xfc\xdfe, jane@example.com\r\n-- =_lookalike boundary line\r\n";
        let out = body_of(raw);
        assert!(out.content_headers.is_none(), "no re-encoding");
        assert_eq!(out.bytes, b"Gr\xfc\xdfe, k3x@relay.example\r\n-- =_lookalike boundary line\r\n");
    }

    #[test]
    fn a_line_the_alias_would_make_too_long_is_reencoded_instead() {
        // 998 characters; with the (one character longer) alias it would be 999.
        let line = format!("{} jane@example.com", "x".repeat(981));
        let raw = format!("Content-Type: text/plain\r\n\r\n{line}\r\n");
        let out = body_of(raw.as_bytes());
        let headers = out.content_headers.expect("re-encoded");
        assert!(headers.contains(&("Content-Transfer-Encoding".into(), "quoted-printable".into())));
        assert!(out.bytes.split(|b| *b == b'\n').all(|l| l.len() <= 78), "wrapped");
    }

    #[test]
    fn forwarded_message_offsets_count_from_the_outer_message() {
        // mail-parser gives the nested parts' offsets from the start of the outer message.
        let raw = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: Jane <jane@example.com>\r\nSubject: =?utf-8?q?jane=40example.com?=\r\nContent-Type: text/plain\r\n\r\nwrite to jane@example.com\r\n--o--\r\n";
        let out = String::from_utf8(body_of(raw).bytes).unwrap();
        assert!(!out.contains("jane@example.com") && !out.contains("jane=40"), "{out}");
        assert!(out.contains("From: Jane <k3x@relay.example>\r\n"), "{out}");
        assert!(out.contains("\r\nwrite to k3x@relay.example\r\n--o--\r\n"), "{out}");
    }

    #[test]
    fn reencoded_part_without_content_type_gets_one() {
        // A part with no Content-Type whose first field is rewritten: the new content
        // headers are inserted where that field begins, and both survive.
        let b64 = base64::engine::general_purpose::STANDARD.encode("write to jane@example.com");
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Description: for jane@example.com\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        );
        let out = String::from_utf8(body_of(raw.as_bytes()).bytes).unwrap();
        assert!(
            out.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"),
            "{out}"
        );
        assert!(out.contains("Content-Description: for k3x@relay.example\r\n"), "{out}");
        let mut whole = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        whole.extend_from_slice(out.as_bytes());
        assert_eq!(parse(&whole).unwrap().body_text(0).unwrap(), "write to k3x@relay.example");
    }

    #[test]
    fn base64_forwarded_message_is_decoded_rewritten_and_encoded_again() {
        let inner = "From: jane@example.com\r\nSubject: hi\r\n\r\nwrite to jane@example.com\r\n";
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--o--\r\n",
            base64::engine::general_purpose::STANDARD.encode(inner)
        );
        let out = String::from_utf8(body_of(raw.as_bytes()).bytes).unwrap();
        let b64: String =
            out.lines().filter(|l| !l.starts_with("--") && !l.contains(':') && !l.is_empty()).collect();
        let decoded =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        assert_eq!(decoded, "From: k3x@relay.example\r\nSubject: hi\r\n\r\nwrite to k3x@relay.example\r\n");
    }

    #[test]
    fn part_headers_preamble_and_epilogue() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\nsent by jane@example.com\r\n--b\r\nContent-Type: application/pdf; name=\"jane@example.com.pdf\"\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''jane; filename*1*=%40example.com.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\nby jane@example.com\r\n";
        let out = String::from_utf8(body_of(raw).bytes).unwrap();
        assert!(!out.contains("jane"), "{out}");
        assert!(out.contains("JVBERi0=\r\n--b--\r\n"), "{out}");
        let mut whole = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        whole.extend_from_slice(out.as_bytes());
        let again = parse(&whole).unwrap();
        assert_eq!(again.attachment(0).unwrap().attachment_name(), Some("k3x@relay.example.pdf"));
    }

    #[test]
    fn calendar_and_vcard_lines_are_unfolded_rewritten_and_folded_again() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/calendar; charset=utf-8\r\n\r\nBEGIN:VEVENT\r\nORGANIZER:mailto:jane@exa\r\n mple.com\r\nEND:VEVENT\r\n--b\r\nContent-Type: text/x-vcard\r\n\r\nBEGIN:VCARD\r\nVERSION:2.1\r\nEMAIL;ENCODING=QUOTED-PRINTABLE:jane=40exam=\r\nple.com\r\nEND:VCARD\r\n--b--\r\n";
        let out = body_of(raw).bytes;
        let mut whole = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        whole.extend_from_slice(&out);
        let again = parse(&whole).unwrap();
        let all: String = again.parts.iter().filter_map(|p| p.text_contents()).collect();
        let (ics, vcf) = (&all, &all);
        assert!(ics.contains("ORGANIZER:mailto:k3x@relay.example\r\n"), "{ics}");
        assert!(vcf.contains("EMAIL;ENCODING=QUOTED-PRINTABLE:k3x@relay.example"), "{vcf}");
        assert!(!vcf.to_lowercase().contains("jane"), "{vcf}");
    }

    #[test]
    fn long_content_lines_fold_at_75_octets() {
        let line = format!("DESCRIPTION:{}", "é".repeat(60));
        let folded = fold_content_line(&line);
        assert!(folded.split("\r\n").all(|l| l.len() <= 75), "{folded}");
        assert_eq!(folded.replace("\r\n ", ""), line);
    }

    #[test]
    fn part_headers_only_toward_a_shopper() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Description: from jane@example.com\r\n\r\nbody names jane@example.com\r\n--b\r\nContent-Type: application/pdf; name=\"jane@example.com.pdf\"\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let out = String::from_utf8(rewrite_part_headers(&parse(raw).unwrap(), &replace()).bytes).unwrap();
        assert!(out.contains("Content-Description: from k3x@relay.example\r\n"), "{out}");
        assert!(out.contains("k3x@relay.example.pdf"), "{out}");
        assert!(out.contains("body names jane@example.com"), "bodies stay: {out}");
    }

    #[test]
    fn forwarded_trace_fields_are_dropped() {
        let raw = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nReceived: from pc.home.example ([192.0.2.7])\r\nX-Originating-IP: [192.0.2.7]\r\nFrom: someone@else.example\r\nSubject: hi\r\n\r\nhello\r\n--o--\r\n";
        let out = String::from_utf8(body_of(raw).bytes).unwrap();
        assert!(!out.contains("192.0.2.7") && out.contains("Subject: hi\r\n"), "{out}");
    }
}
