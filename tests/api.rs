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
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
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
    let actions: Vec<(String, String)> = log
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
    assert_eq!(for_thread.as_array().unwrap().len(), 2, "{for_thread}");
    relay.stop().await;
}
