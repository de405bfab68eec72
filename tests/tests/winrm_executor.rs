//! Rundeck's WinRM node executor (`node-executor: WinRMPython`) on the
//! runner, against the WinRM test server (`outpost_tests::winrm_server`,
//! which pywinrm and pypsrp are run against in `winrm_protocol.rs`):
//! commands run on Windows nodes with Basic, NTLM sealed over HTTP and
//! NTLM over HTTPS with the listener's CA, their output streams while they
//! run, the plugin's exit rules hold, no secret reaches a shell or a
//! stream, and an abort ends the command and closes its shell.

use std::path::Path;

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::winrm_server::{host, Options, Recorded, WinrmServer};
use outpost_tests::*;

/// A runner tagged `win` whose key store holds the server's password at
/// `keys/win/password`, with Windows nodes reaching `server`, returned
/// once it reported them.
async fn runner(stack: &Stack, dir: &Path, server: &WinrmServer) -> RunnerGuard {
    let store = dir.join("store");
    std::fs::create_dir_all(store.join("win")).unwrap();
    std::fs::write(
        store.join("win/password"),
        format!("{}\n", server.options().password),
    )
    .unwrap();
    let ca = dir.join("winrm-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let common = format!(
        "  node-executor: WinRMPython\n  osFamily: windows\n  username: {}\n  winrm-password-storage-path: keys/win/password\n  tags: win\n",
        server.options().user
    );
    let http = server.http.port();
    let https = server.https.port();
    let nodes = format!(
        "win-basic:\n  hostname: 127.0.0.1\n  winrm-port: '{http}'\n  winrm-authtype: basic\n  winrm-shell: cmd\n  file-copier: WinRMcpPython\n{common}\
         win-ntlm:\n  hostname: 127.0.0.1\n  winrm-port: '{http}'\n  winrm-authtype: ntlm\n  file-copier: WinRMcpPython\n{common}\
         win-tls:\n  hostname: localhost\n  winrm-port: '{https}'\n  winrm-transport: https\n  winrm-certpath: {}\n  winrm-authtype: ntlm\n{common}\
         win-kill:\n  hostname: 127.0.0.1\n  winrm-port: '{http}'\n  winrm-authtype: ntlm\n  winrm-terminate-on-abort: 'true'\n  winrm-operationtimeout: '1'\n  winrm-readtimeout: '5'\n{}",
        ca.display(),
        common.replace("tags: win", "tags: slow")
    );
    let nodes_file = dir.join("resources.yaml");
    std::fs::write(&nodes_file, nodes).unwrap();
    let mut reports = stack.client.subscribe("outpost.nodes.win").await.unwrap();
    let runner = start_runner_with(&stack.nats, "win", &["win"], |o| {
        o.key_store = store.clone();
        o.nodes_file = Some(nodes_file.clone());
    });
    use futures::StreamExt;
    tokio::time::timeout(WAIT, reports.next()).await.unwrap();
    runner
}

fn job(name: &str, filter: &str, command: &str) -> String {
    format!(
        "- name: {name}\n  runnerSelector: {{filter: win}}\n  nodefilters:\n    filter: '{filter}'\n  sequence:\n    commands:\n    - exec: {command}\n"
    )
}

/// The shells a node's requests went to, in order, and how they came.
fn of_shell<'a>(seen: &'a [Recorded], shell: &str) -> Vec<&'a Recorded> {
    seen.iter()
        .filter(|r| r.shell.as_deref() == Some(shell))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_on_windows_nodes_with_basic_and_ntlm_over_http_and_https() {
    let stack = Stack::start().await;
    let server = WinrmServer::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), &server).await;

    let hello = stack
        .load(
            &job("hello", "tags: win", "\"echo hello from ${node.name}\""),
            "hello",
        )
        .await;
    let id = stack.run_job(hello, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines = stack.output_lines(id).await;
    for node in ["win-basic", "win-ntlm", "win-tls"] {
        let said: Vec<&str> = lines
            .iter()
            .filter(|e| e.node.as_deref() == Some(node))
            .map(|e| e.log.as_str())
            .collect();
        assert_eq!(said, [format!("hello from {node}")], "{lines:#?}");
        assert_eq!(st.steps[0].nodes[node].exit_code, Some(0), "{st:#?}");
    }

    // Each node's shell came as its attributes say: Basic, NTLM sealed
    // over HTTP, NTLM inside TLS; each was ended and closed.
    let seen = server.recorded();
    let created: Vec<&Recorded> = seen.iter().filter(|r| r.action == "Create").collect();
    assert_eq!(created.len(), 3, "{seen:#?}");
    let mut auths: Vec<&str> = created.iter().map(|r| r.auth).collect();
    auths.sort();
    assert_eq!(auths, ["basic", "ntlm", "ntlm-sealed"]);
    for c in &created {
        let shell = c.shell.as_deref().unwrap();
        let actions: Vec<&str> = of_shell(&seen, shell)
            .iter()
            .map(|r| r.action.as_str())
            .collect();
        assert_eq!(actions[..2], ["Create", "Command"], "{seen:#?}");
        assert_eq!(
            actions[actions.len() - 2..],
            ["Signal", "Delete"],
            "{seen:#?}"
        );
        // The step's context reaches the shell; no secret does.
        assert_eq!(c.env.get("RD_JOB_NAME").map(String::as_str), Some("hello"));
        assert!(
            c.env
                .values()
                .all(|v| !v.contains(&server.options().password)),
            "{:?}",
            c.env
        );
    }
    let basic = created.iter().find(|r| r.auth == "basic").unwrap();
    let command = of_shell(&seen, basic.shell.as_deref().unwrap())[1];
    // cmd runs the command as it is; PowerShell gets it encoded.
    assert_eq!(
        command.command.as_deref(),
        Some("echo hello from win-basic")
    );
    assert!(server.open_shells().is_empty());

    // The plugin's exit rules: PowerShell's error stream fails the node
    // with exit 1 and its text; `exit N` is the node's exit code.
    let broke = stack
        .load(
            &job(
                "broke",
                "name: win-ntlm",
                "\"Write-Output before; Write-Error 'disk full'\"",
            ),
            "broke",
        )
        .await;
    let id = stack.run_job(broke, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].nodes["win-ntlm"].exit_code, Some(1), "{st:#?}");
    let lines = stack.log_texts(id).await;
    let at = |l: &str| lines.iter().position(|x| x == l);
    assert!(at("before").is_some(), "{lines:#?}");
    assert!(
        at("Execution finished with the following error") < at("disk full"),
        "{lines:#?}"
    );
    let three = stack
        .load(&job("three", "name: win-tls", "\"exit 3\""), "three")
        .await;
    let id = stack.run_job(three, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.steps[0].nodes["win-tls"].exit_code, Some(3), "{st:#?}");
    assert_eq!(st.steps[0].nodes["win-tls"].status, StepStatus::Failed);

    assert!(
        find_in_all_streams(&stack.js, &server.options().password)
            .await
            .is_empty(),
        "the WinRM password reached a stream"
    );
}

/// Output comes while the command runs; an abort sends Signal terminate,
/// kills the remote PowerShell by the pid its preamble reported (the
/// plugin's `winrm-terminate-on-abort`), and deletes the shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_ends_the_command_and_closes_its_shell() {
    let stack = Stack::start().await;
    let server = WinrmServer::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), &server).await;
    let slow = stack
        .load(
            &job(
                "slow",
                "name: win-kill",
                "\"Write-Output started; Start-Sleep -Seconds 600; Write-Output never\"",
            ),
            "slow",
        )
        .await;
    let id = stack.run_job(slow, &[]).await;
    wait_for_async("the command's first line", || async {
        stack.output_so_far(id).await.iter().any(|l| l == "started")
    })
    .await;
    // Still running: a Receive times out on the host (after 1 s), and
    // the runner polls again.
    let seen = server
        .wait_for("a Receive after one that timed out", |r| {
            r.iter()
                .skip_while(|r| r.action != "TimedOut")
                .any(|r| r.action == "Receive")
        })
        .await;
    assert_eq!(server.running(), 1, "{seen:#?}");
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");

    let seen = server.recorded();
    let shell = seen
        .iter()
        .find(|r| {
            r.command
                .as_deref()
                .is_some_and(|c| c.contains("Start-Sleep"))
        })
        .and_then(|r| r.shell.clone())
        .expect("the command's shell");
    let ended: Vec<&str> = of_shell(&seen, &shell)
        .iter()
        .map(|r| r.action.as_str())
        .filter(|a| *a == "Signal" || *a == "Delete")
        .collect();
    assert_eq!(ended, ["Signal", "Delete"], "{seen:#?}");
    let kill = format!("taskkill /F /T /PID {}", host::PID);
    assert!(
        seen.iter()
            .any(|r| r.command.as_deref() == Some(kill.as_str())),
        "{seen:#?}"
    );
    assert_eq!(server.running(), 0);
    assert!(
        server.open_shells().is_empty(),
        "{:?}",
        server.open_shells()
    );
    let lines = stack.log_texts(id).await;
    // The preamble's marker is the runner's, not the job's output.
    assert!(
        !lines.iter().any(|l| l.contains("RUNDECK:WINRM")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l == "never"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("aborted: the WinRM shell {shell} was ended and closed")),
        "{lines:#?}"
    );
}

/// A script step goes as Rundeck sends one to Windows: copied by the
/// WinRM file copier's PowerShell (in pieces that fit cmd.exe's command
/// line, which the fake host enforces, all in one shell) to
/// `C:\WINDOWS\TEMP\…-dispatch-script.tmp.bat` with Windows line ends, run
/// with its args, then removed; on a node without that copier it is
/// refused, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_is_copied_run_with_its_args_and_removed() {
    let stack = Stack::start().await;
    let server = WinrmServer::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), &server).await;
    // Longer than any one command line.
    let filler = "x".repeat(70 * 1024);
    let yaml = format!(
        "- name: script\n  runnerSelector: {{filter: win}}\n  nodefilters:\n    filter: 'name: win-basic'\n  sequence:\n    commands:\n    - script: |\n        @echo off\n        rem {filler}\n        echo script says %1 and %2\n        exit /b 4\n      args: one two\n"
    );
    let job = stack.load(&yaml, "script").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    // Under cmd a batch file's exit code is the node's (PowerShell would
    // make it 1).
    assert_eq!(st.steps[0].nodes["win-basic"].exit_code, Some(4), "{st:#?}");
    let lines = stack.output_lines(id).await;
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.log.as_str())
        .collect();
    assert_eq!(out, ["script says one and two"], "{lines:#?}");
    let ran = server.host().ran();
    let paths: Vec<&String> = ran.iter().map(|r| &r.0).collect();
    assert_eq!(ran.len(), 1, "{paths:?}");
    let (path, body) = &ran[0];
    assert!(
        path.starts_with(r"C:\WINDOWS\TEMP\")
            && path.ends_with(&format!("-{id}-win-basic-dispatch-script.tmp.bat")),
        "{path}"
    );
    let want = format!("@echo off\r\nrem {filler}\r\necho script says %1 and %2\r\nexit /b 4\r\n");
    assert!(body == want.as_bytes(), "the script arrived changed");
    let copies = server
        .recorded()
        .iter()
        .filter(|r| {
            r.command
                .as_deref()
                .is_some_and(|c| c.contains("add-content"))
        })
        .count();
    assert!(copies > 30, "{copies} pieces for 70 KiB");
    assert!(
        server.host().files().is_empty(),
        "{:?}",
        server.host().files().keys()
    );
    assert!(server.open_shells().is_empty());

    // An aborted script is removed too: a `.ps1`, run by PowerShell.
    let slow = stack
        .load(
            "- name: slow-script\n  runnerSelector: {filter: win}\n  nodefilters:\n    filter: 'name: win-ntlm'\n  sequence:\n    commands:\n    - script: |\n        Write-Output started\n        Start-Sleep -Seconds 600\n      fileExtension: ps1\n",
            "slow-script",
        )
        .await;
    let id = stack.run_job(slow, &[]).await;
    wait_for_async("the script's first line", || async {
        stack.output_so_far(id).await.iter().any(|l| l == "started")
    })
    .await;
    assert_eq!(server.host().files().len(), 1);
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    let ran = server.host().ran();
    assert!(
        ran[1].0.ends_with("-dispatch-script.tmp.ps1"),
        "{:?}",
        ran[1].0
    );
    assert!(
        server.host().files().is_empty(),
        "{:?}",
        server.host().files().keys()
    );
    assert_eq!(server.running(), 0);
    assert!(server.open_shells().is_empty());

    // Without the copier: refused before anything reaches the host.
    let before = server.recorded().len();
    let other = yaml
        .replace("name: script", "name: no-copier")
        .replace("name: win-basic", "name: win-tls");
    let job = stack.load(&other, "no-copier").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    let reason = st.steps[0].nodes["win-tls"]
        .reason
        .clone()
        .unwrap_or_default();
    assert!(
        reason.contains(
            "not supported yet: a script step on a WinRM node whose file-copier is not set"
        ),
        "{reason}"
    );
    assert_eq!(server.recorded().len(), before);
}
