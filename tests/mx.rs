//! `egress.mode = "mx"`: delivery to the MX host the recipient's domain publishes (a
//! loopback sink found through a local DNS zone), with the domain's own address as the
//! implicit MX when it publishes none, and a null MX refused for good.

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
