//! The served OpenAPI document is the committed one, every operation it
//! names reaches a handler of the running API (not the router's own 404 or
//! 405), and every error, even one no handler wrote, is an `ErrorBody`.

use outpost_services::contract;
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
            if status >= 400 {
                let error: contract::ErrorBody =
                    serde_json::from_slice(&body).unwrap_or_else(|e| {
                        panic!("{method} {path}: {status} without an ErrorBody: {e}")
                    });
                assert_ne!(
                    error.error_code, "api.error.route.unknown",
                    "{method} {path}: no route"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 29, "only {checked} operations");

    // What no handler answers is still an ErrorBody.
    for (method, path, status, code) in [
        (
            reqwest::Method::GET,
            "/no/such/route",
            404,
            "api.error.route.unknown",
        ),
        (
            reqwest::Method::DELETE,
            "/projects",
            405,
            "api.error.method.unsupported",
        ),
        (
            reqwest::Method::POST,
            "/runners",
            415,
            "api.error.content-type.unsupported",
        ),
        (
            reqwest::Method::GET,
            "/audit?max=many",
            400,
            "api.error.invalid.request",
        ),
    ] {
        let r = stack
            .http
            .request(method.clone(), stack.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let error: contract::ErrorBody = r.json().await.unwrap();
        assert!(error.error);
        assert_eq!(error.error_code, code, "{method} {path}: {}", error.message);
        assert!(!error.message.is_empty());
    }
    // A malformed body: the extractor's reason, in the contract's shape.
    let r = stack
        .http
        .post(stack.url("/runners"))
        .header("content-type", "application/json")
        .body("{\"tags\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let error: contract::ErrorBody = r.json().await.unwrap();
    assert!(error.message.contains("name"), "{}", error.message);
}

/// Every read, with real ids, answers what the document says: each 200
/// body validates against the operation's schema in the served document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_answers_the_schema_the_document_gives() {
    let stack = Stack::start().await;
    // What the option's valuesUrl reads.
    let app = axum::Router::new().route(
        "/values",
        axum::routing::get(|| async { axum::Json(serde_json::json!(["a", "b"])) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let values = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let job = stack
        .load(
            &format!("- name: documented\n  options:\n  - name: documented\n    valuesUrl: http://{addr}/values\n  sequence:\n    commands:\n    - exec: echo documented\n"),
            "documented",
        )
        .await;
    let exec = stack.run_job(job, &[]).await;
    stack.wait_terminal(exec).await;
    let dir = tempfile::tempdir().unwrap();
    stack.enrol("doc-runner", &["doc"], dir.path()).await;
    let r = stack
        .http
        .put(stack.url("/project/default/resources"))
        .body("web1:\n  hostname: 10.0.0.1\n  port: 2222\n  tags: web, db\n  osFamily: unix\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = stack
        .post_json(
            "/tokens",
            &serde_json::to_value(contract::TokenRequest {
                name: "reader".into(),
                roles: vec!["viewer".into()],
            })
            .unwrap(),
        )
        .await;
    assert_eq!(status, 201);

    let doc: Value = stack.get_json("/openapi.json").await;
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        if op["responses"]["200"].get("content").is_none() {
            continue;
        }
        let concrete = path
            .replace("{project}", "default")
            .replace("{name}", "documented")
            .replace(
                "{id}",
                &if path.starts_with("/api/v1/job/") {
                    job.to_string()
                } else {
                    exec.to_string()
                },
            );
        let r = stack
            .http
            .get(stack.url(concrete.strip_prefix("/api/v1").unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        // The schema of what came: the document's entry for its media type.
        let media_type = r.headers()["content-type"].to_str().unwrap().to_string();
        let media_type = media_type.split(';').next().unwrap().trim().to_string();
        let schema = &op["responses"]["200"]["content"][&media_type]["schema"];
        assert!(
            schema.is_object(),
            "GET {path} answered {media_type}, which the document does not give"
        );
        if media_type != "application/json" {
            assert_eq!(schema["type"], "string", "GET {path}");
            checked.push(format!("{path} ({media_type})"));
            continue;
        }
        let body: Value = r.json().await.unwrap();
        // The operation's schema, with the document's components to resolve
        // its references against.
        let mut root = schema.clone();
        root["components"] = doc["components"].clone();
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "GET {path}: {errors:?}\n{body:#}");
        // An empty list would validate anything.
        assert!(
            body.as_array().is_none_or(|a| !a.is_empty()),
            "GET {path} listed nothing to check"
        );
        checked.push(path.clone());
    }
    assert!(checked.len() >= 17, "only {checked:?}");
    values.abort();
}
