//! The HTTP API over a real socket: token, JSON errors, stores, threads, shoppers, the
//! revoke page.

mod support;

use serde_json::json;
use support::*;

async fn relay() -> (TestRelay, Sink, tempfile::TempDir) {
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    (TestRelay::start(test_config(&url, sink.addr)).await, sink, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_a_json_401() {
    let (relay, _sink, _dir) = relay().await;
    for auth in [None, Some("Bearer wrong-token-wrong-token"), Some(TOKEN)] {
        let mut req = relay.http.get(format!("{}/v1/events", relay.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        if auth == Some(TOKEN) {
            // A raw token without "Bearer " is not accepted either.
            assert_eq!(status, 401, "{body}");
        } else {
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["error"]["code"], "unauthorized");
            assert!(body["error"]["message"].as_str().unwrap().contains("Bearer"));
        }
    }
    let (status, _) = relay.api("GET", "/v1/events", None).await;
    assert_eq!(status, 200);
    // Health and metrics need no token.
    let resp = relay.http.get(format!("{}/healthz", relay.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let metrics =
        relay.http.get(format!("{}/metrics", relay.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("maskrelay_queue_depth"), "{metrics}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_bad_fields_are_json_errors() {
    let (relay, _sink, _dir) = relay().await;
    let resp = relay
        .http
        .post(format!("{}/v1/stores", relay.base))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body("{\"id\": \"acme\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_json");

    let (s, v) = relay
        .api("POST", "/v1/stores", Some(json!({"id": "Bad Id!", "name": "x", "contact": "a@b.example"})))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("id:"), "{v}");
    let (s, v) = relay
        .api("POST", "/v1/stores", Some(json!({"id": "acme", "name": "x", "contact": "not-an-address"})))
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = relay.api("POST", "/v1/stores", Some(json!({"id": "acme", "name": "x"}))).await;
    assert_eq!(s, 422, "missing field: {v}");
    let (s, v) = relay.api("GET", "/v1/nothing-here", None).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_can_be_read_changed_and_deleted() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let (s, v) = relay
        .api("POST", "/v1/stores", Some(json!({"id": "acme", "name": "Again", "contact": "x@acme.example"})))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = relay
        .api("PATCH", "/v1/stores/acme", Some(json!({"name": "Acme Ltd", "senders": ["@acme.example"]})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "Acme Ltd");
    assert_eq!(v["senders"], json!(["@acme.example"]));
    let thread = relay.thread("o-1").await;
    let (s, v) = relay.api("DELETE", "/v1/stores/acme", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["threads_revoked"], 1);
    let (s, _) = relay.api("GET", "/v1/stores/acme", None).await;
    assert_eq!(s, 404);
    let (_, t) = relay.api("GET", &format!("/v1/threads/{}", thread["id"].as_str().unwrap()), None).await;
    assert_eq!(t["status"], "revoked");
    // The id stays taken: a new store under it could otherwise be confused with the old.
    let (s, _) = relay
        .api("POST", "/v1/stores", Some(json!({"id": "acme", "name": "New", "contact": "x@new.example"})))
        .await;
    assert_eq!(s, 409);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_creation_is_idempotent_and_never_shows_the_address() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let first = relay.thread("order-7").await;
    let body = json!({"order": "order-7", "store": "acme", "shopper": {"email": "JANE.DOE@shopper.example", "name": "Jane Doe"}});
    let (s, again) = relay.api("POST", "/v1/threads", Some(body)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again, first);
    for key in ["id", "order", "store", "shopper_alias", "store_alias", "status", "expires_at", "revoke_url"]
    {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    assert_eq!(first["status"], "active");
    let (_, other) = relay.api("POST", "/v1/threads", Some(json!({"order": "order-8", "store": "acme", "shopper": {"email": "jane.doe@shopper.example"}}))).await;
    assert_ne!(other["shopper_alias"], first["shopper_alias"]);
    let (s, shown) = relay.api("GET", &format!("/v1/threads/{}", first["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200);
    assert!(!shown.to_string().to_lowercase().contains("shopper.example"), "{shown}");
    let (s, v) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": "o", "store": "nope", "shopper": {"email": "a@b.example"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopper_revoke_and_erase() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let t1 = relay.thread("o-1").await;
    relay.thread("o-2").await;
    let (s, v) =
        relay.api("POST", "/v1/shoppers/revoke", Some(json!({"email": "jane.doe@shopper.example"}))).await;
    assert_eq!((s, v["revoked"].as_i64()), (200, Some(2)));
    let (s, v) =
        relay.api("POST", "/v1/shoppers/erase", Some(json!({"email": "Jane.Doe@shopper.example"}))).await;
    assert_eq!((s, v["erased"].as_i64()), (200, Some(2)));
    let (_, t) = relay.api("GET", &format!("/v1/threads/{}", t1["id"].as_str().unwrap()), None).await;
    assert_eq!(t["status"], "erased");
    // Mail to an erased alias is refused like an unknown one.
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    let r = c.cmd(&format!("RCPT TO:<{}>", t1["shopper_alias"].as_str().unwrap()), 550).await;
    assert!(r.text.contains("5.1.1"), "{}", r.text);
    // A new thread for the same order and address is a new thread with new aliases.
    let again = relay.thread("o-1").await;
    assert_ne!(again["shopper_alias"], t1["shopper_alias"]);
    let (_, events) = relay.api("GET", "/v1/events?kind=shopper_erased", None).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_page_asks_on_get_and_revokes_on_post() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let thread = relay.thread("order-42").await;
    let url = thread["revoke_url"].as_str().unwrap().to_owned();
    let id = thread["id"].as_str().unwrap().to_owned();
    let resp = relay.http.get(&url).send().await.unwrap();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(header("content-security-policy").contains("default-src 'none'"));
    assert_eq!(header("referrer-policy"), "no-referrer", "the token never leaves as a Referer");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-frame-options"), "DENY");
    let page = resp.text().await.unwrap();
    assert!(page.contains("Acme Shop") && page.contains("order-42"), "{page}");
    assert!(page.contains("<form method=\"post\">"), "{page}");
    let (_, t) = relay.api("GET", &format!("/v1/threads/{id}"), None).await;
    assert_eq!(t["status"], "active", "a GET must not revoke");
    // RFC 8058 one-click POST.
    let resp = relay
        .http
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (_, t) = relay.api("GET", &format!("/v1/threads/{id}"), None).await;
    assert_eq!(t["status"], "revoked");
    let bad = relay.http.get(format!("{}/r/not-a-token", relay.base)).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 404);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_who_changed_what() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let thread = relay.thread("order-a").await;
    let id = thread["id"].as_str().unwrap().to_owned();
    relay.api("POST", &format!("/v1/threads/{id}/revoke"), None).await;
    relay.api("POST", "/v1/shoppers/erase", Some(json!({"email": "jane.doe@shopper.example"}))).await;
    // The shopper's own revoke page is audited as the shopper.
    let other = relay.thread("order-b").await;
    relay.http.post(other["revoke_url"].as_str().unwrap()).send().await.unwrap();

    let (s, log) = relay.api("GET", "/v1/audit", None).await;
    assert_eq!(s, 200, "{log}");
    let actions: Vec<(String, String)> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned()))
        .collect();
    for expected in [
        ("operator:api", "store.create"),
        ("operator:api", "thread.create"),
        ("operator:api", "thread.revoke"),
        ("operator:api", "shopper.erase"),
        ("shopper:revoke_page", "thread.revoke"),
    ] {
        assert!(
            actions.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {actions:?}"
        );
    }
    assert!(!log.to_string().contains("jane.doe"), "the audit log holds no shopper address: {log}");
    let (_, for_thread) = relay.api("GET", &format!("/v1/audit?target={id}"), None).await;
    assert_eq!(for_thread["data"].as_array().unwrap().len(), 2, "{for_thread}");
    relay.stop().await;
}

/// Every page of a list, following `next` until it is null; panics on an error answer.
async fn all_pages(relay: &TestRelay, path: &str, limit: usize) -> (Vec<serde_json::Value>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (mut rows, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let url = match &after {
            Some(c) => format!("{path}{sep}limit={limit}&after={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (s, page) = relay.api("GET", &url, None).await;
        assert_eq!(s, 200, "{url}: {page}");
        let data = page["data"].as_array().expect("data is a list");
        assert!(data.len() <= limit, "{url}: {page}");
        rows.extend(data.iter().cloned());
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return (rows, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

fn ids(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter().map(|r| r["id"].as_str().map(str::to_owned).unwrap_or_else(|| r["id"].to_string())).collect()
}

async fn new_thread(relay: &TestRelay, store: &str, order: &str, email: &str) -> serde_json::Value {
    let body = json!({"order": order, "store": store, "shopper": {"email": email}});
    let (s, v) = relay.api("POST", "/v1/threads", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_are_listed_by_store_order_status_and_shopper_email() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let (s, v) = relay
        .api("POST", "/v1/stores", Some(json!({"id": "beta", "name": "Beta", "contact": "c@beta.example"})))
        .await;
    assert_eq!(s, 201, "{v}");
    let jane = "jane.doe@shopper.example";
    let j1 = new_thread(&relay, "acme", "o-1", jane).await;
    let j2 = new_thread(&relay, "acme", "o-2", jane).await;
    let j3 = new_thread(&relay, "acme", "o-3", jane).await;
    let b1 = new_thread(&relay, "acme", "o-1", "bob@else.example").await;
    let jb = new_thread(&relay, "beta", "b-1", jane).await;
    let id = |t: &serde_json::Value| t["id"].as_str().unwrap().to_owned();

    // All of them, two per page, newest first; threads made in the same second are still
    // each listed exactly once (the cursor holds the id as tie-break).
    let (rows, pages) = all_pages(&relay, "/v1/threads", 2).await;
    assert_eq!(pages, 3);
    let mut listed = ids(&rows);
    assert_eq!(listed.len(), 5, "{listed:?}");
    let created: Vec<&str> = rows.iter().map(|r| r["created_at"].as_str().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
    listed.sort();
    let mut all = vec![id(&j1), id(&j2), id(&j3), id(&b1), id(&jb)];
    all.sort();
    assert_eq!(listed, all);

    let filtered = |q: &'static str| {
        let relay = &relay;
        async move {
            let (s, v) = relay.api("GET", &format!("/v1/threads?{q}"), None).await;
            assert_eq!(s, 200, "{q}: {v}");
            let mut got = ids(v["data"].as_array().unwrap());
            got.sort();
            (got, v)
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(filtered("store=acme").await.0, sorted(vec![id(&j1), id(&j2), id(&j3), id(&b1)]));
    assert_eq!(filtered("store=beta").await.0, vec![id(&jb)]);
    assert_eq!(filtered("order=o-1").await.0, sorted(vec![id(&j1), id(&b1)]));
    // The address is found through the blind index, in any case, and never shown.
    let (by_jane, answer) = filtered("email=JANE.Doe%40shopper.example").await;
    assert_eq!(by_jane, sorted(vec![id(&j1), id(&j2), id(&j3), id(&jb)]));
    assert!(!answer.to_string().to_lowercase().contains("jane.doe"), "{answer}");
    assert_eq!(filtered("email=jane.doe@shopper.example&store=acme&order=o-2").await.0, vec![id(&j2)]);
    assert_eq!(filtered("email=nobody@shopper.example").await.0, Vec::<String>::new());
    // An empty filter is no filter.
    assert_eq!(filtered("store=&status=").await.0.len(), 5);

    relay.api("POST", &format!("/v1/threads/{}/disable", id(&j2)), None).await;
    relay.api("POST", &format!("/v1/threads/{}/revoke", id(&j3)), None).await;
    assert_eq!(filtered("status=disabled").await.0, vec![id(&j2)]);
    assert_eq!(filtered("status=revoked").await.0, vec![id(&j3)]);
    assert_eq!(filtered("status=active").await.0, sorted(vec![id(&j1), id(&b1), id(&jb)]));
    assert_eq!(filtered("status=active&store=acme&email=jane.doe@shopper.example").await.0, vec![id(&j1)]);
    relay.api("POST", "/v1/shoppers/erase", Some(json!({"email": "bob@else.example"}))).await;
    assert_eq!(filtered("status=erased").await.0, vec![id(&b1)]);
    assert_eq!(filtered("email=bob@else.example").await.0, Vec::<String>::new(), "erased: no index left");

    // Bad filters are errors that name the parameter.
    for (q, status, names) in [
        ("status=paused", 422, "status"),
        ("email=not-an-address", 422, "email"),
        ("store=Not%20A%20Store", 422, "store"),
        ("stauts=active", 400, "stauts"),
        ("limit=abc", 400, "limit"),
        ("limit=0", 422, "limit"),
        ("limit=1001", 422, "limit"),
        ("after=%25%25", 422, "after"),
    ] {
        let (s, v) = relay.api("GET", &format!("/v1/threads?{q}"), None).await;
        assert_eq!(s, status, "{q}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(names), "{q}: {v}");
    }
    // A cursor of another list is refused, not misread.
    let (_, stores) = relay.api("GET", "/v1/stores?limit=1", None).await;
    let foreign = stores["next"].as_str().expect("a next page of stores");
    let (s, v) = relay.api("GET", &format!("/v1/threads?after={foreign}"), None).await;
    assert_eq!(s, 422, "{v}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_pauses_a_thread_and_enable_resumes_it() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let thread = relay.thread("order-p").await;
    let id = thread["id"].as_str().unwrap().to_owned();
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let rcpt = |expect: u16| {
        let (smtp, alias) = (relay.smtp(), alias.clone());
        async move {
            let mut c = Client::ready(smtp).await;
            c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
            let r = c.cmd(&format!("RCPT TO:<{alias}>"), expect).await;
            c.cmd("QUIT", 221).await;
            r
        }
    };

    let (s, v) = relay.api("POST", &format!("/v1/threads/{id}/disable"), None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("disabled")), "{v}");
    assert_eq!(v["shopper_alias"], thread["shopper_alias"], "the answer is the thread view");
    let (_, shown) = relay.api("GET", &format!("/v1/threads/{id}"), None).await;
    assert_eq!(shown["status"], "disabled");
    let r = rcpt(550).await;
    assert!(r.text.contains("5.1.1"), "a paused alias refuses like a revoked one: {}", r.text);
    // Disabling again changes nothing and is not audited twice.
    let (s, v) = relay.api("POST", &format!("/v1/threads/{id}/disable"), None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("disabled")));

    let (s, v) = relay.api("POST", &format!("/v1/threads/{id}/enable"), None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("active")), "{v}");
    rcpt(250).await;

    // Unknown ids are a JSON 404.
    for action in ["disable", "enable", "revoke"] {
        let (s, v) = relay.api("POST", &format!("/v1/threads/thr_nosuchthread/{action}"), None).await;
        assert_eq!(s, 404, "{action}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{v}");
        assert_eq!(v["error"]["message"], "thread not found", "{v}");
    }

    // A paused thread can still be revoked for good; enable does not bring it back.
    relay.api("POST", &format!("/v1/threads/{id}/disable"), None).await;
    let (_, v) = relay.api("POST", &format!("/v1/threads/{id}/revoke"), None).await;
    assert_eq!(v["status"], "revoked");
    let (s, v) = relay.api("POST", &format!("/v1/threads/{id}/enable"), None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("revoked")), "{v}");
    rcpt(550).await;

    let (_, log) = relay.api("GET", &format!("/v1/audit?target={id}"), None).await;
    let actions: Vec<&str> =
        log["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["thread.revoke", "thread.disable", "thread.enable", "thread.disable", "thread.create"],
        "newest first, each change once: {log}"
    );
    relay.stop().await;
}

/// Every `at` or `*_at` field anywhere in `v` is RFC 3339 UTC (`2026-11-23T10:56:52Z`) or null;
/// returns how many were checked.
fn check_timestamps(v: &serde_json::Value, path: &str) -> usize {
    let rfc3339 = |s: &str| {
        let b = s.as_bytes();
        s.len() == 20
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    };
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, val)| {
                let here = format!("{path}.{k}");
                if k == "at" || k.ends_with("_at") {
                    assert!(val.is_null() || val.as_str().is_some_and(rfc3339), "{here} = {val}");
                    usize::from(!val.is_null())
                } else {
                    check_timestamps(val, &here)
                }
            })
            .sum(),
        serde_json::Value::Array(items) => items.iter().map(|i| check_timestamps(i, path)).sum(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_is_paged_and_every_timestamp_is_rfc3339() {
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    for id in ["b-store", "c-store", "d-store", "e-store"] {
        let body = json!({"id": id, "name": id, "contact": format!("c@{id}.example")});
        assert_eq!(relay.api("POST", "/v1/stores", Some(body)).await.0, 201);
    }
    let (stores, pages) = all_pages(&relay, "/v1/stores", 2).await;
    assert_eq!(pages, 3);
    assert_eq!(ids(&stores), ["acme", "b-store", "c-store", "d-store", "e-store"]);

    let mut threads = Vec::new();
    for i in 0..3 {
        let t = relay.thread(&format!("o-{i}")).await;
        relay.api("POST", &format!("/v1/threads/{}/revoke", t["id"].as_str().unwrap()), None).await;
        threads.push(t);
    }
    // An outsider writes to a shopper alias: an event, and the store's leak signal.
    let mut c = Client::ready(relay.smtp()).await;
    let alias = relay.thread("o-leak").await["shopper_alias"].as_str().unwrap().to_owned();
    c.cmd("MAIL FROM:<spam@outsider.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 550).await;
    c.cmd("QUIT", 221).await;

    let (events, _) = all_pages(&relay, "/v1/events", 2).await;
    assert_eq!(events.len(), 4, "three revocations and one refusal: {events:?}");
    let event_ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(event_ids.windows(2).all(|w| w[0] > w[1]), "newest first, no repeats: {event_ids:?}");
    let (revoked, _) = all_pages(&relay, "/v1/events?kind=thread_revoked", 1).await;
    assert_eq!(revoked.len(), 3);
    let (audit, pages) = all_pages(&relay, "/v1/audit", 3).await;
    assert!(pages >= 4, "{pages}");
    let audit_ids: Vec<i64> = audit.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(audit_ids.windows(2).all(|w| w[0] > w[1]), "{audit_ids:?}");
    assert_eq!(audit.len(), 5 + 4 + 3, "5 stores, 4 threads, 3 revocations");

    // One timestamp format everywhere.
    let (_, leaks) = relay.api("GET", "/v1/stores/acme/leaks", None).await;
    assert_eq!(leaks["leaked_aliases"], 1, "{leaks}");
    let (_, one_store) = relay.api("GET", "/v1/stores/acme", None).await;
    let (_, thread_list) = relay.api("GET", "/v1/threads", None).await;
    let answers = json!({"stores": stores, "events": events, "audit": audit, "leaks": leaks,
                         "store": one_store, "threads": thread_list, "created": threads});
    let checked = check_timestamps(&answers, "");
    assert!(checked >= 5 + 4 + 12 + 2 + 1 + 8 + 6, "{checked} timestamps checked");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_and_bad_queries_are_json_errors() {
    let (relay, _sink, _dir) = relay().await;
    let send = |method: reqwest::Method, path: &str| {
        relay.http.request(method, format!("{}{path}", relay.base)).bearer_auth(TOKEN).send()
    };
    for path in ["/v1/nothing-here", "/nothing", "/v1/threads/x/y/z", "/r"] {
        let resp = send(reqwest::Method::GET, path).await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let body: serde_json::Value = resp.json().await.expect("a JSON 404");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    for (method, path, allowed) in [
        (reqwest::Method::DELETE, "/v1/threads", "GET,POST"),
        (reqwest::Method::PUT, "/v1/stores/acme", "GET,DELETE,PATCH"),
        (reqwest::Method::GET, "/v1/threads/x/revoke", "POST"),
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::DELETE, "/r/sometoken", "GET,POST"),
    ] {
        let resp = send(method.clone(), path).await.unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut got: Vec<&str> = allow.split(',').map(str::trim).filter(|m| *m != "HEAD").collect();
        got.sort();
        let mut want: Vec<&str> = allowed.split(',').collect();
        want.sort();
        assert_eq!(got, want, "{method} {path}: Allow: {allow}");
        let body: serde_json::Value = resp.json().await.expect("a JSON 405");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }
    for (query, code) in [
        ("limit=abc", "bad_query"),
        ("limit=", "bad_query"),
        ("kindd=bounce", "bad_query"),
        ("kind=nope", "invalid_request"),
    ] {
        let resp = send(reqwest::Method::GET, &format!("/v1/events?{query}")).await.unwrap();
        assert!(resp.status().is_client_error(), "{query}");
        let body: serde_json::Value = resp.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    // A path that is not valid percent-encoded UTF-8 is refused by axum itself; still JSON.
    let resp = send(reqwest::Method::GET, "/v1/threads/%FF%FE").await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.expect("a JSON 400");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    // So is a body over the size limit.
    let big = format!("{{\"id\": \"{}\"}}", "x".repeat(3 << 20));
    let resp = relay
        .http
        .post(format!("{}/v1/stores", relay.base))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().await.expect("a JSON 413");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_contact_or_sender_inside_the_relay_domain_is_refused() {
    let (relay, _sink, _dir) = relay().await;
    let store = |contact: &str, senders: serde_json::Value| json!({"id": "acme", "name": "Acme", "contact": contact, "senders": senders});
    for (body, field) in [
        (store("alias123@relay.test", json!([])), "contact:"),
        (store("Alias123@RELAY.TEST", json!([])), "contact:"),
        (store("bounce@sub.relay.test", json!([])), "contact:"),
        (store("support@acme.example", json!(["@relay.test"])), "senders:"),
        (store("support@acme.example", json!(["orders@acme.example", "x@Relay.Test"])), "senders:"),
        (store("support@acme.example", json!(["@mail.relay.test"])), "senders:"),
    ] {
        let (s, v) = relay.api("POST", "/v1/stores", Some(body.clone())).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with(field), "{body}: {v}");
    }
    // Only the relay domain and what is under it: a look-alike domain is a real one.
    let (s, v) =
        relay.api("POST", "/v1/stores", Some(store("support@notrelay.test", json!(["@myrelay.test"])))).await;
    assert_eq!(s, 201, "{v}");
    // A change is held to the same rule, and leaves the store as it was.
    let alias = relay.thread("o-1").await["store_alias"].as_str().unwrap().to_owned();
    let (s, v) = relay.api("PATCH", "/v1/stores/acme", Some(json!({"contact": alias}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("contact:"), "{v}");
    let (s, v) = relay.api("PATCH", "/v1/stores/acme", Some(json!({"senders": ["@relay.test"]}))).await;
    assert_eq!(s, 422, "{v}");
    let (_, acme) = relay.api("GET", "/v1/stores/acme", None).await;
    assert_eq!(
        (acme["contact"].as_str(), &acme["senders"]),
        (Some("support@notrelay.test"), &json!(["@myrelay.test"]))
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_when_the_keys_cannot_open_the_data_or_the_database_is_gone() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    relay.thread("o-1").await;
    let health = || async {
        let resp = relay.http.get(format!("{}/healthz", relay.base)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.expect("JSON"))
    };
    assert_eq!(health().await, (200, json!({"status": "ok"})));

    // Another node rotates the data to a key this relay does not have.
    use maskrelay::store::{Db, Vault};
    let new_key = Vault::generate_key();
    let other = Db::connect(&url, 2, Vault::from_base64(&[new_key.as_str(), PRIVACY_KEY.as_str()]).unwrap())
        .await
        .unwrap();
    maskrelay::store::rekey::rotate(&other, |_| {}).await.unwrap();
    other.pool.close().await;
    let new_id = Vault::from_base64(&[new_key.as_str()]).unwrap().current_key_id();

    // The verdict is cached for a few seconds; poll until it turns.
    let deadline = std::time::Instant::now() + WAIT;
    let body = loop {
        let (status, body) = health().await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(std::time::Instant::now() < deadline, "/healthz still 200 with keys that open nothing");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(body["error"]["code"], "privacy_keys_unusable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(&new_id), "names the missing key: {body}");

    // A database that does not answer fails at once, whatever was cached.
    relay.relay.db.pool.close().await;
    let (status, body) = health().await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("database_unavailable")), "{body}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_router_serves_only_the_shopper_pages() {
    use maskrelay::api::{ApiState, public_router};
    let (url, _dir) = sqlite_url();
    let vault = maskrelay::store::Vault::from_base64(&[PRIVACY_KEY.as_str()]).unwrap();
    let db = maskrelay::store::Db::connect(&url, 2, vault).await.unwrap();
    let config = std::sync::Arc::new(test_config(&url, "127.0.0.1:9".parse().unwrap()));
    let state = std::sync::Arc::new(ApiState::new(config, db, TOKEN.into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, public_router(state)).await });
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/r/not-a-token")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 404);
    assert!(page.text().await.unwrap().contains("<html"), "the revoke page answers, in HTML");
    for path in ["/v1/threads", "/v1/openapi.json", "/healthz", "/metrics"] {
        let resp = http.get(format!("{base}{path}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path} is not public");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().starts_with("no route"), "{path}: {body}");
    }
    server.abort();
}
