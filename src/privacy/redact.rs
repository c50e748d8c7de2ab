//! Redaction of operator-facing text by the thread's identity.
//!
//! A remote server's reply is stored (events, the queue listing) and logged. It can quote
//! the shopper in many spellings: the address in any case, its local part alone or spelled
//! out (`jane.doe at example.com`, `jane.doe(at)example.com`, `"jane.doe"@…`), the display
//! name, the domain in either IDNA form, with fullwidth letters or invisible characters in
//! between. `redact` finds all of them in a folded view of the text (NFKC, lowercase, default-
//! ignorable code points dropped, white space runs as one space) and cuts the original
//! characters behind each match. It is a pure function of the text and an [`Identity`].

use unicode_normalization::UnicodeNormalization;

use crate::address::Mailbox;

/// What stands in for each kind of match.
pub const ADDRESS: &str = "<shopper>";
pub const LOCAL_PART: &str = "<local-part>";
pub const DOMAIN: &str = "<domain>";
pub const NAME: &str = "<name>";
pub const RECIPIENT: &str = "<recipient>";

/// How much of a remote reply operators keep.
pub const MAX_REPLY_CHARS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole address given as such (the envelope recipient).
    Recipient,
    /// The shopper's address, local part and domain together.
    Address,
    LocalPart,
    Domain,
    Name,
}

impl Kind {
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Recipient => RECIPIENT,
            Kind::Address => ADDRESS,
            Kind::LocalPart => LOCAL_PART,
            Kind::Domain => DOMAIN,
            Kind::Name => NAME,
        }
    }
}

#[derive(Debug, Clone)]
struct Term {
    folded: Vec<char>,
    kind: Kind,
}

/// Whom operator data must not show: the shopper of a thread (address, local part, name,
/// domain) and any other address given (the envelope recipient of a delivery).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    terms: Vec<Term>,
    /// Nothing is known of whom to cut (the thread could not be read): keep no text.
    withhold: bool,
}

/// What a text becomes when whom to cut from it is unknown.
pub const WITHHELD: &str = "(text withheld: the thread could not be read to redact it)";

impl Identity {
    /// For when the thread cannot be read: every text becomes [`WITHHELD`].
    pub fn withholding() -> Self {
        Self { terms: Vec::new(), withhold: true }
    }

    /// A thread's shopper; `None` parts (an erased thread) add nothing.
    pub fn shopper(address: Option<&Mailbox>, name: Option<&str>) -> Self {
        let mut id = Self::default();
        if let Some(a) = address {
            id.add_shopper_address(a);
        }
        if let Some(n) = name {
            id.add_name(n);
        }
        id
    }

    /// Also cut this whole address (e.g. the recipient of a delivery to a store).
    pub fn with_address(mut self, address: &str) -> Self {
        let folded = fold_str(address.trim());
        if !folded.is_empty() {
            self.terms.push(Term { folded, kind: Kind::Recipient });
        }
        self
    }

    fn push(&mut self, text: &str, kind: Kind) {
        let folded = fold_str(text);
        if !folded.is_empty() && !self.terms.iter().any(|t| t.folded == folded && t.kind == kind) {
            self.terms.push(Term { folded, kind });
        }
    }

    fn add_shopper_address(&mut self, a: &Mailbox) {
        let local = a.local();
        let domains = domain_forms(a.domain());
        for d in &domains {
            self.push(&format!("{local}@{d}"), Kind::Address);
            self.push(d, Kind::Domain);
        }
        self.push(local, Kind::LocalPart);
        // What mailbox providers treat as the same mailbox: without the +tag, without dots.
        if let Some((base, _)) = local.split_once('+')
            && !base.is_empty()
        {
            self.push(base, Kind::LocalPart);
        }
        if local.contains('.') {
            self.push(&local.replace('.', ""), Kind::LocalPart);
        }
    }

    fn add_name(&mut self, name: &str) {
        let name = name.trim();
        if name.chars().filter(|c| c.is_alphanumeric()).count() < 2 {
            return;
        }
        self.push(name, Kind::Name);
        // "Doe, Jane" or "Mr Doe" quote the parts: each word of three letters or more.
        for word in name.split(|c: char| !c.is_alphanumeric()) {
            if word.chars().count() >= 3 {
                self.push(word, Kind::Name);
            }
        }
    }

    /// Whether there is nothing to cut.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && !self.withhold
    }
}

/// The text with every spelling of the identity replaced by a placeholder (`<shopper>`,
/// `<local-part>`, `<domain>`, `<name>`, `<recipient>`).
pub fn redact(text: &str, id: &Identity) -> String {
    if id.withhold {
        return WITHHELD.to_owned();
    }
    if id.is_empty() || text.is_empty() {
        return text.to_owned();
    }
    let view = Folded::of(text);
    let mut spans: Vec<Span> = Vec::new();
    for term in &id.terms {
        let n = term.folded.len();
        if n == 0 || n > view.chars.len() {
            continue;
        }
        for start in 0..=view.chars.len() - n {
            if view.chars[start..start + n] == term.folded[..] && view.bounded(start, start + n, term.kind) {
                spans.push(Span { start, end: start + n, kind: term.kind });
            }
        }
    }
    join_address_parts(&view, &mut spans);
    // Longest first at each start; then drop whatever overlaps a span already taken.
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut taken: Vec<Span> = Vec::new();
    for s in spans {
        if taken.last().is_none_or(|t| s.start >= t.end) {
            taken.push(s);
        } else if let Some(t) = taken.last_mut()
            && s.end > t.end
        {
            // Overlapping matches (a name ending where the local part begins) become one.
            t.end = s.end;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for s in taken {
        let (from, to) = (view.origin[s.start].0, view.origin[s.end - 1].1);
        if from < last {
            continue;
        }
        out.push_str(&text[last..from]);
        out.push_str(s.kind.placeholder());
        last = to;
    }
    out.push_str(&text[last..]);
    out
}

/// A remote reply as operators may keep it: redacted, then cut to [`MAX_REPLY_CHARS`]
/// (in that order, so the cut never leaves the start of an address the search missed).
pub fn redact_reply(reply: &str, id: &Identity) -> String {
    redact(reply, id).chars().take(MAX_REPLY_CHARS).collect()
}

/// Both IDNA forms of a domain (A-label and U-label), lowercased, the given one first.
pub fn domain_forms(domain: &str) -> Vec<String> {
    let mut out = vec![domain.to_lowercase()];
    if let Ok(ascii) = idna::domain_to_ascii(domain) {
        out.push(ascii);
    }
    let (unicode, _) = idna::domain_to_unicode(domain);
    out.push(unicode);
    out.retain(|d| !d.is_empty());
    out.dedup();
    let mut seen = Vec::new();
    out.retain(|d| {
        let new = !seen.contains(d);
        seen.push(d.clone());
        new
    });
    out
}

#[derive(Debug, Clone, Copy)]
struct Span {
    /// Folded character indices, end exclusive.
    start: usize,
    end: usize,
    kind: Kind,
}

/// The text as matching sees it, each folded character tied to the byte range of the
/// original character it came from.
struct Folded {
    chars: Vec<char>,
    origin: Vec<(usize, usize)>,
}

impl Folded {
    fn of(text: &str) -> Self {
        let mut chars: Vec<char> = Vec::with_capacity(text.len());
        let mut origin: Vec<(usize, usize)> = Vec::with_capacity(text.len());
        for (i, c) in text.char_indices() {
            let range = (i, i + c.len_utf8());
            fold_char(c, &mut |f| {
                if f == ' ' && chars.last() == Some(&' ') {
                    // One space for a run: widen the space already there.
                    if let Some(o) = origin.last_mut() {
                        o.1 = range.1;
                    }
                    return;
                }
                chars.push(f);
                origin.push(range);
            });
        }
        Self { chars, origin }
    }

    /// Whether a match at `start..end` stands on its own (not inside a longer word,
    /// local part or domain). Whole addresses match anywhere.
    fn bounded(&self, start: usize, end: usize, kind: Kind) -> bool {
        if matches!(kind, Kind::Address | Kind::Recipient) {
            return true;
        }
        let before = start.checked_sub(1).map(|i| self.chars[i]);
        let after = self.chars.get(end).copied();
        let after2 = self.chars.get(end + 1).copied();
        let inner =
            |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || (kind == Kind::Domain && c == '-'));
        // A percent-encoded `@` (`jane%40example.com`, as in a mailto: link) ends in a digit.
        let after_percent_at =
            kind == Kind::Domain && start >= 3 && self.chars[start - 3..start] == ['%', '4', '0'];
        if (inner(before) && !after_percent_at) || inner(after) {
            return false;
        }
        // `example.com` inside `example.com.au`, `jane` inside `jane.doe`: another name.
        if kind != Kind::Name && matches!(after, Some('.' | '_' | '-' | '+')) && inner(after2) {
            return false;
        }
        // A local part continued to the left (`mary.jane`) is another local part; a domain
        // continued to the left (`mx.example.com`) is a host in the shopper's domain.
        if kind == Kind::LocalPart
            && matches!(before, Some('.' | '_' | '-' | '+'))
            && inner(start.checked_sub(2).map(|i| self.chars[i]))
        {
            return false;
        }
        true
    }
}

/// Folds one character the way the text is matched: NFKC (fullwidth `＠` is `@`), then
/// lowercase; default-ignorable code points (zero-width space, soft hyphen, joiners,
/// bidi controls) are dropped, and white space becomes a single space.
fn fold_char(c: char, out: &mut impl FnMut(char)) {
    if is_default_ignorable(c) {
        return;
    }
    for n in std::iter::once(c).nfkc() {
        if is_default_ignorable(n) {
            continue;
        }
        if n.is_whitespace() {
            out(' ');
            continue;
        }
        for l in n.to_lowercase() {
            out(l);
        }
    }
}

/// The folded form of a string (what matching compares), as text.
pub fn fold(s: &str) -> String {
    fold_str(s).into_iter().collect()
}

fn fold_str(s: &str) -> Vec<char> {
    let mut v = Vec::with_capacity(s.len());
    for c in s.chars() {
        fold_char(c, &mut |f| {
            if !(f == ' ' && v.last() == Some(&' ')) {
                v.push(f);
            }
        });
    }
    while v.last() == Some(&' ') {
        v.pop();
    }
    while v.first() == Some(&' ') {
        v.remove(0);
    }
    v
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), plus the
/// invisible separators mail readers drop.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// What may stand between a local part and its domain in a spelled-out address, once
/// folded and with spaces removed: `@`, `at`, `(at)`, `[at]`, `{at}`, `<at>`, `%40`, and
/// the quote of a quoted local part or a comment after the `@`.
fn is_separator(gap: &[char]) -> bool {
    let s: String = gap.iter().filter(|c| **c != ' ').collect();
    let s = s.strip_prefix('"').unwrap_or(&s);
    let s = strip_comments(s);
    matches!(s.as_str(), "@" | "at" | "(at)" | "[at]" | "{at}" | "<at>" | "%40" | "\\@")
}

/// `@(home)` → `@`: RFC 5322 comments around the `@` are not part of the address. `(at)`
/// is kept, as the spelled-out separator.
fn strip_comments(s: &str) -> String {
    if s == "(at)" {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A local part followed by a separator and the domain is one address: one placeholder.
fn join_address_parts(view: &Folded, spans: &mut Vec<Span>) {
    let locals: Vec<Span> = spans.iter().filter(|s| s.kind == Kind::LocalPart).copied().collect();
    let domains: Vec<Span> = spans.iter().filter(|s| s.kind == Kind::Domain).copied().collect();
    for l in &locals {
        if let Some(d) = domains
            .iter()
            .filter(|d| d.start >= l.end && d.start - l.end <= 16)
            .find(|d| is_separator(&view.chars[l.end..d.start]))
        {
            // A quote opening a quoted local part goes with it.
            let start = if l.start > 0 && view.chars[l.start - 1] == '"' { l.start - 1 } else { l.start };
            spans.push(Span { start, end: d.end, kind: Kind::Address });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jane() -> Identity {
        Identity::shopper(Some(&Mailbox::parse("Jane.Doe@Example.com").unwrap()), Some("Jane Q. Doe"))
    }

    fn clean(out: &str) {
        let folded: String = fold_str(out).into_iter().collect();
        for needle in ["jane.doe", "janedoe", "example.com", "jane", "doe"] {
            assert!(!folded.contains(needle), "{needle:?} left in {out:?}");
        }
    }

    #[test]
    fn the_address_in_any_case_is_one_placeholder() {
        let r = redact("550 5.1.1 <JANE.DOE@example.COM>: Recipient ünknown", &jane());
        assert_eq!(r, "550 5.1.1 <<shopper>>: Recipient ünknown");
    }

    #[test]
    fn spelled_out_addresses() {
        for text in [
            "no such user jane.doe at example.com here",
            "no such user jane.doe (at) example.com here",
            "no such user jane.doe[at]example.com here",
            "no such user jane.doe [AT] Example.Com here",
            "no such user \"jane.doe\"@example.com here",
            "no such user jane.doe @ example.com here",
            "no such user jane.doe@(home)example.com here",
            "no such user jane.doe%40example.com here",
            "no such user ｊａｎｅ．ｄｏｅ＠ｅｘａｍｐｌｅ．ｃｏｍ here",
            "no such user jane.doe﹫example.com here",
            "no such user ja\u{200B}ne.d\u{00AD}oe@exam\u{FEFF}ple.com here",
        ] {
            let r = redact(text, &jane());
            assert_eq!(r, "no such user <shopper> here", "{text}");
        }
    }

    #[test]
    fn parts_alone() {
        let r = redact("mailbox jane.doe is full; ask Jane Q. Doe or the admins of example.com", &jane());
        assert_eq!(r, "mailbox <local-part> is full; ask <name> or the admins of <domain>");
        clean(&r);
        // The parts of the name, another order, another case; a host in the domain.
        let r = redact("DOE, JANE: over quota (mx2.example.com)", &jane());
        assert_eq!(r, "<name>, <name>: over quota (mx2.<domain>)");
        // Without the dots, as some providers read it.
        assert_eq!(redact("user janedoe unknown", &jane()), "user <local-part> unknown");
    }

    #[test]
    fn other_words_stay() {
        let id = jane();
        for text in [
            "550 5.1.1 mailbox unavailable",
            "user janet.doer@example.community unknown",
            "example.com.au refuses",
            "doers and janes",
        ] {
            assert_eq!(redact(text, &id), text);
        }
    }

    #[test]
    fn internationalized_domains_in_both_forms() {
        let id = Identity::shopper(Some(&Mailbox::parse("taro@bücher.example").unwrap()), None);
        assert_eq!(redact("taro@xn--bcher-kva.example unknown", &id), "<shopper> unknown");
        assert_eq!(redact("host BÜCHER.example down", &id), "host <domain> down");
        let id = Identity::shopper(Some(&Mailbox::parse("taro@xn--bcher-kva.example").unwrap()), None);
        assert_eq!(redact("taro at bücher.example unknown", &id), "<shopper> unknown");
    }

    #[test]
    fn subaddress_base_and_recipient() {
        let id = Identity::shopper(Some(&Mailbox::parse("jane+shop@example.com").unwrap()), None)
            .with_address("support@acme.example");
        assert_eq!(
            redact("jane@example.com, jane+shop@example.com, SUPPORT@acme.example", &id),
            "<shopper>, <shopper>, <recipient>"
        );
    }

    #[test]
    fn multi_byte_text_and_truncation() {
        let long = format!("450 4.2.2 {} jane.doe@example.com", "é".repeat(400));
        let r = redact_reply(&long, &jane());
        assert_eq!(r.chars().count(), MAX_REPLY_CHARS);
        clean(&r);
        let r = redact_reply(&format!("450 {} jane.doe@example.com", "x".repeat(250)), &jane());
        assert!(r.ends_with("<shopper>"), "{r}");
        assert_eq!(redact("データ jane.doe　at　example.com です", &jane()), "データ <shopper> です");
    }

    #[test]
    fn an_erased_thread_cuts_nothing_but_the_recipient() {
        let id = Identity::shopper(None, None);
        assert_eq!(redact("jane.doe@example.com", &id), "jane.doe@example.com");
        let id = id.with_address("jane.doe@example.com");
        assert_eq!(redact("JANE.DOE@EXAMPLE.COM", &id), "<recipient>");
        assert_eq!(redact("jane.doe@example.com", &Identity::withholding()), WITHHELD);
    }
}
