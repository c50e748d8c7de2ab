//! The MIME structure of a message as a list of parts in document order: depth, content
//! type, and for every part that is not text the decoded body. Rewriting may re-encode a
//! text part (new charset and transfer encoding), but must leave this list unchanged.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub depth: usize,
    pub content_type: String,
    /// The decoded body of a non-text leaf; None for text, multiparts and messages.
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", "  ".repeat(self.depth), self.content_type)?;
        if let Some(b) = &self.body {
            write!(f, " ({} bytes)", b.len())?;
        }
        Ok(())
    }
}

pub fn tree(raw: &[u8]) -> Vec<Node> {
    let mut out = Vec::new();
    if let Some(m) = MessageParser::default().parse(raw) {
        walk(&m, 0, 0, &mut out);
    }
    out
}

fn walk(m: &Message<'_>, id: usize, depth: usize, out: &mut Vec<Node>) {
    let Some(p) = m.parts.get(id) else { return };
    if depth > 50 {
        return;
    }
    let declared =
        p.content_type().map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_lowercase());
    let content_type = declared.unwrap_or_else(|| match p.body {
        PartType::Message(_) => "message/rfc822".into(),
        _ => "text/plain".into(),
    });
    // A part the parser could not read as declared (a multipart whose boundary never
    // comes, broken base64) is shown as text, and may be rewritten like text.
    // Delivery and read reports (RFC 3464, RFC 8098), feedback reports (RFC 5965) and
    // message/global-headers (RFC 6532) are header fields that name the sender.
    let report = [
        "message/delivery-status",
        "message/disposition-notification",
        "message/global-delivery-status",
        "message/global-disposition-notification",
        "message/feedback-report",
        "message/global-headers",
    ];
    let is_text = content_type.starts_with("text/")
        || report.contains(&content_type.as_str())
        || matches!(p.body, PartType::Text(_) | PartType::Html(_));
    let body = match &p.body {
        PartType::Multipart(_) | PartType::Message(_) => None,
        _ if is_text => None,
        other => Some(match other {
            PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
            _ => Vec::new(),
        }),
    };
    out.push(Node { depth, content_type, body });
    match &p.body {
        PartType::Multipart(children) => {
            for c in children.iter().filter(|c| **c as usize != id) {
                walk(m, *c as usize, depth + 1, out);
            }
        }
        PartType::Message(inner) => walk(inner, 0, depth + 1, out),
        _ => {}
    }
}

/// How the delivered structure differs from the sent one; empty when it does not.
pub fn compare(sent: &[u8], delivered: &[u8]) -> Vec<String> {
    let (a, b) = (tree(sent), tree(delivered));
    let mut out = Vec::new();
    if a.len() != b.len() {
        out.push(format!(
            "{} parts sent, {} delivered:\n  sent:\n{}\n  delivered:\n{}",
            a.len(),
            b.len(),
            a.iter().map(|n| format!("    {n}")).collect::<Vec<_>>().join("\n"),
            b.iter().map(|n| format!("    {n}")).collect::<Vec<_>>().join("\n"),
        ));
        return out;
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x.depth != y.depth || x.content_type != y.content_type {
            out.push(format!("part {}: sent {x}, delivered {y}", i + 1));
        } else if x.body != y.body {
            out.push(format!("part {} ({}): body changed", i + 1, x.content_type));
        }
    }
    out
}
