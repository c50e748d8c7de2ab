//! The shopper's revoke page. GET only shows what would be revoked and asks; POST revokes
//! (the confirm button, or an RFC 8058 one-click request from a mail client). Link
//! scanners and prefetchers GET, so a GET must change nothing. Plain HTML, no JavaScript.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::store::threads::{self, Actor, Thread, ThreadStatus};

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

/// Headers of every revoke page: nothing but its own inline style loads, the form posts only
/// back to the relay, no site can frame it (clickjacking the button), the token-bearing URL
/// is never sent as a Referer, and no cache keeps a copy.
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

fn reply(status: StatusCode, html: Html<String>) -> Response {
    (status, HARDENING, html).into_response()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<link rel=\"icon\" href=\"data:,\">\n<title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
         button{{font-size:1.1rem;padding:.6rem 1.2rem}}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    ))
}

async fn store_name(state: &AppState, thread: &Thread) -> String {
    crate::store::stores::get(&state.db, &thread.store_id)
        .await
        .map(|s| s.name)
        .unwrap_or_else(|_| "this store".to_owned())
}

fn not_found() -> Response {
    reply(
        StatusCode::NOT_FOUND,
        page("Link not valid", "<p>This link is not valid. It may have been mistyped.</p>"),
    )
}

#[utoipa::path(get, path = "/r/{token}", tag = "shopper",
    params(("token" = String, Path, description = "The thread's revoke token, from its revoke_url")),
    responses(
        (status = 200, description = "A page that asks for confirmation; a GET changes nothing", content_type = "text/html", body = String),
        (status = 404, description = "Not a valid link", content_type = "text/html", body = String),
    ))]
pub async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Ok(thread) = threads::find_by_revoke_token(&state.db, &token).await else { return not_found() };
    let store = escape(&store_name(&state, &thread).await);
    let order = escape(&thread.order);
    if thread.status != ThreadStatus::Active {
        let body = format!(
            "<p>The address for order <strong>{order}</strong> with <strong>{store}</strong> is already switched off. No mail reaches you through it.</p>"
        );
        return reply(StatusCode::OK, page("Already switched off", &body));
    }
    let body = format!(
        "<p>You are about to switch off the email address that <strong>{store}</strong> uses to reach you about order <strong>{order}</strong>.</p>\n\
         <p>After this, no mail sent to that address will reach you, and this cannot be undone.</p>\n\
         <form method=\"post\">\n<button type=\"submit\" name=\"confirm\" value=\"yes\">Switch off this address</button>\n</form>"
    );
    reply(StatusCode::OK, page(&format!("Stop mail from {store}?"), &body))
}

#[utoipa::path(post, path = "/r/{token}", tag = "shopper",
    params(("token" = String, Path, description = "The thread's revoke token")),
    responses(
        (status = 200, description = "Revoked (the confirm button, or an RFC 8058 one-click POST)", content_type = "text/html", body = String),
        (status = 404, description = "Not a valid link", content_type = "text/html", body = String),
    ))]
pub async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Ok(thread) = threads::find_by_revoke_token(&state.db, &token).await else { return not_found() };
    let revoked = match threads::revoke(&state.db, &thread.id, Actor::Shopper).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "revoke from page failed");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                page(
                    "Please try again",
                    "<p>Something went wrong on our side. Please try again in a few minutes.</p>",
                ),
            );
        }
    };
    if thread.status == ThreadStatus::Active {
        tracing::info!(thread = %revoked.id, "thread revoked by shopper");
    }
    let store = escape(&store_name(&state, &revoked).await);
    let body = format!(
        "<p>Done. Mail from <strong>{store}</strong> about order <strong>{}</strong> will no longer reach you.</p>",
        escape(&revoked.order)
    );
    reply(StatusCode::OK, page("Address switched off", &body))
}
