//! The operator's side of the binary, run as an operator runs it (a child process, real
//! files, real signals, a real DNS server): `init` and `check dns`, `config check`,
//! `health`, `backup`, SIGHUP reloads, JSON logs, start-up refusals and their messages.

mod support;

use std::path::Path;
use std::sync::Arc;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::serialize::txt::Parser;
use serde_json::{Value, json};
use support::dns::DnsServer;
use support::process::{Served, free_port, run};
use support::*;

const OPERATOR_TOKEN: &str = "operations-token-0123456789";

/// The records `init` printed, read by a real zone-file parser.
fn parse_zone(text: &str) -> Vec<(String, RData)> {
    // Every name init prints is absolute; a zone file still needs an origin to load.
    let origin = hickory_resolver::proto::rr::Name::from_ascii("example.org.").unwrap();
    let (_, records) =
        Parser::new(text, None, Some(origin)).parse().unwrap_or_else(|e| panic!("zone: {e}\n{text}"));
    records
        .values()
        .flat_map(|set| {
            set.records_without_rrsigs().map(|r| (r.name.to_ascii(), r.data.clone())).collect::<Vec<_>>()
        })
        .collect()
}

fn serve_zone(dns: &DnsServer, records: &[(String, RData)]) {
    for (name, data) in records {
        dns.record(name, data.clone());
    }
}

/// `init` prints a zone a parser accepts (each TXT string at most 255 bytes), and `check
/// dns` finds it complete once a DNS server serves it; a zone without DMARC, with another
/// DKIM key and an SPF that does not name the host is reported record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_prints_a_zone_that_check_dns_finds_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, zone, err) =
        run(dir.path(), &[], &["init", "--domain", "relay.example.org", "--ip", "198.51.100.25"]);
    assert!(ok, "{err}");
    let records = parse_zone(&zone);
    let dkim = records
        .iter()
        .find_map(|(n, d)| match d {
            RData::TXT(t) if n.starts_with("maskrelay._domainkey.") => Some(t.clone()),
            _ => None,
        })
        .expect("a DKIM record");
    assert!(dkim.txt_data.len() >= 2, "RSA-2048 needs more than one string");
    assert!(dkim.txt_data.iter().all(|s| s.len() <= 255));
    let joined: String = dkim.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    assert!(joined.starts_with("v=DKIM1; k=rsa; p=MIIB"), "{joined}");
    for kind in ["MX", "A", "PTR"] {
        assert!(records.iter().any(|(_, d)| d.record_type().to_string() == kind), "{kind} missing:\n{zone}");
    }

    let dns = DnsServer::start().await;
    serve_zone(&dns, &records);
    let env = [("MASKRELAY_DNS_NAMESERVERS", dns.nameserver())];
    let check = ["--config", "maskrelay.toml", "check", "dns", "--ip", "198.51.100.25"];
    let (ok, out, err) = run(dir.path(), &env, &check);
    assert!(ok, "check dns on the printed zone:\n{out}{err}");
    assert!(out.contains("All records are in place"), "{out}");
    for line in [
        "ok       MX relay.example.org",
        "ok       SPF",
        "ok       DMARC",
        "ok       DKIM",
        "ok       PTR 198.51.100.25",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }

    // The same zone without DMARC, with another key, an SPF naming another host and no PTR.
    let other = tempfile::tempdir().unwrap();
    let (ok, other_zone, err) = run(other.path(), &[], &["init", "--domain", "relay.example.org"]);
    assert!(ok, "{err}");
    let other_key = parse_zone(&other_zone).into_iter().find(|(n, _)| n.starts_with("maskrelay._domainkey."));
    let broken = DnsServer::start().await;
    for (name, data) in &records {
        let keep = match data {
            RData::TXT(t) => {
                let text: String =
                    t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
                !text.starts_with("v=DMARC1") && !text.starts_with("v=DKIM1") && !text.starts_with("v=spf1")
            }
            RData::PTR(_) => false,
            _ => true,
        };
        if keep {
            broken.record(name, data.clone());
        }
    }
    let (name, data) = other_key.unwrap();
    broken.record(&name, data);
    broken.txt("relay.example.org", "v=spf1 a:mail.elsewhere.example -all");
    let env = [("MASKRELAY_DNS_NAMESERVERS", broken.nameserver())];
    let (ok, out, _) = run(dir.path(), &env, &check);
    assert!(!ok, "check dns must fail:\n{out}");
    for line in [
        "ok       MX relay.example.org",
        "MISSING  DMARC _dmarc.relay.example.org",
        "WRONG    DKIM maskrelay._domainkey.relay.example.org: publishes a different key",
        "WRONG    SPF relay.example.org",
        "MISSING  PTR 198.51.100.25",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
}

/// Through a smarthost the SPF record names the provider's include, and `check dns` wants
/// one.
#[test]
fn init_for_a_smarthost_prints_an_spf_include() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, zone, err) = run(
        dir.path(),
        &[],
        &["init", "--domain", "relay.example.org", "--smarthost", "smtp.provider.example:587"],
    );
    assert!(ok, "{err}");
    assert!(zone.contains("IN TXT \"v=spf1 include:spf.your-provider.example -all\""), "{zone}");
    assert!(zone.contains("include your provider documents"), "{zone}");
    let (ok, out, err) = run(dir.path(), &[], &["--config", "maskrelay.toml", "config", "check"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("mode = \"smarthost\"") && out.contains("smarthost = \"smtp.provider.example:587\""),
        "{out}"
    );
    let (ok, _, err) = run(
        dir.path(),
        &[],
        &["init", "--domain", "relay.example.org", "--force", "--dmarc-rua", "reports@relay.example.org"],
    );
    assert!(!ok && err.contains("--dmarc-rua") && err.contains("aliases only"), "{err}");
}

/// `config check` prints the configuration in force with every secret masked, and fails
/// (naming the key) on a file the configuration names but that does not load.
#[test]
fn config_check_masks_secrets_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MASKRELAY_API_TOKEN", "1234567890123456789".to_owned()),
        ("MASKRELAY_DATABASE_URL", "postgres://relay:hunter2hunter2@db.internal:5432/maskrelay".to_owned()),
        ("MASKRELAY_EGRESS_SMARTHOST_PASSWORD", "true".to_owned()),
        ("MASKRELAY_EGRESS_SMARTHOST_USER", "relay".to_owned()),
        ("MASKRELAY_EGRESS_SMARTHOST_TLS", "starttls".to_owned()),
        ("MASKRELAY_PRIVACY_KEYS", format!("[\"{}\"]", *PRIVACY_KEY)),
        ("MASKRELAY_LOG", "debug".to_owned()),
    ];
    let (ok, out, err) = run(dir.path(), &env, &["config", "check"]);
    assert!(ok, "{err}");
    for secret in ["1234567890123456789", "hunter2hunter2", PRIVACY_KEY.as_str()] {
        assert!(!out.contains(secret), "secret shown:\n{out}");
    }
    assert!(out.contains("token = \"<secret: 19 characters>\""), "a digit-only token is text: {out}");
    assert!(
        out.contains("smarthost_password = \"<secret: 4 characters>\""),
        "`true` as a password is text: {out}"
    );
    assert!(out.contains("url = \"postgres://relay:***@db.internal:5432/maskrelay\""), "{out}");
    assert!(out.contains("level = \"debug\""), "MASKRELAY_LOG sets log.level: {out}");
    assert!(out.contains("# unset:") && out.contains("api.public_url"), "{out}");
    assert!(err.contains("configuration OK"), "{err}");

    let env = [
        ("MASKRELAY_SMTP_TLS_CERT_PATH", dir.path().join("missing.pem").display().to_string()),
        ("MASKRELAY_SMTP_TLS_KEY_PATH", dir.path().join("missing.key").display().to_string()),
    ];
    let (ok, _, err) = run(dir.path(), &env, &["config", "check"]);
    assert!(!ok && err.contains("smtp.tls_cert_path"), "{err}");
}

/// Start-up errors say their cause once and name the key, the variable or the database
/// host, never a password.
#[test]
fn startup_errors_name_the_key_and_say_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(dir.path(), &[], &["serve", "--config", "missing.toml"]);
    assert!(!ok);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    assert!(err.contains("missing.toml"), "{err}");

    let (ok, _, err) = run(dir.path(), &[("MASKRELAY_SMPT_LISTEN", "127.0.0.1:25".into())], &["serve"]);
    assert!(!ok && err.contains("MASKRELAY_SMPT_LISTEN") && err.contains("\"smpt\""), "{err}");
    let (ok, _, err) = run(dir.path(), &[("MASKRELAY_SMTP_MAX_RECIPIENTS", "lots".into())], &["serve"]);
    assert!(!ok && err.contains("smtp.max_recipients") && err.contains("whole number"), "{err}");
    let (ok, _, err) = run(dir.path(), &[("MASKRELAY_API_LISTEN", "0.0.0.0:8080".into())], &["serve"]);
    assert!(!ok && err.contains("api.public_url") && err.contains("http://0.0.0.0:8080"), "{err}");

    // A PostgreSQL server that is not there: the error names the host, not the password.
    let port = free_port();
    let env = [
        ("MASKRELAY_DATABASE_URL", format!("postgres://relay:hunter2hunter2@127.0.0.1:{port}/maskrelay")),
        ("MASKRELAY_PRIVACY_KEYS", format!("[\"{}\"]", *PRIVACY_KEY)),
    ];
    let (ok, _, err) = run(dir.path(), &env, &["serve"]);
    assert!(!ok);
    assert!(err.contains(&format!("database.url (127.0.0.1:{port})")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("maskrelay:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
}

/// An environment for `serve` in `dir` on fixed free ports, SQLite in `dir`.
fn serve_env(dir: &Path, smtp: u16, api: u16) -> Vec<(&'static str, String)> {
    vec![
        ("MASKRELAY_SMTP_LISTEN", format!("127.0.0.1:{smtp}")),
        ("MASKRELAY_API_LISTEN", format!("127.0.0.1:{api}")),
        ("MASKRELAY_API_TOKEN", OPERATOR_TOKEN.into()),
        ("MASKRELAY_AUTH_MODE", "envelope".into()),
        ("MASKRELAY_EGRESS_MODE", "smarthost".into()),
        ("MASKRELAY_EGRESS_SMARTHOST", format!("127.0.0.1:{}", free_port())),
        ("MASKRELAY_DATABASE_URL", format!("sqlite://{}", dir.join("relay.db").display())),
        ("MASKRELAY_RELAY_DOMAIN", DOMAIN.into()),
    ]
}

async fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    support::process::api(OPERATOR_TOKEN, port, method, path, body).await
}

async fn store_and_thread(port: u16) -> Value {
    support::process::acme_thread(OPERATOR_TOKEN, port, "1001").await
}

/// `maskrelay health` is 0 against a healthy relay and 1 when nothing answers; with
/// `log.format = "json"` every log line is a JSON object; a first start writes the
/// database file and the generated keys for the owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_json_logs_and_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, port) = (free_port(), free_port());
    let mut env = serve_env(dir.path(), smtp, port);
    env.push(("MASKRELAY_LOG_FORMAT", "json".into()));
    let mut relay = Served::start(dir.path(), &env, &[]);
    relay.wait_healthy(port).await;
    let (ok, out, err) = run(dir.path(), &env, &["health"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("healthy"), "{out}");

    let log = relay.stop().await;
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"message\":\"maskrelay running\"")), "{log}");

    #[cfg(unix)]
    for file in ["relay.db", "maskrelay.key", "maskrelay-dkim.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is mode {mode:o}");
    }
    let (ok, _, err) = run(dir.path(), &env, &["health"]);
    assert!(!ok && err.contains("unhealthy"), "{err}");
}

/// `maskrelay backup FILE` while the relay runs and takes writes; the copy restores to a
/// working database that shows the thread with the same key file, and is useless without
/// it (the keys are not in the backup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_restores_a_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, port) = (free_port(), free_port());
    let env = serve_env(dir.path(), smtp, port);
    let mut relay = Served::start(dir.path(), &env, &[]);
    relay.wait_healthy(port).await;
    let thread = store_and_thread(port).await;
    let id = thread["id"].as_str().unwrap().to_owned();
    // Writes go on while the copy is taken.
    let writer = tokio::spawn(async move {
        for i in 0..20 {
            let (s, v) = api(
                port,
                "POST",
                "/v1/threads",
                Some(json!({"order": format!("bulk-{i}"), "store": "acme", "shopper": {"email": format!("s{i}@shopper.example")}})),
            )
            .await;
            assert_eq!(s, 201, "{v}");
        }
    });
    let (ok, out, err) = run(dir.path(), &env, &["backup", "backup.db"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("integrity checked") && out.contains("privacy keys are not in the backup"), "{out}");
    writer.await.unwrap();
    let (ok, _, err) = run(dir.path(), &env, &["backup", "backup.db"]);
    assert!(!ok && err.contains("backup.db"), "an existing file is never overwritten: {err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("backup.db")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    relay.stop().await;

    // Restore: the copy in place of a lost database, the key file from its own backup.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("backup.db"), restored.path().join("relay.db")).unwrap();
    std::fs::copy(dir.path().join("maskrelay.key"), restored.path().join("maskrelay.key")).unwrap();
    let env = serve_env(restored.path(), smtp, port);
    let (ok, out, err) = run(restored.path(), &env, &["thread", "show", &id]);
    assert!(ok, "{err}");
    assert!(out.contains(thread["shopper_alias"].as_str().unwrap()), "{out}");
    assert!(!out.contains("jane@shopper.example"), "the CLI shows no real address: {out}");

    // Without the key file the backup opens nothing.
    std::fs::remove_file(restored.path().join("maskrelay.key")).unwrap();
    let (ok, _, err) = run(restored.path(), &env, &["keys", "generate"]);
    assert!(ok, "{err}");
    let mut env = env;
    env.push(("MASKRELAY_PRIVACY_KEYS", format!("[\"{}\"]", maskrelay::store::Vault::generate_key())));
    let (ok, _, err) = run(restored.path(), &env, &["thread", "show", &id]);
    assert!(!ok && err.contains("privacy key id"), "{err}");

    let (ok, _, err) = run(
        restored.path(),
        &[("MASKRELAY_DATABASE_URL", "postgres://u@db.internal/x".into())],
        &["backup", "x.db"],
    );
    assert!(!ok && err.contains("pg_dump"), "{err}");
}

/// A self-signed certificate written to `dir` under `name`.
fn certificate(dir: &Path, name: &str) -> (rustls_pki_types::CertificateDer<'static>, String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![DOMAIN.to_owned()]).unwrap();
    let cert = dir.join(format!("{name}.crt")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (ck.cert.der().clone(), cert, key)
}

/// Sends `send` (unless empty) and reads the whole reply, which must start with `code`.
async fn expect_reply(tcp: &mut tokio::io::BufReader<tokio::net::TcpStream>, send: &str, code: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !send.is_empty() {
        tcp.get_mut().write_all(format!("{send}\r\n").as_bytes()).await.unwrap();
    }
    loop {
        let mut line = String::new();
        tcp.read_line(&mut line).await.unwrap();
        assert!(line.starts_with(code), "{send}: {line}");
        if line.as_bytes().get(3) == Some(&b' ') {
            return;
        }
    }
}

/// The certificate the relay shows after STARTTLS.
async fn served_certificate(port: u16, trusted: &[rustls_pki_types::CertificateDer<'static>]) -> Vec<u8> {
    use tokio::io::BufReader;
    let mut tcp = BufReader::new(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    expect_reply(&mut tcp, "", "220").await;
    expect_reply(&mut tcp, "EHLO client.test", "250").await;
    expect_reply(&mut tcp, "STARTTLS", "220").await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from(DOMAIN).unwrap(), tcp.into_inner())
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// SIGHUP to the binary: a renewed certificate is served to the next STARTTLS, a new
/// privacy key put in front seals what is written next (checked by opening with that key
/// alone after the restart), a key file that would open nothing is refused with the old
/// keys kept, a changed key that needs a restart is named in the log, and the relay keeps
/// serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificate_and_privacy_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, port) = (free_port(), free_port());
    let (first, cert, key) = certificate(dir.path(), "first");
    let (second, second_cert, second_key) = certificate(dir.path(), "second");
    let config = dir.path().join("maskrelay.toml");
    let write_config = |max_recipients: u32| {
        let text = format!(
            "[smtp]\nmax_recipients = {max_recipients}\ntls_cert_path = \"{cert}\"\ntls_key_path = \"{key}\"\n\
             [privacy]\nkey_file = \"{}\"\n",
            dir.path().join("maskrelay.key").display()
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config(50);
    let env = serve_env(dir.path(), smtp, port);
    let config_arg = config.display().to_string();
    let mut relay = Served::start(dir.path(), &env, &["--config", &config_arg]);
    relay.wait_healthy(port).await;
    assert_eq!(served_certificate(smtp, &[first.clone(), second.clone()]).await, first.to_vec());
    let before = store_and_thread(port).await;

    // Renewal: the same paths get the new certificate and key.
    std::fs::copy(&second_cert, &cert).unwrap();
    std::fs::copy(&second_key, &key).unwrap();
    // Rotation step 1: a new key in front of the old one.
    let key_file = dir.path().join("maskrelay.key");
    let old_key: String =
        std::fs::read_to_string(&key_file).unwrap().lines().filter(|l| !l.starts_with('#')).collect();
    let new_key = maskrelay::store::Vault::generate_key();
    std::fs::write(&key_file, format!("{new_key}\n{old_key}\n")).unwrap();
    write_config(7);
    relay.signal(libc::SIGHUP);
    let log = relay.wait_for_log("reloaded").await;
    assert!(log.contains("tls=true") && log.contains("privacy_keys=true"), "{log}");
    assert!(log.contains("smtp.max_recipients") && log.contains("only after a restart"), "{log}");
    assert_eq!(served_certificate(smtp, &[first.clone(), second.clone()]).await, second.to_vec());
    let (s, after) = api(
        port,
        "POST",
        "/v1/threads",
        Some(json!({"order": "1002", "store": "acme", "shopper": {"email": "joe@shopper.example"}})),
    )
    .await;
    assert_eq!(s, 201, "{after}");

    // A key file that opens nothing in the database is refused; the relay keeps its keys.
    std::fs::write(&key_file, format!("{}\n", maskrelay::store::Vault::generate_key())).unwrap();
    relay.signal(libc::SIGHUP);
    let log = relay.wait_for_log("kept the old value").await;
    assert!(log.contains("privacy keys"), "{log}");
    let (s, v) = api(port, "GET", &format!("/v1/threads/{}", before["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200, "still reads with the keys in force: {v}");
    relay.stop().await;

    // What was written after the reload is sealed under the new key, what came before
    // under the old one (read straight from the SQLite file).
    let ring = maskrelay::store::Vault::from_base64(&[new_key.as_str(), old_key.as_str()]).unwrap();
    let ids = maskrelay::store::Vault::from_base64(&[old_key.as_str()]).unwrap().current_key_id();
    let sealed_under = |id: &str| {
        let db = dir.path().join("relay.db");
        let out = std::process::Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT shopper_email FROM threads WHERE id=?', (sys.argv[2],)).fetchone()[0])"])
            .arg(&db)
            .arg(id)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ring.key_id_of_text(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    };
    assert_eq!(sealed_under(after["id"].as_str().unwrap()), ring.current_key_id());
    assert_eq!(sealed_under(before["id"].as_str().unwrap()), ids);
}

/// `api.public_listen` serves only the shopper pages; the operator API and health stay on
/// `api.listen`, and revoke links point at the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_listener_serves_only_shopper_pages() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    config.api.public_listen = "127.0.0.1:0".into();
    let relay = TestRelay::start(config).await;
    let public = format!("http://{}", relay.relay.public_addr.expect("public listener"));
    relay.acme().await;
    let thread = relay.thread("o-1").await;
    let revoke_url = thread["revoke_url"].as_str().unwrap();
    assert!(revoke_url.starts_with(&format!("{public}/r/")), "{revoke_url} not on {public}");
    let page = reqwest::get(revoke_url).await.unwrap();
    assert_eq!(page.status(), 200);
    for path in ["/v1/stores", "/healthz", "/metrics"] {
        let r = relay.http.get(format!("{public}{path}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} must not be public");
    }
    let r = relay.http.get(format!("{}/healthz", relay.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = relay.api("GET", "/v1/stores", None).await;
    assert_eq!(s, 200);
    relay.stop().await;
}

/// Two relay processes on one PostgreSQL with different privacy keys: the second one to
/// start refuses, naming the first one's key, both when the first has written shopper data
/// and when both start together on an empty database; a relay with the same keys joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_with_different_keys_refuse_to_share_postgres() {
    let Some(db_url) = postgres_url().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (maskrelay::store::Vault::generate_key(), maskrelay::store::Vault::generate_key());
    let id_a = maskrelay::store::Vault::from_base64(&[key_a.as_str()]).unwrap().current_key_id();
    let relay_env = |key: &str| {
        let (smtp, api) = (free_port(), free_port());
        let mut env = serve_env(dir.path(), smtp, api);
        env.retain(|(k, _)| *k != "MASKRELAY_DATABASE_URL");
        env.push(("MASKRELAY_DATABASE_URL", db_url.clone()));
        env.push(("MASKRELAY_PRIVACY_KEYS", format!("[\"{key}\"]")));
        (env, api)
    };
    let (env_a, api_a) = relay_env(&key_a);
    let mut a = Served::start(dir.path(), &env_a, &[]);
    a.wait_healthy(api_a).await;
    let thread = store_and_thread(api_a).await;

    let (env_b, _) = relay_env(&key_b);
    let mut b = Served::start(dir.path(), &env_b, &[]);
    assert!(!b.wait_exit().await.success());
    let log = b.log();
    assert!(log.contains(&id_a) && log.contains("same privacy keys"), "{log}");

    // The same keys: the second relay starts and serves the first one's thread.
    let (env_c, api_c) = relay_env(&key_a);
    let mut c = Served::start(dir.path(), &env_c, &[]);
    c.wait_healthy(api_c).await;
    let (s, v) = api(api_c, "GET", &format!("/v1/threads/{}", thread["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200, "{v}");
    c.stop().await;
    a.stop().await;

    // An empty database, two relays with different keys started at once: one runs, the
    // other refuses (the check value the first one planted does not open for it).
    let Some(empty) = postgres_url().await else { return };
    let start = |key: &str| {
        let (mut env, api) = relay_env(key);
        env.retain(|(k, _)| *k != "MASKRELAY_DATABASE_URL");
        env.push(("MASKRELAY_DATABASE_URL", empty.clone()));
        (Served::start(dir.path(), &env, &[]), api)
    };
    let ((mut x, api_x), (mut y, api_y)) = (start(&key_a), start(&key_b));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut x_up, mut y_up) = (false, false);
    loop {
        let (x_exit, y_exit) = (x.child.try_wait().unwrap(), y.child.try_wait().unwrap());
        x_up = x_up
            || reqwest::get(format!("http://127.0.0.1:{api_x}/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200);
        y_up = y_up
            || reqwest::get(format!("http://127.0.0.1:{api_y}/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200);
        if (x_exit.is_some() && y_up) || (y_exit.is_some() && x_up) {
            let loser = if x_exit.is_some() { &x } else { &y };
            assert!(loser.log().contains("same privacy keys"), "{}", loser.log());
            break;
        }
        assert!(!(x_exit.is_some() && y_exit.is_some()), "both exited:\n{}\n{}", x.log(), y.log());
        assert!(std::time::Instant::now() < deadline, "both running:\n{}\n{}", x.log(), y.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    x.stop_if_running().await;
    y.stop_if_running().await;
}
