//! The VERP codec: each queued message is sent with its own bounce address, so a bounce
//! names the message (and through it the thread), never a person.

/// The VERP bounce address of a queued message.
pub fn address(queue_id: &str, relay_domain: &str) -> String {
    format!("bounce+{queue_id}@{relay_domain}")
}

/// Whether a recipient local part is a VERP bounce address, and of which queue entry.
pub fn queue_id_of(local: &str) -> Option<&str> {
    let id = local.strip_prefix("bounce+")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verp_addresses() {
        assert_eq!(queue_id_of(address("abc123", "relay.test").split('@').next().unwrap()), Some("abc123"));
        assert_eq!(queue_id_of("bounce+abc123"), Some("abc123"));
        assert_eq!(queue_id_of("bounce+"), None);
        assert_eq!(queue_id_of("bounce+a.b"), None);
        assert_eq!(queue_id_of("acme.xyz"), None);
    }
}
