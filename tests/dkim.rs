//! Everything the relay sends is DKIM-signed for the relay domain, with an RSA or an
//! Ed25519 key, and verifies against the published record (mail-auth's verifier over a
//! local DNS zone).

mod support;

use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use maskrelay::delivery::dkim::{self, Algorithm, Signer};
use support::dns::DnsServer;
use support::*;

async fn signed_delivery_verifies(algorithm: Algorithm) {
    let dns = DnsServer::start().await;
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let config = test_config(&url, sink.addr);
    let key_path = std::path::PathBuf::from(&config.dkim.private_key_path);
    std::fs::remove_file(&key_path).unwrap();
    dkim::generate(&key_path, algorithm).unwrap();
    let record = Signer::load(&key_path, DOMAIN, &config.dkim.selector).unwrap().dns_record();
    let k = match algorithm {
        Algorithm::Rsa => "k=rsa",
        Algorithm::Ed25519 => "k=ed25519",
    };
    assert!(record.starts_with(&format!("v=DKIM1; {k}; p=")), "{record}");
    let selector = config.dkim.selector.clone();
    dns.txt(&format!("{selector}._domainkey.{DOMAIN}"), &record);

    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let thread = relay.thread("order-9").await;
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send(
            "orders@acme.example",
            &[&alias],
            &message("orders@acme.example", &alias, "signed", "body\r\n.dot line"),
        )
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    let sig = got[0].header("DKIM-Signature").expect("signed");
    assert!(sig.contains(&format!("d={DOMAIN}")), "{sig}");
    for h in ["list-unsubscribe", "list-unsubscribe-post", "from", "to"] {
        assert!(sig.to_lowercase().contains(h), "{h} not signed: {sig}");
    }

    let resolver = maskrelay::dns::resolver(&[dns.nameserver()]).unwrap();
    let verifier = MessageAuthenticator(resolver);
    let message = AuthenticatedMessage::parse(&got[0].data).unwrap();
    let results = verifier.verify_dkim(&message).await;
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| *r.result() == DkimResult::Pass), "{results:?}");

    dkimpy_verifies(&format!("{}._domainkey.{DOMAIN}", selector), &record, &got[0].data, true);

    // The same bytes with one changed character do not verify.
    let mut tampered = got[0].data.clone();
    let at = tampered.windows(4).position(|w| w == b"body").unwrap();
    tampered[at] = b'B';
    let message = AuthenticatedMessage::parse(&tampered).unwrap();
    let results = verifier.verify_dkim(&message).await;
    assert!(results.iter().all(|r| *r.result() != DkimResult::Pass), "{results:?}");
    dkimpy_verifies(&format!("{}._domainkey.{DOMAIN}", selector), &record, &tampered, false);
    relay.stop().await;
}

/// A second, independent verifier: Python's dkimpy (with PyNaCl for Ed25519), when it is
/// installed (CI installs it; set MRTEST_REQUIRE_DKIMPY to make its absence an error).
fn dkimpy_verifies(name: &str, record: &str, message: &[u8], expect_pass: bool) {
    use std::io::Write;
    let available = std::process::Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        eprintln!("SKIPPED: dkimpy cross-check (pip install dkimpy pynacl to run it)");
        assert!(std::env::var("MRTEST_REQUIRE_DKIMPY").is_err(), "dkimpy is required but missing");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkimpy_verify.py");
    let mut child = std::process::Command::new("python3")
        .args([script, name, record])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.success(), expect_pass, "dkimpy said: {}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signed_output_verifies() {
    signed_delivery_verifies(Algorithm::Rsa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signed_output_verifies() {
    signed_delivery_verifies(Algorithm::Ed25519).await;
}

/// A next hop that holds to the 998-octet line limit (RFC 5322 2.1.1) takes a message
/// whose text and Subject had longer lines: the relay re-encoded the text part as
/// quoted-printable in its charset and wrote the Subject as encoded words, before signing,
/// so the signature verifies and the reader sees the same text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_reencoded_before_signing_and_still_verify() {
    let dns = DnsServer::start().await;
    let (url, _dir) = sqlite_url();
    let strict = support::sink::Options { max_line: Some(998), ..Default::default() };
    let sink = Sink::start_with("127.0.0.1:0", strict).await;
    let config = test_config(&url, sink.addr);
    let signer =
        Signer::load(std::path::Path::new(&config.dkim.private_key_path), DOMAIN, &config.dkim.selector)
            .unwrap();
    let name = format!("{}._domainkey.{DOMAIN}", config.dkim.selector);
    dns.txt(&name, &signer.dns_record());
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let alias = relay.thread("order-long").await["shopper_alias"].as_str().unwrap().to_owned();

    let subject = "x".repeat(1100);
    let long_text = "Grüße aus Köln, ".repeat(100);
    let text = format!("first line\r\n{long_text}\r\nlast line\r\n");
    let raw = format!(
        "From: orders@acme.example\r\nTo: {alias}\r\nSubject: {subject}\r\n\
         Message-ID: <long@acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}"
    );
    assert!(raw.lines().any(|l| l.len() > 998));
    let mut c = Client::ready(relay.smtp()).await;
    let r = c.send("orders@acme.example", &[&alias], raw.as_bytes()).await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(sink.violations(), Vec::<String>::new(), "no line over 998 octets reached the next hop");
    let data = &got[0].data;
    let longest = data.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap();
    assert!(longest <= 1000, "{longest}");

    let parsed = mail_parser::MessageParser::default().parse(data).unwrap();
    assert_eq!(parsed.subject(), Some(subject.as_str()));
    assert_eq!(parsed.body_text(0).as_deref(), Some(text.as_str()));
    use mail_parser::MimeHeaders;
    let charset = parsed.parts[0].content_type().and_then(|ct| ct.attribute("charset"));
    assert_eq!(charset, Some("utf-8"), "the charset is kept");
    let head = String::from_utf8_lossy(maskrelay::delivery::downgrade::header_block(data)).to_lowercase();
    assert!(head.contains("content-transfer-encoding: quoted-printable"), "{head}");

    let resolver = maskrelay::dns::resolver(&[dns.nameserver()]).unwrap();
    let parsed_for_dkim = AuthenticatedMessage::parse(data).unwrap();
    let results = MessageAuthenticator(resolver).verify_dkim(&parsed_for_dkim).await;
    assert!(!results.is_empty() && results.iter().all(|r| *r.result() == DkimResult::Pass), "{results:?}");
    dkimpy_verifies(&name, &signer.dns_record(), data, true);
    relay.stop().await;
}

/// Without a key, `serve` generates RSA-2048 (what every receiver verifies); with
/// `dkim.ed25519_key_path` it adds an Ed25519 signature (RFC 8463), and both verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_rsa_and_adds_ed25519_when_configured() {
    let dns = DnsServer::start().await;
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    std::fs::remove_file(&config.dkim.private_key_path).unwrap();
    let ed_path = dir.path().join("ed25519.pem");
    config.dkim.ed25519_key_path = Some(ed_path.display().to_string());
    let relay = TestRelay::start(config.clone()).await;
    let rsa = Signer::load(config.dkim.private_key_path.as_ref(), DOMAIN, "maskrelay").unwrap().dns_record();
    assert!(rsa.starts_with("v=DKIM1; k=rsa; p=MIIB"), "serve generated {rsa}");
    let ed = Signer::load(&ed_path, DOMAIN, "maskrelay-ed25519").unwrap().dns_record();
    assert!(ed.starts_with("v=DKIM1; k=ed25519; p="), "{ed}");
    dns.txt(&format!("maskrelay._domainkey.{DOMAIN}"), &rsa);
    dns.txt(&format!("maskrelay-ed25519._domainkey.{DOMAIN}"), &ed);

    relay.acme().await;
    let alias = relay.thread("order-ed").await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "two", "body"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"), "{text}");
    let verifier = MessageAuthenticator(maskrelay::dns::resolver(&[dns.nameserver()]).unwrap());
    let parsed = AuthenticatedMessage::parse(&got[0].data).unwrap();
    let results = verifier.verify_dkim(&parsed).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|r| *r.result() == DkimResult::Pass), "{results:?}");
    dkimpy_verifies(&format!("maskrelay._domainkey.{DOMAIN}"), &rsa, &got[0].data, true);
    relay.stop().await;
}

#[test]
fn init_writes_config_and_key_and_prints_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskrelay"))
        .current_dir(dir.path())
        .args(["init", "--domain", "relay.example.org", "--dkim-algorithm", "ed25519"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for record in [
        "relay.example.org.  3600 IN MX  10 relay.example.org.",
        "relay.example.org.  3600 IN TXT \"v=spf1 a:relay.example.org -all\"",
        "_dmarc.relay.example.org.  3600 IN TXT \"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc-reports@example.org\"",
        "maskrelay._domainkey.relay.example.org.  3600 IN TXT \"v=DKIM1; k=ed25519; p=",
        "10.2.0.192.in-addr.arpa.  3600 IN PTR relay.example.org.",
    ] {
        assert!(text.contains(record), "{record} missing:\n{text}");
    }
    // stdout is the zone alone; what was written is said on stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("Wrote maskrelay.toml (mode 0600"));
    let config = std::fs::read_to_string(dir.path().join("maskrelay.toml")).unwrap();
    let parsed = maskrelay::config::Config::from_toml_and_env(&config, Vec::new()).unwrap();
    assert_eq!(parsed.relay.domain, "relay.example.org");
    assert!(std::path::Path::new(&parsed.dkim.private_key_path).exists());
    // The privacy key file is written beside it and named by the config, by absolute path.
    assert!(parsed.privacy.key_file.ends_with("/maskrelay.key"), "{}", parsed.privacy.key_file);
    let (vault, created) = maskrelay::store::Vault::from_config(&parsed.privacy, false).unwrap();
    assert!(!created && !vault.current_key_id().is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&parsed.privacy.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is for its owner only");
        let mode = std::fs::metadata(dir.path().join("maskrelay.toml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the config holds the API token: for its owner only");
    }
    // A second init refuses to overwrite the config.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_maskrelay"))
        .current_dir(dir.path())
        .args(["init", "--domain", "relay.example.org"])
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn bad_config_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[smtp]\nmax_recipients = \"lots\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskrelay"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_recipients"), "{err}");
}
