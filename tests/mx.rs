//! `egress.mode = "mx"`: delivery to the MX host the recipient's domain publishes (a
//! loopback sink found through a local DNS zone), with the domain's own address as the
//! implicit MX when it publishes none, a null MX refused for good, opportunistic STARTTLS
//! (with a fall back to plaintext when the handshake fails), and the next MX host tried
//! after a transient refusal.

mod support;

use std::net::Ipv4Addr;

use maskrelay::config::EgressMode;
use serde_json::json;
use support::dns::DnsServer;
use support::*;

async fn mx_relay(dns: &DnsServer, sink: &Sink) -> (TestRelay, tempfile::TempDir) {
    let (url, dir) = sqlite_url();
    let mut config = test_config(&url, sink.addr);
    config.egress.mode = EgressMode::Mx;
    config.egress.mx_port = sink.addr.port();
    config.dns.nameservers = vec![dns.nameserver()];
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    (relay, dir)
}

async fn send_to_shopper(relay: &TestRelay, email: &str, subject: &str) {
    let (s, t) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": subject, "store": "acme", "shopper": {"email": email}})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let alias = t["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r =
        c.send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, subject, "x")).await;
    assert_eq!(r.code, 250, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_to_the_published_mx_and_to_the_implicit_mx() {
    let dns = DnsServer::start().await;
    // The preferred MX does not resolve; the second one is the sink.
    dns.mx("shopper.example", 5, "broken-mx.shopper.example");
    dns.mx("shopper.example", 10, "mx.shopper.example");
    dns.a("mx.shopper.example", Ipv4Addr::LOCALHOST);
    dns.a("bare.example", Ipv4Addr::LOCALHOST);
    let sink = Sink::start().await;
    let (relay, _dir) = mx_relay(&dns, &sink).await;
    send_to_shopper(&relay, "jane@shopper.example", "via mx").await;
    send_to_shopper(&relay, "joe@bare.example", "via implicit mx").await;
    let got = sink.wait_for(2, WAIT).await;
    let mut rcpts: Vec<String> = got.iter().map(|d| d.rcpt_to[0].clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["jane@shopper.example", "joe@bare.example"]);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mx_and_nonexistent_domain_fail_for_good() {
    let dns = DnsServer::start().await;
    dns.mx("nomail.example", 0, ".");
    let sink = Sink::start().await;
    let (relay, _dir) = mx_relay(&dns, &sink).await;
    send_to_shopper(&relay, "a@nomail.example", "null mx").await;
    send_to_shopper(&relay, "b@does-not-exist.example", "nxdomain").await;
    relay.wait_for_events("delivery_failed", 2).await;
    assert_eq!(sink.attempts(), 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_to_the_mx_whatever_its_certificate() {
    let dns = DnsServer::start().await;
    dns.mx("shopper.example", 10, "mx.shopper.example");
    dns.a("mx.shopper.example", Ipv4Addr::LOCALHOST);
    // MX hosts are rarely named in a certificate anyone can check: encrypt anyway.
    let cert = support::cert::TestCert::new(&["not-the-mx.invalid"]);
    let options = support::sink::Options { starttls: Some(cert.server.clone()), ..Default::default() };
    let sink = Sink::start_with("127.0.0.1:0", options).await;
    let (relay, _dir) = mx_relay(&dns, &sink).await;
    send_to_shopper(&relay, "jane@shopper.example", "encrypted").await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(got[0].tls, "delivered over STARTTLS");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_starttls_falls_back_to_plaintext() {
    use support::sink::BrokenStarttls;
    // Declined (454): on the same connection; a broken handshake: on a new one.
    for (broken, connections) in [(BrokenStarttls::Declined, 1), (BrokenStarttls::Garbage, 2)] {
        let dns = DnsServer::start().await;
        dns.a("shopper.example", Ipv4Addr::LOCALHOST);
        let options = support::sink::Options { broken_starttls: Some(broken), ..Default::default() };
        let sink = Sink::start_with("127.0.0.1:0", options).await;
        let (relay, _dir) = mx_relay(&dns, &sink).await;
        send_to_shopper(&relay, "jane@shopper.example", "in the clear").await;
        let got = sink.wait_for(1, WAIT).await;
        assert!(!got[0].tls);
        assert_eq!(sink.connections(), connections, "{broken:?}");
        relay.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_refusal_moves_on_to_the_next_mx() {
    let (first, second) = Sink::pair_on_one_port(Default::default(), Default::default()).await;
    first.script_rcpt(&["451 4.3.0 try another"]);
    let dns = DnsServer::start().await;
    dns.mx("shopper.example", 5, "mx1.shopper.example");
    dns.mx("shopper.example", 10, "mx2.shopper.example");
    dns.a("mx1.shopper.example", Ipv4Addr::new(127, 0, 0, 2));
    dns.a("mx2.shopper.example", Ipv4Addr::new(127, 0, 0, 3));
    let (relay, _dir) = mx_relay(&dns, &first).await;
    send_to_shopper(&relay, "jane@shopper.example", "second mx").await;
    let got = second.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["jane@shopper.example"]);
    assert_eq!(first.connections(), 1);
    assert_eq!(first.attempts(), 0, "the first MX refused before DATA");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_without_mx_or_address_fails_for_good() {
    let dns = DnsServer::start().await;
    dns.txt("noaddress.example", "v=spf1 -all");
    let sink = Sink::start().await;
    let (relay, _dir) = mx_relay(&dns, &sink).await;
    send_to_shopper(&relay, "a@noaddress.example", "nowhere").await;
    // Two failures: the message, then the notice to the store (acme.example is not in
    // the zone either).
    let events = relay.wait_for_events("delivery_failed", 2).await;
    let replies: Vec<&str> = events.iter().filter_map(|e| e["detail"]["reply"].as_str()).collect();
    assert!(replies.iter().any(|r| r.starts_with("5.4.4 ")), "{replies:?}");
    assert_eq!(sink.attempts(), 0);
    relay.stop().await;
}
