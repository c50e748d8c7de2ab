//! TLS for STARTTLS (RFC 3207) on the MX and submission listeners, with rustls and the
//! ring provider only (a second provider would make rustls refuse to pick one at run time).
//! The certificate can be swapped while the relay runs (SIGHUP): handshakes after the swap
//! get the new one, sessions already encrypted keep theirs.

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("smtp.tls_cert_path {0}: {1}")]
    Cert(String, String),
    #[error("smtp.tls_key_path {0}: {1}")]
    Key(String, String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The certificate in force, replaceable while handshakes read it.
#[derive(Debug)]
pub struct Certificate {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

impl Certificate {
    /// Reads the PEM files again and swaps them in; on any error the old certificate stays.
    pub fn reload(&self, cert_path: &str, key_path: &str) -> Result<(), TlsError> {
        let fresh = Arc::new(load(cert_path, key_path, &self.provider)?);
        let mut current = self.current.write().map_err(|_| TlsError::Setup("lock poisoned".into()))?;
        *current = fresh;
        Ok(())
    }
}

fn load(cert_path: &str, key_path: &str, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect())
        .map_err(|e| TlsError::Cert(cert_path.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(cert_path.to_owned(), "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| TlsError::Key(key_path.to_owned(), e.to_string()))?;
    // Checks that the key belongs to the certificate: a renewal that wrote one file but not
    // yet the other is refused, not served.
    CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| TlsError::Key(key_path.to_owned(), format!("does not fit {cert_path}: {e}")))
}

/// An acceptor for the PEM certificate chain and private key at the given paths, and the
/// handle that reloads them.
pub fn acceptor(cert_path: &str, key_path: &str) -> Result<(TlsAcceptor, Arc<Certificate>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificate = Arc::new(Certificate {
        current: RwLock::new(Arc::new(load(cert_path, key_path, &provider)?)),
        provider: provider.clone(),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    Ok((TlsAcceptor::from(Arc::new(config)), certificate))
}
