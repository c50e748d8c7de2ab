//! A self-signed certificate (rcgen) for a TLS-speaking sink, with its PEM written to a
//! file the relay can be told to trust (`egress.smarthost_ca_path`).

use std::sync::Arc;

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// A certificate for some names, as a server configuration and a trust file.
pub struct TestCert {
    pub server: Arc<rustls::ServerConfig>,
    /// The certificate in PEM: trusting it makes the certificate verify.
    pub ca_path: String,
    _dir: tempfile::TempDir,
}

impl TestCert {
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        let ca_path = dir.path().join("ca.pem").display().to_string();
        std::fs::write(&ca_path, ck.cert.pem()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(ck.signing_key.serialize_pem().as_bytes()).unwrap();
        let server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap();
        Self { server: Arc::new(server), ca_path, _dir: dir }
    }
}
