//! Zero-trust identity end to end, over a nats-server in operator mode (JWT
//! authentication, per-user permissions), as `outpost up` runs it:
//! - a runner credential reaches only its own subjects;
//! - revoking a runner cuts it off within a second, and its step ends lost;
//! - rotating credentials under load loses no step;
//! - every mutating security action is audited once, per the schema.

use std::path::Path;
use std::time::{Duration, Instant};

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_schemas::{subjects, Event, Header, StepFinished, StepOutcome};
use outpost_tests::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The `.creds` text inside a bundle.
fn creds_of(bundle: &Path) -> String {
    let b: outpost_schemas::bundle::Bundle =
        toml::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    b.creds
}

/// A raw NATS client holding a runner's credentials, as a thief would.
/// Server errors (permission violations) and disconnects are reported on
/// the returned channel, with when they arrived.
async fn raw_client(
    nats: &NatsServer,
    bundle: &Path,
    inbox: &str,
) -> (
    async_nats::Client,
    mpsc::UnboundedReceiver<(Instant, String)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials(&creds_of(bundle))
        .unwrap()
        .custom_inbox_prefix(inbox)
        .max_reconnects(Some(1))
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                let text = match ev {
                    async_nats::Event::ServerError(e) => e.to_string(),
                    async_nats::Event::Disconnected => "disconnected".into(),
                    other => other.to_string(),
                };
                let _ = tx.send((Instant::now(), text));
            }
        })
        .connect(&nats.ws_url)
        .await
        .expect("the thief's credentials are valid");
    (client, rx)
}

/// What the server told a connection, kept so that order does not matter.
struct Told {
    rx: mpsc::UnboundedReceiver<(Instant, String)>,
    seen: Vec<String>,
}

/// Waits for the server to report a permission violation naming `subject`.
/// On a direct connection the server checks `$JS.<domain>.API` requests as
/// `$JS.API` ones, and names them so.
async fn violation(told: &mut Told, subject: &str) {
    let direct = subject.replace("$JS.hub.API", "$JS.API");
    let matches = |text: &String| {
        text.to_lowercase().contains("permissions violation")
            && (text.contains(&format!("\"{subject}\"")) || text.contains(&format!("\"{direct}\"")))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !told.seen.iter().any(matches) {
        let (_, text) = tokio::time::timeout_at(deadline, told.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no permission violation for `{subject}`: {:?}", told.seen))
            .unwrap();
        told.seen.push(text);
    }
}

fn audit_schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/json/audit_event.v1.json"
        ))
        .unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

async fn audit_events(stack: &Stack) -> Vec<Value> {
    stack.get_json("/audit?max=1000").await
}

fn held_job(name: &str, tag: &str, gate: &Path) -> String {
    format!(
        "- name: {name}\n  multipleExecutions: true\n  runnerSelector:\n    filter: {tag}\n  sequence:\n    commands:\n    - exec: while [ ! -e {g} ]; do sleep 0.05; done; echo done\n",
        g = gate.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_runner_credential_reaches_nothing_but_its_own_subjects() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let a = stack.enrol("ra", &["alpha"], dir.path()).await;
    let b = stack.enrol("rb", &["beta"], dir.path()).await;
    let gate = dir.path().join("gate");
    let job = stack.load(&held_job("held", "beta", &gate), "held").await;
    // B runs one step at a time: the first holds it, the second waits in
    // B's consumer.
    let _rb = start_enrolled_runner(&stack.nats, &b, |o| o.capacity = 1);
    let first = stack.run_job(job, &[]).await;
    stack
        .wait_state(first, "B running the first step", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;
    let second = stack.run_job(job, &[]).await;
    stack
        .wait_state(second, "the second step dispatched", |s| {
            s.steps[0].status == StepStatus::Dispatched
        })
        .await;
    let pending = || async {
        let mut c = stack
            .js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                "dispatch_beta",
                subjects::DISPATCH_STREAM,
            )
            .await
            .unwrap();
        c.info().await.unwrap().num_pending
    };
    assert_eq!(pending().await, 1);

    let (thief, rx) = raw_client(&stack.nats, &a, "_INBOX_ra").await;
    let mut errors = Told {
        rx,
        seen: Vec::new(),
    };
    let ask = |subject: &str, body: Value| {
        let thief = thief.clone();
        let subject = subject.to_string();
        async move {
            tokio::time::timeout(
                Duration::from_secs(1),
                thief.request(subject, body.to_string().into()),
            )
            .await
        }
    };

    // Subscribe to B's dispatch subjects, and to all of them.
    let mut spy = thief.subscribe("outpost.dispatch.beta.>").await.unwrap();
    violation(&mut errors, "outpost.dispatch.beta.>").await;
    let mut spy_all = thief.subscribe("outpost.dispatch.>").await.unwrap();
    violation(&mut errors, "outpost.dispatch.>").await;

    // Fetch from B's consumer, through the import runners use (a runner
    // may publish nothing under the hub's own `$JS.hub.API`, so a check
    // there proves nothing about whose consumer it names).
    let fetch = json!({"batch": 1, "expires": 1_000_000_000u64});
    let next = "JS.outpost.API.CONSUMER.MSG.NEXT.OUTPOST_DISPATCH.dispatch_beta";
    let got = ask(next, fetch.clone()).await;
    assert!(
        !matches!(got, Ok(Ok(_))),
        "a fetch from B's consumer answered"
    );
    violation(&mut errors, next).await;
    assert_eq!(pending().await, 1, "B's waiting step is still there");
    // Nor from B's consumer on a plugin lane, nor ack there, nor read any
    // lane's subjects.
    let http: std::collections::BTreeSet<String> =
        ["edu.ohio.ais.rundeck.HttpWorkflowStepPlugin".to_string()].into();
    let lane = subjects::lane_stream(&subjects::lane(&http).unwrap());
    let lane_next = format!("JS.outpost.API.CONSUMER.MSG.NEXT.{lane}.dispatch_beta");
    let got = ask(&lane_next, fetch.clone()).await;
    assert!(!matches!(got, Ok(Ok(_))), "a fetch from B's lane answered");
    violation(&mut errors, &lane_next).await;
    let lane_ack = format!("$JS.ACK.{lane}.dispatch_beta.1.1.1.1.0");
    thief
        .publish(lane_ack.clone(), "+ACK".into())
        .await
        .unwrap();
    violation(&mut errors, &lane_ack).await;
    let _spy_lanes = thief.subscribe("outpost.pdispatch.>").await.unwrap();
    violation(&mut errors, "outpost.pdispatch.>").await;
    // Its own consumer on the lane is open to it: JetStream answers (the
    // lane has no stream yet, so with an error), NATS does not refuse.
    let own = format!("JS.outpost.API.CONSUMER.INFO.{lane}.dispatch_alpha");
    let got = ask(&own, json!({})).await;
    let reply = got
        .expect("its own lane consumer's info answers")
        .expect("its own lane consumer's info answers");
    assert!(
        String::from_utf8_lossy(&reply.payload).contains("error"),
        "{:?}",
        reply.payload
    );

    // Publish a "finished" for B's step: as B, and as itself.
    let forged = |runner: &str| {
        Event::StepFinished(StepFinished {
            node_data: Default::default(),
            data: Default::default(),
            header: Header::now(),
            execution_id: first,
            step: 1,
            runner_id: runner.into(),
            outcome: StepOutcome::Succeeded,
            exit_code: Some(0),
            reason: None,
            log_chunks: 0,
            handler: None,
            halted: None,
            log_used: None,
        })
    };
    let as_b = subjects::event("step_finished", first, "rb");
    thief
        .publish(
            as_b.clone(),
            serde_json::to_vec(&forged("rb")).unwrap().into(),
        )
        .await
        .unwrap();
    violation(&mut errors, &as_b).await;
    // Its own subject passes NATS; the control plane refuses the content.
    let own = subjects::event("step_finished", first, "ra");
    for claimed_by in ["ra", "rb"] {
        let ack = thief
            .request(
                own.clone(),
                serde_json::to_vec(&forged(claimed_by)).unwrap().into(),
            )
            .await
            .expect("its own event subject is open to it");
        assert!(String::from_utf8_lossy(&ack.payload).contains("OUTPOST_EVENTS"));
    }

    // Slip lines into B's output, under its own id (NATS lets it publish
    // logs there; the API shows only the claimant's).
    let chunk = outpost_schemas::LogChunk {
        header: Header::now(),
        execution_id: first,
        step: 1,
        runner_id: "rb".into(),
        seq: 0,
        entries: vec![outpost_schemas::LogEntry {
            meta: Default::default(),
            time: chrono::Utc::now(),
            stream: outpost_schemas::LogStream::Stdout,
            level: "NORMAL".into(),
            log: "FORGED LINE".into(),
            node: None,
        }],
    };
    thief
        .request(
            subjects::log(first, 1, "ra"),
            serde_json::to_vec(&chunk).unwrap().into(),
        )
        .await
        .expect("its own log subject is open to it");

    // Read each KV bucket.
    let mut kv_asks = Vec::new();
    for bucket in outpost_services::store::topology::bucket_configs()
        .into_iter()
        .map(|c| c.bucket)
    {
        for api in ["STREAM.INFO", "DIRECT.GET"] {
            kv_asks.push(format!("$JS.hub.API.{api}.KV_{bucket}"));
        }
    }
    // Asked all at once: a denied request only times out.
    let answers = futures::future::join_all(
        kv_asks
            .iter()
            .map(|subject| ask(subject, json!({"last_by_subj": "$KV.x.>"}))),
    )
    .await;
    for (subject, got) in kv_asks.iter().zip(answers) {
        assert!(!matches!(got, Ok(Ok(_))), "{subject} answered");
    }
    for subject in &kv_asks {
        violation(&mut errors, subject).await;
    }
    let _watch = thief.subscribe("$KV.>").await.unwrap();
    violation(&mut errors, "$KV.>").await;

    // Read another execution's logs: live, and from the stream.
    let mut logs = thief.subscribe("outpost.log.>").await.unwrap();
    violation(&mut errors, "outpost.log.>").await;
    let create = "$JS.hub.API.CONSUMER.CREATE.OUTPOST_LOGS";
    let got = ask(create, json!({"stream_name": "OUTPOST_LOGS", "config": {}})).await;
    assert!(!matches!(got, Ok(Ok(_))));
    violation(&mut errors, create).await;

    // Create or delete a stream.
    for subject in [
        "$JS.hub.API.STREAM.CREATE.EVIL",
        "$JS.hub.API.STREAM.DELETE.OUTPOST_EVENTS",
        "$JS.API.STREAM.DELETE.OUTPOST_EVENTS",
    ] {
        let got = ask(subject, json!({"name": "EVIL", "subjects": ["evil.>"]})).await;
        assert!(!matches!(got, Ok(Ok(_))), "{subject} answered");
        violation(&mut errors, subject).await;
    }

    // Have the control plane answer into a bucket or another runner's
    // abort subject, by naming them as reply subjects: JetStream's publish
    // ack, the registry's reply. Across the import, the answers stay in the
    // runners' account.
    let runners_kv = stack
        .js
        .get_key_value(subjects::RUNNERS_BUCKET)
        .await
        .unwrap();
    let rb_before = runners_kv.entry("rb").await.unwrap().unwrap().revision;
    let mut b_aborts = stack
        .client
        .subscribe(subjects::runner_abort_prefix("rb") + ".>")
        .await
        .unwrap();
    thief
        .publish_with_reply(
            own.clone(),
            format!("$KV.{}.rb", subjects::RUNNERS_BUCKET),
            serde_json::to_vec(&forged("ra")).unwrap().into(),
        )
        .await
        .unwrap();
    thief
        .publish_with_reply(
            subjects::rpc("ra", subjects::rpc::TAGSETS),
            subjects::abort("rb", first),
            br#"{"tags":[]}"#.to_vec().into(),
        )
        .await
        .unwrap();
    // Acked after both were handled (same connection, same stream, in order).
    thief
        .request(
            own.clone(),
            serde_json::to_vec(&forged("ra")).unwrap().into(),
        )
        .await
        .unwrap();
    let _ = thief
        .request(
            subjects::rpc("ra", subjects::rpc::TAGSETS),
            br#"{"tags":[]}"#.to_vec().into(),
        )
        .await
        .unwrap();
    assert_eq!(
        runners_kv.entry("rb").await.unwrap().unwrap().revision,
        rb_before,
        "nothing was written into rb's record"
    );
    assert!(
        tokio::time::timeout(
            Duration::from_millis(200),
            futures::StreamExt::next(&mut b_aborts)
        )
        .await
        .is_err(),
        "nothing reached rb's abort subject"
    );

    // Nothing changed: the forged "finished" events were refused (and
    // audited, once each), the streams are all there, the first step still
    // runs and B's waiting step waits.
    let state = stack.execution(first).await;
    assert_eq!(state.steps[0].status, StepStatus::Running);
    assert_eq!(state.status, ExecutionStatus::Running);
    assert!(stack.js.get_stream("OUTPOST_EVENTS").await.is_ok());
    assert!(stack.js.get_stream("EVIL").await.is_err());
    assert_eq!(pending().await, 1);
    let schema = audit_schema();
    let forged_audits = wait_for(|| async {
        let all = audit_events(&stack).await;
        let f: Vec<Value> = all
            .into_iter()
            .filter(|e| e["actor"] == "runner:ra")
            .collect();
        (f.len() >= 4).then_some(f)
    })
    .await;
    // Four forged "finished" events were published (two above, two with
    // reply subjects): one audit event each.
    assert_eq!(forged_audits.len(), 4, "{forged_audits:?}");
    for e in &forged_audits {
        assert_eq!(e["result"], "denied");
        assert_eq!(e["target"], own);
        assert!(schema.is_valid(e), "{e}");
    }
    assert!(forged_audits[0]["detail"]
        .as_str()
        .unwrap()
        .contains("which runner rb claimed"));
    assert!(forged_audits[1]["detail"]
        .as_str()
        .unwrap()
        .contains("in the name of runner rb"));

    // B finishes its own work; nothing reached the spies.
    std::fs::write(&gate, "").unwrap();
    for id in [first, second] {
        assert_eq!(
            stack.wait_terminal(id).await.status,
            ExecutionStatus::Succeeded
        );
    }
    assert_eq!(
        stack.log_texts(first).await,
        ["done"],
        "only B's own output"
    );
    thief.flush().await.unwrap();
    for sub in [&mut spy, &mut spy_all, &mut logs] {
        assert!(
            tokio::time::timeout(Duration::from_millis(100), futures::StreamExt::next(sub))
                .await
                .map_or(true, |m| m.is_none()),
            "a denied subscription received a message"
        );
    }
}

/// Polls `probe` (a read of state that another process changes) until it
/// yields, for up to 20 s.
async fn wait_for<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_runner_cuts_it_off_within_a_second_and_its_step_ends_lost() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = stack.enrol("doomed", &["edge"], dir.path()).await;
    let job = stack
        .load(
            "- name: long\n  runnerSelector:\n    filter: edge\n  sequence:\n    commands:\n    - exec: sleep 1000\n",
            "long",
        )
        .await;
    let _runner = start_enrolled_runner(&stack.nats, &bundle, |_| {});
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "step running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;
    // A second connection on the same credential, to time the cut.
    let (_conn, mut events) = raw_client(&stack.nats, &bundle, "_INBOX_doomed").await;

    let t0 = Instant::now();
    let r = stack
        .http
        .post(stack.url("/runners/doomed/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["steps_ended"], 1, "{body}");
    assert_eq!(body["connections_cut"], true, "{body}");
    let cut = loop {
        let (at, text) = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the revoked connection was not cut")
            .unwrap();
        if text == "disconnected" {
            break at.duration_since(t0);
        }
    };
    println!("revocation cut the connection after {cut:?}");
    assert!(cut < Duration::from_secs(1), "cut after {cut:?}");

    // It cannot come back.
    let again = async_nats::ConnectOptions::with_credentials(&creds_of(&bundle))
        .unwrap()
        .connect(&stack.nats.ws_url)
        .await;
    assert!(again.is_err(), "a revoked credential connected again");
    // Two more revoked back to back (account JWTs issued in the same
    // second): both are cut, and the first stays cut.
    let more = [
        stack.enrol("doomed2", &["edge"], dir.path()).await,
        stack.enrol("doomed3", &["edge"], dir.path()).await,
    ];
    for name in ["doomed2", "doomed3"] {
        let (status, body) = stack.post(&format!("/runners/{name}/revoke")).await;
        assert_eq!(status, 200, "{body}");
    }
    for b in more.iter().chain([&bundle]) {
        let c = async_nats::ConnectOptions::with_credentials(&creds_of(b))
            .unwrap()
            .connect(&stack.nats.ws_url)
            .await;
        assert!(c.is_err(), "{} connected after revocation", b.display());
    }

    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed);
    let reason = st.steps[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("runner-lost") && reason.contains("revoked"),
        "{reason}"
    );
    let enrolled: Value = stack.get_json("/runners/enrolled").await;
    assert!(!enrolled[0]["revoked"].is_null(), "{enrolled}");
    // Enrolment, revocation: one audit event per call.
    let actions = ["POST /api/v1/runners", "POST /api/v1/runners/{name}/revoke"];
    let outcomes = |all: &[Value], action: &str| -> Vec<Value> {
        all.iter()
            .filter(|e| e["action"] == action && e["result"] != "attempted")
            .cloned()
            .collect()
    };
    // Outcomes are recorded after the response: wait for the last one.
    let audits = wait_for(|| async {
        let all = audit_events(&stack).await;
        (outcomes(&all, actions[1]).len() >= 3).then_some(all)
    })
    .await;
    let schema = audit_schema();
    for action in actions {
        let hits = outcomes(&audits, action);
        assert_eq!(hits.len(), 3, "{action}: {audits:?}");
        assert_eq!(hits[0]["actor"], "test-admin");
        assert!(schema.is_valid(&hits[0]), "{}", hits[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_credentials_under_load_loses_no_step() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = stack.enrol("rot", &["rot"], dir.path()).await;
    let old_creds = creds_of(&bundle);
    let counter = dir.path().join("ran");
    let job = stack
        .load(
            &format!(
                "- name: tick\n  multipleExecutions: true\n  runnerSelector:\n    filter: rot\n  sequence:\n    commands:\n    - exec: sleep 0.1; echo ${{job.execid}} >> {}\n",
                counter.display()
            ),
            "tick",
        )
        .await;
    let _runner = start_enrolled_runner(&stack.nats, &bundle, |o| o.capacity = 4);
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(stack.run_job(job, &[]).await);
    }
    // Rotate while work is queued and running.
    stack
        .wait_state(ids[3], "a few done", |s| s.status.is_terminal())
        .await;
    let r = stack
        .http
        .post(stack.url("/runners/rot/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let rotations: Vec<Value> = wait_for(|| async {
        let r: Vec<Value> = audit_events(&stack)
            .await
            .into_iter()
            .filter(|e| {
                e["action"] == "POST /api/v1/runners/{name}/rotate" && e["result"] != "attempted"
            })
            .collect();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    assert!(audit_schema().is_valid(&rotations[0]));
    // The operator replaces the runner's file; the runner does the rest.
    outpost_services::security::write_private(&bundle, body["bundle"].as_str().unwrap().as_bytes())
        .unwrap();
    for _ in 0..10 {
        ids.push(stack.run_job(job, &[]).await);
    }
    for id in &ids {
        assert_eq!(
            stack.wait_terminal(*id).await.status,
            ExecutionStatus::Succeeded,
            "execution {id}"
        );
    }
    let ran = std::fs::read_to_string(&counter).unwrap();
    let mut lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.len(), ids.len(), "each step ran exactly once");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), ids.len(), "no step ran twice");

    // Once the runner runs on the new credential, the old one is revoked.
    wait_for(|| async {
        let v: Value = stack.get_json("/runners/enrolled").await;
        let states: Vec<String> = v[0]["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["state"].as_str().unwrap().to_string())
            .collect();
        (states == ["revoked", "active"]).then_some(())
    })
    .await;
    // The bucket says so before the server hears of it: wait for the push.
    wait_for(|| async {
        async_nats::ConnectOptions::with_credentials(&old_creds)
            .unwrap()
            .connect(&stack.nats.ws_url)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    // A ping crosses both ways between the accounts.
    let pong: Value = stack
        .http
        .post(stack.url("/runners/rot/ping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pong["replicas"].as_array().unwrap().len(), 1, "{pong}");
    let new = async_nats::ConnectOptions::with_credentials(&creds_of(&bundle))
        .unwrap()
        .connect(&stack.nats.ws_url)
        .await;
    assert!(new.is_ok(), "the new credential connects");
}

/// Method, path, JSON body, text body, and the expected outcome per column.
type Row<'a> = (&'a str, String, Option<Value>, Option<&'a str>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_401_and_403_by_role() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: j\n  multipleExecutions: true\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "j",
        )
        .await;
    let doomed = stack
        .load(
            "- name: d\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "d",
        )
        .await;
    let exec = stack.run_job(job, &[]).await;
    stack.wait_terminal(exec).await;
    let js = &stack.js;
    // Columns: no token, a bad token, then tokens by role.
    let clients = [
        http_client(None),
        http_client(Some("opt_0000000000000000_nope")),
        http_client(Some(&create_token(js, "viewer", &["default=viewer"]).await)),
        http_client(Some(
            &create_token(js, "operator", &["default=operator"]).await,
        )),
        http_client(Some(&create_token(js, "elsewhere", &["other=admin"]).await)),
        http_client(Some(&create_token(js, "gviewer", &["viewer"]).await)),
        http_client(Some(&create_token(js, "padmin", &["default=admin"]).await)),
        http_client(Some(&stack.admin_token)),
    ];
    let names = [
        "none",
        "bad",
        "viewer",
        "operator",
        "elsewhere",
        "gviewer",
        "padmin",
        "admin",
    ];
    // U: 401, F: 403, Y: allowed (neither, and no server error).
    let yaml = "- name: k\n  sequence:\n    commands:\n    - exec: 'true'\n";
    let table: Vec<Row> = vec![
        ("GET", "/health".into(), None, None, "YYYYYYYY"),
        ("GET", "/projects".into(), None, None, "UUYYYYYY"),
        (
            "POST",
            "/projects".into(),
            Some(json!({"name": "p2"})),
            None,
            "UUFFFFFY",
        ),
        (
            "GET",
            "/project/default/jobs".into(),
            None,
            None,
            "UUYYFYYY",
        ),
        (
            "POST",
            "/project/default/jobs/import".into(),
            None,
            Some(yaml),
            "UUFFFFYY",
        ),
        ("GET", format!("/job/{job}"), None, None, "UUYYFYYY"),
        (
            "POST",
            format!("/job/{job}/run"),
            Some(json!({})),
            None,
            "UUFYFFYY",
        ),
        ("GET", format!("/execution/{exec}"), None, None, "UUYYFYYY"),
        (
            "GET",
            format!("/execution/{exec}/output"),
            None,
            None,
            "UUYYFYYY",
        ),
        (
            "POST",
            format!("/execution/{exec}/abort"),
            None,
            None,
            "UUFYFFYY",
        ),
        (
            "PUT",
            "/project/default/resources".into(),
            None,
            Some("web1:\n  hostname: web1\n"),
            "UUFFFFYY",
        ),
        ("GET", "/runners".into(), None, None, "UUYYYYYY"),
        ("GET", "/runners/enrolled".into(), None, None, "UUFFFYFY"),
        (
            "POST",
            "/runners".into(),
            Some(json!({"name": "r1", "tags": ["x"]})),
            None,
            "UUFFFFFY",
        ),
        ("GET", "/tokens".into(), None, None, "UUFFFFFY"),
        (
            "POST",
            "/tokens".into(),
            Some(json!({"name": "t", "roles": ["viewer"]})),
            None,
            "UUFFFFFY",
        ),
        ("GET", "/deadletters".into(), None, None, "UUFFFYFY"),
        ("GET", "/audit".into(), None, None, "UUFFFYFY"),
        ("DELETE", format!("/job/{doomed}"), None, None, "UUFFFFYY"),
    ];
    let before = audit_events(&stack)
        .await
        .last()
        .map_or(0, |e| e["seq"].as_u64().unwrap());
    let mut failures = Vec::new();
    for (method, path, body, text, expect) in &table {
        for (i, client) in clients.iter().enumerate() {
            let mut req = client.request(method.parse().unwrap(), stack.url(path));
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(t) = text {
                req = req.body(t.to_string());
            }
            let status = req.send().await.unwrap().status().as_u16();
            let want = expect.as_bytes()[i];
            let ok = match want {
                b'U' => status == 401,
                b'F' => status == 403,
                _ => status != 401 && status != 403 && status < 500,
            };
            if !ok {
                failures.push(format!(
                    "{method} {path} as {}: got {status}, want {}",
                    names[i], want as char
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Each mutating call above left exactly one outcome, with who made it
    // (anonymous without a valid token) and its status, per the schema.
    // Outcomes are written after the response: wait for the last call's.
    let calls = table.iter().filter(|r| r.0 != "GET").count() * 8;
    let audits = wait_for(|| async {
        let all = audit_events(&stack).await;
        let outcomes = all
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() > before && e["result"] != "attempted")
            .count();
        (outcomes >= calls).then_some(all)
    })
    .await;
    let schema = audit_schema();
    for e in &audits {
        assert!(schema.is_valid(e), "{e}");
    }
    let actors = [
        "anonymous",
        "anonymous",
        "viewer",
        "operator",
        "elsewhere",
        "gviewer",
        "padmin",
        "test-admin",
    ];
    for (method, path, _, _, expect) in table.iter().filter(|r| r.0 != "GET") {
        let target = format!("/api/v1{}", path.split('?').next().unwrap());
        let mut hits: Vec<&Value> = audits
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() > before && e["result"] != "attempted")
            .filter(|e| e["target"] == target && e["action"].as_str().unwrap().starts_with(method))
            .collect();
        // In call order: request ids are UUIDv7s, made as each call arrives.
        hits.sort_by_key(|e| e["request_id"].as_str().unwrap().to_string());
        assert_eq!(hits.len(), actors.len(), "{method} {target}: {hits:?}");
        for ((e, actor), want) in hits.iter().zip(actors).zip(expect.bytes()) {
            assert_eq!(e["actor"], actor, "{method} {target}");
            let status = e["status"].as_u64().unwrap();
            match want {
                b'U' => assert_eq!((status, e["result"].as_str().unwrap()), (401, "denied")),
                b'F' => assert_eq!((status, e["result"].as_str().unwrap()), (403, "denied")),
                _ => assert!(status < 400 || status == 404 || status == 409, "{e}"),
            }
        }
    }

    // A revoked token is refused from then on.
    let (_, t) = {
        let v: Value = stack
            .http
            .post(stack.url("/tokens"))
            .json(&json!({"name": "short-lived", "roles": ["viewer"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["id"].as_str().unwrap().to_string(), v)
    };
    let client = http_client(Some(t["token"].as_str().unwrap()));
    assert_eq!(
        client
            .get(stack.url("/projects"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = stack
        .http
        .delete(stack.url(&format!("/tokens/{}", t["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client
            .get(stack.url("/projects"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Only hashes are stored.
    let listed: Value = stack.get_json("/tokens").await;
    assert!(!listed.to_string().contains(t["token"].as_str().unwrap()));
    assert!(find_in_all_streams(&stack.js, t["token"].as_str().unwrap())
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_option_reaches_its_step_and_is_found_nowhere_else() {
    use sha2::Digest;
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = stack.enrol("vault", &["vault"], dir.path()).await;
    let secret = format!("s3cr3t-{}", uuid::Uuid::now_v7().simple());

    // A default value would be stored in plain text with the job: refused.
    let (status, body) = stack
        .import("- name: bad\n  options:\n  - name: pw\n    secure: true\n    value: hunter2\n  sequence:\n    commands:\n    - exec: 'true'\n")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("secure"),
        "{body}"
    );

    // The real runner binary, logging at debug level into a file we scan.
    let work = dir.path().join("work");
    let log_path = dir.path().join("runner.log");
    let mut heartbeats = stack.client.subscribe("outpost.hb.vault.*").await.unwrap();
    let _runner = enrolled_runner_process(&bundle, &work, &[], &log_path);
    if tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut heartbeats),
    )
    .await
    .is_err()
    {
        panic!(
            "the runner did not report in: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    let job = stack
        .load(
            "- name: secret\n  runnerSelector:\n    filter: vault\n  options:\n  - name: password\n    secure: true\n    valueExposed: true\n    required: true\n  sequence:\n    commands:\n    - exec: echo \"arg=${option.password}\"; echo \"env=$RD_OPTION_PASSWORD\"; test \"${option.password}\" = \"$RD_OPTION_PASSWORD\" && echo same; printf %s \"$RD_OPTION_PASSWORD\" | sha256sum\n    - script: |\n        printf '%s' \"$RD_OPTION_PASSWORD\" | cut -c1-10 | tr -d '\\n'; sleep 0.3; printf '%s\\n' \"$RD_OPTION_PASSWORD\" | cut -c11-\n        head -c 16380 /dev/zero | tr '\\0' x; printf '%s' \"$RD_OPTION_PASSWORD\" | cut -c1-10 | tr -d '\\n'; sleep 0.3; echo \"${option.password}\" | cut -c11-\n",
            "secret",
        )
        .await;
    let id = stack.run_job(job, &[("password", &secret)]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:?}");

    // Delivered: the step saw the value, in both forms.
    let texts = stack.log_texts(id).await;
    let digest = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(secret.as_bytes()));
    assert_eq!(
        &texts[..4],
        [
            "arg=[SECURE]".to_string(),
            "env=[SECURE]".into(),
            "same".into(),
            format!("{digest}  -")
        ]
    );
    // Masked even when written in two pieces, and when those pieces
    // straddle the 16 KiB point where a long line is cut.
    assert_eq!(texts[4], "[SECURE]");
    let joined = texts[5..].concat();
    assert_eq!(joined, format!("{}[SECURE]", "x".repeat(16380)));

    // Found nowhere: no stream message, no KV value, no file of NATS's data
    // dir (store, keys, log), of the runner's work dir, or of its log.
    assert_eq!(
        find_in_all_streams(&stack.js, &secret).await,
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(stack.nats.data_dir(), &secret),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_containing(dir.path(), &secret),
        Vec::<std::path::PathBuf>::new()
    );
    // It is stored, sealed.
    let sealed = stack
        .js
        .get_key_value(subjects::SECRETS_BUCKET)
        .await
        .unwrap()
        .get(subjects::execution_key(id))
        .await
        .unwrap()
        .expect("sealed values stored");
    assert!(String::from_utf8_lossy(&sealed).contains("\"sealed\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_enrols_rotates_and_revokes_runners_and_manages_tokens() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.creds");
    let p = path.to_str().unwrap();
    let (code, out, err) = stack.cli(&["runner", "create", "edge", "--tags", "linux,dc1", "-o", p]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("outpost-runner --creds"), "{out}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bundle: outpost_schemas::bundle::Bundle =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(bundle.runner_id, "edge");
    assert_eq!(bundle.tags, ["dc1", "linux"]);
    assert_eq!(bundle.url, stack.nats.ws_url);
    let first = bundle.creds.clone();

    let (code, _, err) = stack.cli(&["runner", "create", "edge", "-o", p]);
    assert_eq!(code, Some(2), "a second enrolment of a name is refused");
    assert!(err.contains("already enrolled"), "{err}");
    let (code, _, err) = stack.cli(&["runner", "create", "wide", "--tags", "a,b,c,d,e"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("at most 4 tags"), "{err}");

    let (code, _, err) = stack.cli(&["runner", "rotate", "edge", "-o", p]);
    assert_eq!(code, Some(0), "{err}");
    let rotated: outpost_schemas::bundle::Bundle =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(rotated.creds, first, "new credentials");
    let (code, out, _) = stack.cli(&["runner", "enrolled"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("1 active, 1 superseded, 0 revoked"), "{out}");
    let (code, out, err) = stack.cli(&["runner", "revoke", "edge"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked runner edge"), "{out}");
    let (_, out, _) = stack.cli(&["runner", "enrolled"]);
    assert!(
        out.contains("REVOKED") && out.contains("0 active, 0 superseded, 2 revoked"),
        "{out}"
    );

    let (code, token, err) = stack.cli(&["token", "create", "ci", "--role", "default=operator"]);
    assert_eq!(code, Some(0), "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("opt_"), "{token}");
    let (_, list, _) = stack.cli(&["token", "list"]);
    assert!(list.contains("ci") && !list.contains(&token), "{list}");
    // The CLI uses OUTPOST_TOKEN; an operator cannot enrol runners.
    let out = std::process::Command::new(workspace_binary("outpost"))
        .args(["runner", "create", "nope"])
        .env("OUTPOST_API_URL", &stack.api)
        .env("OUTPOST_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not have the role"));
    let id = list
        .lines()
        .find(|l| l.contains(" ci "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, _, _) = stack.cli(&["token", "revoke", &id]);
    assert_eq!(code, Some(0));
    let out = std::process::Command::new(workspace_binary("outpost"))
        .args(["job", "list"])
        .env("OUTPOST_API_URL", &stack.api)
        .env("OUTPOST_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
}

/// Revoking pushes the runners' account JWT to nats-server. The control
/// plane's own JetStream requests, running all the while, never fail for it
/// (pushing the control plane's account too made them answer "no
/// responders" for a moment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_pushes_do_not_interrupt_the_control_planes_reads() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let (_services, js) = stack.nats.connect().await;
    let runners = js.get_key_value(subjects::RUNNERS_BUCKET).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    // Raw reads, without the control plane's retry, to see the server's
    // own behaviour.
    let reader = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut reads, mut failures) = (0u32, Vec::new());
            while !stop.is_cancelled() {
                match runners.entry("anyone").await {
                    Ok(_) => reads += 1,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (reads, failures)
        }
    });
    for i in 0..10 {
        let name = format!("gone{i}");
        stack.enrol(&name, &["edge"], dir.path()).await;
        let (status, body) = stack.post(&format!("/runners/{name}/revoke")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["connections_cut"], true, "{body}");
    }
    stop.cancel();
    let (reads, failures) = reader.await.unwrap();
    assert!(reads > 0);
    assert!(
        failures.is_empty(),
        "{} of {} reads failed during pushes: {:?}",
        failures.len(),
        reads as usize + failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// An optional secure option left empty is empty in the step, as a plain
/// one is; the run does not fail for want of stored values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_secure_option_left_empty_runs_with_an_empty_value() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let job = stack
        .load(
            "- name: maybe\n  options:\n  - name: pw\n    secure: true\n    valueExposed: true\n  sequence:\n    commands:\n    - exec: echo \"[${option.pw}][$RD_OPTION_PW]\"\n",
            "maybe",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(
        st.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        st.steps[0].reason
    );
    assert_eq!(stack.log_texts(id).await, ["[][]"]);
    // Given, it is used (and masked in the output).
    let id = stack.run_job(job, &[("pw", "hunter2")]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    assert_eq!(stack.log_texts(id).await, ["[[SECURE]][[SECURE]]"]);
}
