//! The SMTP conversation as a sending MTA sees it, over real sockets: pipelining, the
//! EHLO capabilities, command order, limits (recipients, size, line length, idle time,
//! connections, errors), the 2023 smuggling endings, and who may write to an alias.
//! Every reply is checked by code and enhanced status code; deliveries by the bytes the
//! next hop (a real SMTP sink) received.

mod support;

use std::time::{Duration, Instant};

use maskrelay::config::Config;
use serde_json::Value;
use support::smtp_client::{Reply, data_wire};
use support::*;

/// How long a "nothing was delivered" check waits: the workers deliver within
/// milliseconds of an enqueue, so a message that was queued would be at the sink by then.
const QUIET: Duration = Duration::from_millis(1500);

/// A relay with `tweak` applied to the test config, its sink, and the database guard.
async fn start(tweak: impl FnOnce(&mut Config)) -> (TestRelay, Sink, tempfile::TempDir) {
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    tweak(&mut config);
    let relay = TestRelay::start(config).await;
    (relay, sink, dir)
}

/// Store acme and one thread; returns the thread and its shopper alias.
async fn acme_thread(relay: &TestRelay, order: &str) -> (Value, String) {
    let thread = relay.thread(order).await;
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    (thread, alias)
}

/// Asserts a reply is `code` with the enhanced status code `enhanced` right after it.
fn assert_reply(r: &Reply, code: u16, enhanced: &str, what: &str) {
    assert_eq!(r.code, code, "{what} -> {}", r.text);
    let prefix = format!("{code} {enhanced} ");
    assert!(r.text.starts_with(&prefix), "{what}: expected {prefix:?}..., got {:?}", r.text);
}

/// One command, its reply checked by code and enhanced code.
async fn cmd(c: &mut Client, line: &str, code: u16, enhanced: &str) -> Reply {
    c.send_raw(format!("{line}\r\n").as_bytes()).await;
    let what: String = line.chars().take(60).collect();
    let r = c.read_reply().await.unwrap_or_else(|| panic!("no reply to {what}"));
    assert_reply(&r, code, enhanced, &what);
    r
}

/// The next read sees the connection closed, with no further reply.
async fn assert_closed(c: &mut Client, what: &str) {
    if let Some(r) = c.read_reply().await {
        panic!("{what}: expected the connection closed, got another reply {:?}", r.text);
    }
}

/// A NOOP gets exactly the NOOP's reply: proof that nothing else was pending or parsed.
async fn assert_in_step(c: &mut Client, what: &str) {
    let r = cmd(c, "NOOP", 250, "2.0.0").await;
    assert_eq!(r.text, "250 2.0.0 OK\r\n", "{what}: the reply to NOOP was not the NOOP's");
}

/// Waits a moment, then asserts the sink saw no delivery attempt at all.
async fn assert_nothing_delivered(sink: &Sink, what: &str) {
    tokio::time::sleep(QUIET).await;
    assert_eq!(sink.attempts(), 0, "{what}: the sink got {:?}", sink.delivered());
}

/// The store's approved sender writes to the shopper alias.
fn store_mail(alias: &str, subject: &str) -> Vec<u8> {
    message("Acme Orders <orders@acme.example>", alias, subject, "Hello Jane.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_mail_rcpt_data_get_replies_in_order() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;

    let mut c = Client::ready(relay.smtp()).await;
    c.send_raw(format!("MAIL FROM:<orders@acme.example>\r\nRCPT TO:<{alias}>\r\nDATA\r\n").as_bytes()).await;
    let mail = c.read_reply().await.expect("reply to MAIL");
    assert_reply(&mail, 250, "2.1.0", "pipelined MAIL");
    let rcpt = c.read_reply().await.expect("reply to RCPT");
    assert_reply(&rcpt, 250, "2.1.5", "pipelined RCPT");
    let data = c.read_reply().await.expect("reply to DATA");
    assert_eq!(data.code, 354, "pipelined DATA -> {}", data.text);

    c.send_raw(&data_wire(&store_mail(&alias, "pipelined"))).await;
    let end = c.read_reply().await.expect("reply to the end of data");
    assert_reply(&end, 250, "2.0.0", "end of data");
    assert_in_step(&mut c, "after the pipelined transaction").await;
    cmd(&mut c, "QUIT", 221, "2.0.0").await;

    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").as_deref(), Some("pipelined"));
    assert_eq!(got[0].rcpt_to, vec!["jane.doe@shopper.example"]);
    tokio::time::sleep(QUIET).await;
    assert_eq!(sink.delivered().len(), 1, "delivered exactly once");
    assert_eq!(sink.attempts(), 1, "one delivery attempt");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehlo_advertises_the_extensions() {
    let (relay, _sink, _dir) = start(|_| {}).await;
    let (mut c, greeting) = Client::connect(relay.smtp()).await;
    assert_eq!(greeting.code, 220, "{}", greeting.text);
    assert!(greeting.text.starts_with("220 relay.test "), "{}", greeting.text);

    let r = c.cmd("EHLO client.test", 250).await;
    let lines: Vec<&str> = r.text.lines().collect();
    assert!(lines.len() > 1, "a multi-line EHLO reply: {}", r.text);
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        assert!(line.starts_with(&format!("250{sep}")), "line {i} of the EHLO reply: {line:?}");
    }
    assert!(lines[0][4..].starts_with("relay.test"), "{}", lines[0]);
    let caps: Vec<&str> = lines[1..].iter().map(|l| &l[4..]).collect();
    for cap in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"] {
        assert!(caps.contains(&cap), "{cap} not advertised: {caps:?}");
    }
    let size = Config::default().smtp.max_message_bytes;
    assert!(caps.contains(&format!("SIZE {size}").as_str()), "SIZE {size} not advertised: {caps:?}");
    // Not offered on this listener, so not advertised.
    for absent in ["STARTTLS", "AUTH", "CHUNKING"] {
        assert!(!caps.iter().any(|c| c.starts_with(absent)), "{absent} advertised: {caps:?}");
    }
    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_out_of_order_get_503_and_554() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;

    let (mut c, greeting) = Client::connect(relay.smtp()).await;
    assert_eq!(greeting.code, 220);
    // Before EHLO/HELO.
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 503, "5.5.1").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 503, "5.5.1").await;
    cmd(&mut c, "DATA", 503, "5.5.1").await;
    // HELO counts as a greeting too.
    c.cmd("HELO client.test", 250).await;
    // RCPT and DATA before MAIL.
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 503, "5.5.1").await;
    cmd(&mut c, "DATA", 503, "5.5.1").await;
    // DATA with MAIL but no accepted recipient.
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, "RCPT TO:<nobody@relay.test>", 550, "5.1.1").await;
    let r = cmd(&mut c, "DATA", 554, "5.5.1").await;
    assert!(r.text.contains("No valid recipients"), "{}", r.text);
    // A second MAIL inside the open transaction.
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 503, "5.5.1").await;
    // The transaction is still open: a good recipient and the data go through.
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
    let end = c.data(&store_mail(&alias, "after the errors")).await;
    assert_reply(&end, 250, "2.0.0", "end of data");
    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").as_deref(), Some("after the errors"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_domains_and_unknown_aliases_are_refused() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;

    let mut c = Client::ready(relay.smtp()).await;
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, "RCPT TO:<someone@elsewhere.example>", 550, "5.7.1").await;
    // A subdomain of the relay domain is another domain.
    cmd(&mut c, "RCPT TO:<someone@sub.relay.test>", 550, "5.7.1").await;
    cmd(&mut c, "RCPT TO:<no-such-alias@relay.test>", 550, "5.1.1").await;
    // The real alias still works in the same transaction.
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
    cmd(&mut c, "RSET", 250, "2.0.0").await;
    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    assert_nothing_delivered(&sink, "only refused recipients and a reset").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_over_the_limit_get_452() {
    let (relay, sink, _dir) = start(|c| c.smtp.max_recipients = 2).await;
    relay.acme().await;
    let mut aliases = Vec::new();
    for order in ["o1", "o2", "o3"] {
        aliases.push(acme_thread(&relay, order).await.1);
    }

    let mut c = Client::ready(relay.smtp()).await;
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{}>", aliases[0]), 250, "2.1.5").await;
    cmd(&mut c, &format!("RCPT TO:<{}>", aliases[1]), 250, "2.1.5").await;
    cmd(&mut c, &format!("RCPT TO:<{}>", aliases[2]), 452, "4.5.3").await;
    // The two accepted recipients each get their copy.
    let end = c.data(&store_mail(&aliases[0], "two of three")).await;
    assert_reply(&end, 250, "2.0.0", "end of data");
    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    let got = sink.wait_for(2, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(sink.delivered().len(), 2, "{got:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_get_552_and_the_session_goes_on() {
    let (relay, sink, _dir) = start(|c| c.smtp.max_message_bytes = 2000).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;

    let mut c = Client::connect(relay.smtp()).await.0;
    let ehlo = c.cmd("EHLO client.test", 250).await;
    assert!(
        ehlo.text.contains("\r\n250 SIZE 2000\r\n") || ehlo.text.contains("250-SIZE 2000\r\n"),
        "{}",
        ehlo.text
    );

    // Declared too big up front.
    cmd(&mut c, "MAIL FROM:<orders@acme.example> SIZE=999999", 552, "5.3.4").await;
    // Declared small enough.
    cmd(&mut c, "MAIL FROM:<orders@acme.example> SIZE=1500", 250, "2.1.0").await;
    cmd(&mut c, "RSET", 250, "2.0.0").await;

    // Not declared, but too big once sent.
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
    let mut big = store_mail(&alias, "too big");
    big.extend_from_slice(vec!["a".repeat(70); 70].join("\r\n").as_bytes());
    assert!(big.len() > 5000, "{}", big.len());
    let end = c.data(&big).await;
    assert_reply(&end, 552, "5.3.4", "end of an oversized DATA");
    cmd(&mut c, "RSET", 250, "2.0.0").await;
    assert_in_step(&mut c, "after the oversized message").await;
    assert_nothing_delivered(&sink, "an oversized message").await;

    // The same session still carries a message of the right size.
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
    let end = c.data(&store_mail(&alias, "small")).await;
    assert_reply(&end, 250, "2.0.0", "end of a small DATA");
    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").as_deref(), Some("small"));
    assert_eq!(sink.attempts(), 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_command_line_gets_500_and_the_session_goes_on() {
    let (relay, _sink, _dir) = start(|_| {}).await;
    let mut c = Client::ready(relay.smtp()).await;

    // In one write: the whole 5000-byte line arrives at once.
    let line = format!("NOOP {}", "x".repeat(4995));
    assert_eq!(line.len(), 5000);
    cmd(&mut c, &line, 500, "5.5.2").await;
    assert_in_step(&mut c, "after a long line in one write").await;

    // In two writes: the relay has buffered part of the line when the rest comes.
    let line = format!("MAIL FROM:<{}@acme.example>", "y".repeat(4960));
    let (head, tail) = line.as_bytes().split_at(3000);
    c.send_raw(head).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send_raw(tail).await;
    c.send_raw(b"\r\n").await;
    let r = c.read_reply().await.expect("reply to the long line");
    assert_reply(&r, 500, "5.5.2", "a long line in two writes");
    assert_in_step(&mut c, "after a long line in two writes").await;

    // Longer than a read: dropped across several reads, then one reply; a command
    // pipelined behind it in the same write is still answered.
    c.send_raw(&[b'z'; 10_000]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send_raw(&[b'z'; 10_000]).await;
    c.send_raw(b"\r\nNOOP\r\n").await;
    let r = c.read_reply().await.expect("reply to the long line");
    assert_reply(&r, 500, "5.5.2", "a 20000-byte line");
    let r = c.read_reply().await.expect("reply to the pipelined NOOP");
    assert_eq!(r.text, "250 2.0.0 OK\r\n", "the NOOP behind a long line");

    // The longest line taken: 4096 bytes with its CRLF.
    let line = format!("NOOP {}", "x".repeat(4096 - 7));
    cmd(&mut c, &line, 250, "2.0.0").await;
    let line = format!("NOOP {}", "x".repeat(4096 - 6));
    cmd(&mut c, &line, 500, "5.5.2").await;
    assert_in_step(&mut c, "after the limit").await;

    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_endings_do_not_end_the_data() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;
    // Every ending of the 2023 write-ups that holds no real CR LF . CR LF.
    let vectors: Vec<&[u8]> = maskrelay::smtp::data::SMUGGLING_ENDINGS
        .iter()
        .copied()
        .filter(|v| !v.windows(5).any(|w| w == b"\r\n.\r\n"))
        .collect();
    assert!(vectors.len() >= 20, "{}", vectors.len());

    let mut c = Client::ready(relay.smtp()).await;
    let mut accepted = Vec::new();
    for (i, vector) in vectors.iter().enumerate() {
        let what = format!("vector {i} {:?}", String::from_utf8_lossy(vector));
        cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
        cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
        c.cmd("DATA", 354).await;
        let mut wire = format!(
            "From: orders@acme.example\r\nTo: {alias}\r\nSubject: outer {i}\r\n\
             Message-ID: <outer-{i}@mailer.acme.example>\r\n\r\nHello Jane."
        )
        .into_bytes();
        wire.extend_from_slice(vector);
        wire.extend_from_slice(
            format!(
                "MAIL FROM:<orders@acme.example>\r\nRCPT TO:<{alias}>\r\nDATA\r\n\
                 From: orders@acme.example\r\nTo: x\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
            )
            .as_bytes(),
        );
        c.send_raw(&wire).await;
        let end = c.read_reply().await.expect("reply to the end of data");
        if vector.contains(&0) {
            // NUL is refused (a receiver that drops NULs could end the data there).
            assert_reply(&end, 554, "5.6.0", &what);
        } else {
            assert_reply(&end, 250, "2.0.0", &what);
            accepted.push(format!("outer {i}"));
        }
        // Exactly one reply for the data: the next one is the NOOP's, not the smuggled
        // MAIL's, RCPT's or DATA's.
        assert_in_step(&mut c, &what).await;
    }
    cmd(&mut c, "QUIT", 221, "2.0.0").await;

    sink.wait_for(accepted.len(), WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = sink.delivered();
    assert_eq!(got.len(), accepted.len(), "one delivery per accepted message: {got:#?}");
    assert_eq!(sink.attempts(), accepted.len());
    let mut subjects: Vec<String> = got.iter().map(|d| d.header("Subject").unwrap_or_default()).collect();
    subjects.sort();
    accepted.sort();
    assert_eq!(subjects, accepted, "no delivered message is the smuggled one");
    for d in &got {
        let text = d.text();
        assert_ne!(d.header("Subject").as_deref(), Some("smuggled"), "{text}");
        assert_eq!(d.rcpt_to, vec!["jane.doe@shopper.example"]);
        // The smuggled lines stayed inside the outer message's body, with line endings
        // made canonical: no bare CR or LF reaches the next hop.
        let (_, body) = text.split_once("\r\n\r\n").expect("header and body");
        assert!(body.contains("\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"), "{body:?}");
        let bytes = d.data.as_slice();
        for (j, &b) in bytes.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(bytes.get(j + 1), Some(&b'\n'), "bare CR at {j}: {text:?}");
            }
            if b == b'\n' {
                assert!(j > 0 && bytes[j - 1] == b'\r', "bare LF at {j}: {text:?}");
            }
        }
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_after_quit_is_answered() {
    let (relay, _sink, _dir) = start(|_| {}).await;
    let mut c = Client::ready(relay.smtp()).await;
    c.send_raw(b"QUIT\r\nMAIL FROM:<a@b>\r\n").await;
    let r = c.read_reply().await.expect("reply to QUIT");
    assert_reply(&r, 221, "2.0.0", "QUIT");
    assert_closed(&mut c, "after QUIT").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_gets_421_and_is_disconnected() {
    let (relay, _sink, _dir) = start(|c| c.smtp.idle_timeout_secs = 1).await;
    let mut c = Client::ready(relay.smtp()).await;
    let silent_since = Instant::now();
    let r = c.read_reply().await.expect("a reply to the silence");
    assert_reply(&r, 421, "4.4.2", "idle client");
    let waited = silent_since.elapsed();
    assert!(waited >= Duration::from_millis(900), "timed out after only {waited:?}");
    assert!(waited < Duration::from_secs(5), "timed out only after {waited:?}");
    assert_closed(&mut c, "after the idle timeout").await;

    // A client that keeps talking is not cut off: each command restarts the clock.
    let mut c = Client::ready(relay.smtp()).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_in_step(&mut c, "an active client").await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_421() {
    let (relay, _sink, _dir) = start(|c| c.smtp.max_connections = 2).await;
    let (mut a, ga) = Client::connect(relay.smtp()).await;
    let (_b, gb) = Client::connect(relay.smtp()).await;
    assert_eq!(ga.code, 220, "{}", ga.text);
    assert_eq!(gb.code, 220, "{}", gb.text);

    let (mut third, g) = Client::connect(relay.smtp()).await;
    assert_reply(&g, 421, "4.3.2", "greeting of the third connection");
    assert_closed(&mut third, "the refused connection").await;

    // The two served connections work; once one leaves, a new one is served.
    a.cmd("EHLO client.test", 250).await;
    cmd(&mut a, "QUIT", 221, "2.0.0").await;
    assert_closed(&mut a, "after QUIT").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_c, g) = Client::connect(relay.smtp()).await;
        if g.code == 220 {
            break;
        }
        assert_reply(&g, 421, "4.3.2", "while the slot is being released");
        assert!(Instant::now() < deadline, "the slot of a closed connection was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_errors_close_the_connection() {
    let (relay, _sink, _dir) = start(|_| {}).await;
    let max_errors = Config::default().smtp.max_errors;
    assert_eq!(max_errors, 10);
    let mut c = Client::ready(relay.smtp()).await;
    for _ in 1..max_errors {
        cmd(&mut c, "XYZZY", 500, "5.5.2").await;
    }
    // Good commands in between do not reset the count.
    assert_in_step(&mut c, "between errors").await;
    cmd(&mut c, "XYZZY", 500, "5.5.2").await;
    let r = c.read_reply().await.expect("a 421 after the last error");
    assert_reply(&r, 421, "4.7.0", "too many errors");
    assert_closed(&mut c, "after too many errors").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsider_refused_at_rcpt_is_recorded_without_their_address() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (thread, alias) = acme_thread(&relay, "order-1").await;

    let mut c = Client::ready(relay.smtp()).await;
    cmd(&mut c, "MAIL FROM:<spammer@evil.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 550, "5.7.1").await;
    cmd(&mut c, "DATA", 554, "5.5.1").await;
    cmd(&mut c, "QUIT", 221, "2.0.0").await;

    let (s, leaks) = relay.api("GET", "/v1/stores/acme/leaks", None).await;
    assert_eq!(s, 200, "{leaks}");
    assert_eq!(leaks["leaked_aliases"], 1, "{leaks}");
    assert_eq!(leaks["attempts"], 1, "{leaks}");

    let (s, events) = relay.api("GET", "/v1/events?kind=unauthorized_sender", None).await;
    assert_eq!(s, 200, "{events}");
    let list = events.as_array().expect("a list of events");
    assert_eq!(list.len(), 1, "{events}");
    let e = &list[0];
    assert_eq!(e["kind"], "unauthorized_sender", "{e}");
    assert_eq!(e["store"], "acme", "{e}");
    assert_eq!(e["thread"], thread["id"], "{e}");
    assert_eq!(e["alias"].as_str(), alias.split('@').next(), "{e}");
    assert_eq!(e["detail"]["stage"], "rcpt", "{e}");
    assert_eq!(e["detail"]["sender_domain"], "evil.example", "{e}");
    assert!(!events.to_string().contains("spammer"), "the outsider's address was recorded: {events}");
    assert_nothing_delivered(&sink, "a refused outsider").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_header_from_is_refused_after_data() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;

    let mut c = Client::ready(relay.smtp()).await;
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
    let forged = message("ceo@evil.example", &alias, "wire the money", "Urgent.");
    let end = c.data(&forged).await;
    assert_reply(&end, 550, "5.7.1", "end of data with a forged From");
    assert_in_step(&mut c, "after a refused message").await;
    cmd(&mut c, "QUIT", 221, "2.0.0").await;

    let (_, events) = relay.api("GET", "/v1/events?kind=unauthorized_sender", None).await;
    let list = events.as_array().expect("a list of events");
    assert_eq!(list.len(), 1, "{events}");
    assert_eq!(list[0]["detail"]["stage"], "data", "{events}");
    assert!(!events.to_string().contains("ceo@"), "{events}");
    assert_nothing_delivered(&sink, "a forged From").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_thread_aliases_are_unknown() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (thread, alias) = acme_thread(&relay, "order-1").await;
    let store_alias = thread["store_alias"].as_str().unwrap().to_owned();
    let id = thread["id"].as_str().unwrap();

    let mut c = Client::ready(relay.smtp()).await;
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
    cmd(&mut c, "RSET", 250, "2.0.0").await;

    let (s, v) = relay.api("POST", &format!("/v1/threads/{id}/revoke"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "revoked", "{v}");

    // The same session: the lookup is made at RCPT, not cached from before.
    cmd(&mut c, "MAIL FROM:<orders@acme.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{alias}>"), 550, "5.1.1").await;
    cmd(&mut c, "RSET", 250, "2.0.0").await;
    cmd(&mut c, "MAIL FROM:<jane.doe@shopper.example>", 250, "2.1.0").await;
    cmd(&mut c, &format!("RCPT TO:<{store_alias}>"), 550, "5.1.1").await;
    cmd(&mut c, "QUIT", 221, "2.0.0").await;
    assert_nothing_delivered(&sink, "a revoked thread").await;
    relay.stop().await;
}

/// A thread past its `expires_at` refuses mail like an unknown alias, without any sweeper
/// having run, and the API shows it as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_thread_aliases_refuse_mail() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("old-order").await;
    let id = thread["id"].as_str().unwrap();
    sqlx::query("UPDATE threads SET expires_at = $1 WHERE id = $2")
        .bind(maskrelay::store::now() - 1)
        .bind(id)
        .execute(&relay.relay.db.pool)
        .await
        .unwrap();
    let (_, shown) = relay.api("GET", &format!("/v1/threads/{id}"), None).await;
    assert_eq!(shown["status"], "expired");
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    let r = c.cmd(&format!("RCPT TO:<{}>", thread["shopper_alias"].as_str().unwrap()), 550).await;
    assert!(r.text.contains("5.1.1"), "{}", r.text);
    relay.stop().await;
}
