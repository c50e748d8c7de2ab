//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of every route, generated from the
//! handlers' `#[utoipa::path]` annotations and the same route list the router is built
//! from (`super::operator_routes`, `operations_routes`, `shopper_routes`).

use std::sync::OnceLock;

use axum::Json;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};

use super::errors::ErrorBody;

/// The name of the operator token's security scheme in the document.
const BEARER: &str = "operator_token";

/// What the document says of itself; the paths come from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "maskrelay",
        description = "Operator API of the maskrelay email privacy relay, and its public routes \
                       (shopper pages, health, metrics). Every error answer is \
                       `{\"error\":{\"code\",\"message\"}}`; every timestamp is RFC 3339 UTC; \
                       lists are paged by cursor (`?limit=`, `?after=`, answered with `next`).",
        license(name = "AGPL-3.0-or-later")
    ),
    // Schemas only query parameters name (IntoParams does not collect them).
    components(schemas(ErrorBody, crate::store::events::EventKind, crate::store::threads::ThreadStatus)),
    tags(
        (name = "stores", description = "Stores, their contact and approved senders"),
        (name = "threads", description = "Alias pairs per order"),
        (name = "shoppers", description = "Everything of one shopper at once"),
        (name = "events", description = "What the relay refused or noticed; the audit log"),
        (name = "queue", description = "Mail waiting for delivery"),
        (name = "incidents", description = "Outsider attempts grouped per store; telling the shoppers"),
        (name = "webhooks", description = "Where events are POSTed, signed"),
        (name = "operations", description = "Health, metrics, this document"),
        (name = "shopper", description = "Pages shoppers open from their mail"),
    )
)]
struct Base;

/// The document, built once per process.
pub fn openapi() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = Base::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let (_, mut operator) = super::operator_routes().split();
        require_token(&mut operator);
        doc.merge(operator);
        doc.merge(super::operations_routes().split().1);
        doc.merge(super::shopper_routes().split().1);
        name_operations(&mut doc);
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("api.token or MASKRELAY_API_TOKEN"))
                    .build(),
            ),
        );
        doc
    })
}

/// Every operation of the document.
fn operations(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// Marks every operation of the operator routes as needing the token, because the router
/// puts every one of them behind it: the document says what the code does.
fn require_token(doc: &mut OpenApi) {
    operations(doc).for_each(mark);
}

/// Operation ids are the handlers' names (`list`, `get`), the same in several modules; an
/// id must be unique in the document, so each is prefixed with its tag: `threads_list`.
fn name_operations(doc: &mut OpenApi) {
    for op in operations(doc) {
        let tag = op.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
        if let Some(id) = op.operation_id.as_mut() {
            *id = format!("{tag}_{id}");
        }
    }
}

fn mark(op: &mut Operation) {
    op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    let unauthorized = utoipa::openapi::ResponseBuilder::new()
        .description("Missing or wrong operator token")
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    op.responses.responses.entry("401".to_owned()).or_insert(unauthorized.into());
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", body = Object)))]
pub async fn document() -> Json<&'static OpenApi> {
    Json(openapi())
}
