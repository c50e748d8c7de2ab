//! `auth.mode = "dmarc"` against a real local DNS zone: SPF-aligned and DKIM-signed mail
//! passes, a forged From is refused and recorded, a broken DNS defers instead of accepting.

mod support;

use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use maskrelay::config::AuthMode;
use serde_json::json;
use support::dns::DnsServer;
use support::*;

struct World {
    relay: TestRelay,
    sink: Sink,
    dns: DnsServer,
    _dir: tempfile::TempDir,
}

/// Stores: acme (SPF allows 127.0.0.1, DMARC p=reject), signed (SPF -all, DKIM key,
/// DMARC p=reject), nodmarc (SPF allows 127.0.0.1, no DMARC record).
async fn world() -> World {
    let dns = DnsServer::start().await;
    dns.txt("acme.example", "v=spf1 ip4:127.0.0.1 -all");
    dns.txt("_dmarc.acme.example", "v=DMARC1; p=reject");
    dns.txt("signed.example", "v=spf1 -all");
    dns.txt("_dmarc.signed.example", "v=DMARC1; p=reject");
    dns.txt("nodmarc.example", "v=spf1 ip4:127.0.0.1 -all");
    dns.txt("evil.example", "v=spf1 ip4:127.0.0.1 -all");
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    config.auth.mode = AuthMode::Dmarc;
    config.dns.nameservers = vec![dns.nameserver()];
    let relay = TestRelay::start(config).await;
    for (id, sender) in
        [("acme", "orders@acme.example"), ("signed", "@signed.example"), ("nodmarc", "@nodmarc.example")]
    {
        let (s, v) = relay
            .api("POST", "/v1/stores", Some(json!({"id": id, "name": id, "contact": format!("support@{id}.example"), "senders": [sender]})))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    World { relay, sink, dns, _dir: dir }
}

async fn shopper_alias(relay: &TestRelay, store: &str) -> String {
    let (s, v) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": "o-1", "store": store, "shopper": {"email": "jane@shopper.example"}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["shopper_alias"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_aligned_mail_passes_dmarc() {
    let w = world().await;
    let alias = shopper_alias(&w.relay, "acme").await;
    let mut c = Client::ready(w.relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("Acme <orders@acme.example>", &alias, "spf", "x"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = w.sink.wait_for(1, WAIT).await;
    let ar = got[0].header("Authentication-Results").unwrap();
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert!(!ar.contains("acme"), "Authentication-Results names no domain of the sender: {ar}");
    w.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dmarc_record_falls_back_to_aligned_spf() {
    let w = world().await;
    let alias = shopper_alias(&w.relay, "nodmarc").await;
    let mut c = Client::ready(w.relay.smtp()).await;
    let r = c
        .send("news@nodmarc.example", &[&alias], &message("news@nodmarc.example", &alias, "fallback", "x"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    // Not aligned: the envelope domain passes SPF but the From is another domain.
    c.cmd("MAIL FROM:<bounce@evil.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 250).await;
    let r = c.data(&message("news@nodmarc.example", &alias, "unaligned", "x")).await;
    assert_eq!(r.code, 550, "{}", r.text);
    assert!(r.text.contains("5.7.1"), "{}", r.text);
    w.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signed_mail_passes_even_when_spf_fails() {
    let w = world().await;
    let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    w.dns.txt("s1._domainkey.signed.example", &format!("v=DKIM1; k=ed25519; p={public}"));
    let alias = shopper_alias(&w.relay, "signed").await;
    let raw = message("Signed Shop <orders@signed.example>", &alias, "dkim", "signed body");
    let signature = DkimSigner::from_key(key)
        .domain("signed.example")
        .selector("s1")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(&raw)
        .unwrap();
    let mut signed = signature.to_header().into_bytes();
    signed.extend_from_slice(&raw);
    let mut c = Client::ready(w.relay.smtp()).await;
    let r = c.send("orders@signed.example", &[&alias], &signed).await;
    assert_eq!(r.code, 250, "{}", r.text);
    // The same message with its body changed after signing fails DKIM, and SPF fails.
    let tampered = String::from_utf8(signed).unwrap().replace("signed body", "tampered body");
    let r = c.send("orders@signed.example", &[&alias], tampered.as_bytes()).await;
    assert_eq!(r.code, 550, "{}", r.text);
    assert_eq!(w.sink.wait_for(1, WAIT).await.len(), 1);
    let events = w.relay.wait_for_events("unauthorized_sender", 1).await;
    let auth = &events[0]["detail"]["authentication"];
    assert_eq!(auth["dkim"][0]["domain"], "signed.example", "{auth}");
    assert_eq!(auth["dkim"][0]["selector"], "s1", "{auth}");
    // mail-auth reports a body changed after signing as "neutral" with the reason.
    assert_ne!(auth["dkim"][0]["result"], "pass", "{auth}");
    assert!(auth["dkim"][0]["reason"].as_str().unwrap_or("").contains("body hash"), "{auth}");
    assert_eq!(auth["dkim"][0]["aligned"], true, "{auth}");
    assert_eq!(auth["spf"]["result"], "fail", "{auth}");
    w.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_store_from_is_refused_and_recorded() {
    let w = world().await;
    let alias = shopper_alias(&w.relay, "acme").await;
    // SPF for evil.example passes for 127.0.0.1, but the From claims acme.example.
    let mut c = Client::ready(w.relay.smtp()).await;
    c.cmd("MAIL FROM:<phisher@evil.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 250).await;
    let r = c.data(&message("Acme <orders@acme.example>", &alias, "Reset your password", "x")).await;
    assert_eq!(r.code, 550, "{}", r.text);
    assert!(r.text.contains("5.7.1") && r.text.contains("DMARC"), "{}", r.text);
    let (_, events) = w.relay.api("GET", "/v1/events?kind=unauthorized_sender&store=acme", None).await;
    let events = events["data"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"]["reason"], "not_authenticated");
    // Why, for the operator to tell the store: the domains and results of each check.
    let auth = &events[0]["detail"]["authentication"];
    assert_eq!(auth["from_domain"], "acme.example", "{auth}");
    assert_eq!(auth["spf"], json!({"domain": "evil.example", "result": "pass", "aligned": false}), "{auth}");
    assert_eq!(auth["dkim"], json!([]), "{auth}");
    assert_eq!(auth["dmarc"], json!({"result": "fail", "policy": "reject"}), "{auth}");
    let text = events[0].to_string();
    assert!(!text.contains("phisher") && !text.contains("jane") && !text.contains("orders@"), "{text}");
    let (_, leaks) = w.relay.api("GET", "/v1/stores/acme/leaks", None).await;
    assert_eq!(leaks["leaked_aliases"], 1, "{leaks}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(w.sink.attempts(), 0);
    w.relay.stop().await;
}

/// A shopper's reply that fails authentication is refused too, but its event carries no
/// authentication detail: the shopper's domain could identify them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_shopper_reply_records_no_domains() {
    let w = world().await;
    let (s, thread) = w
        .relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": "o-2", "store": "acme", "shopper": {"email": "jane@shopper.example"}})),
        )
        .await;
    assert_eq!(s, 201, "{thread}");
    let store_alias = thread["store_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(w.relay.smtp()).await;
    let r = c
        .send(
            "jane@shopper.example",
            &[&store_alias],
            &message("jane@shopper.example", &store_alias, "re", "x"),
        )
        .await;
    assert_eq!(r.code, 550, "{}", r.text);
    let events = w.relay.wait_for_events("unauthorized_sender", 1).await;
    assert_eq!(events[0]["detail"]["reason"], "not_authenticated");
    assert!(events[0]["detail"].get("authentication").is_none(), "{}", events[0]);
    assert!(events[0]["detail"]["sender_domain"].is_null(), "{}", events[0]);
    assert!(!events[0].to_string().contains("shopper.example"), "{}", events[0]);
    w.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failure_defers_with_451() {
    let w = world().await;
    let alias = shopper_alias(&w.relay, "acme").await;
    w.dns.fail("_dmarc.acme.example");
    w.dns.fail("acme.example");
    let mut c = Client::ready(w.relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 250).await;
    let r = c.data(&message("orders@acme.example", &alias, "dns down", "x")).await;
    assert_eq!(r.code, 451, "{}", r.text);
    assert!(r.text.contains("4.7."), "{}", r.text);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(w.sink.attempts(), 0);
    w.relay.stop().await;
}
