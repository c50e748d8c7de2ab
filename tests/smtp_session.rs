//! The SMTP conversation end to end, over real sockets with the real store, queue and a
//! real SMTP sink as next hop: the connection caps (in all and per client address, with a
//! thousand drippers connected), the 2023 smuggling endings as the next hop receives
//! them, and who may write to an alias, with the events it leaves. Every reply is checked
//! by code and enhanced status code; deliveries by the bytes the sink received. The
//! protocol itself (command order, pipelining, limits, deadlines, hygiene, every split of
//! every smuggling ending) is tested in the session tier, tests/smtp_protocol.rs.

mod support;

use std::time::{Duration, Instant};

use maskrelay::config::Config;
use serde_json::Value;
use support::smtp_client::Reply;
use support::*;

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

/// Waits until the queue is empty: every message that got a 250 (which is only given
/// once it is committed to the queue) has been handed to the sink and left the queue.
async fn settled(relay: &TestRelay) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (waiting, _) = maskrelay::queue::depth(&relay.relay.db).await.expect("queue depth");
        if waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} messages still queued after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Once the queue has settled, asserts the sink saw no delivery attempt at all.
async fn assert_nothing_delivered(relay: &TestRelay, sink: &Sink, what: &str) {
    settled(relay).await;
    assert_eq!(sink.attempts(), 0, "{what}: the sink got {:?}", sink.delivered());
}

/// The store's approved sender writes to the shopper alias.
fn store_mail(alias: &str, subject: &str) -> Vec<u8> {
    message("Acme Orders <orders@acme.example>", alias, subject, "Hello Jane.")
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
    settled(&relay).await;
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
    let list = events["data"].as_array().expect("a list of events");
    assert_eq!(list.len(), 1, "{events}");
    let e = &list[0];
    assert_eq!(e["kind"], "unauthorized_sender", "{e}");
    assert_eq!(e["store"], "acme", "{e}");
    assert_eq!(e["thread"], thread["id"], "{e}");
    assert_eq!(e["alias"].as_str(), alias.split('@').next(), "{e}");
    assert_eq!(e["detail"]["stage"], "rcpt", "{e}");
    assert_eq!(e["detail"]["sender_domain"], "evil.example", "{e}");
    assert!(!events.to_string().contains("spammer"), "the outsider's address was recorded: {events}");
    assert_nothing_delivered(&relay, &sink, "a refused outsider").await;
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
    let list = events["data"].as_array().expect("a list of events");
    assert_eq!(list.len(), 1, "{events}");
    assert_eq!(list[0]["detail"]["stage"], "data", "{events}");
    assert!(!events.to_string().contains("ceo@"), "{events}");
    assert_nothing_delivered(&relay, &sink, "a forged From").await;
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
    assert_nothing_delivered(&relay, &sink, "a revoked thread").await;
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

/// A client connected from `from` (any address of 127.0.0.0/8 is loopback); its greeting.
async fn connect_from(from: &str, to: std::net::SocketAddr) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncReadExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().unwrap()).expect("bind a loopback address");
    let mut stream = socket.connect(to).await.expect("connect");
    let mut greeting = Vec::new();
    let mut buf = [0u8; 512];
    while !greeting.ends_with(b"\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("a greeting").expect("read");
        if n == 0 {
            break;
        }
        greeting.extend_from_slice(&buf[..n]);
    }
    (stream, String::from_utf8_lossy(&greeting).into_owned())
}

/// Before `smtp.max_connections_per_ip`, 200 clients from one address took every slot
/// and everyone else got 421 4.3.2 (default settings). Now that address holds 20 and the
/// rest of the world is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_slot() {
    let (relay, sink, _dir) = start(|_| {}).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;
    let defaults = Config::default().smtp;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..defaults.max_connections {
        let (stream, greeting) = connect_from("127.0.0.2", relay.smtp()).await;
        if greeting.starts_with("220 ") {
            held.push(stream);
        } else {
            assert!(greeting.starts_with("421 4.7.0 "), "{greeting:?}");
            refused += 1;
        }
    }
    assert_eq!(held.len(), defaults.max_connections_per_ip, "connections held by one address");
    assert_eq!(refused, defaults.max_connections - defaults.max_connections_per_ip);

    let mut c = Client::ready(relay.smtp()).await;
    let end = c.send("orders@acme.example", &[&alias], &store_mail(&alias, "still served")).await;
    assert_reply(&end, 250, "2.0.0", "a client from another address");
    sink.wait_for(1, WAIT).await;
    drop(held);
    relay.stop().await;
}

/// A thousand clients from fifty addresses (twenty each, the per-address cap) drip one
/// byte a second, in command lines and inside DATA; a client from another address is
/// served all the while. Its latency (connect to 250 after DATA) is printed, not asserted:
/// speed is measured in bench/, never in tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_client_is_served_while_1000_drippers_are_connected() {
    use tokio::io::AsyncWriteExt;
    let (relay, sink, _dir) = start(|c| c.smtp.max_connections = 1100).await;
    relay.acme().await;
    let (_, alias) = acme_thread(&relay, "order-1").await;
    let mut drippers = tokio::task::JoinSet::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(1000);
    let mut held = 0;
    for i in 0..1000 {
        // In waves of 100, so the listen backlog never overflows (a dropped SYN is retried
        // by the kernel only after a second or more).
        if i % 100 == 0 {
            for _ in 0..i.min(100) {
                held += usize::from(opened_rx.recv().await.expect("every dripper reports"));
            }
        }
        let from = format!("127.0.1.{}", 1 + i / 20);
        let (addr, alias, opened) = (relay.smtp(), alias.clone(), opened_tx.clone());
        drippers.spawn(async move {
            let (mut stream, greeting) = connect_from(&from, addr).await;
            let _ = opened.send(greeting.starts_with("220 ")).await;
            let script = if i % 2 == 0 {
                "EHLO dripper.example\r\nNOOP\r\n".to_owned()
            } else {
                // Inside DATA: the pipelined commands, then the body a byte at a time.
                let _ = stream
                    .write_all(
                        format!("EHLO d.example\r\nMAIL FROM:<orders@acme.example>\r\nRCPT TO:<{alias}>\r\nDATA\r\n")
                            .as_bytes(),
                    )
                    .await;
                "Subject: drip\r\n\r\nslowly".to_owned()
            };
            for b in script.bytes().cycle() {
                if stream.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    for _ in 0..100 {
        held += usize::from(opened_rx.recv().await.expect("every dripper reports"));
    }
    assert_eq!(held, 1000, "drippers greeted");

    let mut latencies = Vec::new();
    for n in 0..5 {
        let started = Instant::now();
        let mut c = Client::ready(relay.smtp()).await;
        let end = c.send("orders@acme.example", &[&alias], &store_mail(&alias, &format!("served {n}"))).await;
        assert_reply(&end, 250, "2.0.0", "the legitimate client");
        latencies.push(started.elapsed());
        cmd(&mut c, "QUIT", 221, "2.0.0").await;
    }
    sink.wait_for(5, WAIT).await;
    eprintln!("1000 drippers held; legitimate client served in {latencies:?} (connect to 250 after DATA)");
    drippers.abort_all();
    relay.stop().await;
}
