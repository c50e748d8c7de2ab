//! The header block the reader gets. Headers pass by an allowlist; the address-bearing
//! ones are written by the relay, never copied; no header line is made from content
//! without CR/LF being removed first.

use mail_parser::{HeaderValue, Message};

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
        has_date |= name == "date";
        let field = &raw[header.offset_field as usize..header.offset_end as usize];
        if contains_hidden(field, &header.value, &plan.hidden_in_headers) {
            // A passed header that names a hidden address (a Subject quoting it): keep
            // its decoded text with the address replaced, or drop it if it has none.
            if let HeaderValue::Text(text) = &header.value {
                let cleaned = replace_all(text, &plan.hidden_in_headers, &plan.from.address);
                push(out, header.name.as_str(), &encode_text(&cleaned));
            }
            continue;
        }
        out.extend_from_slice(field);
        if !field.ends_with(b"\n") {
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

fn contains_hidden(field: &[u8], value: &HeaderValue<'_>, hidden: &[String]) -> bool {
    let raw = String::from_utf8_lossy(field).to_lowercase();
    let decoded = match value {
        HeaderValue::Text(t) => t.to_lowercase(),
        _ => String::new(),
    };
    hidden.iter().any(|h| raw.contains(h.as_str()) || decoded.contains(h.as_str()))
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
