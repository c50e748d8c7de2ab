//! Message-ID mapping: each side sees the other's message ids only as relay ids, and its
//! own ids come back to it unchanged, so both mail clients thread the conversation while
//! neither learns the other's identifiers (whose host part often names a machine).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The relay's id for an original Message-ID within a thread. Deterministic, so the same
/// original always maps to the same relay id without a lookup; unguessable, since the
/// thread id it is derived from never leaves the relay.
pub fn relay_id_for(thread_id: &str, original: &str, relay_domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(thread_id.as_bytes());
    h.update([0]);
    h.update(original.as_bytes());
    let digest = h.finalize();
    format!("{}@{relay_domain}", hex::encode(&digest[..16]))
}

/// How the ids of one message translate, and which new relay ids must be remembered.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    map: HashMap<String, String>,
    /// `(relay_id, original)` pairs to store so replies can be mapped back.
    pub new_mappings: Vec<(String, String)>,
}

impl IdMap {
    /// Plans the translation of `ids` (Message-ID, In-Reply-To, References, without angle
    /// brackets) for a thread whose known mappings are `known` (relay id → original).
    pub fn plan<'a>(
        thread_id: &str,
        relay_domain: &str,
        known: &HashMap<String, String>,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut out = Self::default();
        for id in ids {
            if out.map.contains_key(id) {
                continue;
            }
            let mapped = match known.get(&id.to_ascii_lowercase()) {
                // A relay id this thread issued: the reader gets their own original back.
                Some(original) => original.clone(),
                None => {
                    let relay = relay_id_for(thread_id, id, relay_domain);
                    out.new_mappings.push((relay.clone(), id.to_owned()));
                    relay
                }
            };
            out.map.insert(id.to_owned(), mapped);
        }
        out
    }

    /// The id the reader sees for `id`.
    pub fn get(&self, id: &str) -> Option<&str> {
        self.map.get(id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_a_reply() {
        let domain = "relay.example";
        // The shopper writes message M; the store sees R.
        let mut known = HashMap::new();
        let first = IdMap::plan("thr_1", domain, &known, ["m1@shopper-laptop.example"]);
        let r = first.get("m1@shopper-laptop.example").unwrap().to_owned();
        assert!(r.ends_with("@relay.example"));
        assert!(!r.contains("shopper-laptop"));
        for (relay, original) in &first.new_mappings {
            known.insert(relay.clone(), original.clone());
        }
        // The store replies to R; the shopper sees M again.
        let reply = IdMap::plan("thr_1", domain, &known, ["s1@store.example", r.as_str()]);
        assert_eq!(reply.get(&r), Some("m1@shopper-laptop.example"));
        assert_ne!(reply.get("s1@store.example"), Some("s1@store.example"));
        // Another thread maps the same original elsewhere.
        assert_ne!(relay_id_for("thr_2", "m1@shopper-laptop.example", domain), r);
    }
}
