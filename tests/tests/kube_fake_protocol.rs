//! The fake Kubernetes API (`outpost_tests::kube_api`) speaks the real
//! protocol: Debian's kubectl 1.20 and the official Python client, both
//! unmodified, list, read, follow the logs of, exec into and delete its
//! pods and Jobs. Without this, a test of Outpost's Kubernetes steps would
//! only show that Outpost agrees with the fake.

use std::path::Path;
use std::process::Stdio;

use outpost_tests::kube_api::{kubectl_1_20, process_alive, python_with_kubernetes, FakeKube};
use outpost_tests::{wait_for, WAIT};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// kubectl with its own cache (discovery is cached for 10 minutes per
/// host:port) and HOME, so nothing leaks between tests or into ~/.kube.
async fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        Command::new(kubectl_1_20())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(home.join("cache"))
            .args(args)
            .env("HOME", home)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {WAIT:?}"))
    .expect("run kubectl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(out: (Option<i32>, String, String), what: &str) -> String {
    assert_eq!(out.0, Some(0), "kubectl {what} failed: {}{}", out.1, out.2);
    out.1
}

/// Set up for every script: `api` (CoreV1Api), `batch` (BatchV1Api),
/// `stream`, and `out`, the dict printed as JSON at the end.
const PRELUDE: &str = "\
import json, sys
from kubernetes import client, config, watch
from kubernetes.stream import stream
config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
batch = client.BatchV1Api()
out = {}
";

fn python_command(kubeconfig: &Path, script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python_with_kubernetes());
    cmd.arg("-c")
        .arg(format!(
            "{PRELUDE}{script}\nprint(json.dumps(out, default=str))\n"
        ))
        .arg(kubeconfig)
        .args(args);
    cmd
}

/// Runs a script with the Python client; returns its `out`.
async fn python(kubeconfig: &Path, script: &str, args: &[&str]) -> Value {
    let out = tokio::time::timeout(
        WAIT,
        python_command(kubeconfig, script, args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the Python client did not finish within {WAIT:?}"))
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the script printed no JSON ({e}): {stdout}"))
}

fn phase(fake: &FakeKube, ns: &str, name: &str) -> String {
    fake.pod(ns, name)
        .map(|p| p["status"]["phase"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// A FIFO the test writes to open a gate in a container's command, so that
/// "the container is still running" is a fact, not a race.
fn fifo(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
    path.to_string_lossy().into_owned()
}

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<String> {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no line within {WAIT:?}"))
        .expect("read a line")
}

async fn open_gate(fifo: String) {
    // Opening blocks until the container's shell opens its end.
    tokio::task::spawn_blocking(move || std::fs::write(fifo, "go\n"))
        .await
        .unwrap()
        .expect("write the gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_lists_gets_and_reads_logs() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    fake.add_pod(
        "ns1",
        "web-1",
        &[("app", "web")],
        &["main"],
        ["sh", "-c", "echo hello; echo world"],
    );
    fake.add_pod(
        "ns1",
        "idle",
        &[("app", "db")],
        &["main"],
        Vec::<String>::new(),
    );
    fake.add_pod("other", "elsewhere", &[], &["main"], Vec::<String>::new());
    wait_for("web-1 to complete", || {
        phase(&fake, "ns1", "web-1") == "Succeeded"
    })
    .await;

    // The server-side Table: kubectl prints its columns, not just NAME/AGE.
    let table = kubectl_ok(
        kubectl(&kc, dir.path(), &["get", "pods", "-n", "ns1"]).await,
        "get pods",
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    assert_eq!(rows.len(), 3, "two pods in ns1 only: {table}");
    assert_eq!(rows[1][..4], ["idle", "1/1", "Running", "0"], "{table}");
    assert_eq!(rows[2][..4], ["web-1", "0/1", "Completed", "0"], "{table}");

    let selected = kubectl_ok(
        kubectl(
            &kc,
            dir.path(),
            &["get", "pods", "-n", "ns1", "-l", "app=web"],
        )
        .await,
        "get pods -l",
    );
    let names: Vec<&str> = selected
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["web-1"], "{selected}");

    let json = kubectl_ok(
        kubectl(
            &kc,
            dir.path(),
            &["get", "pod", "web-1", "-n", "ns1", "-o", "json"],
        )
        .await,
        "get pod -o json",
    );
    let pod: Value = serde_json::from_str(&json).expect("kubectl prints the pod as JSON");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "web-1");
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );

    let logs = kubectl_ok(
        kubectl(&kc, dir.path(), &["logs", "web-1", "-n", "ns1"]).await,
        "logs",
    );
    assert_eq!(logs, "hello\nworld\n");

    let (code, _, err) = kubectl(&kc, dir.path(), &["get", "pod", "nope", "-n", "ns1"]).await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("Error from server (NotFound): pods \"nope\" not found"),
        "kubectl decodes the Status: {err}"
    );

    let version = kubectl_ok(
        kubectl(&kc, dir.path(), &["version", "-o", "json"]).await,
        "version",
    );
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.20.2");
    assert_eq!(
        version["clientVersion"]["gitVersion"], "v1.20.2",
        "the kubectl under test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_follows_a_log_until_the_container_ends() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    let gate = fifo(dir.path(), "gate");
    let held = format!("echo one; read x < {gate}; echo two");
    fake.add_pod("ns", "stream", &[], &["main"], ["sh", "-c", held.as_str()]);
    let mut child = Command::new(kubectl_1_20())
        .arg("--kubeconfig")
        .arg(&kc)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["logs", "-f", "stream", "-n", "ns"])
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kubectl logs -f");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("one"));
    // The container is held at its gate: "one" came while it ran.
    assert_eq!(phase(&fake, "ns", "stream"), "Running");
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl is still following"
    );
    open_gate(gate).await;
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("two"));
    assert_eq!(
        next_line(&mut lines).await,
        None,
        "the log ends with the container"
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "kubectl logs -f: {status}");
    wait_for("the pod to succeed", || {
        phase(&fake, "ns", "stream") == "Succeeded"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_lists_reads_and_follows() {
    let fake = FakeKube::start_with_token("s3cret").await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    fake.add_pod(
        "ns",
        "web-1",
        &[("app", "web")],
        &["main"],
        ["sh", "-c", "echo hello; echo world >&2"],
    );
    fake.add_pod(
        "ns",
        "db-1",
        &[("app", "db")],
        &["main"],
        Vec::<String>::new(),
    );
    fake.add_pod("ns", "two", &[], &["a", "b"], Vec::<String>::new());
    fake.add_pod(
        "other",
        "web-2",
        &[("app", "web")],
        &["main"],
        Vec::<String>::new(),
    );
    let gate = fifo(dir.path(), "gate");
    let held = format!("echo one; read x < {gate}; echo two");
    fake.add_pod("ns", "stream", &[], &["main"], ["sh", "-c", held.as_str()]);
    wait_for("web-1 to complete", || {
        phase(&fake, "ns", "web-1") == "Succeeded"
    })
    .await;

    let out = python(
        &kc,
        r#"
out["selected"] = [p.metadata.name for p in api.list_namespaced_pod("ns", label_selector="app==web", watch=False).items]
out["not_db"] = sorted(p.metadata.name for p in api.list_namespaced_pod("ns", label_selector="app!=db").items)
out["by_name"] = [p.metadata.name for p in api.list_namespaced_pod("ns", field_selector="metadata.name=db-1").items]
out["everywhere"] = sorted(p.metadata.name for p in api.list_pod_for_all_namespaces(label_selector="app=web").items)
pod = api.read_namespaced_pod("web-1", "ns", pretty="True")
out["phase"] = pod.status.phase
out["exit_code"] = pod.status.container_statuses[0].state.terminated.exit_code
out["db_ready"] = api.read_namespaced_pod_status("db-1", "ns").status.container_statuses[0].ready
out["log"] = api.read_namespaced_pod_log("web-1", "ns")
out["tail"] = api.read_namespaced_pod_log("web-1", "ns", tail_lines=1)
out["watched"] = list(watch.Watch().stream(api.read_namespaced_pod_log, "web-1", "ns"))
try:
    api.read_namespaced_pod_log("two", "ns")
except client.ApiException as e:
    out["no_container"] = [e.status, json.loads(e.body)["message"]]
out["log_b"] = api.read_namespaced_pod_log("two", "ns", container="b")
try:
    api.read_namespaced_pod("nope", "ns")
except client.ApiException as e:
    out["missing"] = [e.status, json.loads(e.body)["reason"]]

resp = api.read_namespaced_pod_log("stream", "ns", follow=True, _preload_content=False)
lines = iter(resp)
out["first"] = next(lines).decode()
open(sys.argv[2], "w").write("go\n")  # the container waits for this
out["rest"] = [l.decode() for l in lines]

wrong = client.Configuration()
wrong.host = api.api_client.configuration.host
wrong.api_key = {"authorization": "Bearer wrong"}
try:
    client.CoreV1Api(client.ApiClient(wrong)).list_namespaced_pod("ns")
except client.ApiException as e:
    out["wrong_token"] = [e.status, json.loads(e.body)["reason"]]
"#,
        &[&gate],
    )
    .await;
    assert_eq!(out["selected"], serde_json::json!(["web-1"]));
    assert_eq!(out["not_db"], serde_json::json!(["stream", "two", "web-1"]));
    assert_eq!(out["by_name"], serde_json::json!(["db-1"]));
    assert_eq!(out["everywhere"], serde_json::json!(["web-1", "web-2"]));
    assert_eq!(out["phase"], "Succeeded");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["db_ready"], true);
    assert_eq!(
        out["log"], "hello\nworld\n",
        "stdout and stderr, as the kubelet logs both"
    );
    assert_eq!(out["tail"], "world\n");
    assert_eq!(out["watched"], serde_json::json!(["hello", "world"]));
    assert_eq!(
        out["no_container"],
        serde_json::json!([
            400,
            "a container name must be specified for pod two, choose one of: [a b]"
        ])
    );
    assert_eq!(out["log_b"], "");
    assert_eq!(out["missing"], serde_json::json!([404, "NotFound"]));
    assert_eq!(out["first"], "one\n");
    assert_eq!(out["rest"], serde_json::json!(["two\n"]));
    assert_eq!(out["wrong_token"], serde_json::json!([401, "Unauthorized"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_execs_with_streams_status_and_stdin() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    fake.add_pod("ns", "box", &[], &["main"], Vec::<String>::new());
    fake.add_pod("ns", "two", &[], &["a", "b"], Vec::<String>::new());

    let out = python(
        &kc,
        r#"
resp = stream(api.connect_get_namespaced_pod_exec, "box", "ns",
              command=["sh", "-c", "echo out; echo err >&2; exit 3"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=60)
out["stdout"] = resp.read_stdout()
out["stderr"] = resp.read_stderr()
out["code"] = resp.returncode

resp = stream(api.connect_get_namespaced_pod_exec, "box", "ns",
              command=["sh", "-c", "read x; echo got $x"],
              stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
resp.write_stdin("hi\n")
resp.run_forever(timeout=60)
out["stdin_stdout"] = resp.read_stdout()
out["stdin_code"] = resp.returncode

out["preloaded"] = stream(api.connect_get_namespaced_pod_exec, "box", "ns",
                          command=["printf", "%s|", "a b", "c"],
                          stderr=True, stdin=False, stdout=True, tty=False)
try:
    stream(api.connect_get_namespaced_pod_exec, "two", "ns", command=["true"],
           stderr=True, stdin=False, stdout=True, tty=False)
except client.ApiException as e:
    out["no_container"] = [e.status, str(e.reason)]
"#,
        &[],
    )
    .await;
    assert_eq!(out["stdout"], "out\n");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(
        out["code"], 3,
        "from the NonZeroExitCode Status on channel 3"
    );
    assert_eq!(out["stdin_stdout"], "got hi\n");
    assert_eq!(out["stdin_code"], 0);
    assert_eq!(
        out["preloaded"], "a b|c|",
        "each argv element is one `command` parameter"
    );
    assert_eq!(out["no_container"][0], 0, "a refused handshake: {out}");
    assert!(
        out["no_container"][1].as_str().unwrap().contains("400"),
        "{out}"
    );

    let execs = fake.execs();
    let codes: Vec<Option<i32>> = execs.iter().map(|e| e.exit_code).collect();
    assert_eq!(codes, [Some(3), Some(0), Some(0)], "{execs:?}");
    assert_eq!(execs[2].command, ["printf", "%s|", "a b", "c"]);
    for e in &execs {
        assert!(
            !process_alive(e.pid.expect("it ran")),
            "{e:?} left its process"
        );
    }
}

/// As on a kubelet, a command whose client closed its session goes on;
/// it ends with its pod. (So a client that wants it ended must end it:
/// the runner's Kubernetes step does, with a second exec.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_an_exec_early_leaves_its_command_to_its_pod() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    fake.add_pod("ns", "box", &[], &["main"], Vec::<String>::new());
    let mut child = python_command(
        &kc,
        r#"
resp = stream(api.connect_get_namespaced_pod_exec, "box", "ns", command=["sleep", "1000"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
print("open", flush=True)
sys.stdin.readline()
resp.close()
print("closed", flush=True)
sys.stdin.readline()
api.delete_namespaced_pod("box", "ns")
print("deleted", flush=True)
"#,
        &[],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .expect("start python3");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut stdout).await.as_deref(), Some("open"));
    wait_for("the exec to start", || {
        fake.execs().first().is_some_and(|e| e.pid.is_some())
    })
    .await;
    let pid = fake.execs()[0].pid.unwrap();
    assert!(process_alive(pid), "sleep runs while the session is open");

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"close\n").await.unwrap();
    assert_eq!(next_line(&mut stdout).await.as_deref(), Some("closed"));
    wait_for("the fake to see the client go", || {
        fake.execs()[0].client_closed
    })
    .await;
    assert!(process_alive(pid), "the command outlives its session");
    assert_eq!(fake.execs()[0].exit_code, None);

    stdin.write_all(b"delete\n").await.unwrap();
    drop(stdin);
    assert_eq!(next_line(&mut stdout).await.as_deref(), Some("deleted"));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "python: {status}");
    wait_for("the exec to be reaped", || {
        fake.execs()[0].exit_code.is_some()
    })
    .await;
    assert_eq!(
        fake.execs()[0].exit_code,
        Some(137),
        "SIGKILLed with its pod"
    );
    assert!(!process_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_deletes_pods_and_their_processes() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    fake.add_pod("ns", "sleeper", &[], &["main"], ["sleep", "1000"]);
    fake.add_pod(
        "ns",
        "batch-a",
        &[("job-name", "x")],
        &["main"],
        ["sleep", "1000"],
    );
    fake.add_pod(
        "ns",
        "batch-b",
        &[("job-name", "x")],
        &["main"],
        ["sleep", "1000"],
    );
    fake.add_pod(
        "ns",
        "keeper",
        &[("job-name", "y")],
        &["main"],
        ["sleep", "1000"],
    );
    let pid = |name: &str| fake.container_pid("ns", name, "main").expect("started");
    let (sleeper, a, b, keeper) = (
        pid("sleeper"),
        pid("batch-a"),
        pid("batch-b"),
        pid("keeper"),
    );
    for p in [sleeper, a, b, keeper] {
        assert!(process_alive(p));
    }

    let out = python(
        &kc,
        r#"
pod = api.delete_namespaced_pod("sleeper", "ns", grace_period_seconds=5, propagation_policy="Foreground", pretty="True")
out["deleted"] = [pod.metadata.name, pod.metadata.deletion_timestamp is not None]
try:
    api.delete_namespaced_pod("sleeper", "ns")
except client.ApiException as e:
    out["again"] = e.status
api.delete_collection_namespaced_pod("ns", label_selector="job-name=x")
out["left"] = [p.metadata.name for p in api.list_namespaced_pod("ns").items]
"#,
        &[],
    )
    .await;
    assert_eq!(out["deleted"], serde_json::json!(["sleeper", true]));
    assert_eq!(out["again"], 404);
    assert_eq!(out["left"], serde_json::json!(["keeper"]));
    // Each DELETE returned after the processes were killed and reaped.
    for p in [sleeper, a, b] {
        assert!(!process_alive(p), "pid {p} outlived its pod");
    }
    assert!(process_alive(keeper), "an unselected pod is untouched");
    assert_eq!(fake.pods(), [("ns".to_string(), "keeper".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_runs_and_deletes_jobs() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    let job = |name: &str, script: &str, backoff: u32| {
        serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
                }},
            },
        })
        .to_string()
    };
    let created = python(
        &kc,
        r#"
for body in sys.argv[2:]:
    batch.create_namespaced_job("ns", json.loads(body))
try:
    batch.create_namespaced_job("ns", json.loads(sys.argv[2]))
except client.ApiException as e:
    out["duplicate"] = [e.status, json.loads(e.body)["reason"]]
bad = json.loads(sys.argv[2])
bad["metadata"]["name"] = "always"
del bad["spec"]["template"]["spec"]["restartPolicy"]
try:
    batch.create_namespaced_job("ns", bad)
except client.ApiException as e:
    out["always"] = e.status
"#,
        &[
            &job("ok", "echo job ran", 6),
            &job("bad", "exit 2", 1),
            &job("long", "sleep 1000", 6),
        ],
    )
    .await;
    assert_eq!(
        created["duplicate"],
        serde_json::json!([409, "AlreadyExists"])
    );
    assert_eq!(
        created["always"], 422,
        "a Job's pods may not restart Always"
    );

    let condition = |name: &str| {
        fake.job("ns", name).and_then(|j| {
            j["status"]["conditions"][0]["type"]
                .as_str()
                .map(String::from)
        })
    };
    wait_for("job ok to complete", || {
        condition("ok").as_deref() == Some("Complete")
    })
    .await;
    wait_for("job bad to fail", || {
        condition("bad").as_deref() == Some("Failed")
    })
    .await;
    wait_for("job long to start", || {
        fake.job("ns", "long")
            .is_some_and(|j| j["status"]["active"] == 1)
    })
    .await;

    let out = python(
        &kc,
        r#"
job = batch.read_namespaced_job_status("ok", "ns")
out["ok"] = [job.status.succeeded, job.status.completion_time is not None, job.status.start_time is not None]
pods = api.list_namespaced_pod("ns", label_selector="job-name==ok").items
out["ok_pods"] = len(pods)
out["ok_log"] = api.read_namespaced_pod_log(pods[0].metadata.name, "ns")
out["ok_owner"] = pods[0].metadata.owner_references[0].uid == job.metadata.uid
job = batch.read_namespaced_job("bad", "ns")
out["bad"] = [job.status.failed, job.status.succeeded, job.status.completion_time]
out["bad_pods"] = len(api.list_namespaced_pod("ns", label_selector="job-name=bad").items)
batch.delete_namespaced_job("ok", "ns", body=client.V1DeleteOptions(propagation_policy="Background"))
batch.delete_namespaced_job("long", "ns")
out["jobs"] = sorted(j.metadata.name for j in batch.list_namespaced_job("ns").items)
out["pods"] = sorted(p.metadata.labels["job-name"] for p in api.list_namespaced_pod("ns").items)
"#,
        &[],
    )
    .await;
    assert_eq!(out["ok"], serde_json::json!([1, true, true]));
    assert_eq!(out["ok_pods"], 1);
    assert_eq!(out["ok_log"], "job ran\n");
    assert_eq!(out["ok_owner"], true);
    assert_eq!(
        out["bad"],
        serde_json::json!([2, null, null]),
        "backoffLimit 1: two pods failed, and a failed Job has no completionTime"
    );
    assert_eq!(out["bad_pods"], 2);
    assert_eq!(out["jobs"], serde_json::json!(["bad"]));
    // Background took ok's pod; batch/v1's default orphaned long's.
    assert_eq!(out["pods"], serde_json::json!(["bad", "bad", "long"]));
    let long_pod = fake
        .pods()
        .into_iter()
        .find(|(_, name)| name.starts_with("long-"))
        .expect("long's pod")
        .1;
    assert_eq!(long_pod.len(), "long-".len() + 5, "{long_pod}");
    let pid = fake.container_pid("ns", &long_pod, "main").unwrap();
    assert!(process_alive(pid), "an orphaned pod keeps running");
    let orphan = fake.pod("ns", &long_pod).unwrap();
    assert!(orphan["metadata"]["ownerReferences"].is_null(), "{orphan}");
}

/// The other kinds, as the plugin's generic steps call them (its
/// `create-from-yaml.py`, `delete.py` and `deployment-wait.py`): create,
/// read, delete, a refused duplicate and a refused kind, and a
/// Deployment's rollout progressing with each read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_creates_reads_and_deletes_the_other_kinds() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig(dir.path());
    let out = python(
        &kc,
        r#"
import yaml
apps = client.AppsV1Api()
net = client.NetworkingV1Api()
storage = client.StorageV1Api()
dep = yaml.safe_load("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
""")
out["created"] = apps.create_namespaced_deployment(body=dep, namespace="shop", pretty="true").metadata.uid is not None
try:
    apps.create_namespaced_deployment(body=dep, namespace="shop")
except client.ApiException as e:
    out["duplicate"] = [e.status, json.loads(e.body)["reason"]]
ready = []
for _ in range(3):
    s = apps.read_namespaced_deployment("web", "shop", pretty="True").status
    ready.append([s.ready_replicas, s.unavailable_replicas])
out["ready"] = ready
api.create_namespaced_config_map(namespace="shop", body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}})
out["cm"] = api.read_namespaced_config_map("cfg", "shop").data
net.create_namespaced_ingress(body={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "in"}}, namespace="shop")
storage.create_storage_class(body={"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"}, "provisioner": "x"})
try:
    api.create_namespaced_service(namespace="shop", body=dep)
except client.ApiException as e:
    out["wrong_kind"] = e.status
d = apps.delete_namespaced_deployment("web", "shop", body=client.V1DeleteOptions(propagation_policy="Foreground", grace_period_seconds=5))
out["deleted"] = d.kind if hasattr(d, "kind") else str(d)
storage.delete_storage_class("fast", body=client.V1DeleteOptions())
try:
    apps.read_namespaced_deployment("web", "shop")
except client.ApiException as e:
    out["gone"] = e.status
"#,
        &[],
    )
    .await;
    assert_eq!(out["created"], true);
    assert_eq!(out["duplicate"], serde_json::json!([409, "AlreadyExists"]));
    assert_eq!(
        out["ready"],
        serde_json::json!([[1, 1], [2, null], [2, null]])
    );
    assert_eq!(out["cm"], serde_json::json!({"a": "1"}));
    assert_eq!(out["wrong_kind"], 400);
    assert_eq!(out["gone"], 404);
    assert_eq!(
        fake.objects(),
        [
            (
                "configmaps".to_string(),
                "shop".to_string(),
                "cfg".to_string()
            ),
            (
                "ingresses".to_string(),
                "shop".to_string(),
                "in".to_string()
            ),
        ]
    );
    let deleted = fake.deleted_objects();
    assert_eq!(
        deleted[0],
        (
            "deployments".to_string(),
            "shop".to_string(),
            "web".to_string(),
            Some("Foreground".to_string()),
            Some(5)
        )
    );
    assert_eq!(deleted[1].0, "storageclasses");
    assert_eq!(deleted[1].1, "");
}
