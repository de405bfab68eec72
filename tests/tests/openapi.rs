//! The served OpenAPI document is the committed one, and every operation
//! it names reaches a handler of the running API (not the router's bare
//! 404 or 405).

use outpost_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_one_and_every_operation_is_routed() {
    let stack = Stack::start().await;
    // Served without a token, as API tooling fetches it.
    let r = http_client(None)
        .get(stack.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served = r.text().await.unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
            .unwrap();
    assert!(
        served == committed,
        "the served document is not docs/openapi.json"
    );

    let doc: Value = serde_json::from_str(&served).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Parameters get values that name nothing: each handler answers
        // with its own error, which is all this checks.
        let concrete = path
            .replace("{project}", "default")
            .replace("{id}", "0190a5a0-0000-7000-8000-000000000000")
            .replace("{name}", "no-such-thing");
        let url = format!(
            "{}{}",
            stack.url(""),
            concrete.strip_prefix("/api/v1").unwrap()
        );
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = stack
                .http
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap();
            assert_ne!(status, 405, "{method} {path}: method not routed");
            assert!(
                !(status == 404 && body.is_empty()),
                "{method} {path}: no route (404 without a body)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 29, "only {checked} operations");
}
