//! The addresses of the domain, as distinct types: a store id, an alias the relay issued,
//! and a real address that must never leave the relay (and never reach a log in full).

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Why an address or id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("not an email address: expected local@domain")]
    NotAnAddress,
    #[error("store id must match [a-z0-9-]{{1,40}}")]
    BadStoreId,
}

/// A store's slug, `[a-z0-9-]{1,40}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoreId(String);

impl StoreId {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(AddressError::BadStoreId) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StoreId {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<StoreId> for String {
    fn from(s: StoreId) -> String {
        s.0
    }
}
impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syntactically checked `local@domain` mailbox, domain lowercased. The local part keeps
/// its case (RFC 5321 2.4) but comparisons in this crate are case-insensitive, as every
/// real mailbox provider treats them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local: String,
    domain: String,
}

impl Mailbox {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let s = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s);
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::NotAnAddress)?;
        let bad_local = local.is_empty()
            || local.len() > 64
            || local.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>');
        let bad_domain = domain.is_empty()
            || domain.len() > 255
            || domain.starts_with('.')
            || domain.ends_with('.')
            || !domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80);
        if bad_local || bad_domain {
            return Err(AddressError::NotAnAddress);
        }
        Ok(Self { local: local.to_owned(), domain: domain.to_ascii_lowercase() })
    }
    pub fn local(&self) -> &str {
        &self.local
    }
    pub fn domain(&self) -> &str {
        &self.domain
    }
    /// The canonical form used for lookups and comparisons.
    pub fn normalized(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }
    /// The full address, for places where it is needed on purpose (an envelope, a header
    /// being written). Never for logs.
    pub fn expose(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
    /// A form safe for logs: first letter of the local part and the domain.
    ///
    /// ```
    /// let m = maskrelay::address::Mailbox::parse("Jane.Doe@Example.com").unwrap();
    /// assert_eq!(m.redacted(), "J***@example.com");
    /// assert_eq!(format!("{m}"), "J***@example.com"); // Display never prints it in full
    /// ```
    pub fn redacted(&self) -> String {
        let first = self.local.chars().next().unwrap_or('?');
        format!("{first}***@{}", self.domain)
    }
}

/// Debug and Display print the redacted form, so a real address cannot reach a log by `{}`.
impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mailbox({})", self.redacted())
    }
}
impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Which side of a thread an alias stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The alias handed to the store in place of the shopper; mail to it goes to the shopper.
    Shopper,
    /// The alias handed to the shopper in place of the store; mail to it goes to the store.
    Store,
}

/// Random alias local parts: 20 base-32 characters = 100 bits from the OS CSPRNG
/// (SPEC: at least 80 bits, lowercase letters and digits).
const ALIAS_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const ALIAS_RANDOM_CHARS: usize = 20;

/// A fresh random token from the alias alphabet.
pub fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALIAS_ALPHABET[rng.random_range(0..ALIAS_ALPHABET.len())] as char).collect()
}

/// The local part of a new shopper alias.
pub fn new_shopper_alias_local() -> String {
    random_token(ALIAS_RANDOM_CHARS)
}

/// The local part of a new store alias: the store id, a dot, random characters, so the
/// shopper can see who it is (SPEC, Terms).
pub fn new_store_alias_local(store: &StoreId) -> String {
    format!("{}.{}", store.as_str(), random_token(ALIAS_RANDOM_CHARS))
}

/// A sender pattern from a store's `senders` list: one address, or `@domain` for all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderPattern {
    Address(String),
    Domain(String),
}

impl SenderPattern {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        if let Some(domain) = s.strip_prefix('@') {
            Mailbox::parse(&format!("x@{domain}"))?;
            Ok(Self::Domain(domain.to_ascii_lowercase()))
        } else {
            Ok(Self::Address(Mailbox::parse(s)?.normalized()))
        }
    }
    pub fn matches(&self, mailbox: &Mailbox) -> bool {
        match self {
            Self::Address(a) => *a == mailbox.normalized(),
            Self::Domain(d) => *d == mailbox.domain(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_parses_and_redacts() {
        let m = Mailbox::parse("<Jane.Doe@Example.COM>").unwrap();
        assert_eq!(m.normalized(), "jane.doe@example.com");
        assert_eq!(format!("{m}"), "J***@example.com");
        assert!(!format!("{m:?}").contains("Doe"));
        assert!(Mailbox::parse("no-at-sign").is_err());
        assert!(Mailbox::parse("a b@c.d").is_err());
        assert!(Mailbox::parse("a@").is_err());
    }

    #[test]
    fn store_ids() {
        assert!(StoreId::parse("acme-1").is_ok());
        assert!(StoreId::parse("Acme").is_err());
        assert!(StoreId::parse("").is_err());
        assert!(StoreId::parse(&"a".repeat(41)).is_err());
    }

    #[test]
    fn aliases_are_random_and_long_enough() {
        let a = new_shopper_alias_local();
        let b = new_shopper_alias_local();
        assert_ne!(a, b);
        // 32 symbols = 5 bits each.
        assert!(a.len() * 5 >= 80);
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let s = new_store_alias_local(&StoreId::parse("acme").unwrap());
        assert!(s.starts_with("acme."));
    }

    #[test]
    fn sender_patterns() {
        let m = Mailbox::parse("Orders@Acme.example").unwrap();
        assert!(SenderPattern::parse("orders@acme.example").unwrap().matches(&m));
        assert!(SenderPattern::parse("@ACME.example").unwrap().matches(&m));
        assert!(!SenderPattern::parse("@evil.example").unwrap().matches(&m));
    }
}
