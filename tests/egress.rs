//! The egress client against real next hops on loopback: pipelining on and off, the
//! 8BITMIME/SMTPUTF8 downgrade (the DKIM signature still verifies), STARTTLS and implicit
//! TLS to a smarthost with a verified certificate, AUTH, SIZE, typed 4xx/5xx replies,
//! connection reuse, idle timeout, per-stage timeouts and the per-destination limit.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use maskrelay::config::{Config, EgressMode, SmarthostTls};
use maskrelay::delivery::dkim::{self, Signer};
use serde_json::{Value, json};
use support::cert::TestCert;
use support::dns::DnsServer;
use support::sink::Options;
use support::*;

const SHOPPER: &str = "jane.doe@shopper.example";

/// A relay whose smarthost is `sink`, changed by `tweak`, with store acme.
async fn start_relay(sink: &Sink, tweak: impl FnOnce(&mut Config)) -> (TestRelay, tempfile::TempDir) {
    let (url, dir) = sqlite_url();
    let mut config = test_config(&url, sink.addr);
    tweak(&mut config);
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    (relay, dir)
}

/// A new thread of acme for the shopper, and one message to its shopper alias.
async fn send(relay: &TestRelay, subject: &str, body: &str) {
    let alias = relay.thread(subject).await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, subject, body))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
}

/// The queue as the API lists it.
async fn queued(relay: &TestRelay) -> Vec<Value> {
    let (s, v) = relay.api("GET", "/v1/queue", None).await;
    assert_eq!(s, 200, "{v}");
    v.get("data").unwrap_or(&v).as_array().cloned().unwrap_or_default()
}

/// Waits until the queued message has been tried and deferred; returns its last error.
async fn deferred(relay: &TestRelay) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let q = queued(relay).await;
        if let Some(e) = q.first().and_then(|m| m["last_error"].as_str()) {
            return e.to_owned();
        }
        assert!(Instant::now() < deadline, "never deferred: {q:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sink_options(f: impl FnOnce(&mut Options)) -> Options {
    let mut o = Options::default();
    f(&mut o);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_pipelined_when_the_next_hop_offers_it() {
    let sink = Sink::start().await;
    let (relay, _dir) = start_relay(&sink, |c| c.egress.workers = 1).await;
    for i in 0..3 {
        send(&relay, &format!("pipelined {i}"), "x").await;
    }
    let got = sink.wait_for(3, WAIT).await;
    // MAIL, RCPT and DATA in one write: MAIL and RCPT each arrive with more behind them.
    assert!(sink.pipelined() >= 6, "pipelined commands: {}", sink.pipelined());
    assert_eq!(sink.violations(), Vec::<String>::new());
    // One connection carried them all, without a NOOP or RSET between.
    assert_eq!(sink.connections(), 1);
    assert!(got.iter().all(|d| d.connection == 0));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wait_for_replies_when_the_next_hop_does_not_pipeline() {
    let sink = Sink::start_with("127.0.0.1:0", sink_options(|o| o.pipelining = false)).await;
    let (relay, _dir) = start_relay(&sink, |c| c.egress.workers = 1).await;
    for i in 0..3 {
        send(&relay, &format!("lockstep {i}"), "x").await;
    }
    sink.wait_for(3, WAIT).await;
    assert_eq!(sink.pipelined(), 0);
    assert_eq!(sink.violations(), Vec::<String>::new());
    relay.stop().await;
}

/// The relay's key published in a local zone, as tests/dkim.rs does.
fn publish_dkim(dns: &DnsServer, config: &Config) {
    let key_path = std::path::PathBuf::from(&config.dkim.private_key_path);
    // test_config put the process's RSA key there; this test signs with Ed25519.
    let _ = std::fs::remove_file(&key_path);
    dkim::generate(&key_path, dkim::Algorithm::Ed25519).unwrap();
    let record = Signer::load(&key_path, DOMAIN, &config.dkim.selector).unwrap().dns_record();
    dns.txt(&format!("{}._domainkey.{DOMAIN}", config.dkim.selector), &record);
}

async fn dkim_passes(dns: &DnsServer, message: &[u8]) {
    let verifier = MessageAuthenticator(maskrelay::dns::resolver(&[dns.nameserver()]).unwrap());
    let parsed = AuthenticatedMessage::parse(message).unwrap();
    let results = verifier.verify_dkim(&parsed).await;
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| *r.result() == DkimResult::Pass), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_mail_is_downgraded_for_a_next_hop_without_8bitmime_and_still_verifies() {
    let dns = DnsServer::start().await;
    let sink = Sink::start_with(
        "127.0.0.1:0",
        sink_options(|o| {
            o.eight_bit_mime = false;
            o.smtputf8 = false;
        }),
    )
    .await;
    let (url, _dir) = sqlite_url();
    let config = test_config(&url, sink.addr);
    publish_dkim(&dns, &config);
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let body = "Grüße aus Köln\r\n.a dot line, and = sign\r\nサイズ";
    send(&relay, "Bestellung für Jürgen", body).await;

    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(sink.attempts(), 1, "delivered at the first attempt");
    assert_eq!(sink.violations(), Vec::<String>::new());
    let delivered = &got[0];
    assert!(delivered.data.is_ascii(), "{}", delivered.text());
    assert!(!delivered.mail_params.iter().any(|p| p.starts_with("BODY=") || p == "SMTPUTF8"));
    assert_eq!(delivered.header("Content-Transfer-Encoding").as_deref(), Some("quoted-printable"));
    let parsed = mail_parser::MessageParser::default().parse(&delivered.data).unwrap();
    assert_eq!(parsed.subject(), Some("Bestellung für Jürgen"));
    assert_eq!(parsed.body_text(0).unwrap().trim_end(), body);
    dkim_passes(&dns, &delivered.data).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_mail_goes_as_it_is_where_8bitmime_and_smtputf8_are_offered() {
    let dns = DnsServer::start().await;
    let sink = Sink::start().await;
    let (url, _dir) = sqlite_url();
    let config = test_config(&url, sink.addr);
    publish_dkim(&dns, &config);
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    send(&relay, "Bestellung für Jürgen", "Grüße").await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(got[0].text().contains("Subject: Bestellung für Jürgen\r\n"));
    assert!(got[0].text().ends_with("Grüße\r\n"));
    assert!(got[0].mail_params.contains(&"BODY=8BITMIME".to_owned()), "{:?}", got[0].mail_params);
    assert!(got[0].mail_params.contains(&"SMTPUTF8".to_owned()), "{:?}", got[0].mail_params);
    assert_eq!(sink.violations(), Vec::<String>::new());
    dkim_passes(&dns, &got[0].data).await;
    relay.stop().await;
}

/// A smarthost on "localhost" with the given TLS, trusting `cert`.
fn smarthost_tls(c: &mut Config, sink: &Sink, mode: SmarthostTls, cert: &TestCert) {
    c.egress.smarthost = format!("localhost:{}", sink.addr.port());
    c.egress.smarthost_tls = mode;
    c.egress.smarthost_ca_path = Some(cert.ca_path.clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_starttls_is_used_and_verified() {
    let cert = TestCert::new(&["localhost"]);
    let sink =
        Sink::start_with("127.0.0.1:0", sink_options(|o| o.starttls = Some(cert.server.clone()))).await;
    let (relay, _dir) = start_relay(&sink, |c| smarthost_tls(c, &sink, SmarthostTls::Starttls, &cert)).await;
    send(&relay, "over starttls", "secret").await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(got[0].tls, "delivered over TLS");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_starttls_refuses_a_certificate_for_another_name() {
    let cert = TestCert::new(&["other.test"]);
    let sink =
        Sink::start_with("127.0.0.1:0", sink_options(|o| o.starttls = Some(cert.server.clone()))).await;
    let (relay, _dir) = start_relay(&sink, |c| smarthost_tls(c, &sink, SmarthostTls::Starttls, &cert)).await;
    send(&relay, "wrong name", "secret").await;
    let error = deferred(&relay).await;
    assert!(error.starts_with("TLS handshake:"), "{error}");
    assert!(sink.delivered().is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_starttls_required_but_not_offered_defers() {
    let cert = TestCert::new(&["localhost"]);
    let sink = Sink::start().await;
    let (relay, _dir) = start_relay(&sink, |c| smarthost_tls(c, &sink, SmarthostTls::Starttls, &cert)).await;
    send(&relay, "no starttls", "secret").await;
    let error = deferred(&relay).await;
    assert!(error.starts_with("4.7.4 ") && error.contains("STARTTLS"), "{error}");
    assert_eq!(sink.attempts(), 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_implicit_tls() {
    let cert = TestCert::new(&["localhost"]);
    let sink =
        Sink::start_with("127.0.0.1:0", sink_options(|o| o.implicit_tls = Some(cert.server.clone()))).await;
    let (relay, _dir) = start_relay(&sink, |c| smarthost_tls(c, &sink, SmarthostTls::Tls, &cert)).await;
    send(&relay, "over tls", "secret").await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(got[0].tls);
    relay.stop().await;
}

async fn auth_sink(cert: &TestCert, mechanisms: &'static str) -> Sink {
    Sink::start_with(
        "127.0.0.1:0",
        sink_options(|o| {
            o.starttls = Some(cert.server.clone());
            o.auth = Some(("relay".into(), "s3cret pass".into()));
            o.auth_mechanisms = mechanisms;
        }),
    )
    .await
}

fn credentials(c: &mut Config, password: &str) {
    c.egress.smarthost_user = Some("relay".into());
    c.egress.smarthost_password = Some(password.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_auth_plain_and_login_after_starttls() {
    let cert = TestCert::new(&["localhost"]);
    for mechanisms in ["PLAIN LOGIN", "LOGIN"] {
        let sink = auth_sink(&cert, mechanisms).await;
        let (relay, _dir) = start_relay(&sink, |c| {
            smarthost_tls(c, &sink, SmarthostTls::Starttls, &cert);
            credentials(c, "s3cret pass");
        })
        .await;
        send(&relay, "authenticated", "x").await;
        let got = sink.wait_for(1, WAIT).await;
        assert_eq!(got[0].auth_user.as_deref(), Some("relay"), "{mechanisms}");
        assert!(got[0].tls);
        assert_eq!(sink.violations(), Vec::<String>::new(), "{mechanisms}");
        relay.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_defers_instead_of_bouncing() {
    let cert = TestCert::new(&["localhost"]);
    let sink = auth_sink(&cert, "PLAIN LOGIN").await;
    let (relay, _dir) = start_relay(&sink, |c| {
        smarthost_tls(c, &sink, SmarthostTls::Starttls, &cert);
        credentials(c, "wrong");
    })
    .await;
    send(&relay, "bad login", "x").await;
    let error = deferred(&relay).await;
    assert!(error.starts_with("AUTH: 535 5.7.8"), "{error}");
    let (_, events) = relay.api("GET", "/v1/events?kind=delivery_failed", None).await;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(0), "{events}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_in_the_clear_only_when_allowed() {
    let sink =
        Sink::start_with("127.0.0.1:0", sink_options(|o| o.auth = Some(("relay".into(), "pw".into())))).await;
    let (relay, _dir) = start_relay(&sink, |c| credentials(c, "pw")).await;
    send(&relay, "clear", "x").await;
    let error = deferred(&relay).await;
    assert!(error.contains("only over TLS"), "{error}");
    assert!(sink.delivered().is_empty());
    relay.stop().await;

    let (relay, _dir) = start_relay(&sink, |c| {
        credentials(c, "pw");
        c.egress.smarthost_auth_plaintext = true;
    })
    .await;
    send(&relay, "clear allowed", "x").await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].auth_user.as_deref(), Some("relay"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_next_hops_size_fails_for_good_without_being_sent() {
    let sink = Sink::start_with("127.0.0.1:0", sink_options(|o| o.size = Some(6000))).await;
    let (relay, _dir) = start_relay(&sink, |_| {}).await;
    send(&relay, "too big", &"0123456789 ".repeat(800)).await;
    let events = relay.wait_for_events("delivery_failed", 1).await;
    let reply = events[0]["detail"]["reply"].as_str().unwrap().to_owned();
    assert!(reply.starts_with("5.3.4 ") && reply.contains("at most 6000"), "{reply}");
    // The store hears of it (a small notice fits); the message itself never went.
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["support@acme.example"], "the notice goes to the store's contact");
    assert!(got[0].text().contains("5.3.4"), "{}", got[0].text());
    assert!(got[0].mail_params.iter().any(|p| p.starts_with("SIZE=")), "{:?}", got[0].mail_params);
    assert_eq!(sink.attempts(), 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_reply_is_retried_and_a_5xx_reply_bounces_with_its_code() {
    let sink = Sink::start().await;
    let (relay, _dir) = start_relay(&sink, |c| c.egress.workers = 1).await;
    sink.script_rcpt(&["450 4.2.1 mailbox busy, try later"]);
    send(&relay, "busy mailbox", "x").await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, [SHOPPER]);

    sink.script_rcpt(&[&format!("550 5.1.1 <{SHOPPER}>: no such user here")]);
    send(&relay, "no such user", "x").await;
    let events = relay.wait_for_events("delivery_failed", 1).await;
    let reply = events[0]["detail"]["reply"].as_str().unwrap();
    assert_eq!(reply, "RCPT TO: 550 5.1.1 <<shopper>>: no such user here");
    // The notice to the store names the code and not the shopper.
    let got = sink.wait_for(2, WAIT).await;
    let notice = &got[1];
    assert_eq!(notice.rcpt_to, ["support@acme.example"], "the notice goes to the store's contact");
    assert!(notice.text().contains("5.1.1"), "{}", notice.text());
    assert!(!notice.text().to_lowercase().contains(SHOPPER), "{}", notice.text());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_is_reset_and_the_connection_reused() {
    let sink = Sink::start().await;
    let (relay, _dir) = start_relay(&sink, |c| {
        c.egress.workers = 1;
        c.egress.retry_base_secs = 3;
    })
    .await;
    sink.script_mail(&["451 4.3.0 not now"]);
    send(&relay, "first", "x").await;
    deferred(&relay).await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(sink.connections(), 1, "the refused MAIL did not cost the connection");
    assert_eq!(got[0].connection, 0);
    assert_eq!(sink.violations(), Vec::<String>::new());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let sink = Sink::start().await;
    let (relay, _dir) = start_relay(&sink, |c| {
        c.egress.workers = 1;
        c.egress.idle_timeout_secs = 1;
    })
    .await;
    send(&relay, "one", "x").await;
    sink.wait_for(1, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while sink.closed() < 1 {
        assert!(Instant::now() < deadline, "the idle connection was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&relay, "two", "x").await;
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(sink.connections(), 2);
    assert_eq!(got[1].connection, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_hop_slower_than_the_stage_timeout_is_tried_again() {
    let sink =
        Sink::start_with("127.0.0.1:0", sink_options(|o| o.slow_greetings = (1, Duration::from_secs(3))))
            .await;
    let (relay, _dir) = start_relay(&sink, |c| {
        c.egress.command_timeout_secs = 1;
        c.egress.retry_base_secs = 3;
    })
    .await;
    send(&relay, "slow greeting", "x").await;
    let error = deferred(&relay).await;
    assert_eq!(error, "greeting: timed out");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert!(sink.connections() >= 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_domain_cannot_take_every_worker() {
    let (slow, fast) = Sink::pair_on_one_port(
        sink_options(|o| o.data_reply_delay = Duration::from_secs(2)),
        Options::default(),
    )
    .await;
    let dns = DnsServer::start().await;
    dns.a("slow.example", Ipv4Addr::new(127, 0, 0, 2));
    dns.a("fast.example", Ipv4Addr::new(127, 0, 0, 3));
    let (relay, _dir) = start_relay(&slow, |c| {
        c.egress.mode = EgressMode::Mx;
        c.egress.mx_port = slow.addr.port();
        c.egress.workers = 3;
        c.egress.max_per_destination = Some(1);
        c.dns.nameservers = vec![dns.nameserver()];
    })
    .await;
    let mut c = Client::ready(relay.smtp()).await;
    for (i, domain) in ["slow", "slow", "slow", "fast", "fast", "fast"].iter().enumerate() {
        let (s, t) = relay
            .api(
                "POST",
                "/v1/threads",
                Some(json!({"order": format!("o{i}"), "store": "acme",
                            "shopper": {"email": format!("s{i}@{domain}.example")}})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        let alias = t["shopper_alias"].as_str().unwrap();
        let r =
            c.send("orders@acme.example", &[alias], &message("orders@acme.example", alias, "x", "x")).await;
        assert_eq!(r.code, 250, "{}", r.text);
    }
    fast.wait_for(3, WAIT).await;
    assert!(slow.delivered().len() < 3, "the fast domain waited for the slow one");
    slow.wait_for(3, WAIT).await;
    assert_eq!(slow.max_in_progress(), 1, "egress.max_per_destination = 1");
    relay.stop().await;
}
