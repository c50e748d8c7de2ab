//! The leak detector: finds an address in delivered mail in any encoding a reader or a
//! mail client undoes. Its decoders are written here for the tests and share no code
//! with src/rewrite; it parses with mail-parser, as the relay does, so
//! tests/leakcheck.py (Python's email package) gives a second opinion.
//!
//! Searched, case-insensitively: the raw bytes; the raw bytes quoted-printable decoded as
//! a whole; base64 of the address at each of the 3 alignments in the raw bytes with line
//! breaks removed; every header of every part (nested messages included), unfolded and
//! RFC 2047-decoded, and its parsed value (names, addresses, parameters with RFC 2231
//! joined); every part body after transfer and charset decoding, then after HTML character
//! references, percent-decoding, both, RFC 2047 words found in the text, and format=flowed
//! soft breaks; preambles and epilogues.

use base64::Engine;
use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders, PartType};

/// What part of a message must be free of the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Headers and bodies: what a store must never see of a shopper.
    Everything,
    /// The message's own header block: what a shopper must never see of a store.
    HeadersOnly,
}

/// Every place the needles occur, as "where: needle (how)"; empty when none does.
pub fn find(raw: &[u8], needles: &[&str], scope: Scope) -> Vec<String> {
    let mut f = Finder { needles: with_idna_forms(needles), leaks: Vec::new() };
    let Some(message) = MessageParser::default().parse(raw) else {
        f.bytes("unparseable message", raw);
        return f.leaks;
    };
    match scope {
        Scope::HeadersOnly => {
            let head = &raw[..(message.parts[0].offset_body as usize).min(raw.len())];
            f.bytes("header block", head);
            f.text("header block", &decode_encoded_words(&unfold(head)));
            headers(&mut f, &message, 0, "message");
        }
        Scope::Everything => {
            f.bytes("raw message", raw);
            f.bytes("raw message, quoted-printable decoded", &qp_decode(raw));
            let flat: Vec<u8> = raw.iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect();
            for needle in needles {
                if let Some(form) =
                    base64_forms(needle).into_iter().find(|form| contains(&flat, form.as_bytes()))
                {
                    f.leaks.push(format!("raw message: {needle} (base64 {form})"));
                }
            }
            part(&mut f, &message, 0, "message", 0);
        }
    }
    f.leaks
}

struct Finder {
    needles: Vec<String>,
    leaks: Vec<String>,
}

impl Finder {
    fn bytes(&mut self, place: &str, data: &[u8]) {
        let lower = data.to_ascii_lowercase();
        for n in &self.needles {
            if contains(&lower, n.as_bytes()) {
                self.leaks.push(format!("{place}: {n} (bytes)"));
            }
        }
    }

    /// One finding per place: the first view that shows a needle.
    fn text(&mut self, place: &str, text: &str) {
        for (how, view) in text_views(text) {
            let lower = view.to_lowercase();
            if let Some(n) = self.needles.iter().find(|n| lower.contains(n.as_str())) {
                self.leaks.push(format!("{place}: {n} ({how})"));
                return;
            }
        }
    }
}

/// The text and what a reader or a mail client may turn it into.
fn text_views(text: &str) -> Vec<(&'static str, String)> {
    let unescaped = html_unescape(text);
    let words = decode_encoded_words(text.as_bytes());
    let rendered = html_unescape(&strip_tags(text));
    let mut views = vec![
        ("text", text.to_owned()),
        ("html-entities", unescaped.clone()),
        ("percent", percent_decode(text)),
        ("html-entities+percent", percent_decode(&unescaped)),
        ("rfc2047-in-text", words.clone()),
        ("rfc2047+html-entities", html_unescape(&words)),
        ("quoted-printable", String::from_utf8_lossy(&qp_decode(text.as_bytes())).into_owned()),
    ];
    // What a reader shows of the same characters: tags and comments gone, NFKC, invisible
    // code points dropped, and the address syntax that names the same mailbox reduced
    // (white space and folding, quotes, comments).
    let more: Vec<(&'static str, String)> = [
        ("tags stripped", rendered.clone()),
        ("tags stripped+percent", percent_decode(&rendered)),
        ("text", text.to_owned()),
        ("html-entities+percent", percent_decode(&unescaped)),
        ("quoted-printable", String::from_utf8_lossy(&qp_decode(text.as_bytes())).into_owned()),
    ]
    .into_iter()
    .flat_map(|(how, v)| {
        let squeezed = squeeze(&v, false);
        let uncommented = squeeze(&v, true);
        [(how, squeezed), (how, uncommented)]
    })
    .map(|(how, v)| (normalized_label(how), v))
    .collect();
    views.extend(more);
    views
}

fn normalized_label(how: &'static str) -> &'static str {
    match how {
        "tags stripped" => "html rendered, NFKC, address syntax",
        "tags stripped+percent" => "html rendered+percent, NFKC, address syntax",
        "text" => "NFKC, invisible characters, address syntax",
        "html-entities+percent" => "html-entities+percent, NFKC, address syntax",
        _ => "quoted-printable, NFKC, address syntax",
    }
}

/// NFKC, default-ignorable code points dropped, then white space, quotes, backslashes and
/// (`uncomment`) parenthesized comments removed.
fn squeeze(text: &str, uncomment: bool) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.nfkc() {
        let ignorable = matches!(c as u32, 0xAD | 0x34F | 0x61C | 0x115F | 0x1160 | 0x17B4 | 0x17B5
            | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164
            | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0xE0000..=0xE0FFF);
        if ignorable || c.is_whitespace() || c.is_control() || c == '"' || c == '\\' {
            continue;
        }
        if uncomment {
            if c == '(' {
                depth += 1;
                continue;
            }
            if c == ')' && depth > 0 {
                depth -= 1;
                continue;
            }
            if depth > 0 {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// HTML without tags and comments (text nodes joined, as a browser lays inline text).
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = if after.starts_with("<!--") {
            after.find("-->").map(|e| e + 3)
        } else if after[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!') {
            after.find('>').map(|e| e + 1)
        } else {
            out.push('<');
            rest = &after[1..];
            continue;
        };
        match end {
            Some(e) => {
                // Attribute values a reader sees or follows stay, between spaces.
                let tag = &after[..e];
                for value in tag.split(['"', '\'']).skip(1).step_by(2) {
                    out.push(' ');
                    out.push_str(value);
                    out.push(' ');
                }
                rest = &after[e..];
            }
            None => {
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The needles, lowercase, each also with its domain in the other IDNA form.
fn with_idna_forms(needles: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in needles {
        let n = n.to_lowercase();
        let mut forms = vec![n.clone()];
        if let Some((local, domain)) = n.rsplit_once('@') {
            if let Ok(a) = idna::domain_to_ascii(domain) {
                forms.push(format!("{local}@{}", a.to_lowercase()));
            }
            forms.push(format!("{local}@{}", idna::domain_to_unicode(domain).0.to_lowercase()));
        }
        for f in forms {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn part(f: &mut Finder, m: &Message<'_>, id: usize, place: &str, depth: usize) {
    let Some(p) = m.parts.get(id) else { return };
    if depth > 50 {
        return;
    }
    headers(f, m, id, place);
    lenient_body(f, m, p, place);
    // Offsets of a nested message's parts count from the start of the outer message's
    // bytes (`raw_message`), not from the nested message (`raw_message()`).
    let raw: &[u8] = m.raw_message.as_ref();
    match &p.body {
        PartType::Text(t) | PartType::Html(t) => {
            let what = format!("{place} body ({})", content_type(p));
            f.text(&what, t);
            let flowed = p
                .content_type()
                .and_then(|ct| ct.attribute("format"))
                .is_some_and(|v| v.eq_ignore_ascii_case("flowed"));
            if flowed {
                let delsp = p
                    .content_type()
                    .and_then(|ct| ct.attribute("delsp"))
                    .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
                f.text(&format!("{what} unflowed"), &unflow(t, delsp));
            }
        }
        PartType::Binary(b) | PartType::InlineBinary(b) => {
            let what = format!("{place} body ({})", content_type(p));
            f.bytes(&what, b);
            f.text(&what, &String::from_utf8_lossy(b));
            let utf16: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            f.text(&format!("{what} as UTF-16LE"), &String::from_utf16_lossy(&utf16));
            if content_type(p).starts_with("message/")
                && let Some(inner) = MessageParser::default().parse(b.as_ref())
            {
                part(f, &inner, 0, &format!("{place}.1 (parsed again)"), depth + 1);
            }
        }
        PartType::Message(inner) => part(f, inner, 0, &format!("{place}.1"), depth + 1),
        PartType::Multipart(children) => {
            let first = children.first().and_then(|c| m.parts.get(*c as usize));
            let last = children.last().and_then(|c| m.parts.get(*c as usize));
            if let Some(first) = first {
                f.text(&format!("{place} preamble"), &lossy(raw, p.offset_body, first.offset_header));
            }
            if let Some(last) = last {
                f.text(&format!("{place} epilogue"), &lossy(raw, last.offset_end, p.offset_end));
            }
            for (i, c) in children.iter().enumerate() {
                if *c as usize != id {
                    part(f, m, *c as usize, &format!("{place}.{}", i + 1), depth + 1);
                }
            }
        }
    }
}

/// The part's body as a lenient reader decodes it: base64 skipping what is not in the
/// alphabet, and in charsets mail-parser does not read (UTF-32, EBCDIC code page 037).
fn lenient_body(f: &mut Finder, m: &Message<'_>, p: &mail_parser::MessagePart<'_>, place: &str) {
    if matches!(p.body, PartType::Multipart(_) | PartType::Message(_)) {
        return;
    }
    let raw: &[u8] = m.raw_message.as_ref();
    let end = (p.offset_end as usize).min(raw.len());
    let body = raw.get((p.offset_body as usize).min(end)..end).unwrap_or_default();
    let cte = p
        .headers
        .iter()
        .rev()
        .find(|h| h.name.as_str().eq_ignore_ascii_case("content-transfer-encoding"))
        .map(|h| {
            String::from_utf8_lossy(&raw[h.offset_start as usize..h.offset_end as usize])
                .trim()
                .to_lowercase()
        })
        .unwrap_or_default();
    let bytes: Vec<u8> = if cte == "base64" {
        let clean: Vec<u8> =
            body.iter().copied().filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/').collect();
        let mut padded = clean.clone();
        padded.truncate(clean.len() / 4 * 4 + if clean.len() % 4 > 1 { clean.len() % 4 } else { 0 });
        while padded.len() % 4 != 0 {
            padded.push(b'=');
        }
        base64::engine::general_purpose::STANDARD.decode(&padded).unwrap_or_default()
    } else {
        body.to_vec()
    };
    let what = format!("{place} body, leniently decoded");
    f.bytes(&what, &bytes);
    let charset = p.content_type().and_then(|ct| ct.attribute("charset")).unwrap_or("").to_ascii_lowercase();
    let text = if charset.starts_with("utf-32") || charset.starts_with("ucs-4") {
        let le = charset.ends_with("le") || bytes.starts_with(&[0xff, 0xfe, 0, 0]);
        bytes
            .chunks_exact(4)
            .filter_map(|c| {
                let v = if le {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                };
                char::from_u32(v)
            })
            .collect()
    } else if ["ibm037", "cp037", "ebcdic-cp-us", "ibm-037", "ibm500", "cp500", "ibm1047"]
        .contains(&charset.as_str())
    {
        bytes.iter().map(|b| ebcdic(*b)).collect()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    f.text(&what, &text);
}

/// EBCDIC code page 037: letters, digits and the characters of an address.
fn ebcdic(b: u8) -> char {
    match b {
        0x81..=0x89 => (b'a' + (b - 0x81)) as char,
        0x91..=0x99 => (b'j' + (b - 0x91)) as char,
        0xa2..=0xa9 => (b's' + (b - 0xa2)) as char,
        0xc1..=0xc9 => (b'A' + (b - 0xc1)) as char,
        0xd1..=0xd9 => (b'J' + (b - 0xd1)) as char,
        0xe2..=0xe9 => (b'S' + (b - 0xe2)) as char,
        0xf0..=0xf9 => (b'0' + (b - 0xf0)) as char,
        0x7c => '@',
        0x4b => '.',
        0x60 => '-',
        0x6d => '_',
        0x4e => '+',
        _ => ' ',
    }
}

fn lossy(raw: &[u8], start: u32, end: u32) -> String {
    let (start, end) = (start as usize, (end as usize).min(raw.len()));
    if start < end { String::from_utf8_lossy(&raw[start..end]).into_owned() } else { String::new() }
}

fn content_type(p: &mail_parser::MessagePart<'_>) -> String {
    p.content_type()
        .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_lowercase())
        .unwrap_or_else(|| "no content-type".into())
}

fn headers(f: &mut Finder, m: &Message<'_>, id: usize, place: &str) {
    // Offsets of a nested message's parts count from the start of the outer message's
    // bytes (`raw_message`), not from the nested message (`raw_message()`).
    let raw: &[u8] = m.raw_message.as_ref();
    let Some(p) = m.parts.get(id) else { return };
    for h in &p.headers {
        let what = format!("{place} header {}", h.name.as_str());
        let (s, e) = (h.offset_field as usize, (h.offset_end as usize).min(raw.len()));
        if s < e {
            let field = unfold(&raw[s..e]);
            f.bytes(&what, &field);
            f.text(&what, &decode_encoded_words(&field));
        }
        match &h.value {
            HeaderValue::Text(t) => f.text(&what, t),
            HeaderValue::TextList(list) => list.iter().for_each(|t| f.text(&what, t)),
            HeaderValue::Address(a) => {
                for addr in a.iter() {
                    f.text(&what, addr.name.as_deref().unwrap_or(""));
                    f.text(&what, addr.address.as_deref().unwrap_or(""));
                }
            }
            HeaderValue::ContentType(ct) => {
                for attr in ct.attributes().unwrap_or(&[]) {
                    f.text(&format!("{what} parameter {}", attr.name), &attr.value);
                }
            }
            _ => {}
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// RFC 5322 2.2.3: a line break followed by white space is not part of the value.
pub fn unfold(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let brk = match (field[i], field.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\n', _) => 1,
            _ => 0,
        };
        if brk > 0 && matches!(field.get(i + brk), Some(b' ') | Some(b'\t')) {
            i += brk;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Quoted-printable decoding of any bytes: soft line breaks removed, `=XX` (either case)
/// decoded.
pub fn qp_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'=' {
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if data.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (data.get(i + 1).and_then(hex), data.get(i + 2).and_then(hex)) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// The base64 characters that must appear wherever `needle` (as written, lowercase or
/// uppercase) is base64-encoded starting at byte 0, 1 or 2 of a 3-byte group: only those
/// no neighbouring byte influences.
pub fn base64_forms(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for variant in [needle.to_owned(), needle.to_lowercase(), needle.to_uppercase()] {
        for k in 0..3usize {
            let mut bytes = vec![0u8; k];
            bytes.extend_from_slice(variant.as_bytes());
            let enc = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let start = (k * 8).div_ceil(6);
            let end = (k + variant.len()) * 8 / 6;
            out.push(enc[start..end].to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `%XX` decoded; the bytes read as UTF-8 where they are.
pub fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// HTML character references: decimal and hex (with or without the `;`, as HTML 5
/// readers accept), and the named ones for every character an address can hold.
pub fn html_unescape(text: &str) -> String {
    const NAMED: &[(&str, char)] = &[
        ("commat", '@'),
        ("period", '.'),
        ("lowbar", '_'),
        ("hyphen", '-'),
        ("dash", '-'),
        ("plus", '+'),
        ("percnt", '%'),
        ("amp", '&'),
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("num", '#'),
        ("excl", '!'),
        ("dollar", '$'),
        ("ast", '*'),
        ("sol", '/'),
        ("equals", '='),
        ("quest", '?'),
        ("Hat", '^'),
        ("grave", '`'),
        ("lbrace", '{'),
        ("rbrace", '}'),
        ("verbar", '|'),
        ("vert", '|'),
        ("colon", ':'),
        ("semi", ';'),
        ("comma", ','),
        ("lpar", '('),
        ("rpar", ')'),
        ("lsqb", '['),
        ("rsqb", ']'),
        ("bsol", '\\'),
        ("nbsp", '\u{a0}'),
        ("NewLine", '\n'),
        ("Tab", '\t'),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (ch, used) = if let Some(num) = after.strip_prefix('#') {
            let (radix, digits) = match num.strip_prefix(['x', 'X']) {
                Some(h) => (16, h),
                None => (10, num),
            };
            let len = digits.chars().take_while(|c| c.is_digit(radix)).count();
            let value = u32::from_str_radix(&digits[..len], radix).ok().and_then(char::from_u32);
            let semi = usize::from(digits[len..].starts_with(';'));
            match value {
                Some(c) if len > 0 => (Some(c), 1 + (num.len() - digits.len()) + len + semi),
                _ => (None, 0),
            }
        } else {
            let len = after.chars().take_while(|c| c.is_ascii_alphanumeric()).count();
            match NAMED.iter().find(|(n, _)| *n == &after[..len]) {
                Some((_, c)) if after[len..].starts_with(';') => (Some(*c), len + 1),
                _ => (None, 0),
            }
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// RFC 2047 encoded words wherever they occur (also glued to other text, as lenient
/// readers decode them), adjacent ones joined across the white space between them.
pub fn decode_encoded_words(data: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(data.len());
    let mut i = 0;
    let mut last_word_end: Option<usize> = None;
    while i < data.len() {
        if data[i] == b'='
            && data.get(i + 1) == Some(&b'?')
            && let Some((decoded, end)) = encoded_word(data, i)
        {
            // RFC 2047 6.2: white space between adjacent encoded words is not text.
            if let Some(prev) = last_word_end
                && data[prev..i].iter().all(|b| b.is_ascii_whitespace())
            {
                out.truncate(out.len() - (i - prev));
            }
            out.extend_from_slice(decoded.as_bytes());
            i = end;
            last_word_end = Some(end);
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The encoded word starting at `start` (`=?charset?B|Q?text?=`), decoded, and where it ends.
fn encoded_word(data: &[u8], start: usize) -> Option<(String, usize)> {
    let rest = &data[start + 2..];
    let q1 = rest.iter().position(|b| *b == b'?')?;
    let charset = String::from_utf8_lossy(&rest[..q1]).to_lowercase();
    let enc = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') || charset.is_empty() || charset.contains(char::is_whitespace) {
        return None;
    }
    let text_start = q1 + 3;
    let len = rest[text_start..].windows(2).position(|w| w == b"?=")?;
    let text = &rest[text_start..text_start + len];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let bytes = match enc.to_ascii_lowercase() {
        b'b' => {
            let clean: Vec<u8> = text.iter().copied().filter(|b| *b != b'=').collect();
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(&clean).ok()?
        }
        b'q' => {
            let spaced: Vec<u8> = text.iter().map(|b| if *b == b'_' { b' ' } else { *b }).collect();
            qp_decode(&spaced)
        }
        _ => return None,
    };
    let charset = charset.split('*').next().unwrap_or("");
    Some((decode_charset(&bytes, charset), start + 2 + text_start + len + 2))
}

/// Bytes in a charset as text. Only UTF-16 needs real work for an ASCII address: in every
/// other charset mail uses, ASCII stays ASCII, so Latin-1 stands in for the unknown ones.
fn decode_charset(bytes: &[u8], charset: &str) -> String {
    let utf16 = |be: bool, b: &[u8]| {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| if be { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match charset {
        "utf-16be" => utf16(true, bytes),
        "utf-16le" => utf16(false, bytes),
        "utf-16" => match bytes {
            [0xff, 0xfe, rest @ ..] => utf16(false, rest),
            [0xfe, 0xff, rest @ ..] => utf16(true, rest),
            _ => utf16(true, bytes),
        },
        _ => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => bytes.iter().map(|b| *b as char).collect(),
        },
    }
}

/// RFC 3676 4.2: a line ending in a space continues on the next line (its quote marks and
/// space-stuffing not repeated); with DelSp=yes that space is not text.
pub fn unflow(text: &str, delsp: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.ends_with(' ') && line != "-- " && lines.peek().is_some() {
            out.push_str(if delsp { &line[..line.len() - 1] } else { line });
            if let Some(next) = lines.peek_mut() {
                let stripped = next.trim_start_matches('>');
                *next = stripped.strip_prefix(' ').unwrap_or(stripped);
            }
        } else {
            out.push_str(line);
            if lines.peek().is_some() {
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_are_found_at_every_alignment() {
        let forms = base64_forms("jane.doe@shopper.example");
        for k in 0..3 {
            let mut data = b"xyz"[..k].to_vec();
            data.extend_from_slice(b"jane.doe@shopper.example and more");
            let enc = base64::engine::general_purpose::STANDARD.encode(&data);
            assert!(forms.iter().any(|f| enc.contains(f.as_str())), "alignment {k}: {enc}");
        }
    }

    #[test]
    fn decoders() {
        assert_eq!(html_unescape("a&#64;b&#x40;c&commat;d&#64e&amp;f&nope;"), "a@b@c@d@e&f&nope;");
        assert_eq!(percent_decode("a%40b%2Ec"), "a@b.c");
        assert_eq!(decode_encoded_words(b"=?utf-8?q?a=40?= =?utf-8?b?Yi5j?= x"), "a@b.c x");
        assert_eq!(decode_encoded_words(b"x=?utf-8?q?a?=@b"), "xa@b");
        assert_eq!(unflow("a@b \r\n> .c\r\n", true), "a@b.c\n");
        assert_eq!(qp_decode(b"a=\r\n=40b=2ec"), b"a@b.c");
        assert_eq!(unfold(b"Subject: a\r\n b\r\n"), b"Subject: a b\r\n");
    }
}
