//! The privacy core, used by both directions: a new header block from an allowlist with
//! every address-bearing header written by the relay, mapped message ids, and text parts
//! rewritten only where a hidden address occurs. Everything else stays byte-for-byte.

pub mod body;
pub mod headers;
pub mod ids;
pub mod text;

use mail_parser::{Message, MessageParser};

pub use ids::IdMap;

/// Why a message cannot be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("message has no header section")]
    Unparseable,
}

/// A mailbox as written in a header: display name and address.
#[derive(Debug, Clone)]
pub struct NamedAddress {
    pub name: Option<String>,
    pub address: String,
}

/// Everything the rewriter needs to know about one delivery; built by the session from
/// the thread, so this module never touches storage.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the reader sees as the sender (an alias).
    pub from: NamedAddress,
    /// Where replies go (the same alias).
    pub reply_to: String,
    /// The reader, as they know themselves.
    pub to: NamedAddress,
    /// Addresses (lowercase) that must not appear in any header of the output.
    pub hidden_in_headers: Vec<String>,
    /// `(real, alias)`: addresses that must not appear in the body either, and what stands
    /// in for them. Empty toward shoppers: the SPEC hides store addresses in headers only.
    pub replace_in_body: Vec<(String, String)>,
    /// The relay's Message-ID for this message (without brackets).
    pub message_id: String,
    /// Headers the relay adds (List-Unsubscribe…), already valid values.
    pub extra_headers: Vec<(&'static str, String)>,
}

/// Parses a message the way the rest of the relay does.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// The rewritten message: new header block, then the body with every hidden address
/// replaced.
pub fn rewrite(message: &Message<'_>, raw: &[u8], plan: &Plan, ids: &IdMap) -> Result<Vec<u8>, RewriteError> {
    message.parts.first().ok_or(RewriteError::Unparseable)?;
    let body = body::rewrite(message, &plan.replace_in_body);
    let mut out = Vec::with_capacity(raw.len() + 512);
    headers::write(&mut out, message, plan, ids, body.content_headers.as_ref());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body.bytes);
    Ok(out)
}

/// Every message id the message names (its own, In-Reply-To, References), in order.
pub fn referenced_ids<'a>(message: &'a Message<'a>) -> Vec<&'a str> {
    use mail_parser::HeaderValue;
    let mut out = Vec::new();
    for value in [message.in_reply_to(), message.references()] {
        match value {
            HeaderValue::Text(t) => out.push(t.as_ref()),
            HeaderValue::TextList(l) => out.extend(l.iter().map(|t| t.as_ref())),
            _ => {}
        }
    }
    out
}
