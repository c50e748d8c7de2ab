//! `/metrics` through a real scrape: every metric described, every counter there at 0 from
//! the start, latencies as histograms, and the labels moving as real SMTP sessions, real
//! deliveries to a sink and real HTTP requests happen. One test in its own binary: the
//! recorder is process-wide, so the counts are exact.

mod support;

use std::time::{Duration, Instant};

use support::*;

async fn scrape(relay: &TestRelay) -> String {
    let resp = relay.http.get(format!("{}/metrics", relay.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    resp.text().await.unwrap()
}

/// Scrapes until `name{labels}` reaches `at_least`, or fails at the deadline.
async fn wait_for(relay: &TestRelay, name: &str, labels: &[&str], at_least: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(relay).await;
        if metric(&text, name, labels) >= at_least {
            return text;
        }
        assert!(Instant::now() < deadline, "{name}{labels:?} never reached {at_least}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const COUNTERS: [&str; 8] = [
    "maskrelay_smtp_connections_total",
    "maskrelay_smtp_refusals_total",
    "maskrelay_messages_accepted_total",
    "maskrelay_refused_senders_total",
    "maskrelay_auth_failures_total",
    "maskrelay_bounces_total",
    "maskrelay_deliveries_total",
    "maskrelay_remote_replies_total",
];
const HISTOGRAMS: [&str; 5] = [
    "maskrelay_smtp_accept_seconds",
    "maskrelay_delivery_attempt_seconds",
    "maskrelay_queue_commit_seconds",
    "maskrelay_queue_commit_jobs",
    "maskrelay_api_request_seconds",
];
const GAUGES: [&str; 3] = ["maskrelay_build_info", "maskrelay_queue_depth", "maskrelay_queue_oldest_seconds"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_labelled_counters_from_zero_and_latency_histograms() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;

    // Before any traffic: every metric described, every counter series there at 0.
    let first = scrape(&relay).await;
    // API request durations appear with the first request measured (this scrape itself).
    let latencies = &HISTOGRAMS[..4];
    for name in COUNTERS.iter().chain(latencies).chain(&GAUGES) {
        assert!(first.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{first}");
    }
    for name in COUNTERS {
        assert!(first.contains(&format!("# TYPE {name} counter")), "{name}:\n{first}");
    }
    for (name, labels) in [
        ("maskrelay_smtp_refusals_total", &["stage=\"rcpt\"", "reason=\"unknown_alias\""][..]),
        ("maskrelay_smtp_refusals_total", &["stage=\"data\"", "reason=\"would_leak\""][..]),
        ("maskrelay_smtp_refusals_total", &["stage=\"connect\"", "reason=\"busy\""][..]),
        ("maskrelay_refused_senders_total", &["stage=\"data\"", "reason=\"not_authenticated\""][..]),
        ("maskrelay_deliveries_total", &["direction=\"to_store\"", "outcome=\"failed\""][..]),
        ("maskrelay_remote_replies_total", &["class=\"connection\""][..]),
        ("maskrelay_messages_accepted_total", &[][..]),
    ] {
        let series = first
            .lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
            .unwrap_or_else(|| panic!("{name}{labels:?} missing at start:\n{first}"));
        assert!(series.ends_with(" 0"), "{series}");
    }
    let version = format!("maskrelay_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(first.contains(&version), "{version}:\n{first}");

    // Refusals at RCPT, each with its reason.
    let (s, store) = relay
        .api(
            "POST",
            "/v1/stores",
            Some(serde_json::json!({"id": "acme", "name": "Acme", "contact": "support@acme.example",
                                    "senders": ["orders@acme.example"]})),
        )
        .await;
    assert_eq!(s, 201, "{store}");
    let alias = relay.thread("o-1").await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    c.cmd(&format!("RCPT TO:<nobody@{DOMAIN}>"), 550).await;
    c.cmd("RCPT TO:<someone@elsewhere.example>", 550).await;
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<spam@outsider.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 550).await;
    c.cmd("RSET", 250).await;

    // One message in: the sink defers it once, then takes it.
    sink.script(&["451 4.3.0 try again later"]);
    let r =
        c.send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "hi", "x")).await;
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221).await;
    let text = wait_for(&relay, "maskrelay_deliveries_total", &["outcome=\"delivered\""], 1.0).await;

    let count = |name: &str, labels: &[&str]| metric(&text, name, labels);
    assert_eq!(count("maskrelay_smtp_connections_total", &["listener=\"mx\""]), 1.0);
    assert_eq!(count("maskrelay_smtp_refusals_total", &["stage=\"rcpt\"", "reason=\"unknown_alias\""]), 1.0);
    assert_eq!(count("maskrelay_smtp_refusals_total", &["stage=\"rcpt\"", "reason=\"relay_denied\""]), 1.0);
    assert_eq!(
        count("maskrelay_smtp_refusals_total", &["stage=\"rcpt\"", "reason=\"sender_not_allowed\""]),
        1.0
    );
    assert_eq!(count("maskrelay_smtp_refusals_total", &[]), 3.0, "nothing else was refused:\n{text}");
    assert_eq!(
        count("maskrelay_refused_senders_total", &["stage=\"rcpt\"", "reason=\"envelope_sender\""]),
        1.0
    );
    assert_eq!(count("maskrelay_messages_accepted_total", &[]), 1.0);
    assert_eq!(count("maskrelay_smtp_accept_seconds_count", &["outcome=\"accepted\""]), 1.0);
    assert_eq!(count("maskrelay_remote_replies_total", &["class=\"4xx\""]), 1.0);
    assert_eq!(count("maskrelay_remote_replies_total", &["class=\"2xx\""]), 1.0);
    let to_shopper = "direction=\"to_shopper\"";
    assert_eq!(count("maskrelay_deliveries_total", &[to_shopper, "outcome=\"deferred\""]), 1.0);
    assert_eq!(count("maskrelay_deliveries_total", &[to_shopper, "outcome=\"delivered\""]), 1.0);
    assert_eq!(count("maskrelay_delivery_attempt_seconds_count", &[to_shopper]), 2.0);

    // Histograms, not summaries: buckets up to +Inf, no quantiles.
    for name in HISTOGRAMS {
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{name}:\n{text}");
        assert!(!text.contains(&format!("{name}{{quantile")), "{name} is a summary");
    }
    let bucket = |name: &str, le: &str, labels: &[&str]| {
        let mut want = labels.to_vec();
        let le = format!("le=\"{le}\"");
        want.push(&le);
        count(&format!("{name}_bucket"), &want)
    };
    assert_eq!(bucket("maskrelay_smtp_accept_seconds", "+Inf", &["outcome=\"accepted\""]), 1.0);
    assert_eq!(bucket("maskrelay_delivery_attempt_seconds", "+Inf", &["class=\"2xx\""]), 1.0);
    // Group commits: the enqueue, the deferral, the completion and the claims between.
    assert!(count("maskrelay_queue_commit_seconds_count", &["outcome=\"committed\""]) >= 3.0, "{text}");
    assert_eq!(count("maskrelay_queue_commit_seconds_count", &["outcome=\"failed\""]), 0.0);
    assert!(count("maskrelay_queue_commit_jobs_sum", &[]) >= 5.0, "two claims at least:\n{text}");

    // API requests by route template and status, never by raw path.
    relay.api("GET", "/v1/threads/thr_not_there", None).await;
    relay.api("GET", "/v1/no-such-route/123", None).await;
    let text = scrape(&relay).await;
    let api = |labels: &[&str]| metric(&text, "maskrelay_api_request_seconds_count", labels);
    assert_eq!(api(&["route=\"/v1/threads/{id}\"", "method=\"GET\"", "status=\"404\""]), 1.0, "{text}");
    assert_eq!(api(&["route=\"unmatched\"", "status=\"404\""]), 1.0, "{text}");
    assert_eq!(api(&["route=\"/v1/stores\"", "method=\"POST\"", "status=\"201\""]), 1.0, "{text}");
    assert!(!text.contains("thr_not_there") && !text.contains("no-such-route"), "a raw path became a label");
    assert!(!text.contains("outsider.example") && !text.contains("acme.example"), "no address in metrics");
    relay.stop().await;
}
