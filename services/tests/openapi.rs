//! `docs/openapi.json` is what API clients are generated from, so it must
//! never drift from the contract types, the handlers or the router.
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_document_is_current() {
    let path = root().join("docs/openapi.json");
    let current = outpost_services::api::render_openapi(&outpost_services::api::openapi_document());
    if std::env::var_os("OUTPOST_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is out of date; run `just openapi` and commit the result"
    );
}

/// Every route the router serves is in the document, and nothing else is.
#[test]
fn every_route_is_documented() {
    let router = std::fs::read_to_string(root().join("services/src/api/mod.rs")).unwrap();
    let mut routed = BTreeSet::new();
    for piece in router.split(".route(").skip(1) {
        let path = piece
            .trim_start()
            .strip_prefix('"')
            .and_then(|p| p.split('"').next())
            .expect("a route's path is a literal");
        // The web UI's page, outside the API.
        if path != "/" {
            routed.insert(format!("/api/v1{}", path.replace("{*", "{")));
        }
    }
    let doc = outpost_services::api::openapi_document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(routed, documented);
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let doc = outpost_services::api::openapi_document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let text = serde_json::to_string(&doc).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = 0;
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling reference to {name}");
        refs += 1;
    }
    assert!(refs > 20, "only {refs} references");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["x-outpost-access"].is_string(),
                "{method} {path} says nothing of its access"
            );
            assert!(
                op["responses"]["5XX"].is_object(),
                "{method} {path} has no error response"
            );
        }
    }
}
