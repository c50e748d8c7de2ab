//! `GET /v1/openapi.json` against the running router: every documented operation answers
//! (not the fallback's 404, not a 405), every other method on a documented path is a 405,
//! every route in the code is in the document, and the document is valid OpenAPI 3.1.

mod support;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(relay: &TestRelay) -> Value {
    let (s, doc) = relay.api("GET", "/v1/openapi.json", None).await;
    assert_eq!(s, 200, "{doc}");
    doc
}

/// The answer is the router's fallback (no route for this path), not a handler's 404.
fn is_fallback(status: u16, body: &str) -> bool {
    status == 404
        && serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(|m| m.starts_with("no route")))
            .unwrap_or(false)
}

/// `{id}`-style parameters filled with a value no route treats specially.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') && seg.ends_with('}') { "x-1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_and_no_other_method_does() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let doc = document(&relay).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let operations: usize =
        paths.values().map(|i| METHODS.iter().filter(|m| i.get(**m).is_some()).count()).sum();
    assert!(operations >= 22, "{operations} operations");

    for (path, item) in paths {
        let url = format!("{}{}", relay.base, concrete(path));
        for method in METHODS {
            let documented = item.get(method).is_some();
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let mut req = relay.http.request(m, &url).bearer_auth(TOKEN);
            if documented && item[method].get("requestBody").is_some() {
                req = req.json(&json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if documented {
                assert!(!is_fallback(status, &body), "{method} {path}: documented but no route: {body}");
                assert_ne!(status, 405, "{method} {path}: documented but the route does not take it");
                assert!(status < 500, "{method} {path}: {status} {body}");
            } else {
                assert_eq!(status, 405, "{method} {path}: answers but is not documented: {status} {body}");
            }
        }
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_says_what_the_router_does() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    // The operator token guards the document like the rest of /v1.
    let resp = relay.http.get(format!("{}/v1/openapi.json", relay.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let doc = document(&relay).await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let here = format!("{method} {path}");
            let id = op["operationId"].as_str().expect("an operationId").to_owned();
            assert!(operation_ids.insert(id.clone()), "{here}: operationId {id} is used twice");
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{here}: no tag");
            // /v1 is behind the token and says so; the public routes are not.
            let secured = op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
            assert_eq!(secured, path.starts_with("/v1/"), "{here}: security {:?}", op.get("security"));
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|c| c.starts_with('2')), "{here}: no success answer");
            // Every JSON error answer is documented with the one error shape.
            for (code, answer) in responses.iter().filter(|(c, _)| !c.starts_with('2')) {
                if let Some(schema) = answer["content"].get("application/json").map(|c| &c["schema"]) {
                    assert_eq!(schema["$ref"], "#/components/schemas/ErrorBody", "{here} {code}");
                }
            }
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{here}: the token's 401 is not documented");
            }
            // Path parameters are declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(['{', '}']);
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{here}: path parameter {name} not declared");
            }
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    // Lists are documented with their paging and filters.
    let params = |path: &str| -> BTreeSet<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    for (path, filters) in [
        ("/v1/threads", &["store", "order", "status", "email"][..]),
        ("/v1/events", &["kind", "store"][..]),
        ("/v1/audit", &["target"][..]),
        ("/v1/stores", &[][..]),
        ("/v1/queue", &[][..]),
    ] {
        let want: BTreeSet<String> =
            filters.iter().chain(&["limit", "after"]).map(|s| s.to_string()).collect();
        assert_eq!(params(path), want, "{path}");
    }
    relay.stop().await;
}

/// No route is added past `Routes::path` (which documents it): a bare `.route(` in the
/// API's code would answer without being in the document.
#[test]
fn every_route_in_the_code_goes_through_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut annotated = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        // Code only: the module docs show an annotation as an example.
        let text: String = source
            .lines()
            .map(|l| if l.trim_start().starts_with("//") { "" } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                assert!(
                    !code.contains(bypass),
                    "{}:{}: `{bypass}` adds a route the OpenAPI document does not know; use Routes::path",
                    path.display(),
                    n + 1
                );
            }
        }
        // Paths of `#[utoipa::path(…, path = "…")]`: each must be registered (below).
        for chunk in text.split("#[utoipa::path(").skip(1) {
            let after = chunk.split("path = \"").nth(1).expect("an annotated path");
            annotated.push(after.split('"').next().unwrap().to_owned());
        }
    }
    let doc = serde_json::to_value(maskrelay::api::openapi::openapi()).unwrap();
    for path in &annotated {
        assert!(doc["paths"].get(path).is_some(), "{path} is annotated but not registered in api::*_routes");
    }
    assert!(annotated.len() >= 20, "{annotated:?}");
}

/// The document is valid OpenAPI 3.1 by an independent validator (openapi-spec-validator).
#[test]
fn the_document_is_valid_openapi() {
    let doc = serde_json::to_string(maskrelay::api::openapi::openapi()).unwrap();
    let check = "import json, sys\n\
                 from openapi_spec_validator import validate\n\
                 validate(json.load(sys.stdin))\n";
    let has_validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_validator {
        eprintln!("SKIPPED: python3 -m pip install openapi-spec-validator to validate the document");
        assert!(
            std::env::var("MRTEST_REQUIRE_OPENAPI_VALIDATOR").is_err(),
            "MRTEST_REQUIRE_OPENAPI_VALIDATOR is set but openapi-spec-validator is missing"
        );
        return;
    }
    let mut child = std::process::Command::new("python3")
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not valid OpenAPI:\n{}", String::from_utf8_lossy(&out.stderr));
}
