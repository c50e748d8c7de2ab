//! DKIM signing of everything the relay sends, for the relay domain (RFC 6376), with an
//! RSA (rsa-sha256) or Ed25519 (ed25519-sha256, RFC 8463) key from a PEM file.

use std::path::Path;

use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// Headers covered by the signature. List-Unsubscribe and List-Unsubscribe-Post must be
/// (RFC 8058 4) for mail clients to offer one-click revocation.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("{key} {path}: {problem}")]
    Key { key: &'static str, path: String, problem: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Which kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

/// One key and the selector its record is published under.
struct Key {
    signer: DkimSigner<DkimKey, Done>,
    selector: String,
    /// The `p=` value of the DNS record.
    public_key: String,
    kind: Algorithm,
}

/// The relay's signing keys: one signature per key on every message (RFC 6376 allows
/// several; RFC 8463 3 suggests an Ed25519 signature beside an RSA one, since receivers
/// that do not know Ed25519 ignore it).
pub struct Signer {
    keys: Vec<Key>,
}

impl Signer {
    /// Loads the PEM key at `path` (PKCS#8 Ed25519, or PKCS#1/PKCS#8 RSA).
    pub fn load(path: &Path, domain: &str, selector: &str) -> Result<Self, DkimError> {
        Ok(Self { keys: vec![load_key(MAIN_KEY, path, domain, selector)?] })
    }

    /// The keys `[dkim]` names: `private_key_path` (generated as RSA-2048 when missing and
    /// `generate` is set), and `ed25519_key_path` for a second signature (generated as
    /// Ed25519 when missing). Returns the signer and the paths of keys generated.
    pub fn from_config(
        dkim: &crate::config::Dkim,
        domain: &str,
        generate: bool,
    ) -> Result<(Self, Vec<String>), DkimError> {
        let mut generated = Vec::new();
        let main = Path::new(&dkim.private_key_path);
        if generate && !main.exists() {
            generate_as(MAIN_KEY, main, Algorithm::Rsa)?;
            generated.push(dkim.private_key_path.clone());
        }
        let mut keys = vec![load_key(MAIN_KEY, main, domain, &dkim.selector)?];
        if let Some(ed) = &dkim.ed25519_key_path {
            let path = Path::new(ed);
            if generate && !path.exists() {
                generate_as(ED25519_KEY, path, Algorithm::Ed25519)?;
                generated.push(ed.clone());
            }
            let key = load_key(ED25519_KEY, path, domain, &dkim.ed25519_selector())?;
            if key.kind != Algorithm::Ed25519 {
                return Err(DkimError::Key {
                    key: ED25519_KEY,
                    path: ed.clone(),
                    problem: "not an Ed25519 key".into(),
                });
            }
            keys.push(key);
        }
        Ok((Self { keys }, generated))
    }

    /// The message with one DKIM-Signature header per key in front.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let mut out = Vec::with_capacity(message.len() + 600 * self.keys.len());
        for key in &self.keys {
            let signature = key.signer.sign(message).map_err(|e| DkimError::Sign(e.to_string()))?;
            out.extend_from_slice(signature.to_header().as_bytes());
        }
        out.extend_from_slice(message);
        Ok(out)
    }

    /// The TXT record of the first key, to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        self.keys[0].record()
    }

    /// Every key's record, with its selector.
    pub fn records(&self) -> Vec<crate::records::DkimRecord> {
        self.keys
            .iter()
            .map(|k| crate::records::DkimRecord { selector: k.selector.clone(), text: k.record() })
            .collect()
    }
}

impl Key {
    fn record(&self) -> String {
        let k = match self.kind {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        };
        format!("v=DKIM1; k={k}; p={}", self.public_key)
    }
}

const MAIN_KEY: &str = "dkim.private_key_path";
const ED25519_KEY: &str = "dkim.ed25519_key_path";

fn load_key(name: &'static str, path: &Path, domain: &str, selector: &str) -> Result<Key, DkimError> {
    let err = |problem: String| DkimError::Key { key: name, path: path.display().to_string(), problem };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(format!("not a PEM private key ({e})")))?;
    let (key, public_key, kind) = match Ed25519Key::from_pkcs8_der(der.secret_der()) {
        Ok(k) => {
            let public = k.public_key();
            (DkimKey::Ed25519(k), public, Algorithm::Ed25519)
        }
        Err(_) => {
            let k = RsaKey::<Sha256>::from_key_der(der.clone_key())
                .map_err(|e| err(format!("neither Ed25519 nor RSA: {e}")))?;
            let public = spki_rsa(&k.public_key());
            (DkimKey::Rsa(k), public, Algorithm::Rsa)
        }
    };
    let signer =
        DkimSigner::from_key(key).domain(domain).selector(selector).headers(SIGNED_HEADERS.iter().copied());
    Ok(Key {
        signer,
        selector: selector.to_owned(),
        public_key: base64::engine::general_purpose::STANDARD.encode(public_key),
        kind,
    })
}

/// Writes a new private key as PEM (mode 0600) to `path`.
pub fn generate(path: &Path, algorithm: Algorithm) -> Result<(), DkimError> {
    generate_as(MAIN_KEY, path, algorithm)
}

fn generate_as(name: &'static str, path: &Path, algorithm: Algorithm) -> Result<(), DkimError> {
    let err = |problem: String| DkimError::Key { key: name, path: path.display().to_string(), problem };
    let (label, der) = match algorithm {
        Algorithm::Ed25519 => ("PRIVATE KEY", Ed25519Key::generate_pkcs8().map_err(|e| err(e.to_string()))?),
        Algorithm::Rsa => {
            let pair =
                mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048).map_err(|e| err(e.to_string()))?;
            ("RSA PRIVATE KEY", pair.private_key().to_vec())
        }
    };
    let body = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    write_private(path, pem.as_bytes()).map_err(|e| err(e.to_string()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// An RSAPublicKey (PKCS#1) wrapped as SubjectPublicKeyInfo, the form DKIM records carry
/// (RFC 6376 3.6.1, as `openssl rsa -pubout` prints it).
fn spki_rsa(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const ALGORITHM: &[u8] =
        &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(pkcs1);
    let mut inner = ALGORITHM.to_vec();
    inner.extend(der(0x03, &bit_string));
    der(0x30, &inner)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}
