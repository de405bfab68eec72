//! Rundeck's log limit (`loglimit`, `loglimitAction`, `loglimitStatus`),
//! enforced by the runner on the output it reads: a flood is stopped where
//! it starts, and the count carries from step to step across runners.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_floods_its_output_is_halted_on_its_runner() {
    let stack = Stack::start().await;
    let _edge = start_runner(&stack.nats, "edge", &["edge"]);
    // A word unique to this test, to find exactly its process.
    let word = format!("flood-{}", std::process::id());
    let yaml = format!(
        "- name: flood\n  loglimit: '100'\n  runnerSelector: {{filter: edge}}\n  sequence:\n    keepgoing: true\n    commands:\n    - exec: yes {word}\n    - exec: echo never\n\
         - name: flood-aborted\n  loglimit: 1KB\n  loglimitStatus: aborted\n  runnerSelector: {{filter: edge}}\n  sequence:\n    commands:\n    - exec: yes {word}\n"
    );
    let flood = stack.load(&yaml, "flood").await;
    let id = stack.run_job(flood, &[]).await;
    let st = stack.wait_terminal(id).await;
    // Halted: the run stops there, keepgoing or not, as in Rundeck.
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].status, StepStatus::Failed);
    assert_eq!(
        st.steps[0].reason.as_deref(),
        Some("Log output limit exceeded: Maximum Line count: 100, action: halt")
    );
    assert_ne!(st.steps[1].status, StepStatus::Succeeded, "{st:#?}");
    let lines = stack.log_texts(id).await;
    assert_eq!(lines.len(), 101, "100 lines, then the limit's message");
    assert!(lines[..100].iter().all(|l| *l == word));
    assert_eq!(
        lines[100],
        "Log output limit exceeded: Maximum Line count: 100, action: halt"
    );
    assert!(
        !process_running(&format!("yes {word}")),
        "the flood survived its halt"
    );

    // `loglimitStatus: aborted`, and a size: 1 KiB of output.
    let aborted = stack.load(&yaml, "flood-aborted").await;
    let id = stack.run_job(aborted, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    let lines = stack.log_texts(id).await;
    let kept: usize = lines[..lines.len() - 1].iter().map(String::len).sum();
    assert!(kept <= 1024, "{kept} bytes kept");
    assert_eq!(
        lines.last().unwrap(),
        "Log output limit exceeded: Maximum size in Bytes: 1024, action: halt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_counts_the_whole_execution_across_runners_and_the_run_goes_on() {
    let stack = Stack::start().await;
    let _a = start_runner(&stack.nats, "runner-a", &["a"]);
    let _b = start_runner(&stack.nats, "runner-b", &["b"]);
    let job = stack
        .load(
            "- name: chatty\n  loglimit: '5'\n  loglimitAction: truncate\n  sequence:\n    commands:\n    - exec: seq 1 3\n      runnerSelector: {filter: a}\n    - exec: seq 4 10\n      runnerSelector: {filter: b}\n    - exec: echo after\n",
            "chatty",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(
        [
            st.steps[0].runner_id.as_deref(),
            st.steps[1].runner_id.as_deref()
        ],
        [Some("runner-a"), Some("runner-b")]
    );
    assert_eq!(
        stack.log_texts(id).await,
        [
            "1",
            "2",
            "3",
            "4",
            "5",
            "Log output limit exceeded: Maximum Line count: 5, action: truncate"
        ]
    );
}
