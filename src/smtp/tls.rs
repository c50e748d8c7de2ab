//! TLS for STARTTLS (RFC 3207) on the MX and submission listeners, with rustls and the
//! ring provider only (a second provider would make rustls refuse to pick one at run time).

use std::sync::Arc;

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

/// An acceptor for the PEM certificate chain and private key at the given paths.
pub fn acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect())
        .map_err(|e| TlsError::Cert(cert_path.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(cert_path.to_owned(), "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| TlsError::Key(key_path.to_owned(), e.to_string()))?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
