//! Operator data never names the shopper, whatever a remote server quotes of them
//! (SPEC, "What must never leave the relay": events, the queue listing, logs), and a
//! display name that shows the shopper's address is refused when the thread is created.
//!
//! The relay runs as the real binary over real SMTP and a real SQLite file: its next hop
//! (the test sink) defers and then refuses the shopper's mail with replies that quote the
//! address spelled out, the local part alone, the name and the domain. The API's answers,
//! the database file and its WAL, and the log are then searched for every one of them.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::process::{Served, free_port};
use support::*;

const LOCAL: &str = "zq.tester7";
const SHOPPER_DOMAIN: &str = "redact-shopper.example";
const NAME: &str = "Ingrid Vandersloot";

fn address() -> String {
    format!("{LOCAL}@{SHOPPER_DOMAIN}")
}

/// What must not be found: the address, its parts, the name and its words.
fn needles() -> Vec<String> {
    vec![address(), LOCAL.into(), SHOPPER_DOMAIN.into(), NAME.into(), "Vandersloot".into(), "Ingrid".into()]
}

/// The needles found in `bytes`, in any ASCII case.
fn found_in(bytes: &[u8]) -> Vec<String> {
    let hay = bytes.to_ascii_lowercase();
    needles()
        .into_iter()
        .filter(|n| {
            let n = n.to_ascii_lowercase().into_bytes();
            hay.windows(n.len()).any(|w| w == n.as_slice())
        })
        .collect()
}

async fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    support::process::api(TOKEN, port, method, path, body).await
}

fn db_files(dir: &Path) -> Vec<std::path::PathBuf> {
    ["relay.db", "relay.db-wal"].iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect()
}

/// The search itself can fail: the needles are found where they are.
#[test]
fn the_search_finds_every_spelling_it_looks_for() {
    let quoted = format!("550 <{}> of {} unknown", address().to_uppercase(), NAME);
    assert_eq!(found_in(quoted.as_bytes()).len(), needles().len());
    assert!(found_in(b"550 5.1.1 <shopper>: <name> unknown at <domain>").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_replies_quoting_the_shopper_leave_no_trace_in_operator_data() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (smtp, port) = (free_port(), free_port());
    let env = vec![
        ("MASKRELAY_SMTP_LISTEN", format!("127.0.0.1:{smtp}")),
        ("MASKRELAY_API_LISTEN", format!("127.0.0.1:{port}")),
        ("MASKRELAY_API_TOKEN", TOKEN.into()),
        ("MASKRELAY_AUTH_MODE", "envelope".into()),
        ("MASKRELAY_EGRESS_MODE", "smarthost".into()),
        ("MASKRELAY_EGRESS_SMARTHOST", sink.addr.to_string()),
        ("MASKRELAY_EGRESS_RETRY_BASE_SECS", "1".into()),
        ("MASKRELAY_EGRESS_RETRY_MAX_SECS", "1".into()),
        ("MASKRELAY_DATABASE_URL", format!("sqlite://{}", dir.path().join("relay.db").display())),
        ("MASKRELAY_RELAY_DOMAIN", DOMAIN.into()),
        // Delivery at debug: the deferral reasons are logged too.
        ("MASKRELAY_LOG", "info,maskrelay::delivery=debug".into()),
    ];
    let mut relay = Served::start(dir.path(), &env, &[]);
    relay.wait_healthy(port).await;
    let (s, v) = api(
        port,
        "POST",
        "/v1/stores",
        Some(json!({"id": "acme", "name": "Acme Shop", "contact": "support@acme.example",
                    "senders": ["orders@acme.example"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, thread) = api(
        port,
        "POST",
        "/v1/threads",
        Some(json!({"order": "o-redact", "store": "acme", "shopper": {"email": address(), "name": NAME}})),
    )
    .await;
    assert_eq!(s, 201, "{thread}");
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();

    // The shopper's server defers twice, then refuses, each time quoting the shopper.
    let upper = address().to_uppercase();
    let deferral_1 = format!(
        "451-4.2.1 mailbox of {NAME} ({LOCAL} at {SHOPPER_DOMAIN}) is over quota\r\n\
         451 4.2.1 user {LOCAL} on mx1.{SHOPPER_DOMAIN}: try later"
    );
    let deferral_2 = format!("452 4.2.2 \"{LOCAL}\"@{SHOPPER_DOMAIN} full; Vandersloot, Ingrid notified");
    let refusal = format!("550 5.1.1 <{upper}>: no such user {LOCAL} (at) {SHOPPER_DOMAIN} here");
    sink.script_rcpt(&[&deferral_1, &deferral_2, &refusal]);
    let mut c = Client::ready(std::net::SocketAddr::from(([127, 0, 0, 1], smtp))).await;
    let r = c
        .send(
            "orders@acme.example",
            &[&alias],
            &message("orders@acme.example", &alias, "Your order", "Thanks."),
        )
        .await;
    assert_eq!(r.code, 250, "{}", r.text);

    // While it waits in the queue: the listing keeps the deferral, redacted.
    let deadline = Instant::now() + WAIT;
    let queue = loop {
        let (_, q) = api(port, "GET", "/v1/queue", None).await;
        let text = q.to_string();
        if text.contains("over quota") || text.contains("full;") {
            break q;
        }
        assert!(Instant::now() < deadline, "the deferral shows in the queue listing: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found_in(queue.to_string().as_bytes()), Vec::<String>::new(), "{queue}");
    for f in db_files(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(found_in(&bytes), Vec::<String>::new(), "{} with mail queued", f.display());
    }

    // The refusal: a delivery_failed event whose reply is kept without the shopper.
    let deadline = Instant::now() + WAIT;
    let events = loop {
        let (_, e) = api(port, "GET", "/v1/events?kind=delivery_failed", None).await;
        if e["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break e;
        }
        assert!(Instant::now() < deadline, "a delivery_failed event: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reply = events["data"][0]["detail"]["reply"].as_str().unwrap().to_owned();
    assert_eq!(reply, "RCPT TO: 550 5.1.1 <<shopper>>: no such user <shopper> here", "{events}");
    let (_, all_events) = api(port, "GET", "/v1/events", None).await;
    assert_eq!(found_in(all_events.to_string().as_bytes()), Vec::<String>::new(), "{all_events}");
    // The store's notice names the alias and the code, nobody else.
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["support@acme.example"]);
    assert_eq!(found_in(&got[0].data), Vec::<String>::new(), "{}", got[0].text());
    assert!(sink.attempts() >= 1);

    let files = db_files(dir.path());
    assert_eq!(files.len(), 2, "the main file and the WAL of the running relay: {files:?}");
    let mut total = 0;
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        total += bytes.len();
        assert_eq!(found_in(&bytes), Vec::<String>::new(), "{}", f.display());
    }
    assert!(total > 8192, "the files searched hold the data ({total} bytes)");
    let log = relay.stop().await;
    assert!(log.contains("deferred") && log.contains("deferral reason"), "the deferrals were logged: {log}");
    assert!(
        log.contains("<local-part>") || log.contains("<shopper>"),
        "the reasons were logged redacted: {log}"
    );
    assert_eq!(found_in(log.as_bytes()), Vec::<String>::new(), "{log}");
    // After a clean shutdown the WAL is checkpointed into the main file: searched again.
    for f in db_files(dir.path()) {
        assert_eq!(
            found_in(&std::fs::read(&f).unwrap()),
            Vec::<String>::new(),
            "{} after shutdown",
            f.display()
        );
    }
}

/// A name that shows the address would put it into the From the store reads: refused
/// with 422 naming the field, in every form a reader would still see as the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_shows_the_address_is_refused_at_thread_creation() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let email = "jane.doe@shopper.example";
    for (i, name) in [
        "jane.doe@shopper.example",
        "Jane <JANE.DOE@Shopper.Example>",
        "Jane ｊａｎｅ．ｄｏｅ＠ｓｈｏｐｐｅｒ．ｅｘａｍｐｌｅ",
        "jane . doe @ shopper . example",
        "jane.doe at shopper.example",
        "ja\u{200B}ne.doe@shopper.example",
    ]
    .iter()
    .enumerate()
    {
        let (s, v) = relay
            .api(
                "POST",
                "/v1/threads",
                Some(json!({"order": format!("o-{i}"), "store": "acme", "shopper": {"email": email, "name": name}})),
            )
            .await;
        assert_eq!(s, 422, "{name}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("shopper.name:"), "{message}");
        assert!(!message.to_lowercase().contains("jane"), "the answer does not repeat it: {message}");
    }
    // An ordinary name, and one naming another address, are taken; mail then flows.
    for (order, name) in [("ok-1", "Jane Doe"), ("ok-2", "Jane (work: jane@work.example)")] {
        let (s, v) = relay
            .api(
                "POST",
                "/v1/threads",
                Some(json!({"order": order, "store": "acme", "shopper": {"email": email, "name": name}})),
            )
            .await;
        assert_eq!(s, 201, "{name}: {v}");
    }
    let (_, listed) = relay.api("GET", "/v1/threads", None).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2), "only the accepted threads exist: {listed}");
    relay.stop().await;
}
