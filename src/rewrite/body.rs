//! Body rewriting: a text part in which a hidden address occurs (in whatever transfer
//! encoding or charset) is decoded, rewritten and re-encoded; every other part, and every
//! part without such an address, is left byte-for-byte as it came.

use base64::Engine;
use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

use super::text::{self, Reading};

/// A rewritten single-part root: its new content headers and body.
#[derive(Debug)]
pub struct RootRewrite {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The rewritten text when it names any of the addresses (in any encoding the matcher
/// reads, see `text`), else None.
fn rewrite_text(text: &str, replace: &[(String, String)]) -> Option<String> {
    text::rewrite(text.as_bytes(), replace, Reading::default())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A leaf text part that may be rewritten (text/calendar is left alone: SPEC).
fn text_of<'a>(part: &'a MessagePart<'_>) -> Option<&'a str> {
    let is_calendar =
        part.content_type().and_then(|ct| ct.subtype()).is_some_and(|s| s.eq_ignore_ascii_case("calendar"));
    match &part.body {
        PartType::Text(t) | PartType::Html(t) if !is_calendar => Some(t.as_ref()),
        _ => None,
    }
}

/// New content headers and encoded body for rewritten text, in the part's own transfer
/// encoding family (base64 stays base64, anything else becomes quoted-printable, which
/// keeps lines short and 7-bit safe). The charset becomes UTF-8, as the text now is.
fn encode_part(part: &MessagePart<'_>, text: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let (ctype, subtype) = part
        .content_type()
        .map(|ct| (ct.ctype().to_owned(), ct.subtype().unwrap_or("plain").to_owned()))
        .unwrap_or_else(|| ("text".into(), "plain".into()));
    let mut content_type = format!("{ctype}/{subtype}; charset=utf-8");
    if let Some(attrs) = part.content_type().and_then(|ct| ct.attributes()) {
        for a in attrs.iter().filter(|a| !a.name.eq_ignore_ascii_case("charset")) {
            let value: String = a.value.chars().filter(|c| !c.is_control() && *c != '"').collect();
            content_type.push_str(&format!("; {}=\"{}\"", a.name, value));
        }
    }
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let (cte, mut body) = if part.encoding == Encoding::Base64 {
        let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let mut body = Vec::with_capacity(b64.len() + b64.len() / 76 * 2 + 2);
        for line in b64.as_bytes().chunks(76) {
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
        }
        ("base64", body)
    } else {
        ("quoted-printable", quoted_printable::encode(text.as_bytes()))
    };
    if !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    let headers = vec![
        ("Content-Type".to_owned(), content_type),
        ("Content-Transfer-Encoding".to_owned(), cte.to_owned()),
    ];
    (headers, body)
}

/// When the root part itself is a text part that needs rewriting.
pub fn rewrite_root(message: &Message<'_>, _raw: &[u8], replace: &[(String, String)]) -> Option<RootRewrite> {
    if replace.is_empty() {
        return None;
    }
    let root = message.parts.first()?;
    let new_text = rewrite_text(text_of(root)?, replace)?;
    let (headers, body) = encode_part(root, &new_text);
    Some(RootRewrite { headers, body })
}

/// The whole raw message with every nested text part that names a hidden address
/// rewritten; nested messages (forwards, message/rfc822) are rewritten recursively.
pub fn rewrite_parts(message: &Message<'_>, raw: &[u8], replace: &[(String, String)]) -> Vec<u8> {
    if replace.is_empty() {
        return raw.to_vec();
    }
    // (start, end, replacement) in ascending order; parts never overlap as leaves.
    let mut splices: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for part in message.parts.iter().skip(1) {
        let (hs, bs, end) =
            (part.offset_header as usize, part.offset_body as usize, part.offset_end as usize);
        if !(hs <= bs && bs <= end && end <= raw.len()) {
            continue;
        }
        if let Some(new_text) = text_of(part).and_then(|t| rewrite_text(t, replace)) {
            let (content, body) = encode_part(part, &new_text);
            let mut block = Vec::new();
            for h in &part.headers {
                let name = h.name.as_str();
                if name.eq_ignore_ascii_case("content-type")
                    || name.eq_ignore_ascii_case("content-transfer-encoding")
                {
                    continue;
                }
                block.extend_from_slice(&raw[h.offset_field as usize..h.offset_end as usize]);
            }
            for (name, value) in &content {
                super::headers::push(&mut block, name, value);
            }
            block.extend_from_slice(b"\r\n");
            block.extend_from_slice(&body);
            splices.push((hs, end, trim_to_original_ending(block, &raw[hs..end])));
        } else if let PartType::Message(nested) = &part.body {
            let inner = &raw[bs..end];
            if nested.raw_message() != inner {
                continue;
            }
            let rewritten = rewrite_nested(nested, inner, replace);
            if rewritten != inner {
                splices.push((bs, end, rewritten));
            }
        }
    }
    splices.sort_by_key(|s| s.0);
    let mut out = Vec::with_capacity(raw.len() + 256);
    let mut at = 0;
    for (start, end, bytes) in splices {
        if start < at {
            continue; // inside a part already replaced
        }
        out.extend_from_slice(&raw[at..start]);
        out.extend_from_slice(&bytes);
        at = end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

/// A forwarded message: its headers get the addresses replaced in their text (quoted or
/// encoded headers are rebuilt), its parts are rewritten like the outer message's.
fn rewrite_nested(nested: &Message<'_>, raw: &[u8], replace: &[(String, String)]) -> Vec<u8> {
    let Some(root) = nested.parts.first() else { return raw.to_vec() };
    let body_start = (root.offset_body as usize).min(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for h in &root.headers {
        let field = &raw[h.offset_field as usize..(h.offset_end as usize).min(raw.len())];
        let text = String::from_utf8_lossy(field);
        let decoded = match &h.value {
            mail_parser::HeaderValue::Text(t) => Some(t.to_string()),
            _ => None,
        };
        let needs = rewrite_text(&text, replace).is_some()
            || decoded.as_deref().and_then(|d| rewrite_text(d, replace)).is_some();
        if !needs {
            out.extend_from_slice(field);
            continue;
        }
        match decoded.and_then(|d| rewrite_text(&d, replace)) {
            Some(clean) => {
                super::headers::push(&mut out, h.name.as_str(), &super::headers::encode_text(&clean))
            }
            // Address headers: the raw text with the addresses replaced.
            None => {
                if let Some(clean) = rewrite_text(&text, replace) {
                    out.extend_from_slice(clean.as_bytes());
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    match rewrite_root(nested, raw, replace) {
        Some(r) => {
            // Rebuild the nested header block's content headers too.
            let mut with_headers = Vec::new();
            for line in split_header_fields(&out) {
                let lower = String::from_utf8_lossy(line).to_ascii_lowercase();
                if lower.starts_with("content-type:") || lower.starts_with("content-transfer-encoding:") {
                    continue;
                }
                if line != b"\r\n" {
                    with_headers.extend_from_slice(line);
                }
            }
            for (name, value) in &r.headers {
                super::headers::push(&mut with_headers, name, value);
            }
            with_headers.extend_from_slice(b"\r\n");
            with_headers.extend_from_slice(&r.body);
            with_headers
        }
        None => {
            let body = rewrite_parts(nested, raw, replace);
            out.extend_from_slice(&body[body_start.min(body.len())..]);
            out
        }
    }
}

/// Header fields of a block, each with its folded continuation lines.
fn split_header_fields(block: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < block.len() {
        if block[i] == b'\n' {
            let next = block.get(i + 1);
            if !matches!(next, Some(b' ') | Some(b'\t')) {
                fields.push(&block[start..=i]);
                start = i + 1;
            }
        }
        i += 1;
    }
    if start < block.len() {
        fields.push(&block[start..]);
    }
    fields
}

/// A part's bytes end where the next boundary's CRLF begins; mail-parser's offset_end
/// may or may not include that CRLF, so the replacement ends the way the original did.
fn trim_to_original_ending(mut block: Vec<u8>, original: &[u8]) -> Vec<u8> {
    if !original.ends_with(b"\n") {
        while block.ends_with(b"\n") {
            block.pop();
            if block.ends_with(b"\r") {
                block.pop();
            }
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::parse;

    fn replace() -> Vec<(String, String)> {
        vec![("jane@example.com".into(), "k3x@relay.example".into())]
    }

    #[test]
    fn untouched_when_address_absent() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n";
        let m = parse(raw).unwrap();
        assert_eq!(rewrite_parts(&m, raw, &replace()), raw.to_vec());
    }

    #[test]
    fn qp_soft_break_inside_address() {
        let raw = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nwrite to ja=\r\nne@example.com please\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let m = parse(raw).unwrap();
        let out = rewrite_parts(&m, raw, &replace());
        let text = String::from_utf8_lossy(&out);
        assert!(!text.to_lowercase().contains("jane"), "{text}");
        assert!(text.contains("k3x@relay.example"), "{text}");
        assert!(text.contains("JVBERi0=\r\n--b--"), "{text}");
        let again = parse(&out).unwrap();
        assert_eq!(again.parts.len(), m.parts.len());
        assert!(again.body_text(0).unwrap().contains("write to k3x@relay.example please"));
    }

    #[test]
    fn base64_html_with_entities() {
        let html = "<a href=\"mailto:jane%40example.com\">jane&#64;example.com</a>";
        let b64 = base64::engine::general_purpose::STANDARD.encode(html);
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        );
        let m = parse(raw.as_bytes()).unwrap();
        let out = rewrite_parts(&m, raw.as_bytes(), &replace());
        let again = parse(&out).unwrap();
        let body = again.body_html(0).unwrap();
        assert!(!body.contains("jane"), "{body}");
        assert!(body.contains("k3x@relay.example"));
    }
}
