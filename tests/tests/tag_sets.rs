//! Runners' `tagsets` requests are answered from the registry's in-memory
//! index of `OUTPOST_TAGSETS`: no JetStream consumer per request (a key scan
//! made one each time, and 200 runners made them faster than the server
//! retired them), and a set registered later is served and announced.

use std::time::{Duration, Instant};

use futures::StreamExt;
use outpost_schemas::rpc::TagSetsReply;
use outpost_schemas::subjects;
use outpost_tests::*;

/// A connection as runner `r1` on the open test NATS: the registry answers
/// only into the asking runner's own inbox.
async fn as_runner(stack: &Stack) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .custom_inbox_prefix(outpost_services::security::runner_inbox_prefix("r1"))
        .connect(&stack.nats.client_url)
        .await
        .unwrap()
}

async fn ask(runner: &async_nats::Client, tags: &[&str]) -> Vec<String> {
    let body = serde_json::json!({ "tags": tags }).to_string();
    let reply = runner
        .request(subjects::rpc("r1", subjects::rpc::TAGSETS), body.into())
        .await
        .unwrap();
    let reply: TagSetsReply = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&reply.payload)));
    reply.tokens
}

/// Runs a job for `tag` (no runner has it, so it waits) and waits until
/// the tag set is registered.
async fn register(stack: &Stack, tag: &str) {
    let job = stack
        .load(
            &format!("- name: for-{tag}\n  runnerSelector:\n    filter: {tag}\n  sequence:\n    commands:\n    - exec: 'true'\n"),
            &format!("for-{tag}"),
        )
        .await;
    stack.run_job(job, &[]).await;
    let sets = stack
        .js
        .get_key_value(subjects::TAGSETS_BUCKET)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(sets.get(tag).await, Ok(Some(_))) {
        assert!(Instant::now() < deadline, "tag set {tag} not registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_set_requests_read_the_index_and_create_no_consumer() {
    let stack = Stack::start().await;
    let r1 = as_runner(&stack).await;
    register(&stack, "blue").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ask(&r1, &["blue", "green"])
        .await
        .contains(&"blue".to_string())
    {
        assert!(Instant::now() < deadline, "the index never served `blue`");
    }
    for _ in 0..200 {
        assert_eq!(ask(&r1, &["blue", "green"]).await, ["blue"]);
    }
    assert_eq!(ask(&r1, &["green"]).await, Vec::<String>::new());
    let mut stream = stack
        .js
        .get_stream(format!("KV_{}", subjects::TAGSETS_BUCKET))
        .await
        .unwrap();
    let consumers = stream.info().await.unwrap().state.consumer_count;
    assert_eq!(consumers, 1, "only the registry's own watch");

    // A set registered now is served, and announced for runners to ask again.
    let mut changed = stack
        .client
        .subscribe(subjects::TAGSETS_CHANGED)
        .await
        .unwrap();
    stack.client.flush().await.unwrap();
    register(&stack, "green").await;
    tokio::time::timeout(Duration::from_secs(20), changed.next())
        .await
        .expect("no tagsets.changed notice");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut got = ask(&r1, &["blue", "green"]).await;
        got.sort();
        if got.len() == 2 {
            assert_eq!(got, ["blue", "green"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index never served `green`: {got:?}"
        );
    }
}

/// Two plugin sets whose readable lane names agree (`com.a.Step`,
/// `org.b.step`) get two lanes: the second takes its hashed name, and each
/// keeps its own on every later dispatch. A shared lane would have runners
/// bind it by the first set's plugins and receive the second's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_sets_whose_lane_names_collide_get_lanes_of_their_own() {
    use outpost_schemas::job::{TagSet, Target};
    use outpost_services::store::topology;
    let stack = Stack::start().await;
    let registry = stack
        .js
        .get_key_value(subjects::TAGSETS_BUCKET)
        .await
        .unwrap();
    let target = Target::Tags(TagSet::new(vec!["dc".to_string()]).unwrap());
    let a: std::collections::BTreeSet<String> = ["com.a.Step".to_string()].into();
    let b: std::collections::BTreeSet<String> = ["org.b.step".to_string()].into();
    assert_eq!(subjects::lane(&a), subjects::lane(&b));
    let first = topology::ensure_lane(&stack.js, &registry, &a, &target)
        .await
        .unwrap();
    let second = topology::ensure_lane(&stack.js, &registry, &b, &target)
        .await
        .unwrap();
    assert_eq!(first, "step");
    assert_eq!(second, subjects::hashed_lane(&b));
    for (set, lane) in [(&a, &first), (&b, &second)] {
        let again = topology::ensure_lane(&stack.js, &registry, set, &target)
            .await
            .unwrap();
        assert_eq!(&again, lane);
        // Each lane's entry names its own plugins, which runners bind by.
        let raw = registry
            .get(subjects::lane_key(lane, &["dc".to_string()]))
            .await
            .unwrap()
            .unwrap();
        let entry: outpost_schemas::rpc::LaneTarget = serde_json::from_slice(&raw).unwrap();
        assert_eq!(entry.plugins, set.iter().cloned().collect::<Vec<_>>());
        stack
            .js
            .get_stream(subjects::lane_stream(lane))
            .await
            .unwrap();
    }
}
