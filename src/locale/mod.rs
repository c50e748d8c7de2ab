//! The shopper's language: which one a page, a notice or the "via" phrase is written in,
//! and the words themselves. `relay.locale` is the marketplace's language; a thread may
//! name its own (`POST /v1/threads` `locale`); on a page the browser's Accept-Language
//! (RFC 9110 12.5.4) comes first, since it says what the person reading can read.
//!
//! Each language is one [`Texts`] table (`en.rs`, `ja.rs`) of templates with `{name}`
//! holes, filled by [`fill`] in one pass, so a value that itself contains `{…}` (an order
//! reference, a store name) is never read as a hole.

mod en;
mod ja;

use std::fmt;

use serde::{Deserialize, Serialize};

/// A language the relay ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    En,
    Ja,
}

impl Locale {
    /// Every shipped language, in the order a language switch lists them.
    pub const ALL: [Locale; 2] = [Locale::En, Locale::Ja];

    /// The BCP 47 tag (`<html lang>`, `Content-Language`, the API).
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Ja => "ja",
        }
    }

    /// A shipped language from a BCP 47 tag, by its primary subtag (`ja-JP` → `ja`,
    /// `EN-gb` → `en`); None for a language the relay does not ship.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Self::ALL.into_iter().find(|l| l.tag() == primary)
    }

    /// The best shipped language of an Accept-Language header: the highest `q` first, the
    /// order given among equals; `q=0` means "not this one". None when nothing shipped is
    /// asked for (then the thread's or the relay's language applies).
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut ranges: Vec<(u16, usize, Self)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, item)| {
                let mut parts = item.split(';');
                let range = parts.next()?.trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                    .next()
                    .map(parse_qvalue)
                    .unwrap_or(Some(1000))?;
                let locale = Self::from_tag(range)?;
                (q > 0).then_some((q, i, locale))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges.first().map(|r| r.2)
    }

    /// The words of this language.
    pub fn texts(self) -> &'static Texts {
        match self {
            Self::En => &en::TEXTS,
            Self::Ja => &ja::TEXTS,
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// RFC 9110 12.4.2 qvalue as thousandths (`0.8` → 800); None when malformed, so the range
/// is ignored rather than guessed at.
fn parse_qvalue(q: &str) -> Option<u16> {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// The text of one language. Templates hold `{name}` holes; see each field for its names.
#[derive(Debug)]
pub struct Texts {
    /// The language's own name, for the language switch.
    pub name: &'static str,
    /// `{name}` `{marketplace}`: how a store sees the shopper's display name.
    pub via: &'static str,
    /// The name a shopper without one is shown by.
    pub shopper_fallback: &'static str,
    /// The store when its name cannot be read.
    pub store_fallback: &'static str,

    // The revoke page. `{store}`, `{order}`, `{marketplace}`, `{days}`, `{count}`; values
    // arrive already escaped (and emphasised) for HTML.
    pub ask_title: &'static str,
    pub ask_intro: &'static str,
    pub ask_consequence: &'static str,
    pub revoke_button: &'static str,
    pub pause_intro: &'static str,
    pub pause_button: &'static str,
    pub others_heading: &'static str,
    pub other_item: &'static str,
    pub other_button: &'static str,
    pub all_button: &'static str,
    pub revoked_title: &'static str,
    pub revoked_body: &'static str,
    pub already_title: &'static str,
    pub already_body: &'static str,
    pub paused_title: &'static str,
    pub paused_body: &'static str,
    pub resume_button: &'static str,
    pub resumed_title: &'static str,
    pub resumed_body: &'static str,
    pub all_title: &'static str,
    pub all_body: &'static str,
    pub other_revoked_title: &'static str,
    pub other_revoked_body: &'static str,
    pub invalid_title: &'static str,
    pub invalid_body: &'static str,
    pub error_title: &'static str,
    pub error_body: &'static str,
    pub back_link: &'static str,
    pub footer: &'static str,

    // The notice to the sender of a message that could not be delivered. `{order}`,
    // `{alias}`, `{status}`.
    pub bounce_from: &'static str,
    pub bounce_subject: &'static str,
    pub bounce_body: &'static str,
    pub bounce_refused: &'static str,
    pub bounce_expired: &'static str,
    pub bounce_footer: &'static str,

    // The operator's notice after a leak, around the operator's own text. `{marketplace}`,
    // `{store}`, `{order}`, `{revoke_url}`.
    pub notice_from: &'static str,
    pub notice_intro: &'static str,
    pub notice_footer: &'static str,
}

/// Fills the `{name}` holes of `template` from `values` in one pass: what a value holds is
/// copied as it is, never read as a hole. An unknown hole is left as written.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after
            .find('}')
            .and_then(|close| values.iter().find(|(k, _)| *k == &after[..close]).map(|(_, v)| (*v, close)));
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The display name a store sees on a shopper's mail: "Jane via Marketplace",
/// "佐藤 花子（Marketplace経由）".
pub fn via(locale: Locale, shopper_name: Option<&str>, marketplace: &str) -> String {
    let t = locale.texts();
    let name = shopper_name.filter(|n| !n.trim().is_empty()).unwrap_or(t.shopper_fallback);
    fill(t.via, &[("name", name), ("marketplace", marketplace)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_accept_language() {
        assert_eq!(Locale::from_tag("ja-JP"), Some(Locale::Ja));
        assert_eq!(Locale::from_tag("EN_gb"), Some(Locale::En));
        assert_eq!(Locale::from_tag("fr"), None);
        assert_eq!(Locale::from_accept_language("ja,en-US;q=0.9,en;q=0.8"), Some(Locale::Ja));
        assert_eq!(Locale::from_accept_language("en-US,en;q=0.9,ja;q=0.8"), Some(Locale::En));
        assert_eq!(Locale::from_accept_language("fr-FR, ja;q=0.5, en;q=0.4"), Some(Locale::Ja));
        assert_eq!(Locale::from_accept_language("ja;q=0, en;q=0.1"), Some(Locale::En));
        assert_eq!(Locale::from_accept_language("en;q=0.5, ja;q=0.5"), Some(Locale::En));
        assert_eq!(Locale::from_accept_language("fr, de;q=0.9, *;q=0.1"), None);
        assert_eq!(Locale::from_accept_language("ja;q=2, en;q=abc"), None);
        assert_eq!(Locale::from_accept_language(""), None);
    }

    #[test]
    fn fill_is_one_pass() {
        assert_eq!(fill("{a} and {b}", &[("a", "{b}"), ("b", "x")]), "{b} and x");
        assert_eq!(fill("{unknown} {a}", &[("a", "1")]), "{unknown} 1");
        assert_eq!(fill("no holes {", &[]), "no holes {");
    }

    #[test]
    fn via_in_both_languages() {
        assert_eq!(via(Locale::En, Some("Jane"), "Market"), "Jane via Market");
        assert_eq!(via(Locale::Ja, Some("佐藤 花子"), "楽市"), "佐藤 花子（楽市経由）");
        assert_eq!(via(Locale::En, None, "Market"), "Shopper via Market");
    }

    /// Every template of every language uses only the holes its field documents, and
    /// each language fills every hole that English does (no half-translated page).
    #[test]
    fn languages_agree_on_holes() {
        fn holes(s: &str) -> Vec<String> {
            let mut v: Vec<String> =
                s.split('{').skip(1).filter_map(|p| p.split_once('}').map(|(h, _)| h.to_owned())).collect();
            v.sort();
            v.dedup();
            v
        }
        let en = Locale::En.texts();
        let ja = Locale::Ja.texts();
        let pairs = [
            (en.via, ja.via),
            (en.ask_title, ja.ask_title),
            (en.ask_intro, ja.ask_intro),
            (en.ask_consequence, ja.ask_consequence),
            (en.pause_intro, ja.pause_intro),
            (en.other_item, ja.other_item),
            (en.all_button, ja.all_button),
            (en.revoked_body, ja.revoked_body),
            (en.already_body, ja.already_body),
            (en.paused_body, ja.paused_body),
            (en.resumed_body, ja.resumed_body),
            (en.all_body, ja.all_body),
            (en.other_revoked_body, ja.other_revoked_body),
            (en.footer, ja.footer),
            (en.bounce_subject, ja.bounce_subject),
            (en.bounce_body, ja.bounce_body),
            (en.bounce_refused, ja.bounce_refused),
            (en.notice_intro, ja.notice_intro),
            (en.notice_footer, ja.notice_footer),
        ];
        for (e, j) in pairs {
            assert_eq!(holes(e), holes(j), "{e:?} / {j:?}");
        }
    }
}
