//! The day of a leak, end to end over real SMTP and HTTP: outsiders write to a store's
//! shopper aliases (some already revoked, paused, expired or erased), the attempts group
//! into incidents, and the operator's notice reaches each affected shopper, in their
//! language, from the relay's null sender, without anyone learning an address.

mod support;

use serde_json::{Value, json};
use support::*;

/// A thread of store `store` for `email`.
async fn thread_for(
    relay: &TestRelay,
    store: &str,
    order: &str,
    email: &str,
    name: &str,
    locale: &str,
) -> Value {
    let (s, v) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": order, "store": store, "shopper": {"email": email, "name": name}, "locale": locale})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

/// RCPT from `sender` to `alias`, expecting `code` and the enhanced status `enhanced`.
async fn attempt(relay: &TestRelay, sender: &str, alias: &str, code: u16, enhanced: &str) {
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd(&format!("MAIL FROM:<{sender}>"), 250).await;
    let r = c.cmd(&format!("RCPT TO:<{alias}>"), code).await;
    assert!(r.text.contains(enhanced), "{}", r.text);
    c.cmd("QUIT", 221).await;
}

fn alias(thread: &Value) -> String {
    thread["shopper_alias"].as_str().expect("shopper_alias").to_owned()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// The decoded subject and text of a delivered message.
fn read(d: &support::sink::Delivered) -> (String, String) {
    let m = mail_parser::MessageParser::default().parse(&d.data).expect("parseable notice");
    (m.subject().unwrap_or("").to_owned(), m.body_text(0).map(|t| t.into_owned()).unwrap_or_default())
}

const SHOPPERS: [&str; 4] = [
    "jane.doe@shopper.example",
    "hanako.sato@shopper.example",
    "bob@shopper.example",
    "carol@shopper.example",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_become_incidents_and_each_shopper_is_told_in_their_language() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let jane = thread_for(&relay, "acme", "A-1", SHOPPERS[0], "Jane Doe", "en").await;
    let hanako = thread_for(&relay, "acme", "A-2", SHOPPERS[1], "佐藤 花子", "ja").await;
    let bob = thread_for(&relay, "acme", "A-3", SHOPPERS[2], "Bob", "en").await;
    let carol = thread_for(&relay, "acme", "A-4", SHOPPERS[3], "Carol", "en").await;
    // Bob switched his address off before the leak was used: still evidence.
    let (s, _) = relay.api("POST", &format!("/v1/threads/{}/revoke", id(&bob)), None).await;
    assert_eq!(s, 200);

    // A spammer works through the leaked list; a second domain reuses it on Jane's alias.
    attempt(&relay, "promo@leaker.example", &alias(&jane), 550, "5.7.1").await;
    attempt(&relay, "promo@leaker.example", &alias(&hanako), 550, "5.7.1").await;
    attempt(&relay, "promo@leaker.example", &alias(&bob), 550, "5.1.1").await;
    attempt(&relay, "win@prize.example", &alias(&jane), 550, "5.7.1").await;
    // Unrelated: another domain on another alias is another incident.
    attempt(&relay, "x@unrelated.example", &alias(&carol), 550, "5.7.1").await;

    let (s, page) = relay.api("GET", "/v1/stores/acme/incidents", None).await;
    assert_eq!(s, 200, "{page}");
    let list = page["data"].as_array().expect("data");
    assert_eq!(list.len(), 2, "{page}");
    assert_eq!(page["next"], Value::Null);
    let leak = list.iter().find(|i| i["aliases_hit"] == 3).unwrap_or_else(|| panic!("{page}"));
    assert_eq!(leak["attempts"], 4, "{leak}");
    assert_eq!(leak["store"], "acme");
    let mut domains: Vec<&str> =
        leak["sending_domains"].as_array().unwrap().iter().map(|d| d["domain"].as_str().unwrap()).collect();
    domains.sort();
    assert_eq!(domains, ["leaker.example", "prize.example"]);
    assert!(leak["first_seen"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC: {leak}");
    let iid = id(leak);

    // Paging by cursor: one at a time, newest first, then the end.
    let (_, first) = relay.api("GET", "/v1/stores/acme/incidents?limit=1", None).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    let next = first["next"].as_str().expect("a cursor").to_owned();
    let (_, second) =
        relay.api("GET", &format!("/v1/stores/acme/incidents?limit=1&after={next}"), None).await;
    assert_eq!(second["data"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["next"], Value::Null);
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    let (s, bad) = relay.api("GET", "/v1/stores/acme/incidents?after=bm9wZQ", None).await;
    assert_eq!((s, bad["error"]["code"].as_str()), (422, Some("invalid_request")), "{bad}");

    let (s, one) = relay.api("GET", &format!("/v1/incidents/{iid}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(one["aliases_hit"], 3);
    let (s, missing) = relay.api("GET", "/v1/incidents/inc_nope", None).await;
    assert_eq!((s, missing["error"]["code"].as_str()), (404, Some("not_found")));

    // The operator tells the shoppers, in English and Japanese.
    let notice = json!({
        "subject": {"en": "Important: your details at {store}", "ja": "【重要】{store}でのお客様情報について"},
        "text": {
            "en": "We believe {store} lost customer data. Be careful with mail about order {order}.",
            "ja": "{store}のお客様情報が流出した可能性があります。ご注文 {order} を名乗るメールにご注意ください。"
        }
    });
    let (s, done) =
        relay.api("POST", &format!("/v1/stores/acme/incidents/{iid}/notify"), Some(notice.clone())).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done, json!({"incident": iid, "notified": 3, "already_notified": 0, "unreachable": 0}));

    let got = sink.wait_for(3, WAIT).await;
    for d in &got {
        assert_eq!(d.mail_from, "", "notices go out from the null sender");
        assert_eq!(d.rcpt_to.len(), 1);
        let to = &d.rcpt_to[0];
        assert!(SHOPPERS[..3].contains(&to.as_str()), "{to}");
        let text = d.text();
        for other in SHOPPERS.iter().filter(|s| *s != to) {
            assert!(!text.contains(other), "{to}'s notice names {other}");
        }
        let from = d.header("From").unwrap();
        assert!(from.contains("no-reply@relay.test"), "{from}");
        assert!(!text.contains("support@acme.example") && !text.contains("orders@acme.example"));
        let (subject, body) = read(d);
        if to == SHOPPERS[1] {
            assert_eq!(subject, "【重要】Acme Shopでのお客様情報について");
            assert!(
                body.contains("Test Marketより、Acme Shopでのご注文 A-2 に関する大切なお知らせです。"),
                "{body}"
            );
            assert!(body.contains("ご注文 A-2 を名乗るメールにご注意ください。"), "{body}");
            assert_eq!(d.header("Content-Language").as_deref(), Some("ja"));
        } else {
            assert_eq!(subject, "Important: your details at Acme Shop");
            assert!(body.contains("An important notice from Test Market about your order"), "{body}");
            assert!(body.contains("Be careful with mail about order A-"), "{body}");
        }
        assert!(body.contains("/r/"), "the notice links the shopper's page: {body}");
    }

    // Idempotent: again, nobody new is told.
    let (s, again) =
        relay.api("POST", &format!("/v1/stores/acme/incidents/{iid}/notify"), Some(notice.clone())).await;
    assert_eq!(s, 200);
    assert_eq!(again, json!({"incident": iid, "notified": 0, "already_notified": 3, "unreachable": 0}));
    // The incident grows (the spammer finds Carol's alias too); only she is told.
    attempt(&relay, "promo@leaker.example", &alias(&carol), 550, "5.7.1").await;
    let (_, grown) = relay.api("GET", &format!("/v1/incidents/{iid}"), None).await;
    assert_eq!(grown["aliases_hit"], 4, "{grown}");
    let (_, third) =
        relay.api("POST", &format!("/v1/stores/acme/incidents/{iid}/notify"), Some(notice.clone())).await;
    assert_eq!(third["notified"], 1, "{third}");
    let got = sink.wait_for(4, WAIT).await;
    assert_eq!(got[3].rcpt_to, vec![SHOPPERS[3]]);
    // The sink has the message before the relay writes its delivery back: wait for that.
    relay.wait_queue_empty().await;
    let (_, queue) = relay.api("GET", "/v1/queue", None).await;
    assert_eq!(queue["data"].as_array().map(Vec::len), Some(0), "{queue}");
    assert_eq!(sink.delivered().len(), 4, "nobody was told twice");

    // Who sent it, when, to how many; and no address anywhere the operator reads.
    let (_, audit) = relay.api("GET", &format!("/v1/audit?target={iid}"), None).await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{audit}");
    assert!(entries.iter().all(|e| e["actor"] == "operator:api" && e["action"] == "incident.notify"));
    let notified: Vec<i64> = entries.iter().map(|e| e["detail"]["notified"].as_i64().unwrap()).collect();
    assert_eq!(notified, [1, 0, 3]);
    let (_, events) = relay.api("GET", "/v1/events", None).await;
    for v in [&page, &one, &done, &audit, &events] {
        let text = v.to_string();
        for s in SHOPPERS {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert!(!text.contains("佐藤"), "a shopper's name in {text}");
    }

    // A wrong store or incident is a JSON 404; a bad body a JSON 422.
    let (s, e) = relay.api("POST", "/v1/stores/acme/incidents/inc_nope/notify", Some(notice.clone())).await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, e) = relay
        .api(
            "POST",
            &format!("/v1/stores/acme/incidents/{iid}/notify"),
            Some(json!({"subject": "", "text": "x"})),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (422, Some("invalid_request")), "{e}");
    let (s, e) = relay
        .api(
            "POST",
            &format!("/v1/stores/acme/incidents/{iid}/notify"),
            Some(json!({"subject": {"fr": "x"}, "text": "x"})),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_on_inactive_aliases_are_still_recorded() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let revoked = thread_for(&relay, "acme", "B-1", SHOPPERS[0], "Jane", "en").await;
    let paused = thread_for(&relay, "acme", "B-2", SHOPPERS[1], "Hanako", "ja").await;
    let expired = thread_for(&relay, "acme", "B-3", SHOPPERS[2], "Bob", "en").await;
    let erased = thread_for(&relay, "acme", "B-4", SHOPPERS[3], "Carol", "en").await;

    relay.api("POST", &format!("/v1/threads/{}/revoke", id(&revoked)), None).await;
    // Paused by the shopper on their page (a POST of its form).
    let resp = relay
        .http
        .post(paused["revoke_url"].as_str().unwrap())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("intent=pause")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sqlx::query("UPDATE threads SET expires_at = 1 WHERE id = $1")
        .bind(id(&expired))
        .execute(&relay.relay.db.pool)
        .await
        .unwrap();
    let (s, _) = relay.api("POST", "/v1/shoppers/erase", Some(json!({"email": SHOPPERS[3]}))).await;
    assert_eq!(s, 200);
    for (t, status) in
        [(&revoked, "revoked"), (&paused, "disabled"), (&expired, "expired"), (&erased, "erased")]
    {
        let (_, v) = relay.api("GET", &format!("/v1/threads/{}", id(t)), None).await;
        assert_eq!(v["status"], status, "{v}");
    }

    // The store itself writing to a dead alias is no leak; outsiders are.
    attempt(&relay, "orders@acme.example", &alias(&revoked), 550, "5.1.1").await;
    for t in [&revoked, &paused, &expired, &erased] {
        attempt(&relay, "bulk@leaker.example", &alias(t), 550, "5.1.1").await;
    }
    let events = relay.wait_for_events("unauthorized_sender", 4).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let mut statuses: Vec<&str> =
        events.iter().map(|e| e["detail"]["alias_status"].as_str().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, ["disabled", "erased", "expired", "revoked"]);
    assert!(events.iter().all(|e| e["detail"]["sender_domain"] == "leaker.example"));
    let (_, leaks) = relay.api("GET", "/v1/stores/acme/leaks", None).await;
    assert_eq!(leaks["leaked_aliases"], 4, "{leaks}");
    let (_, incidents) = relay.api("GET", "/v1/stores/acme/incidents", None).await;
    assert_eq!(incidents["data"][0]["aliases_hit"], 4, "{incidents}");

    // Notify: the erased shopper cannot be reached; the other three can.
    let iid = id(&incidents["data"][0]);
    let (_, done) = relay
        .api(
            "POST",
            &format!("/v1/stores/acme/incidents/{iid}/notify"),
            Some(json!({"subject": "s", "text": "t"})),
        )
        .await;
    assert_eq!((done["notified"].as_i64(), done["unreachable"].as_i64()), (Some(3), Some(1)), "{done}");
    sink.wait_for(3, WAIT).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_on_postgres() {
    let Some(url) = postgres_url().await else { return };
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let a = thread_for(&relay, "acme", "P-1", SHOPPERS[0], "Jane", "en").await;
    let b = thread_for(&relay, "acme", "P-2", SHOPPERS[1], "Hanako", "ja").await;
    // Concurrent attempts from one domain still make one incident.
    let mut tasks = Vec::new();
    for t in [&a, &b, &a, &b] {
        let smtp = relay.smtp();
        let to = alias(t);
        tasks.push(tokio::spawn(async move {
            let mut c = Client::ready(smtp).await;
            c.cmd("MAIL FROM:<x@leaker.example>", 250).await;
            c.cmd(&format!("RCPT TO:<{to}>"), 550).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, incidents) = relay.api("GET", "/v1/stores/acme/incidents", None).await;
    let list = incidents["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{incidents}");
    assert_eq!((list[0]["aliases_hit"].as_i64(), list[0]["attempts"].as_i64()), (Some(2), Some(4)));
    let iid = id(&list[0]);
    let (_, done) = relay
        .api(
            "POST",
            &format!("/v1/stores/acme/incidents/{iid}/notify"),
            Some(json!({"subject": "s", "text": "t"})),
        )
        .await;
    assert_eq!(done["notified"], 2, "{done}");
    let got = sink.wait_for(2, WAIT).await;
    let (subject, _) = read(&got[0]);
    assert_eq!(subject, "s");
    relay.stop().await;
}

/// `maskrelay` at a shell, as the README's walk-through runs it, on the running relay's
/// database.
fn cli(url: &str, dir: &std::path::Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskrelay"))
        .args(args)
        .env("MASKRELAY_DATABASE_URL", url)
        .env("MASKRELAY_RELAY_DOMAIN", DOMAIN)
        .env("MASKRELAY_PRIVACY_KEYS", format!("[\"{}\"]", *PRIVACY_KEY))
        .current_dir(dir)
        .output()
        .expect("run maskrelay");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_notifies_an_incident() {
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let t = thread_for(&relay, "acme", "C-1", SHOPPERS[1], "佐藤 花子", "ja").await;
    attempt(&relay, "promo@leaker.example", &alias(&t), 550, "5.7.1").await;

    let list = cli(&url, dir.path(), &["store", "incidents", "acme"]);
    let iid = list[0]["id"].as_str().expect("an incident").to_owned();
    let shown = cli(&url, dir.path(), &["incident", "show", &iid]);
    assert_eq!(shown["aliases_hit"], 1);
    let done = cli(
        &url,
        dir.path(),
        &[
            "incident",
            "notify",
            "--store",
            "acme",
            &iid,
            "--subject",
            r#"{"en":"Notice","ja":"お知らせ"}"#,
            "--text",
            "{store}: ご注意ください。",
        ],
    );
    assert_eq!(done["notified"], 1, "{done}");
    // The running relay delivers what the command queued.
    let got = sink.wait_for(1, WAIT).await;
    let (subject, body) = read(&got[0]);
    assert_eq!(subject, "お知らせ");
    assert!(body.contains("Acme Shop: ご注意ください。"), "{body}");
    let (_, audit) = relay.api("GET", &format!("/v1/audit?target={iid}"), None).await;
    assert_eq!(audit["data"][0]["actor"], "operator:cli", "{audit}");

    // Suspending the store as the README says: none of its senders is approved any more.
    let (s, store) = relay.api("PATCH", "/v1/stores/acme", Some(json!({"senders": []}))).await;
    assert_eq!(s, 200, "{store}");
    attempt(&relay, "orders@acme.example", &alias(&t), 550, "5.7.1").await;
    relay.api("PATCH", "/v1/stores/acme", Some(json!({"senders": ["orders@acme.example"]}))).await;
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{}>", alias(&t)), 250).await;
    relay.stop().await;
}
