//! Turns a message nobody here wrote into one the shopper sends: the shopper becomes the
//! sender, and the shopper's address goes into headers and into the body of every text
//! part, written in that part's own transfer encoding and charset. Everything else of the
//! original stays as it was, malformations included.

use base64::Engine;
use mail_parser::{Encoding, HeaderName, Message, MessageParser, MimeHeaders, PartType};

/// The host part injected into Message-ID and References.
pub const ID_HOST: &str = "janes-laptop.shopper.example";

/// Bare LF becomes CRLF, as on the SMTP wire (RFC 5321 2.3.8).
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 20);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// `original` as sent by `shopper` to `store_alias`; `n` varies how the address is
/// written in the Subject (plain, RFC 2047 Q, RFC 2047 B split over two words).
pub fn shopper_message(original: &[u8], shopper: &str, store_alias: &str, n: usize) -> Vec<u8> {
    let mut raw = crlf(original);
    // An mbox "From " separator line belongs to the mailbox file, not to the message.
    if raw.starts_with(b"From ")
        && let Some(eol) = raw.windows(2).position(|w| w == b"\r\n")
    {
        raw.drain(..eol + 2);
    }
    let parsed = MessageParser::default().parse(&raw).filter(|m| m.parts[0].offset_body > 0);
    let Some(message) = parsed else {
        // No header block at all: everything is body.
        let mut out = new_headers(shopper, store_alias, None, n);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&inject_plain(&raw, "", false));
        return out;
    };
    let mut splices = Vec::new();
    body_splices(&message, &raw, shopper, 0, &mut splices);
    splices.sort_by_key(|s| s.0);

    let root = &message.parts[0];
    let subject = root.headers.iter().find(|h| h.name == HeaderName::Subject).map(|h| {
        String::from_utf8_lossy(&raw[h.offset_start as usize..h.offset_end as usize]).trim().to_owned()
    });
    let mut out = new_headers(shopper, store_alias, subject.as_deref(), n);
    // The original header block without the fields the shopper's own replace.
    let replaced = [
        HeaderName::From,
        HeaderName::Sender,
        HeaderName::ReplyTo,
        HeaderName::To,
        HeaderName::Subject,
        HeaderName::MessageId,
    ];
    let mut at = 0;
    for h in root.headers.iter().filter(|h| replaced.contains(&h.name)) {
        let (s, e) = (h.offset_field as usize, h.offset_end as usize);
        if s >= at && e <= root.offset_body as usize {
            out.extend_from_slice(&raw[at..s]);
            at = e;
        }
    }
    out.extend_from_slice(&raw[at..root.offset_body as usize]);
    at = root.offset_body as usize;
    for (s, e, bytes) in splices {
        if s < at {
            continue;
        }
        out.extend_from_slice(&raw[at..s]);
        out.extend_from_slice(&bytes);
        at = e;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

fn new_headers(shopper: &str, store_alias: &str, subject: Option<&str>, n: usize) -> Vec<u8> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (local, domain) = shopper.split_once('@').unwrap_or((shopper, ""));
    let in_subject = match n % 3 {
        0 => format!("(from {shopper})"),
        1 => format!("=?utf-8?q?from_{local}=40{domain}?="),
        _ => format!("=?utf-8?b?{}?= =?utf-8?b?{}?=", b64(&format!("from {local}@")), b64(domain)),
    };
    let subject = match subject {
        Some(s) if !s.is_empty() => format!("{s} {in_subject}"),
        _ => in_subject,
    };
    format!(
        "From: Jane Doe <{shopper}>\r\n\
         To: Acme Shop <{store_alias}>\r\n\
         Subject: {subject}\r\n\
         Reply-To: Jane <{shopper}>\r\n\
         Sender: =?utf-8?b?{}?= <{shopper}>\r\n\
         Disposition-Notification-To: {shopper}\r\n\
         Return-Receipt-To: <{shopper}>\r\n\
         List-Unsubscribe: <mailto:{local}%40{domain}?subject=stop>\r\n\
         X-Shopper: {shopper}\r\n\
         Message-ID: <corpus-{n}.{local}@{ID_HOST}>\r\n\
         References: <earlier-{n}@{ID_HOST}>\r\n",
        b64(shopper)
    )
    .into_bytes()
}

/// (start, end, replacement) for the body of every text part of `m`, nested messages
/// included when they lie in `raw` as they are (not transfer-encoded).
fn body_splices(
    m: &Message<'_>,
    raw: &[u8],
    shopper: &str,
    depth: usize,
    out: &mut Vec<(usize, usize, Vec<u8>)>,
) {
    // A nested message that was transfer-encoded lies in its own decoded buffer; the
    // offsets of one that was not count from the start of `raw`.
    if depth > 10 || m.raw_message.as_ref() != raw {
        return;
    }
    for p in &m.parts {
        let (s, e) = (p.offset_body as usize, (p.offset_end as usize).min(raw.len()));
        if s > e {
            continue;
        }
        let is_html = matches!(p.body, PartType::Html(_));
        match &p.body {
            PartType::Text(_) | PartType::Html(_) => {
                let charset =
                    p.content_type().and_then(|ct| ct.attribute("charset")).unwrap_or("").to_lowercase();
                let body = &raw[s..e];
                let new = match p.encoding {
                    Encoding::Base64 => inject_base64(body, shopper, &charset, is_html),
                    Encoding::QuotedPrintable => inject_qp(body, shopper, is_html),
                    Encoding::None => {
                        inject_plain(body, &line(shopper, is_html), charset.starts_with("utf-16"))
                    }
                };
                out.push((s, e, new));
            }
            PartType::Message(inner) => body_splices(inner, raw, shopper, depth + 1, out),
            _ => {}
        }
    }
}

fn line(shopper: &str, html: bool) -> String {
    let (local, domain) = shopper.split_once('@').unwrap_or((shopper, ""));
    if html {
        format!("<p><a href=\"mailto:{local}%40{domain}\">{local}&#64;{domain}</a></p>\r\n")
    } else {
        format!("Reply to {shopper} ({})\r\n", shopper.to_uppercase())
    }
}

fn inject_plain(body: &[u8], line: &str, utf16: bool) -> Vec<u8> {
    let mut out = if utf16 {
        line.encode_utf16().flat_map(u16::to_be_bytes).collect()
    } else {
        line.as_bytes().to_vec()
    };
    out.extend_from_slice(body);
    out
}

/// A quoted-printable line with the address split by a soft line break and its `@`
/// written as `=40`.
fn inject_qp(body: &[u8], shopper: &str, html: bool) -> Vec<u8> {
    let (local, domain) = shopper.split_once('@').unwrap_or((shopper, ""));
    let half = local.len() / 2;
    let qp = if html {
        format!(
            "<p><a href=3D\"mailto:{}=\r\n{}=40{domain}\">{local}&#64;{domain}</a></p>\r\n",
            &local[..half],
            &local[half..]
        )
    } else {
        format!(
            "Reply to {}=\r\n{}=40{domain} ({})\r\n",
            &local[..half],
            &local[half..],
            shopper.to_uppercase()
        )
    };
    let mut out = qp.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The decoded body with the line in front, base64 again in 76-character lines, ending
/// the way the original did.
fn inject_base64(body: &[u8], shopper: &str, charset: &str, html: bool) -> Vec<u8> {
    let clean: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let decoded = engine.decode(&clean).unwrap_or_default();
    let line = line(shopper, html);
    let data = match decoded.as_slice() {
        // UTF-16 text: after the byte order mark, in its byte order.
        [0xff, 0xfe, rest @ ..] if charset.starts_with("utf-16") => {
            let mut d = vec![0xff, 0xfe];
            d.extend(line.encode_utf16().flat_map(u16::to_le_bytes));
            d.extend_from_slice(rest);
            d
        }
        _ => inject_plain(&decoded, &line, charset.starts_with("utf-16")),
    };
    let enc = base64::engine::general_purpose::STANDARD.encode(&data);
    let mut out = Vec::with_capacity(enc.len() * 78 / 76 + 2);
    for (i, chunk) in enc.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(chunk);
    }
    if body.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
