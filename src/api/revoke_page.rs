//! The shopper's page behind `revoke_url`. GET only shows and asks; every change is a POST
//! from a plain HTML form (no JavaScript), because link scanners and prefetchers GET.
//!
//! The page names the store and order and offers: switch this address off for good, pause
//! it (reversible; a pause left alone for `threads.erase_after_days` ends in erasure), and,
//! for the shopper's other active addresses (found through the blind index), a button for
//! each and one for all. POST with no `intent` field switches this address off: what the
//! single-button page did, and what an RFC 8058 one-click request
//! (`List-Unsubscribe=One-Click`) asks. Pages are in the shopper's language: `?lang=`, else
//! the browser's Accept-Language, else the thread's. They never show an address.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::locale::{Locale, Texts, fill};
use crate::store::threads::{self, Actor, OtherThread, Thread, ThreadStatus};

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Headers of every page: nothing but its own inline style loads, forms post only back to
/// the relay, no site can frame it (clickjacking the buttons), the token-bearing URL is
/// never sent as a Referer, and no cache keeps a copy.
const HARDENING: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;\
line-height:1.6;color:#1a1a1a;background:#fff}h1{font-size:1.5rem;line-height:1.3}h2{font-size:1.15rem;margin-top:2rem}\
button{font:inherit;font-size:1.05rem;padding:.6rem 1.1rem;border-radius:.4rem;border:2px solid #1a1a1a;\
background:#fff;color:#1a1a1a;cursor:pointer}button.stop{background:#a4001d;border-color:#a4001d;color:#fff}\
form{margin:.8rem 0}ul{padding:0;list-style:none}li{border-top:1px solid #767676;padding:.6rem 0}\
li form{margin:.3rem 0 0}footer{margin-top:2.5rem;border-top:1px solid #767676;font-size:.9rem;color:#3d3d3d}\
a{color:#0645ad}nav a{margin-right:1rem}";

/// What the page is written for: its language, the marketplace and the pause limit.
struct Reader<'a> {
    locale: Locale,
    t: &'static Texts,
    marketplace: &'a str,
    days: String,
}

impl<'a> Reader<'a> {
    fn new(state: &'a AppState, thread: Option<&Thread>, query: &PageQuery, headers: &HeaderMap) -> Self {
        let locale = query
            .lang
            .as_deref()
            .and_then(Locale::from_tag)
            .or_else(|| {
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Locale::from_accept_language)
            })
            .or(thread.map(|t| t.locale))
            .unwrap_or(state.config.relay.locale);
        Reader {
            locale,
            t: locale.texts(),
            marketplace: &state.config.relay.marketplace,
            days: state.config.threads.erase_after_days.to_string(),
        }
    }

    /// A template filled with the page's values, each escaped, store and order emphasised.
    fn say(&self, template: &str, store: &str, order: &str, count: usize) -> String {
        let store = format!("<strong>{}</strong>", escape(store));
        let order = format!("<strong>{}</strong>", escape(order));
        let marketplace = escape(self.marketplace);
        let count = count.to_string();
        fill(
            template,
            &[
                ("store", &store),
                ("order", &order),
                ("marketplace", &marketplace),
                ("days", &self.days),
                ("count", &count),
            ],
        )
    }

    /// The same without markup, for `<title>`, `aria-label` and buttons.
    fn plain(&self, template: &str, store: &str, order: &str, count: usize) -> String {
        let count = count.to_string();
        escape(&fill(
            template,
            &[
                ("store", store),
                ("order", order),
                ("marketplace", self.marketplace),
                ("days", &self.days),
                ("count", &count),
            ],
        ))
    }

    fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        let footer = self.say(self.t.footer, "", "", 0);
        let switch: Vec<String> = Locale::ALL
            .iter()
            .filter(|l| **l != self.locale)
            .map(|l| {
                format!(
                    "<a href=\"?lang={}\" lang=\"{}\" hreflang=\"{}\">{}</a>",
                    l.tag(),
                    l.tag(),
                    l.tag(),
                    l.texts().name
                )
            })
            .collect();
        let html = format!(
            "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"robots\" content=\"noindex\">\n<link rel=\"icon\" href=\"data:,\">\n<title>{title}</title>\n\
             <style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n\
             <footer>\n<p>{footer}</p>\n<nav>{}</nav>\n</footer>\n</body>\n</html>\n",
            switch.join(" "),
            lang = self.locale.tag(),
        );
        let mut response = (status, HARDENING, Html(html)).into_response();
        if let Ok(v) = HeaderValue::from_str(self.locale.tag()) {
            response.headers_mut().insert(header::CONTENT_LANGUAGE, v);
        }
        response
    }

    fn invalid(&self) -> Response {
        let body = format!("<p>{}</p>", escape(self.t.invalid_body));
        self.page(StatusCode::NOT_FOUND, &escape(self.t.invalid_title), &body)
    }

    fn error(&self) -> Response {
        let body = format!("<p>{}</p>", escape(self.t.error_body));
        self.page(StatusCode::SERVICE_UNAVAILABLE, &escape(self.t.error_title), &body)
    }

    /// A POST form with one button; `fields` are hidden inputs.
    fn form(
        &self,
        action: &str,
        fields: &[(&str, &str)],
        label: &str,
        aria: Option<&str>,
        stop: bool,
    ) -> String {
        let hidden: String = fields
            .iter()
            .map(|(n, v)| format!("<input type=\"hidden\" name=\"{n}\" value=\"{}\">", escape(v)))
            .collect();
        let class = if stop { " class=\"stop\"" } else { "" };
        let aria = aria.map(|a| format!(" aria-label=\"{a}\"")).unwrap_or_default();
        format!(
            "<form method=\"post\">{hidden}<button type=\"submit\" name=\"intent\" value=\"{action}\"{class}{aria}>{label}</button></form>"
        )
    }

    /// The shopper's other active addresses, a button for each and one for all of them
    /// (this one included when it is still active).
    fn others(&self, others: &[OtherThread], this_active: bool) -> String {
        if others.is_empty() {
            return String::new();
        }
        let t = self.t;
        let items: String = others
            .iter()
            .map(|o| {
                let item = self.say(t.other_item, &o.store_name, &o.thread.order, 0);
                let aria = format!(
                    "{}: {}",
                    escape(t.other_button),
                    self.plain(t.other_item, &o.store_name, &o.thread.order, 0)
                );
                let form = self.form(
                    "revoke_other",
                    &[("thread", &o.thread.id)],
                    &escape(t.other_button),
                    Some(&aria),
                    false,
                );
                format!("<li>{item}{form}</li>\n")
            })
            .collect();
        let count = others.len() + usize::from(this_active);
        let all = self.form("revoke_all", &[], &self.plain(t.all_button, "", "", count), None, true);
        format!("<h2>{}</h2>\n<ul>\n{items}</ul>\n{all}", escape(t.others_heading))
    }
}

/// `?lang=`: the language the shopper picked on the page.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub lang: Option<String>,
}

async fn store_name(state: &AppState, thread: &Thread, t: &Texts) -> String {
    crate::store::stores::get_any(&state.db, &thread.store_id)
        .await
        .map(|s| s.name)
        .unwrap_or_else(|_| t.store_fallback.to_owned())
}

async fn others(state: &AppState, thread: &Thread) -> Vec<OtherThread> {
    threads::others_of_shopper(&state.db, thread).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing the shopper's other threads failed");
        Vec::new()
    })
}

/// GET: shows the thread's state and what the shopper can do; changes nothing.
pub async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(thread) = threads::find_by_revoke_token(&state.db, &token).await else {
        return Reader::new(&state, None, &query, &headers).invalid();
    };
    let r = Reader::new(&state, Some(&thread), &query, &headers);
    let store = store_name(&state, &thread, r.t).await;
    let others = others(&state, &thread).await;
    state_page(&r, &thread, &store, &others)
}

/// The page for the thread as it is now.
fn state_page(r: &Reader<'_>, thread: &Thread, store: &str, others: &[OtherThread]) -> Response {
    let t = r.t;
    let order = &thread.order;
    match thread.status {
        ThreadStatus::Active => {
            let body = format!(
                "<p>{}</p>\n<p>{}</p>\n{}\n<p>{}</p>\n{}\n{}",
                r.say(t.ask_intro, store, order, 0),
                r.say(t.ask_consequence, store, order, 0),
                r.form("revoke", &[], &escape(t.revoke_button), None, true),
                r.say(t.pause_intro, store, order, 0),
                r.form("pause", &[], &escape(t.pause_button), None, false),
                r.others(others, true),
            );
            r.page(StatusCode::OK, &r.plain(t.ask_title, store, order, 0), &body)
        }
        ThreadStatus::Disabled => {
            let body = format!(
                "<p>{}</p>\n{}\n<p>{}</p>\n{}\n{}",
                r.say(t.paused_body, store, order, 0),
                r.form("resume", &[], &escape(t.resume_button), None, false),
                r.say(t.ask_consequence, store, order, 0),
                r.form("revoke", &[], &escape(t.revoke_button), None, true),
                r.others(others, false),
            );
            r.page(StatusCode::OK, &escape(t.paused_title), &body)
        }
        ThreadStatus::Revoked | ThreadStatus::Expired | ThreadStatus::Erased => {
            let body =
                format!("<p>{}</p>\n{}", r.say(t.already_body, store, order, 0), r.others(others, false));
            r.page(StatusCode::OK, &escape(t.already_title), &body)
        }
    }
}

/// What a POST asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Switch this address off (also the RFC 8058 one-click request).
    Revoke,
    Pause,
    Resume,
    /// Switch off another active address of the same shopper.
    RevokeOther(String),
    /// Switch off every address of the shopper.
    RevokeAll,
    /// A form field this page never writes.
    Unreadable,
}

/// Reads the form body (`application/x-www-form-urlencoded`). Only the fields this page
/// writes are read, and their values are plain tokens, so no percent-decoding is needed:
/// anything else (an RFC 8058 `List-Unsubscribe=One-Click`, a multipart body) means
/// "switch this address off".
fn action(body: &[u8]) -> Action {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        text.split('&')
            .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_owned()))
    };
    match field("intent").as_deref() {
        Some("pause") => Action::Pause,
        Some("resume") => Action::Resume,
        Some("revoke_all") => Action::RevokeAll,
        Some("revoke_other") => match field("thread") {
            Some(id) if id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => Action::RevokeOther(id),
            _ => Action::Unreadable,
        },
        _ => Action::Revoke,
    }
}

/// POST: does what the button says, then shows the result.
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(thread) = threads::find_by_revoke_token(&state.db, &token).await else {
        return Reader::new(&state, None, &query, &headers).invalid();
    };
    let r = Reader::new(&state, Some(&thread), &query, &headers);
    let action = action(&body);
    match act(&state, &r, &thread, action).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, "shopper page action failed");
            r.error()
        }
    }
}

async fn act(
    state: &AppState,
    r: &Reader<'_>,
    thread: &Thread,
    action: Action,
) -> Result<Response, crate::store::StoreError> {
    let db = &state.db;
    let t = r.t;
    let store = store_name(state, thread, t).await;
    let order = &thread.order;
    let back = format!("<p><a href=\"\">{}</a></p>", escape(t.back_link));
    Ok(match action {
        Action::Revoke => {
            let revoked = threads::revoke(db, &thread.id, Actor::Shopper).await?;
            if thread.status != revoked.status {
                tracing::info!(thread = %revoked.id, "thread revoked by shopper");
            }
            let others = others(state, &revoked).await;
            let body =
                format!("<p>{}</p>\n{}", r.say(t.revoked_body, &store, order, 0), r.others(&others, false));
            r.page(StatusCode::OK, &escape(t.revoked_title), &body)
        }
        Action::Pause => {
            // Revoked, expired or erased meanwhile: the page says how it is.
            let paused = threads::disable(db, &thread.id, Actor::Shopper).await?;
            if paused.status == ThreadStatus::Disabled {
                tracing::info!(thread = %paused.id, "thread paused by shopper");
            }
            state_page(r, &paused, &store, &others(state, &paused).await)
        }
        Action::Resume => {
            let resumed = threads::enable(db, &thread.id, Actor::Shopper).await?;
            if resumed.status != ThreadStatus::Active {
                return Ok(state_page(r, &resumed, &store, &others(state, &resumed).await));
            }
            tracing::info!(thread = %resumed.id, "thread resumed by shopper");
            let body = format!("<p>{}</p>\n{back}", r.say(t.resumed_body, &store, order, 0));
            r.page(StatusCode::OK, &escape(t.resumed_title), &body)
        }
        Action::RevokeOther(id) => {
            // Only a thread of the same shopper: a guessed id of someone else's thread
            // gets the same answer as a wrong link.
            let other = match threads::get(db, &id).await {
                Ok(o) if o.id != thread.id && threads::same_shopper(thread, &o) => o,
                Ok(_) | Err(crate::store::StoreError::NotFound) => return Ok(r.invalid()),
                Err(e) => return Err(e),
            };
            let revoked = threads::revoke(db, &other.id, Actor::Shopper).await?;
            tracing::info!(thread = %revoked.id, from_page_of = %thread.id, "thread revoked by shopper");
            let other_store = store_name(state, &revoked, t).await;
            let body =
                format!("<p>{}</p>\n{back}", r.say(t.other_revoked_body, &other_store, &revoked.order, 0));
            r.page(StatusCode::OK, &escape(t.other_revoked_title), &body)
        }
        Action::RevokeAll => {
            let Some(shopper) = &thread.shopper else { return Ok(state_page(r, thread, &store, &[])) };
            let n = threads::revoke_shopper(db, shopper, Actor::Shopper).await?;
            tracing::info!(thread = %thread.id, threads = n, "all threads of a shopper revoked from their page");
            let body = format!("<p>{}</p>", r.say(t.all_body, "", "", n as usize));
            r.page(StatusCode::OK, &escape(t.all_title), &body)
        }
        Action::Unreadable => r.invalid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies() {
        assert_eq!(action(b"List-Unsubscribe=One-Click"), Action::Revoke);
        assert_eq!(action(b""), Action::Revoke);
        assert_eq!(action(b"intent=revoke"), Action::Revoke);
        assert_eq!(action(b"intent=pause"), Action::Pause);
        assert_eq!(action(b"intent=resume"), Action::Resume);
        assert_eq!(action(b"intent=revoke_all"), Action::RevokeAll);
        assert_eq!(action(b"thread=thr_abc&intent=revoke_other"), Action::RevokeOther("thr_abc".into()));
        assert_eq!(action(b"intent=revoke_other&thread=%27%20OR"), Action::Unreadable);
    }
}
