//! The shopper's language end to end: the thread's `locale` (or `relay.locale`) decides the
//! "via" phrase stores see and the delivery notices shoppers get; on the page, `?lang=`,
//! then the browser's Accept-Language, then the thread's.

mod support;

use maskrelay::locale::Locale;
use serde_json::{Value, json};
use support::*;

async fn thread_ja(relay: &TestRelay, locale: Option<&str>) -> (u16, Value) {
    let mut body = json!({"order": "J-1", "store": "acme", "shopper": {"email": "hanako@shopper.example", "name": "佐藤 花子"}});
    if let Some(l) = locale {
        body["locale"] = json!(l);
    }
    relay.api("POST", "/v1/threads", Some(body)).await
}

fn parsed(d: &support::sink::Delivered) -> (String, String, String) {
    let m = mail_parser::MessageParser::default().parse(&d.data).expect("parseable");
    let from = m.from().and_then(|a| a.first()).and_then(|a| a.name()).unwrap_or("").to_owned();
    let subject = m.subject().unwrap_or("").to_owned();
    let body = m.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    (from, subject, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_japanese_thread_reads_japanese_to_both_sides() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let (s, e) = thread_ja(&relay, Some("fr")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (422, Some("invalid_request")), "{e}");
    let (s, thread) = thread_ja(&relay, Some("ja-JP")).await;
    assert_eq!(s, 201, "{thread}");
    assert_eq!(thread["locale"], "ja");
    let store_alias = thread["store_alias"].as_str().unwrap().to_owned();

    // The shopper writes to the store: the store sees the Japanese "via" phrase.
    let mut c = Client::ready(relay.smtp()).await;
    let m = message("hanako@shopper.example", &store_alias, "Question", "こんにちは");
    let r = c.send("hanako@shopper.example", &[&store_alias], &m).await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    let (from, _, _) = parsed(&got[0]);
    assert_eq!(from, "佐藤 花子（Test Market経由）");

    // The store's mailbox refuses the next one for good: the shopper's notice is Japanese.
    sink.script(&["550 5.1.1 mailbox unavailable"]);
    let m = message("hanako@shopper.example", &store_alias, "Again", "もう一度");
    let r = c.send("hanako@shopper.example", &[&store_alias], &m).await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(2, WAIT).await;
    let notice = &got[1];
    assert_eq!(notice.rcpt_to, vec!["hanako@shopper.example"]);
    assert_eq!(notice.mail_from, "");
    let (from, subject, body) = parsed(notice);
    assert_eq!(from, "メール配送システム");
    assert_eq!(subject, "配信できませんでした：ご注文 J-1 についてのメール");
    assert!(
        body.contains(&format!(
            "ご注文 J-1 について {store_alias} 宛てにお送りいただいたメールは、配信できませんでした。"
        )),
        "{body}"
    );
    assert!(body.contains("ステータス 5.1.1"), "{body}");
    assert!(!body.contains("support@acme.example"), "{body}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_locale_is_the_default_and_pages_follow_the_reader() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    config.relay.locale = Locale::Ja;
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let (_, thread) = thread_ja(&relay, None).await;
    assert_eq!(thread["locale"], "ja", "relay.locale when the thread names none");
    let (_, english) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": "E-1", "store": "acme", "locale": "en",
            "shopper": {"email": "jane@shopper.example", "name": "Jane"}})),
        )
        .await;
    assert_eq!(english["locale"], "en");

    let page = |url: String, accept: Option<&'static str>| {
        let http = relay.http.clone();
        async move {
            let mut req = http.get(url);
            if let Some(a) = accept {
                req = req.header("Accept-Language", a);
            }
            let resp = req.send().await.unwrap();
            let lang = resp.headers().get("content-language").map(|v| v.to_str().unwrap().to_owned());
            (lang, resp.text().await.unwrap())
        }
    };
    let ja_url = thread["revoke_url"].as_str().unwrap().to_owned();
    let en_url = english["revoke_url"].as_str().unwrap().to_owned();
    // No Accept-Language: the thread's language.
    let (lang, html) = page(ja_url.clone(), None).await;
    assert_eq!(lang.as_deref(), Some("ja"));
    assert!(
        html.contains("<html lang=\"ja\">") && html.contains("Acme Shopからのメールを停止しますか？"),
        "{html}"
    );
    assert!(html.contains("Test Market"), "the marketplace is named");
    let (_, html) = page(en_url.clone(), None).await;
    assert!(html.contains("Stop mail from Acme Shop?"), "{html}");
    // The browser's languages come before the thread's.
    let (lang, html) = page(en_url.clone(), Some("ja-JP,ja;q=0.9,en;q=0.5")).await;
    assert_eq!(lang.as_deref(), Some("ja"));
    assert!(html.contains("このアドレスを停止する"), "{html}");
    let (lang, _) = page(ja_url.clone(), Some("fr-FR, en;q=0.3")).await;
    assert_eq!(lang.as_deref(), Some("en"));
    let (lang, _) = page(ja_url.clone(), Some("fr-FR")).await;
    assert_eq!(lang.as_deref(), Some("ja"), "nothing shipped asked for: the thread's");
    // The language the shopper picked on the page comes first.
    let (lang, html) = page(format!("{ja_url}?lang=en"), Some("ja")).await;
    assert_eq!(lang.as_deref(), Some("en"));
    assert!(html.contains("Switch off this address"));
    for (_, html) in [page(ja_url.clone(), None).await, page(en_url.clone(), None).await] {
        assert!(
            !html.contains("shopper.example") && !html.contains("佐藤") && !html.contains("Jane"),
            "{html}"
        );
    }
    // A wrong link in the reader's language.
    let (lang, html) = page(format!("{}/r/nope", relay.base), Some("ja")).await;
    assert_eq!(lang.as_deref(), Some("ja"));
    assert!(html.contains("このリンクは無効です"), "{html}");
    relay.stop().await;
}
