//! Remote option values (`valuesUrl`) over the real stack, against a real
//! HTTP server on loopback: the control plane lists them, picks the
//! selected default, refuses a run whose value they do not list, expands
//! other options into the URL, and says why when a URL cannot be read
//! (Rundeck would accept any value then).

use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use outpost_schemas::state::ExecutionStatus;
use outpost_tests::*;
use serde_json::{json, Value};

async fn values_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/envs",
            get(|| async {
                axum::Json(json!([
                    {"name": "Quality", "value": "qa"},
                    {"name": "Staging", "value": "staging", "selected": true},
                    {"name": "Production", "value": "prod"},
                ]))
            }),
        )
        .route(
            "/versions/{env}",
            get(|Path(env): Path<String>| async move {
                let versions = match env.as_str() {
                    "prod" => json!({"1.0 (stable)": "1.0"}),
                    _ => json!(["1.0", "1.1-rc1"]),
                };
                axum::Json(versions)
            }),
        )
        // JSON, said to be text, as a file served by a plain web server is.
        .route(
            "/plain",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], r#"["a","b"]"#) }),
        )
        .route(
            "/broken",
            get(|| async {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
            }),
        )
        .route(
            "/huge",
            get(|| async {
                let item = format!("\"{}\"", "x".repeat(1000));
                let body = format!("[{}]", vec![item; 1200].join(","));
                ([(header::CONTENT_TYPE, "application/json")], body)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, server)
}

async fn get(stack: &Stack, path: &str) -> (u16, Value) {
    let r = stack.http.get(stack.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_values_are_listed_defaulted_and_enforced_and_a_bad_url_says_why() {
    let stack = Stack::start().await;
    let (addr, server) = values_server().await;
    let _edge = start_runner(&stack.nats, "edge", &["edge"]);
    let yaml = format!(
        r#"
- name: deploy
  runnerSelector: {{filter: edge}}
  options:
  - {{name: env, enforced: true, valuesUrl: 'http://{addr}/envs'}}
  - {{name: version, enforced: true, required: true, valuesUrl: 'http://{addr}/versions/${{option.env.value}}'}}
  - {{name: note, valuesUrl: 'http://{addr}/plain'}}
  sequence:
    commands:
    - exec: echo "deploy ${{option.version}} to ${{option.env}} [${{option.note}}]"
- name: flaky
  options:
  - {{name: x, enforced: true, valuesUrl: 'http://{addr}/broken'}}
  sequence:
    commands:
    - exec: 'true'
- name: huge
  options:
  - {{name: x, enforced: true, valuesUrl: 'http://{addr}/huge'}}
  sequence:
    commands:
    - exec: 'true'
"#
    );
    let deploy = stack.load(&yaml, "deploy").await;
    let flaky = stack.load(&yaml, "flaky").await;
    let huge = stack.load(&yaml, "huge").await;

    // Listed as the server says, with the other options in the URL.
    let (status, body) = get(&stack, &format!("/job/{deploy}/option/env/values")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["values"],
        json!([
            {"name": "Quality", "value": "qa"},
            {"name": "Staging", "value": "staging", "selected": true},
            {"name": "Production", "value": "prod"},
        ])
    );
    let (status, body) = get(
        &stack,
        &format!("/job/{deploy}/option/version/values?env=prod"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], format!("http://{addr}/versions/prod"));
    assert_eq!(
        body["values"],
        json!([{"name": "1.0 (stable)", "value": "1.0"}])
    );

    // The CLI lists them too, value first.
    let (code, out, err) = stack.cli(&["job", "values", "deploy", "version", "-o", "env=prod"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim_end(), format!("{:<24} 1.0 (stable)", "1.0"));

    // No env given: the selected one; the version is checked against the
    // list for that env.
    let id = stack.run_job(deploy, &[("version", "1.1-rc1")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(stack.log_texts(id).await, ["deploy 1.1-rc1 to staging []"]);
    let (status, body) = stack
        .try_run(deploy, &[("env", "prod"), ("version", "1.1-rc1")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"],
        "option `version` must be one of the values its valuesUrl lists [\"1.0\"], not `1.1-rc1`"
    );
    let (status, body) = stack
        .try_run(deploy, &[("env", "dev"), ("version", "1.0")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not `dev`"),
        "{body}"
    );

    // Not JSON by its content type, until the project says to read it.
    let (status, body) = get(&stack, &format!("/job/{deploy}/option/note/values")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`text/plain`, not application/json"),
        "{body}"
    );
    let r = stack
        .http
        .put(stack.url("/project/default/config/project.jobs.disableRemoteOptionJsonCheck"))
        .json(&json!({"value": "true"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let (status, body) = get(&stack, &format!("/job/{deploy}/option/note/values")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["values"],
        json!([{"name": "a", "value": "a"}, {"name": "b", "value": "b"}])
    );

    // A URL that cannot be read refuses the run, saying why.
    let (status, body) = stack.try_run(flaky, &[("x", "anything")]).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errorCode"], "api.error.option.values-url");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("500 Internal Server Error"),
        "{body}"
    );
    let (status, body) = stack.try_run(huge, &[("x", "anything")]).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1048576 bytes"),
        "{body}"
    );
    server.abort();
    // Nothing answers now: the reason is the connection.
    let (status, body) = stack.try_run(flaky, &[("x", "anything")]).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("connection refused"), "{body}");

    // The control plane reads no files for a job.
    let (status, body) = stack
        .import("- name: snoop\n  options:\n  - name: x\n    valuesUrl: file:///etc/passwd\n  sequence:\n    commands:\n    - exec: 'true'\n")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is not an http:// or https:// URL"),
        "{body}"
    );
}
