//! The reader-side view: a message read the way the people and programs that receive it
//! read it, to tell whether a hidden address still shows. It shares no matcher with the
//! rewriter (`super::text`): the read-back (`super::verify`) only trusts what this module
//! finds, so a blind spot of one is not a blind spot of the other.
//!
//! Each place a reader looks at (every header field of every part, nested messages at any
//! depth, text bodies, preambles and epilogues, message/* parts) gives one or more texts,
//! as the reader may see them:
//! - HTML as a browser shows it, through a real HTML tokenizer (html5ever): text nodes
//!   joined across tags and comments, character references decoded, and the attributes a
//!   reader sees or follows (`href`, `title`, `alt`…), percent-decoded;
//! - RFC 2047 encoded words decoded (also in body text), percent-encoding decoded;
//! - folded lines joined: RFC 5322 header folding, iCalendar (RFC 5545 3.1) and vCard
//!   (RFC 6350 3.2) content lines, vCard 2.1 quoted-printable values, format=flowed;
//! - message/* parts (rfc822, global, feedback-report, global-headers, partial,
//!   external-body, delivery-status…) and TNEF read as text and, where they are one, as a
//!   message.
//!
//! Each text is then normalized: NFKC (fullwidth `＠` is `@`), default-ignorable code
//! points removed (zero-width space, soft hyphen, joiners), lowercase; and the address
//! syntax a mail program accepts for the same mailbox is reduced: white space (so folding
//! and `jane.doe @ host`), quotes and backslashes (`"jane.doe"@host`) go, and in a second
//! view so do comments (`jane.doe@(home)host`). A hidden address is looked for in both
//! IDNA forms of its domain (A-label and U-label).

use std::cell::RefCell;

use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts, states::RawKind,
};
use mail_parser::{HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use unicode_normalization::UnicodeNormalization;

/// The forms in which hidden addresses are looked for: lowercase, NFKC, each domain in
/// both IDNA forms.
#[derive(Debug, Clone, Default)]
pub struct Needles {
    forms: Vec<String>,
}

impl Needles {
    pub fn new<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms = Vec::new();
        for address in addresses {
            let address = normalize(address);
            let Some((local, domain)) = address.rsplit_once('@') else {
                if !address.is_empty() {
                    forms.push(address);
                }
                continue;
            };
            if local.is_empty() || domain.is_empty() {
                continue;
            }
            let mut domains = vec![domain.to_owned()];
            if let Ok(ascii) = idna::domain_to_ascii(domain) {
                domains.push(ascii.to_lowercase());
            }
            let (unicode, _) = idna::domain_to_unicode(domain);
            domains.push(normalize(&unicode));
            for d in domains {
                let form = format!("{local}@{d}");
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        Self { forms }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The forms looked for (for tests and diagnostics).
    pub fn forms(&self) -> &[String] {
        &self.forms
    }

    /// The first form `text` shows, read with every normalization above.
    pub fn shown_in(&self, text: &str) -> Option<&str> {
        if self.forms.is_empty() || text.is_empty() {
            return None;
        }
        let plain = skeleton(text, false);
        if let Some(f) = self.forms.iter().find(|f| plain.contains(f.as_str())) {
            return Some(f);
        }
        if text.contains('(') {
            let uncommented = skeleton(text, true);
            return self.forms.iter().find(|f| uncommented.contains(f.as_str())).map(String::as_str);
        }
        None
    }
}

/// Lowercase NFKC without default-ignorable code points.
pub fn normalize(text: &str) -> String {
    let nfkc: String = if text.is_ascii() { text.to_owned() } else { text.nfkc().collect() };
    nfkc.chars().filter(|c| !default_ignorable(*c)).flat_map(char::to_lowercase).collect()
}

/// The normalized text without what address syntax lets stand inside an address: white
/// space (folding), quotes and quoted-pair backslashes, control characters, and
/// (`uncomment`) comments in parentheses.
fn skeleton(text: &str, uncomment: bool) -> String {
    let normal = normalize(text);
    let mut out = String::with_capacity(normal.len());
    let mut depth = 0usize;
    for c in normal.chars() {
        if uncomment {
            match c {
                '(' => {
                    depth += 1;
                    continue;
                }
                ')' if depth > 0 => {
                    depth -= 1;
                    continue;
                }
                _ if depth > 0 => continue,
                _ => {}
            }
        }
        if c.is_whitespace() || c.is_control() || c == '"' || c == '\\' {
            continue;
        }
        out.push(c);
    }
    out
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): shown as nothing.
pub fn default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// How much of a message is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The header fields of every part, nested messages included (toward a shopper).
    Headers,
    /// Headers and every text a reader sees (toward a store).
    Everything,
}

/// Where a hidden address showed, and which form of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub place: String,
    pub form: String,
}

/// Nested messages deeper than this are not read: such a message counts as showing.
const MAX_DEPTH: usize = 48;

/// Where `raw` shows one of `needles`, reading everything `reach` covers; None if nowhere.
pub fn find(raw: &[u8], needles: &Needles, reach: Reach) -> Option<Shown> {
    if needles.is_empty() {
        return None;
    }
    let mut r = Reader { needles, reach, found: None };
    match MessageParser::default().parse(raw) {
        Some(m) => r.message(&m, "message", 0),
        None => r.text("unparseable message", &String::from_utf8_lossy(raw)),
    }
    r.found
}

/// Where the root header block of `raw` shows one of `needles`.
pub fn find_in_head(raw: &[u8], needles: &Needles) -> Option<Shown> {
    if needles.is_empty() {
        return None;
    }
    let mut r = Reader { needles, reach: Reach::Headers, found: None };
    // The header block ends at the first empty line (parse_headers does not say where).
    let end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2)
        .into_iter()
        .chain(raw.windows(3).position(|w| w == b"\n\r\n").map(|i| i + 3))
        .min()
        .unwrap_or(raw.len());
    let head = &raw[..end];
    r.text("header block", &String::from_utf8_lossy(head));
    if let Some(m) = MessageParser::default().parse_headers(head)
        && let Some(p) = m.parts.first()
    {
        r.headers(p, &m.raw_message, "header");
    }
    r.found
}

struct Reader<'n> {
    needles: &'n Needles,
    reach: Reach,
    found: Option<Shown>,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.found.is_some()
    }

    /// One text, in every view of it that a reader may get.
    fn text(&mut self, place: &str, text: &str) {
        if self.done() || text.is_empty() {
            return;
        }
        let mut views: Vec<String> = vec![text.to_owned()];
        if text.contains("=?") {
            views.push(encoded_words(text));
        }
        if text.contains('%') {
            let more: Vec<String> = views.iter().map(|v| percent_decoded(v)).collect();
            views.extend(more);
        }
        for v in &views {
            if let Some(form) = self.needles.shown_in(v) {
                self.found = Some(Shown { place: place.to_owned(), form: form.to_owned() });
                return;
            }
        }
    }

    /// HTML, as a browser shows it: text nodes and the attributes a reader sees or follows.
    fn html(&mut self, place: &str, html: &str) {
        let (shown, attributes) = render_html(html);
        self.text(&format!("{place} (as rendered)"), &shown);
        for a in attributes {
            self.text(&format!("{place} (attribute)"), &a);
        }
    }

    fn message(&mut self, m: &Message<'_>, place: &str, depth: usize) {
        self.part(m, 0, place, depth);
    }

    fn part(&mut self, m: &Message<'_>, id: usize, place: &str, depth: usize) {
        if self.done() {
            return;
        }
        let Some(p) = m.parts.get(id) else { return };
        if depth > MAX_DEPTH {
            self.found = Some(Shown {
                place: format!("{place}: nested deeper than the reader reads"),
                form: String::new(),
            });
            return;
        }
        let buf: &[u8] = &m.raw_message;
        self.headers(p, buf, place);
        match &p.body {
            PartType::Multipart(children) => {
                let mut at = p.offset_body as usize;
                for (i, &c) in children.iter().enumerate().filter(|(_, c)| **c as usize != id) {
                    let Some(child) = m.parts.get(c as usize) else { continue };
                    if self.reach == Reach::Everything {
                        self.text(
                            &format!("{place} preamble"),
                            &lossy(buf, at, child.offset_header as usize),
                        );
                    }
                    self.part(m, c as usize, &format!("{place}.{}", i + 1), depth + 1);
                    at = child.offset_end as usize;
                }
                if self.reach == Reach::Everything {
                    self.text(&format!("{place} epilogue"), &lossy(buf, at, p.offset_end as usize));
                }
            }
            PartType::Message(nested) => self.message(nested, &format!("{place}.1"), depth + 1),
            PartType::Text(t) if self.reach == Reach::Everything => self.body_text(p, t, place, false),
            PartType::Html(t) if self.reach == Reach::Everything => self.body_text(p, t, place, true),
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                let ct = content_type(p);
                if ct.starts_with("message/") {
                    // Kept opaque by the parser (a type it does not read, or nesting past
                    // its limit): read as header fields / text, and as a message.
                    if self.reach == Reach::Everything {
                        self.text(&format!("{place} ({ct})"), &String::from_utf8_lossy(b));
                    }
                    if let Some(inner) = MessageParser::default().parse(b.as_ref()) {
                        self.message(&inner, &format!("{place}.1"), depth + 1);
                    }
                } else if self.reach == Reach::Everything {
                    if ct.starts_with("text/") {
                        let charset = p.content_type().and_then(|c| c.attribute("charset")).unwrap_or("");
                        let text = decode_charset(b, charset);
                        self.body_text(p, &text, place, ct == "text/html");
                    } else if ct.ends_with("ms-tnef") {
                        self.text(&format!("{place} ({ct})"), &String::from_utf8_lossy(b));
                        let utf16: Vec<u16> =
                            b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                        self.text(&format!("{place} ({ct}, UTF-16)"), &String::from_utf16_lossy(&utf16));
                    }
                    // Other non-text attachments are outside the guarantee (SPEC).
                }
            }
            PartType::Text(_) | PartType::Html(_) => {}
        }
    }

    fn body_text(&mut self, p: &MessagePart<'_>, text: &str, place: &str, html: bool) {
        let ct = content_type(p);
        let place = format!("{place} body ({ct})");
        self.text(&place, text);
        if html || text.contains('<') || text.contains('&') {
            self.html(&place, text);
        }
        let attr = |name: &str| p.content_type().and_then(|c| c.attribute(name)).map(str::to_ascii_lowercase);
        if attr("format").as_deref() == Some("flowed") {
            self.text(&format!("{place} unflowed"), &unflow(text));
        }
        if is_directory(&ct) || text.contains("QUOTED-PRINTABLE") || text.contains("quoted-printable") {
            self.text(&format!("{place} unfolded"), &unfold_content_lines(text));
        }
    }

    /// Every header field of a part: its raw bytes (folding undone by the skeleton),
    /// decoded, and as the parser reads its value.
    fn headers(&mut self, p: &MessagePart<'_>, buf: &[u8], place: &str) {
        for h in &p.headers {
            if self.done() {
                return;
            }
            let name = h.name.as_str();
            let field = lossy(buf, h.offset_field as usize, h.offset_end as usize);
            let where_ = format!("{place} header {name}");
            self.text(&where_, &field);
            for v in value_texts(&h.value) {
                self.text(&where_, &v);
            }
        }
    }
}

fn lossy(buf: &[u8], start: usize, end: usize) -> String {
    let end = end.min(buf.len());
    if start < end { String::from_utf8_lossy(&buf[start..end]).into_owned() } else { String::new() }
}

fn content_type(p: &MessagePart<'_>) -> String {
    match p.content_type() {
        Some(ct) => format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase(),
        None => "text/plain".into(),
    }
}

fn is_directory(ct: &str) -> bool {
    ["text/calendar", "text/vcard", "text/x-vcard", "text/directory", "text/x-vcalendar", "application/ics"]
        .contains(&ct)
}

/// Bytes in a charset, as text (mail-parser's decoders; UTF-8 or Latin-1 otherwise).
fn decode_charset(bytes: &[u8], charset: &str) -> String {
    match mail_parser::decoders::charsets::map::charset_decoder(charset.as_bytes()) {
        Some(decoder) => decoder(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Every text a parsed header value holds: names, addresses, list items, parameters.
fn value_texts(value: &HeaderValue<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut addr = |a: &mail_parser::Addr<'_>| {
        out.extend(a.name.as_deref().map(str::to_owned));
        out.extend(a.address.as_deref().map(str::to_owned));
    };
    match value {
        HeaderValue::Text(t) => return vec![t.to_string()],
        HeaderValue::TextList(l) => return l.iter().map(|t| t.to_string()).collect(),
        HeaderValue::Address(a) => {
            for x in a.iter() {
                addr(x);
            }
            if let mail_parser::Address::Group(groups) = a {
                out.extend(groups.iter().filter_map(|g| g.name.as_deref().map(str::to_owned)));
            }
        }
        HeaderValue::ContentType(ct) => {
            out.push(ct.ctype().to_owned());
            out.extend(ct.subtype().map(str::to_owned));
            out.extend(ct.attributes().unwrap_or(&[]).iter().map(|a| a.value.to_string()));
        }
        _ => {}
    }
    out
}

/// RFC 2047 encoded words decoded wherever they occur (mail-parser's decoder), the rest
/// as it is.
fn encoded_words(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && b.get(i + 1) == Some(&b'?') {
            let mut stream = mail_parser::parsers::MessageStream::new(&b[i + 1..]);
            if let Some(word) = stream.decode_rfc2047() {
                out.extend_from_slice(word.as_bytes());
                i += 1 + stream.offset();
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `%XX` decoded (RFC 3986), as UTF-8 where it is.
fn percent_decoded(text: &str) -> String {
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

fn hex(c: &u8) -> Option<u8> {
    (*c as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3676 format=flowed read back: a line ending in a space continues on the next,
/// whose quote marks and stuffed space are not text (DelSp or not: both views are
/// covered, since the skeleton drops white space).
fn unflow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut soft = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut body = line;
        if soft {
            body = body.trim_start_matches('>');
            body = body.strip_prefix(' ').unwrap_or(body);
        }
        soft = body.ends_with(' ');
        out.push_str(body);
        if !soft {
            out.push('\n');
        }
    }
    out
}

/// iCalendar / vCard content lines unfolded (RFC 5545 3.1, RFC 6350 3.2: CRLF followed by
/// one space or tab is not text), then vCard 2.1 quoted-printable values decoded (their
/// soft line breaks `=` CRLF joined, `=XX` as bytes).
pub fn unfold_content_lines(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let unfolded = text.replace("\n ", "").replace("\n\t", "");
    let mut out = String::with_capacity(unfolded.len());
    let mut lines = unfolded.split('\n');
    while let Some(line) = lines.next() {
        let (head, value) = match line.split_once(':') {
            Some((h, v)) => (h, v),
            None => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        if !head.to_ascii_uppercase().contains("QUOTED-PRINTABLE") {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut value = value.to_owned();
        while value.ends_with('=') {
            value.pop();
            match lines.next() {
                Some(next) => value.push_str(next),
                None => break,
            }
        }
        let decoded = quoted_printable::decode(value.as_bytes(), quoted_printable::ParseMode::Robust)
            .unwrap_or_else(|_| value.clone().into_bytes());
        out.push_str(head);
        out.push(':');
        out.push_str(&String::from_utf8_lossy(&decoded));
        out.push('\n');
    }
    out
}

/// What a browser shows of `html` (text nodes joined as the page shows them, character
/// references decoded, comments gone), and the attribute values a reader sees (title,
/// alt…) or follows (href…), each percent-decoded too.
pub fn render_html(html: &str) -> (String, Vec<String>) {
    let sink = Render::default();
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(html5ever::tendril::StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    (tokenizer.sink.text.take(), tokenizer.sink.attributes.take())
}

#[derive(Default)]
struct Render {
    text: RefCell<String>,
    attributes: RefCell<Vec<String>>,
}

/// Attributes whose value a reader sees or a mail client follows.
const SHOWN_ATTRIBUTES: &[&str] = &[
    "href",
    "title",
    "alt",
    "src",
    "value",
    "placeholder",
    "action",
    "content",
    "label",
    "summary",
    "cite",
    "longdesc",
    "data",
    "poster",
    "formaction",
    "background",
    "abbr",
    "srcset",
    "aria-label",
];

impl TokenSink for Render {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::CharacterTokens(t) => self.text.borrow_mut().push_str(&t),
            Token::TagToken(tag) => {
                let name = tag.name.to_ascii_lowercase();
                for a in &tag.attrs {
                    let attr = a.name.local.to_ascii_lowercase();
                    if SHOWN_ATTRIBUTES.contains(&attr.as_str()) {
                        self.attributes.borrow_mut().push(a.value.to_string());
                    }
                }
                if matches!(name.as_str(), "br" | "p" | "div" | "li" | "tr" | "td" | "th" | "hr") {
                    self.text.borrow_mut().push('\n');
                }
                if tag.kind == TagKind::StartTag && !tag.self_closing {
                    // The tree builder switches the tokenizer for these; so do we, so the
                    // text is cut where a browser cuts it.
                    match name.as_str() {
                        "title" | "textarea" => return TokenSinkResult::RawData(RawKind::Rcdata),
                        "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                            return TokenSinkResult::RawData(RawKind::Rawtext);
                        }
                        "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
                        "plaintext" => return TokenSinkResult::Plaintext,
                        _ => {}
                    }
                }
            }
            Token::NullCharacterToken => {}
            Token::CommentToken(_) | Token::DoctypeToken(_) | Token::EOFToken | Token::ParseError(_) => {}
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needles() -> Needles {
        Needles::new(["jane.doe@shopper.example", "ana@bücher.example"])
    }

    fn shows(text: &str) -> bool {
        needles().shown_in(text).is_some()
    }

    #[test]
    fn both_idna_forms() {
        let n = needles();
        assert!(n.forms().contains(&"ana@xn--bcher-kva.example".to_owned()), "{:?}", n.forms());
        assert!(shows("write to ana@xn--bcher-kva.example"));
        assert!(shows("write to ANA@BÜCHER.example"));
        let ascii = Needles::new(["ana@xn--bcher-kva.example"]);
        assert!(ascii.shown_in("ana@bücher.example").is_some());
    }

    #[test]
    fn compatibility_forms_and_invisible_characters() {
        assert!(shows("ｊａｎｅ．ｄｏｅ＠ｓｈｏｐｐｅｒ．ｅｘａｍｐｌｅ"));
        assert!(shows("jane.doe﹫shopper.example"));
        assert!(shows("jane.\u{200b}doe@shop\u{ad}per.example"));
        assert!(shows("jane.doe@shopper\u{2060}.example"));
        assert!(!shows("jane.doe@other.example"));
    }

    #[test]
    fn address_syntax() {
        assert!(shows("\"jane.doe\"@shopper.example"));
        assert!(shows("\"jane\\.doe\"@shopper.example"));
        assert!(shows("jane.doe @ shopper.example"));
        assert!(shows("jane.doe@(home)shopper.example"));
        assert!(shows("jane(x).doe@shopper.example"));
        assert!(shows("(see jane.doe@shopper.example)"));
        assert!(shows("jane.doe@shop\r\n per.example"));
    }

    #[test]
    fn html_as_rendered() {
        for html in [
            "<p>jane.doe@<span>shopper.example</span></p>",
            "jane.<b>doe</b>@shopper.example",
            "jane.doe<!-- x -->@shopper.example",
            "jane.doe<wbr>@shopper.example",
            "jane.doe&shy;@shopper.example",
            "jane.doe&#8203;@shopper.example",
            "jane.doe&#xFF20;shopper.example",
            "<a href=\"mailto:jane.doe%40shopper.example\">mail</a>",
            "<img alt=\"jane.doe&#64;shopper.example\">",
            "<a title='jane.doe@shopper.example'>x</a>",
        ] {
            let (text, attrs) = render_html(html);
            assert!(
                shows(&text) || attrs.iter().any(|a| shows(a) || shows(&percent_decoded(a))),
                "{html}: {text:?} {attrs:?}"
            );
        }
        let (text, _) = render_html("<style>p{}</style><p>hello</p><script>if (a<b) x()</script>");
        assert!(text.contains("hello"), "{text}");
    }

    #[test]
    fn folded_content_lines() {
        let ics = "BEGIN:VEVENT\r\nORGANIZER:mailto:jane.doe@shop\r\n per.example\r\nEND:VEVENT\r\n";
        assert!(shows(&unfold_content_lines(ics)));
        let vcf = "BEGIN:VCARD\r\nVERSION:2.1\r\nEMAIL;ENCODING=QUOTED-PRINTABLE:jane.doe=40shop=\r\nper.example\r\nEND:VCARD\r\n";
        assert!(shows(&unfold_content_lines(vcf)), "{}", unfold_content_lines(vcf));
    }

    #[test]
    fn messages_and_nesting() {
        let raw = b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nOriginal-Mail-From: <jane.doe@shopper.example>\r\n--x--\r\n";
        let found = find(raw, &needles(), Reach::Everything).expect("found");
        assert!(found.place.contains("feedback-report"), "{found:?}");
        let raw = b"From: a@b.example\r\nSubject: =?utf-8?q?jane.doe=40shopper.example?=\r\n\r\nhi\r\n";
        assert!(find_in_head(raw, &needles()).is_some());
        let clean = b"From: a@b.example\r\nSubject: hello\r\n\r\njane.doe at shopper dot example\r\n";
        assert_eq!(find(clean, &needles(), Reach::Everything), None);
        // Deeper than the parser nests: read by parsing the opaque part again.
        let mut inner =
            "From: x@y.example\r\nContent-Type: text/plain\r\n\r\njane.doe@shopper.example\r\n".to_owned();
        use base64::Engine;
        for _ in 0..6 {
            inner = format!(
                "From: x@y.example\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64::engine::general_purpose::STANDARD.encode(&inner)
            );
        }
        assert!(find(inner.as_bytes(), &needles(), Reach::Everything).is_some());
    }
}
