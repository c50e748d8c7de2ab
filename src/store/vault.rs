//! Encryption at rest of what identifies a shopper: real address and name, queued mail and
//! its recipient, original Message-IDs. Values are sealed with XChaCha20-Poly1305 (random
//! 192-bit nonces, so no nonce bookkeeping across processes) under keys that come from the
//! configuration or a key file, never from the database. Lookups by address go through a
//! blind index: a keyed HMAC of the normalized address, useless without the key.
//!
//! A keyring holds one current key, which seals, and any number of older keys, which only
//! open: rotation is adding a key in front, running `maskrelay keys rotate`, then dropping
//! the old key. Each sealed value names its key by a short id derived from the key.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Layout of a sealed value: version, key id, nonce, then ciphertext with its tag.
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Why a keyring cannot be built or a value cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("privacy key {index}: {problem}")]
    BadKey { index: usize, problem: String },
    #[error("no privacy key: set privacy.keys (MASKRELAY_PRIVACY_KEYS) or privacy.key_file")]
    NoKey,
    // The io error is part of the message, not a `source`: error chains would print it twice.
    #[error("cannot read privacy.key_file {path}: {cause}{hint}")]
    Read { path: String, cause: std::io::Error, hint: &'static str },
    #[error("cannot write privacy.key_file {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error(
        "value sealed under privacy key id {0}, which is not configured (add that key to privacy.keys or privacy.key_file)"
    )]
    UnknownKey(String),
    #[error("sealed value is damaged or was moved from another row")]
    Damaged,
}

/// What a sealed value is; part of the associated data, with the row it belongs to, so a
/// value copied into another column or row does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    ShopperEmail,
    ShopperName,
    QueueRecipient,
    QueueMessage,
    OriginalMessageId,
    WebhookSecret,
    /// The value every relay of a database must open (`keyring_check`).
    KeyringCheck,
}

impl Field {
    fn label(self) -> &'static [u8] {
        match self {
            Self::ShopperEmail => b"threads.shopper_email",
            Self::ShopperName => b"threads.shopper_name",
            Self::QueueRecipient => b"queue.rcpt_to",
            Self::QueueMessage => b"queue.message",
            Self::OriginalMessageId => b"message_ids.original",
            Self::WebhookSecret => b"webhooks.secret",
            Self::KeyringCheck => b"keyring_check.sealed",
        }
    }
}

struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
    index_key: [u8; 32],
}

impl Key {
    /// Separate keys for sealing, indexing and naming, derived from the one secret, so no
    /// output of one use says anything about another.
    fn new(secret: &[u8; 32]) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let seal_key = derive(b"maskrelay v1 seal");
        let id_bytes = derive(b"maskrelay v1 key id");
        Self {
            id: id_bytes[..KEY_ID_LEN].try_into().expect("4 bytes"),
            cipher: XChaCha20Poly1305::new(&seal_key.into()),
            index_key: derive(b"maskrelay v1 blind index"),
        }
    }

    fn blind_index(&self, normalized: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key).expect("HMAC takes any key length");
        mac.update(normalized.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The keyring: the first key seals, every key opens. The keys can be replaced while the
/// relay runs (SIGHUP); each operation uses one consistent set.
pub struct Vault {
    keys: std::sync::RwLock<std::sync::Arc<[Key]>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.ring().iter().map(|k| hex::encode(k.id)).collect();
        f.debug_struct("Vault").field("key_ids", &ids).finish()
    }
}

fn associated_data(field: Field, row: &str) -> Vec<u8> {
    let mut aad = field.label().to_vec();
    aad.push(0);
    aad.extend_from_slice(row.as_bytes());
    aad
}

impl Vault {
    /// A keyring from base64 keys of 32 bytes, current key first.
    pub fn from_base64(keys: &[impl AsRef<str>]) -> Result<Self, VaultError> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(index, k)| {
                let bytes = B64
                    .decode(k.as_ref().trim())
                    .map_err(|e| VaultError::BadKey { index, problem: format!("not base64: {e}") })?;
                let secret: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| VaultError::BadKey {
                    index,
                    problem: format!("{} bytes; a key is 32 bytes (44 base64 characters)", b.len()),
                })?;
                Ok(Key::new(&secret))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(VaultError::NoKey);
        }
        Ok(Self { keys: std::sync::RwLock::new(keys.into()) })
    }

    fn ring(&self) -> std::sync::Arc<[Key]> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts the keys of `other` in force (a reload); operations under way finish with the
    /// keys they started with.
    pub fn replace(&self, other: &Vault) {
        let fresh = other.ring();
        match self.keys.write() {
            Ok(mut keys) => *keys = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// The ids of every key, current first.
    pub fn key_ids(&self) -> Vec<String> {
        self.ring().iter().map(|k| hex::encode(k.id)).collect()
    }

    /// A new random key, base64, as `maskrelay keys generate` prints it.
    pub fn generate_key() -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        B64.encode(secret)
    }

    /// Keys from a key file: one base64 key per line, current first; `#` comments and
    /// blank lines are skipped.
    pub fn read_key_file(path: &Path) -> Result<Self, VaultError> {
        let text = std::fs::read_to_string(path).map_err(|cause| VaultError::Read {
            path: path.display().to_string(),
            hint: if cause.kind() == std::io::ErrorKind::NotFound {
                " (`maskrelay serve` creates it on first start and `maskrelay init` writes one; \
                 point privacy.key_file at the relay's own file)"
            } else {
                ""
            },
            cause,
        })?;
        let keys: Vec<&str> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        Self::from_base64(&keys)
    }

    /// Writes a key file holding one new key, readable by the owner only.
    pub fn create_key_file(path: &Path) -> Result<(), VaultError> {
        let text = format!(
            "# maskrelay privacy keys: one base64 key per line, the first seals, all open.\n\
             # Losing this file makes every stored shopper address unreadable. Back it up apart\n\
             # from the database. Rotation: README.md, \"Privacy keys\".\n{}\n",
            Self::generate_key()
        );
        let write = |path: &Path| -> std::io::Result<()> {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        write(path).map_err(|cause| VaultError::Write { path: path.display().to_string(), cause })
    }

    /// The keyring the configuration names: `privacy.keys`, else `privacy.key_file`. With
    /// `create`, a missing key file is created with one new key (the first `serve`);
    /// returns the ring and whether a file was created.
    pub fn from_config(privacy: &crate::config::Privacy, create: bool) -> Result<(Self, bool), VaultError> {
        if !privacy.keys.is_empty() {
            return Ok((Self::from_base64(&privacy.keys)?, false));
        }
        if privacy.key_file.is_empty() {
            return Err(VaultError::NoKey);
        }
        let path = Path::new(&privacy.key_file);
        let created = create && !path.exists();
        if created {
            Self::create_key_file(path)?;
        }
        Ok((Self::read_key_file(path)?, created))
    }

    /// The id of the current key, as sealed values and logs name it.
    pub fn current_key_id(&self) -> String {
        hex::encode(self.ring()[0].id)
    }

    /// Seals `plaintext` as `field` of `row` under the current key.
    pub fn seal(&self, field: Field, row: &str, plaintext: &[u8]) -> Vec<u8> {
        let ring = self.ring();
        let key = &ring[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(field, row);
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value sealed by `seal` for the same field and row, under any key of the ring.
    pub fn open(&self, field: Field, row: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(VaultError::Damaged);
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        let ring = self.ring();
        let key = ring.iter().find(|k| k.id == id).ok_or_else(|| VaultError::UnknownKey(hex::encode(id)))?;
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        let aad = associated_data(field, row);
        key.cipher
            .decrypt(nonce, Payload { msg: &sealed[HEADER_LEN..], aad: &aad })
            .map_err(|_| VaultError::Damaged)
    }

    /// `seal` for a text column: base64 of the sealed bytes.
    pub fn seal_text(&self, field: Field, row: &str, plaintext: &str) -> String {
        B64.encode(self.seal(field, row, plaintext.as_bytes()))
    }

    /// `open` for a text column.
    pub fn open_text(&self, field: Field, row: &str, sealed: &str) -> Result<String, VaultError> {
        let bytes = B64.decode(sealed).map_err(|_| VaultError::Damaged)?;
        String::from_utf8(self.open(field, row, &bytes)?).map_err(|_| VaultError::Damaged)
    }

    /// Whether a sealed value is under the current key (rotation skips those).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.len() > KEY_ID_LEN && sealed[1..1 + KEY_ID_LEN] == self.ring()[0].id
    }

    /// Whether a sealed text value is under the current key.
    pub fn is_current_text(&self, sealed: &str) -> bool {
        B64.decode(sealed).is_ok_and(|b| self.is_current(&b))
    }

    /// The key id a sealed text value names, if it is readable as one.
    pub fn key_id_of_text(&self, sealed: &str) -> Option<String> {
        let bytes = B64.decode(sealed).ok()?;
        (bytes.len() > KEY_ID_LEN).then(|| hex::encode(&bytes[1..1 + KEY_ID_LEN]))
    }

    /// Whether the ring holds the key of that id.
    pub fn knows(&self, key_id: &str) -> bool {
        self.ring().iter().any(|k| hex::encode(k.id) == key_id)
    }

    /// The blind index of a normalized address under the current key: what `shopper_key`
    /// holds.
    pub fn blind_index(&self, normalized: &str) -> String {
        self.ring()[0].blind_index(normalized)
    }

    /// The blind index under every key, current first: lookups match rows not yet rotated.
    pub fn blind_indexes(&self, normalized: &str) -> Vec<String> {
        self.ring().iter().map(|k| k.blind_index(normalized)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> Vault {
        Vault::from_base64(keys).unwrap()
    }

    #[test]
    fn sealed_value_opens_only_for_its_field_and_row() {
        let v = ring(&[&Vault::generate_key()]);
        let sealed = v.seal_text(Field::ShopperEmail, "thr_1", "jane@shopper.example");
        assert!(!sealed.contains("jane") && !sealed.contains("shopper.example"));
        assert_eq!(v.open_text(Field::ShopperEmail, "thr_1", &sealed).unwrap(), "jane@shopper.example");
        assert!(matches!(v.open_text(Field::ShopperEmail, "thr_2", &sealed), Err(VaultError::Damaged)));
        assert!(matches!(v.open_text(Field::ShopperName, "thr_1", &sealed), Err(VaultError::Damaged)));
    }

    #[test]
    fn sealing_twice_differs_and_tampering_is_detected() {
        let v = ring(&[&Vault::generate_key()]);
        let a = v.seal(Field::QueueMessage, "q1", b"body");
        let b = v.seal(Field::QueueMessage, "q1", b"body");
        assert_ne!(a, b, "random nonces");
        for i in [0, 3, HEADER_LEN, a.len() - 1] {
            let mut t = a.clone();
            t[i] ^= 1;
            assert!(v.open(Field::QueueMessage, "q1", &t).is_err(), "byte {i} flipped");
        }
        assert!(v.open(Field::QueueMessage, "q1", &a[..HEADER_LEN + 3]).is_err());
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let (old, new) = (Vault::generate_key(), Vault::generate_key());
        let before = ring(&[&old]);
        let sealed = before.seal(Field::ShopperName, "thr_1", b"Jane");
        let during = ring(&[&new, &old]);
        assert_eq!(during.open(Field::ShopperName, "thr_1", &sealed).unwrap(), b"Jane");
        assert!(!during.is_current(&sealed));
        assert!(during.is_current(&during.seal(Field::ShopperName, "thr_1", b"Jane")));
        assert_eq!(during.blind_indexes("jane@x.example")[1], before.blind_index("jane@x.example"));
        let after = ring(&[&new]);
        let err = after.open(Field::ShopperName, "thr_1", &sealed).unwrap_err();
        assert!(matches!(err, VaultError::UnknownKey(ref id) if *id == before.current_key_id()), "{err}");
    }

    #[test]
    fn blind_index_is_keyed_and_stable() {
        let (k1, k2) = (Vault::generate_key(), Vault::generate_key());
        let a = ring(&[&k1]).blind_index("jane@shopper.example");
        assert_eq!(a, ring(&[&k1]).blind_index("jane@shopper.example"));
        assert_ne!(a, ring(&[&k2]).blind_index("jane@shopper.example"));
        assert_ne!(a, ring(&[&k1]).blind_index("john@shopper.example"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Vault::from_base64(&[Vault::generate_key(), "c2hvcnQ=".into()]).unwrap_err();
        assert!(e.to_string().contains("privacy key 1") && e.to_string().contains("32 bytes"), "{e}");
        assert!(matches!(Vault::from_base64(&[] as &[&str]), Err(VaultError::NoKey)));
    }

    #[test]
    fn key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maskrelay.key");
        Vault::create_key_file(&path).unwrap();
        assert!(Vault::create_key_file(&path).is_err(), "never overwrites a key");
        let v = Vault::read_key_file(&path).unwrap();
        let sealed = v.seal(Field::OriginalMessageId, "r", b"<id@host>");
        assert_eq!(
            Vault::read_key_file(&path).unwrap().open(Field::OriginalMessageId, "r", &sealed).unwrap(),
            b"<id@host>"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
