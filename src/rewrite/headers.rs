//! The header block the reader gets. Headers pass by an allowlist; the address-bearing
//! ones are written by the relay, never copied; no header line is made from content
//! without CR/LF being removed first.

use mail_parser::{ContentType, HeaderValue, Message, MessageParser};

use super::text::{self, Reading};
use super::{IdMap, NamedAddress, Plan};

/// Headers a reader needs that carry no routing address. Content-* of the root part are
/// handled with the body (they change when a single-part body is rewritten).
const PASSED: &[&str] = &[
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-language",
    "content-id",
    "content-description",
    "thread-topic",
    "thread-index",
    "accept-language",
    "importance",
    "priority",
    "sensitivity",
    "auto-submitted",
    "precedence",
    "keywords",
];

const CONTENT_HEADERS: &[&str] = &["content-type", "content-transfer-encoding"];

/// Writes the header block (without the blank line that ends it). `root_content` replaces
/// the root part's Content-Type / Content-Transfer-Encoding when its body was re-encoded.
pub fn write(
    out: &mut Vec<u8>,
    message: &Message<'_>,
    plan: &Plan,
    ids: &IdMap,
    root_content: Option<&Vec<(String, String)>>,
) {
    let raw = message.raw_message();
    push(out, "From", &mailbox(&plan.from));
    push(out, "Reply-To", &format!("<{}>", plan.reply_to));
    push(out, "To", &mailbox(&plan.to));
    push(out, "Message-ID", &format!("<{}>", plan.message_id));
    let in_reply_to = mapped_ids(message.in_reply_to(), ids);
    if !in_reply_to.is_empty() {
        push(out, "In-Reply-To", &in_reply_to.join(" "));
    }
    let references = mapped_ids(message.references(), ids);
    if !references.is_empty() {
        push(out, "References", &references.join(" "));
    }
    // Whatever a hidden address stood for, the reader sees the sender's alias instead.
    let hidden: Vec<(String, String)> =
        plan.hidden_in_headers.iter().map(|h| (h.to_lowercase(), plan.from.address.clone())).collect();
    let mut has_date = false;
    let root_headers = message.parts.first().map(|p| p.headers.as_slice()).unwrap_or(&[]);
    for header in root_headers {
        let name = header.name.as_str().to_ascii_lowercase();
        if !PASSED.contains(&name.as_str()) {
            continue;
        }
        if root_content.is_some() && CONTENT_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let field = &raw[header.offset_field as usize..header.offset_end as usize];
        let bytes = match rewrite_field(header.name.as_str(), field, &header.value, &hidden) {
            Field::Keep => field.to_vec(),
            Field::Replace(bytes) => bytes,
            Field::Drop => continue,
        };
        has_date |= name == "date";
        out.extend_from_slice(&bytes);
        if !bytes.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !has_date {
        push(out, "Date", &crate::time::rfc5322(crate::store::now()));
    }
    if let Some(content) = root_content {
        for (name, value) in content {
            push(out, name, value);
        }
    }
    for (name, value) in &plan.extra_headers {
        push(out, name, value);
    }
}

fn mapped_ids(value: &HeaderValue<'_>, ids: &IdMap) -> Vec<String> {
    let list: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    list.into_iter().filter_map(|id| ids.get(id)).map(|id| format!("<{id}>")).collect()
}

/// What becomes of one header field that passes to the reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Field {
    /// No hidden address in it: the original bytes.
    Keep,
    /// The field with every hidden address replaced (a complete field, CRLF-terminated).
    Replace(Vec<u8>),
    /// It could not be cleaned; better lost than leaked.
    Drop,
}

/// A header field (`field`: its raw bytes, `value`: as mail-parser read it) with every
/// hidden address (`replace`: lowercase real address, alias) replaced. The raw bytes are
/// rewritten in place first, so what was fine stays as it was; when the address hides in
/// what only the parsed value shows (RFC 2231 parameter continuations), the field is
/// written anew from that value; each result is parsed again to be sure.
pub fn rewrite_field(
    name: &str,
    field: &[u8],
    value: &HeaderValue<'_>,
    replace: &[(String, String)],
) -> Field {
    if replace.is_empty()
        || !text::contains(field, replace, Reading::default()) && !value_shows(value, replace)
    {
        return Field::Keep;
    }
    if let Some(bytes) =
        text::rewrite(field, replace, Reading::default()).filter(|b| !field_shows(b, replace))
    {
        return Field::Replace(bytes);
    }
    match rebuild(name, value, replace) {
        Some(bytes) if !field_shows(&bytes, replace) => Field::Replace(bytes),
        _ => Field::Drop,
    }
}

/// Whether a field, raw or parsed on its own, still shows a hidden address.
pub fn field_shows(field: &[u8], replace: &[(String, String)]) -> bool {
    if text::contains(field, replace, Reading::default()) {
        return true;
    }
    let mut block = field.to_vec();
    if !block.ends_with(b"\n") {
        block.extend_from_slice(b"\r\n");
    }
    block.extend_from_slice(b"\r\n");
    MessageParser::default()
        .parse_headers(&block)
        .is_some_and(|m| m.parts[0].headers.iter().any(|h| value_shows(&h.value, replace)))
}

/// Whether a parsed header value shows a hidden address in any of its decoded texts.
pub fn value_shows(value: &HeaderValue<'_>, replace: &[(String, String)]) -> bool {
    let shows = |s: &str| text::contains(s.as_bytes(), replace, Reading::default());
    match value {
        HeaderValue::Text(t) => shows(t),
        HeaderValue::TextList(list) => list.iter().any(|t| shows(t)),
        HeaderValue::Address(a) => {
            a.iter().any(|x| x.name.as_deref().is_some_and(shows) || x.address.as_deref().is_some_and(shows))
        }
        HeaderValue::ContentType(ct) => {
            shows(ct.ctype())
                || ct.subtype().is_some_and(shows)
                || ct.attributes().unwrap_or(&[]).iter().any(|a| shows(&a.value))
        }
        _ => false,
    }
}

/// The field written anew from its parsed value with the addresses replaced, for the
/// value kinds that can be written back without losing meaning. With nothing to replace,
/// it is the field in ASCII (egress uses it for next hops without SMTPUTF8).
pub(crate) fn rebuild(name: &str, value: &HeaderValue<'_>, replace: &[(String, String)]) -> Option<Vec<u8>> {
    let clean = |s: &str| -> String {
        text::rewrite(s.as_bytes(), replace, Reading::default())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| s.to_owned())
    };
    let value = match value {
        HeaderValue::Text(t) => encode_text(&clean(t)),
        HeaderValue::TextList(list) => {
            list.iter().map(|t| encode_text(&clean(t))).collect::<Vec<_>>().join(", ")
        }
        HeaderValue::Address(a) => a
            .iter()
            .map(|x| match x.address.as_deref() {
                Some(address) => {
                    mailbox(&NamedAddress { name: x.name.as_deref().map(clean), address: clean(address) })
                }
                None => encode_text(&clean(x.name.as_deref().unwrap_or(""))),
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::ContentType(ct) => content_type(ct, clean),
        _ => return None,
    };
    let mut out = Vec::new();
    push(&mut out, name, &value);
    Some(out)
}

/// `type/subtype; name="value"…` (also for Content-Disposition, which mail-parser reads
/// the same way), each value cleaned; values that are not printable ASCII are written as
/// RFC 2231 `name*=utf-8''…`.
pub fn content_type(ct: &ContentType<'_>, clean: impl Fn(&str) -> String) -> String {
    let mut out = ct.ctype().to_owned();
    if let Some(sub) = ct.subtype() {
        out.push('/');
        out.push_str(sub);
    }
    for a in ct.attributes().unwrap_or(&[]) {
        out.push_str("; ");
        out.push_str(&parameter(&a.name, &clean(&a.value)));
    }
    out
}

/// One MIME parameter (RFC 2045 5.1, RFC 2231 4).
pub fn parameter(name: &str, value: &str) -> String {
    let name: String =
        name.chars().filter(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=*".contains(*c)).collect();
    if value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        format!("{name}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        let encoded: String = value
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{name}*=utf-8''{encoded}")
    }
}

/// Replaces every case-insensitive occurrence of the needles (and their encoded forms,
/// see `text`).
pub fn replace_all(text: &str, needles: &[String], with: &str) -> String {
    let pairs: Vec<(String, String)> = needles.iter().map(|n| (n.to_lowercase(), with.to_owned())).collect();
    text::rewrite(text.as_bytes(), &pairs, Reading::default())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| text.to_owned())
}

/// `"Name" <address>`, the name quoted or RFC 2047-encoded, CR/LF removed.
pub fn mailbox(m: &NamedAddress) -> String {
    match m.name.as_deref().map(clean).filter(|n| !n.is_empty()) {
        Some(name) if name.is_ascii() => {
            let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{}>", m.address)
        }
        Some(name) => format!("{} <{}>", encoded_word(&name), m.address),
        None => format!("<{}>", m.address),
    }
}

/// A header value from text: CR/LF and other controls removed, RFC 2047 when not ASCII.
pub fn encode_text(text: &str) -> String {
    let text = clean(text);
    if text.is_ascii() { text } else { encoded_word(&text) }
}

fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// RFC 2047 B-encoding, split so no encoded word exceeds 75 characters (RFC 2047 2).
fn encoded_word(s: &str) -> String {
    use base64::Engine;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
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

/// Appends `Name: value` folded at spaces to stay under 78 characters where it can
/// (RFC 5322 2.1.1).
pub fn push(out: &mut Vec<u8>, name: &str, value: &str) {
    let value: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let mut line_len = name.len() + 1;
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && line_len + 1 + word.len() > 78 {
            out.extend_from_slice(b"\r\n");
            line_len = 0;
        }
        out.push(b' ');
        out.extend_from_slice(word.as_bytes());
        line_len += 1 + word.len();
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_inject_header_lines() {
        let m = NamedAddress {
            name: Some("Eve\r\nBcc: victim@example.com".into()),
            address: "a@relay.example".into(),
        };
        let mut out = Vec::new();
        push(&mut out, "From", &mailbox(&m));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\r\n").count(), 1, "{text}");
        assert!(text.starts_with("From: \"Eve  Bcc: victim@example.com\""));
    }

    #[test]
    fn non_ascii_names_are_encoded() {
        let m = NamedAddress { name: Some("Zoë \"Z\"".into()), address: "a@r.example".into() };
        assert!(mailbox(&m).starts_with("=?utf-8?b?"));
        let m = NamedAddress { name: Some("Acme \"Shop\"".into()), address: "a@r.example".into() };
        assert_eq!(mailbox(&m), "\"Acme \\\"Shop\\\"\" <a@r.example>");
    }

    #[test]
    fn replace_is_case_insensitive() {
        let out = replace_all("Re: Jane@Example.com asked", &["jane@example.com".into()], "x@r");
        assert_eq!(out, "Re: x@r asked");
    }
}
