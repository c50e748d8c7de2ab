//! Cursor paging, the one way every list of the API is paged (SPEC, HTTP API):
//! `?limit=` (default 100, at most 1000) and `?after=<cursor>`, answered with
//! `{"data":[…],"next":"<cursor>"|null}`. A cursor is opaque to clients: the sort key of
//! the last row of the page, base64url-encoded, so a page never shifts when rows are
//! added before it (unlike an offset).
//!
//! A list handler takes `ListQuery<F>`: the checked page and the list's own filters `F`
//! (a struct deriving `Deserialize` and `utoipa::IntoParams`). A query parameter that is
//! neither a filter nor `limit`/`after` is a 400 naming it, so a typo (`?stauts=`) is not
//! silently an unfiltered list. Document the route with `params(PageQuery, F)`.

use std::str::FromStr;

use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::errors::ApiError;

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most rows one page may hold.
pub const MAX_LIMIT: i64 = 1000;

/// The paging part of a query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next` cursor of the page before; absent for the first page.
    pub after: Option<String>,
}

/// A checked page request: how many rows, and the sort key to continue after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    /// The decoded cursor: the sort key of the last row already seen.
    pub after: Option<String>,
}

impl PageQuery {
    /// A limit outside 1..=1000 or a cursor this API did not issue is a 422 naming the
    /// parameter, not a silent clamp: a client that asks for 5000 rows should learn it
    /// gets at most 1000.
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("limit: 1 to {MAX_LIMIT}")));
        }
        let after = match self.after.as_deref().filter(|a| !a.is_empty()) {
            None => None,
            Some(cursor) => {
                Some(decode(cursor).ok_or_else(|| ApiError::invalid("after: not a cursor of this list"))?)
            }
        };
        Ok(Page { limit, after })
    }
}

impl Page {
    /// How many rows to fetch: one more than the page holds, to learn whether there is a
    /// next page without a second query.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The cursor's sort key as the list's own key type (an event id, a thread's
    /// `created_at:id`): a cursor of another list, or one tampered with, is a 422.
    pub fn after_key<K: FromStr>(&self) -> Result<Option<K>, ApiError> {
        self.after
            .as_deref()
            .map(|k| k.parse().map_err(|_| ApiError::invalid("after: not a cursor of this list")))
            .transpose()
    }
}

/// The checked page and the filters of one list request (see the module doc).
#[derive(Debug, Clone)]
pub struct ListQuery<F> {
    pub page: Page,
    pub filter: F,
}

impl<S, F> FromRequestParts<S> for ListQuery<F>
where
    F: DeserializeOwned + IntoParams,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = |e: axum::extract::rejection::QueryRejection| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text())
        };
        let known: Vec<String> = PageQuery::into_params(|| None)
            .into_iter()
            .chain(F::into_params(|| None))
            .map(|p| p.name)
            .collect();
        let given: Query<Vec<(String, String)>> = Query::try_from_uri(&parts.uri).map_err(bad)?;
        if let Some((unknown, _)) = given.0.iter().find(|(k, _)| !known.contains(k)) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("unknown query parameter {unknown:?}; this list takes {}", known.join(", ")),
            ));
        }
        let page: Query<PageQuery> = Query::try_from_uri(&parts.uri).map_err(bad)?;
        let filter: Query<F> = Query::try_from_uri(&parts.uri).map_err(bad)?;
        Ok(Self { page: page.0.page()?, filter: filter.0 })
    }
}

/// A list filter's value, with `?store=` (empty) meaning no filter.
pub fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// One page of a list as the API answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub data: Vec<T>,
    /// The cursor for `?after=` to get the next page; null on the last page.
    pub next: Option<String>,
}

impl<T> Paged<T> {
    /// The page from rows fetched with `page.fetch()`: the first `page.limit` of them, and a
    /// cursor made from the sort key of the last one kept when more rows were fetched.
    pub fn new(mut rows: Vec<T>, page: &Page, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as i64 > page.limit;
        rows.truncate(page.limit.max(0) as usize);
        let next = if more { rows.last().map(|last| encode(&key(last))) } else { None };
        Self { data: rows, next }
    }

    /// The same page with each row turned into what the API shows.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U> {
        Paged { data: self.data.into_iter().map(f).collect(), next: self.next }
    }
}

/// The cursor of a sort key.
pub fn encode(key: &str) -> String {
    B64.encode(key.as_bytes())
}

fn decode(cursor: &str) -> Option<String> {
    let bytes = B64.decode(cursor.as_bytes()).ok()?;
    String::from_utf8(bytes).ok().filter(|k| k.len() <= 512 && !k.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_cursors() {
        let page = PageQuery { limit: Some(2), after: None }.page().unwrap();
        let p = Paged::new(vec![1, 2, 3], &page, |n| n.to_string());
        assert_eq!(p.data, vec![1, 2]);
        let next = p.next.expect("a next page");
        let page = PageQuery { limit: Some(2), after: Some(next) }.page().unwrap();
        assert_eq!(page.after.as_deref(), Some("2"));
        let last = Paged::new(vec![3], &page, |n| n.to_string());
        assert_eq!(last.next, None);
    }

    #[test]
    fn bad_limits_and_cursors_are_refused() {
        for limit in [0, -1, 1001] {
            assert!(PageQuery { limit: Some(limit), after: None }.page().is_err(), "{limit}");
        }
        assert!(PageQuery { limit: None, after: Some("%%%".into()) }.page().is_err());
        assert_eq!(PageQuery::default().page().unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn a_cursor_of_another_list_is_refused() {
        let page = PageQuery { limit: None, after: Some(encode("thr_x")) }.page().unwrap();
        assert!(page.after_key::<i64>().is_err());
        let page = PageQuery { limit: None, after: Some(encode("42")) }.page().unwrap();
        assert_eq!(page.after_key::<i64>().unwrap(), Some(42));
    }
}
