//! Rundeck's job `retry`: a failed execution is retried as a new one, linked
//! to the first, with the same option values (secure ones too), after the
//! job's delay. A timeout is retried; an abort is not.

use outpost_schemas::state::{ExecutionState, ExecutionStatus};
use outpost_tests::*;
use uuid::Uuid;

/// Follows the chain of attempts from `first` to the one that was not
/// retried.
async fn attempts(stack: &Stack, first: Uuid) -> Vec<ExecutionState> {
    let mut chain = vec![stack.wait_terminal(first).await];
    while let Some(next) = chain.last().unwrap().retry_execution_id {
        assert!(chain.len() < 10, "retries do not end: {chain:#?}");
        chain.push(stack.wait_terminal(next).await);
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_execution_is_retried_after_its_delay_with_the_same_options() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let job = stack
        .load(
            r#"
- name: flaky
  retry:
    retry: ${option.tries}
    delay: 1s
  options:
  - name: tries
    value: '2'
  - name: pw
    secure: true
    valueExposed: true
  sequence:
    commands:
    - exec: echo "attempt ${job.retryAttempt} first ${job.retryInitialExecId} previous ${job.retryPrevExecId}"; test "$RD_OPTION_PW" = hunter2 && test ${job.retryAttempt} -ge 2
"#,
            "flaky",
        )
        .await;
    let (status, body) = stack.try_run(job, &[("tries", "two")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("the value for 'retry' was not a valid integer: `two`"),
        "{body}"
    );

    let first = stack.run_job(job, &[("pw", "hunter2")]).await;
    let chain = attempts(&stack, first).await;
    let statuses: Vec<ExecutionStatus> = chain.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            ExecutionStatus::FailedWithRetry,
            ExecutionStatus::FailedWithRetry,
            ExecutionStatus::Succeeded
        ],
        "{chain:#?}"
    );
    assert!(chain[0].retry.is_none());
    for (i, attempt) in chain.iter().enumerate().skip(1) {
        let r = attempt.retry.as_ref().expect("linked to its first attempt");
        assert_eq!(r.attempt, i as u32);
        assert_eq!(r.original_execution_id, first);
        assert_eq!(r.previous_execution_id, chain[i - 1].id);
        assert_eq!(attempt.options, chain[0].options, "the same option values");
        // The delay is waited out after the previous attempt ended.
        let waited = attempt.started_at.unwrap() - chain[i - 1].finished_at.unwrap();
        assert!(
            waited >= chrono::Duration::seconds(1),
            "attempt {i} started {waited} after the previous one ended"
        );
    }
    assert_eq!(
        stack.log_texts(chain[0].id).await[0],
        "attempt 0 first 0 previous 0"
    );
    assert_eq!(
        stack.log_texts(chain[2].id).await,
        [format!("attempt 2 first {first} previous {}", chain[1].id)]
    );

    // The API and the CLI show the links.
    let shown = stack.execution(chain[1].id).await;
    assert_eq!(shown.retry_execution_id, Some(chain[2].id));
    assert_eq!(
        serde_json::to_value(stack.execution(first).await.status).unwrap(),
        "failed-with-retry",
        "Rundeck's word"
    );
    let (code, out, err) = stack.cli(&["exec", "show", &chain[1].id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!(
            "retry:   attempt 2, retrying {first} (the first: {first})"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("retried: by {}", chain[2].id)),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_execution_is_retried_and_an_aborted_one_is_not() {
    let stack = Stack::start().await;
    let yaml = "- name: slow\n  retry: '1'\n  timeout: 1s\n  sequence:\n    commands:\n    - exec: sleep 1000\n\
                - name: stopped\n  retry: '3'\n  sequence:\n    commands:\n    - exec: echo started; exec sleep 1000\n";
    let slow = stack.load(yaml, "slow").await;
    let stopped = stack.load(yaml, "stopped").await;

    let chain = attempts(&stack, stack.run_job(slow, &[]).await).await;
    let statuses: Vec<ExecutionStatus> = chain.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [ExecutionStatus::FailedWithRetry, ExecutionStatus::TimedOut],
        "{chain:#?}"
    );

    let id = stack.run_job(stopped, &[]).await;
    stack
        .wait_state(id, "the step running", |s| {
            s.steps[0].status == outpost_schemas::state::StepStatus::Running
        })
        .await;
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted);
    assert_eq!(st.retry_execution_id, None, "an abort is not retried");
}
