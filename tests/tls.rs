//! STARTTLS on the MX listener and the submission listener with SMTP AUTH, over real TLS
//! handshakes with an rcgen certificate.

mod support;

use std::sync::Arc;

use base64::Engine;
use rustls_pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A client that can switch to TLS mid-session.
struct Conn {
    io: BufReader<Box<dyn Stream>>,
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Self { io: BufReader::new(Box::new(tcp)) };
        assert_eq!(c.reply().await.0, 220);
        c
    }

    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                return (0, text);
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.io.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        self.reply().await
    }

    async fn expect(&mut self, line: &str, code: u16) -> String {
        let (c, text) = self.cmd(line).await;
        assert_eq!(c, code, "{line} -> {text}");
        text
    }

    async fn starttls(self, cert: &CertificateDer<'static>) -> Self {
        assert!(self.io.buffer().is_empty());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector
            .connect(ServerName::try_from("relay.test").unwrap(), self.io.into_inner())
            .await
            .expect("TLS handshake");
        Self { io: BufReader::new(Box::new(tls)) }
    }
}

struct Tls {
    cert: CertificateDer<'static>,
    cert_path: String,
    key_path: String,
    _dir: tempfile::TempDir,
}

fn certificate() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["relay.test".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem").display().to_string();
    let key_path = dir.path().join("key.pem").display().to_string();
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    Tls { cert: ck.cert.der().clone(), cert_path, key_path, _dir: dir }
}

async fn relay_with_tls(submission: bool) -> (TestRelay, Sink, Tls, tempfile::TempDir) {
    let tls = certificate();
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    config.smtp.tls_cert_path = Some(tls.cert_path.clone());
    config.smtp.tls_key_path = Some(tls.key_path.clone());
    if submission {
        config.submission.listen = "127.0.0.1:0".into();
    }
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    (relay, sink, tls, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_offers_starttls_and_takes_mail_over_tls() {
    let (relay, sink, tls, _dir) = relay_with_tls(false).await;
    let alias = relay.thread("tls-1").await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Conn::connect(relay.smtp()).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "no AUTH on the MX listener: {ehlo}");
    c.expect("STARTTLS", 220).await;
    let mut c = c.starttls(&tls.cert).await;
    // The session starts over inside TLS: EHLO again, STARTTLS no longer offered.
    c.expect("MAIL FROM:<orders@acme.example>", 503).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("STARTTLS", 503).await;
    c.expect("MAIL FROM:<orders@acme.example>", 250).await;
    c.expect(&format!("RCPT TO:<{alias}>"), 250).await;
    c.expect("DATA", 354).await;
    let msg = message("orders@acme.example", &alias, "over tls", "secret");
    c.io.get_mut().write_all(&msg).await.unwrap();
    let (code, text) = c.cmd(".").await;
    assert_eq!(code, 250, "{text}");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").unwrap(), "over tls");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_behind_starttls_are_dropped() {
    let (relay, _sink, tls, _dir) = relay_with_tls(false).await;
    let mut c = Conn::connect(relay.smtp()).await;
    c.expect("EHLO client.test", 250).await;
    // CVE-2011-0411: a command injected after STARTTLS in the same packet must not run
    // inside the TLS session.
    c.io.get_mut().write_all(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n").await.unwrap();
    assert_eq!(c.reply().await.0, 220);
    let mut c = c.starttls(&tls.cert).await;
    c.expect("EHLO client.test", 250).await;
    // Had the injected MAIL run, this would be "nested MAIL" (503).
    c.expect("MAIL FROM:<orders@acme.example>", 250).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_needs_tls_then_auth_and_only_reaches_own_shoppers() {
    let (relay, sink, tls, _dir) = relay_with_tls(true).await;
    let own = relay.thread("sub-1").await["shopper_alias"].as_str().unwrap().to_owned();
    let (s, _) = relay
        .api("POST", "/v1/stores", Some(serde_json::json!({"id": "other", "name": "Other", "contact": "c@other.example", "senders": ["@other.example"]})))
        .await;
    assert_eq!(s, 201);
    let (s, t) = relay
        .api("POST", "/v1/threads", Some(serde_json::json!({"order": "x", "store": "other", "shopper": {"email": "bob@shopper.example"}})))
        .await;
    assert_eq!(s, 201);
    let foreign = t["shopper_alias"].as_str().unwrap().to_owned();
    let (s, cred) = relay.api("POST", "/v1/stores/acme/credentials", None).await;
    assert_eq!(s, 201, "{cred}");
    let (user, pass) =
        (cred["username"].as_str().unwrap().to_owned(), cred["password"].as_str().unwrap().to_owned());

    let addr = relay.relay.submission_addr.expect("submission listener");
    let mut c = Conn::connect(addr).await;
    let ehlo = c.expect("EHLO store.test", 250).await;
    assert!(!ehlo.contains("AUTH"), "AUTH only after STARTTLS: {ehlo}");
    let plain = |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}"));
    let text = c.expect(&format!("AUTH PLAIN {}", plain(&user, &pass)), 538).await;
    assert!(text.contains("5.7.11"), "{text}");
    c.expect("MAIL FROM:<orders@acme.example>", 530).await;
    c.expect("STARTTLS", 220).await;
    let mut c = c.starttls(&tls.cert).await;
    let ehlo = c.expect("EHLO store.test", 250).await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    let text = c.expect(&format!("AUTH PLAIN {}", plain(&user, "wrong-password")), 535).await;
    assert!(text.contains("5.7.8"), "{text}");
    c.expect(&format!("AUTH PLAIN {}", plain("nobody", &pass)), 535).await;
    // AUTH LOGIN, step by step.
    c.expect("AUTH LOGIN", 334).await;
    c.expect(&base64::engine::general_purpose::STANDARD.encode(&user), 334).await;
    c.expect(&base64::engine::general_purpose::STANDARD.encode(&pass), 235).await;
    // The login authorizes: the envelope sender need not be an approved sender.
    c.expect("MAIL FROM:<anything@anywhere.example>", 250).await;
    c.expect(&format!("RCPT TO:<{foreign}>"), 550).await;
    c.expect(&format!("RCPT TO:<{own}>"), 250).await;
    c.expect("DATA", 354).await;
    c.io.get_mut().write_all(&message("Clerk <clerk@acme.example>", &own, "submitted", "hi")).await.unwrap();
    let (code, text) = c.cmd(".").await;
    assert_eq!(code, 250, "{text}");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").unwrap(), "submitted");
    assert!(!got[0].text().contains("acme.example"), "{}", got[0].text());
    assert!(got[0].header("Authentication-Results").unwrap().contains("auth=pass"));
    relay.stop().await;
}
