//! The WinRM test server speaks the real protocol: pywinrm (what
//! Rundeck's WinRM plugin runs) and pypsrp, from PyPI, run commands
//! against it with Basic, with NTLM sealed over HTTP, and with NTLM over
//! HTTPS, and a wrong password is refused as Windows refuses it.

use std::process::Stdio;

use outpost_tests::winrm_server::{Options, WinrmServer};
use serde_json::Value;

/// Runs `client` (pywinrm's `Session.run_cmd`/`run_ps`, or pypsrp's
/// `Client.execute_cmd`) in a real python3 and returns what it printed.
const SCRIPT: &str = r#"
import json, sys
client, url, auth, user, password, kind, command = sys.argv[1:8]
if client == "pywinrm":
    import winrm
    s = winrm.Session(url, auth=(user, password), transport=auth, server_cert_validation="ignore")
    r = s.run_ps(command) if kind == "ps" else s.run_cmd(command)
    out = {"out": r.std_out.decode(), "err": r.std_err.decode(), "code": r.status_code}
else:
    from pypsrp.client import Client
    from urllib.parse import urlparse
    u = urlparse(url)
    c = Client(u.hostname, port=u.port, ssl=u.scheme == "https", auth=auth, username=user,
               password=password, cert_validation=False,
               encryption="never" if auth == "basic" else "auto")
    o, e, code = c.execute_cmd(command)
    out = {"out": o, "err": e, "code": code}
print(json.dumps(out))
"#;

async fn run(args: &[&str]) -> Result<Value, String> {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(outpost_tests::WAIT, out)
        .await
        .expect("python3 ends")
        .expect("run python3 (`just test-deps` installs pywinrm and pypsrp)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("JSON from the client"))
}

/// The server, its user and password, and its HTTP and HTTPS endpoints.
async fn start() -> (WinrmServer, String, String, String, String) {
    let server = WinrmServer::start(Options::default()).await;
    let (user, pw) = (
        server.options().user.clone(),
        server.options().password.clone(),
    );
    let http = format!("http://{}/wsman", server.http);
    let https = format!("https://127.0.0.1:{}/wsman", server.https.port());
    (server, user, pw, http, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_runs_cmd_and_powershell_with_basic_and_ntlm() {
    let (server, user, pw, http, https) = start().await;
    for (url, auth, sealed) in [
        (&http, "basic", "basic"),
        (&http, "ntlm", "ntlm-sealed"),
        (&https, "ntlm", "ntlm"),
    ] {
        let before = server.recorded().len();
        let pywinrm = |kind: &'static str, command: &'static str| {
            let args = ["pywinrm", url, auth, &user, &pw, kind, command].map(String::from);
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&args)
                    .await
                    .unwrap_or_else(|e| panic!("{auth} {}: {e}", args[1]))
            }
        };
        let got = pywinrm("cmd", "echo hello from cmd").await;
        assert_eq!(got["out"], "hello from cmd\r\n", "{auth} {url}");
        assert_eq!(got["code"], 0);
        let got = pywinrm("ps", "Write-Output 'from ps'; exit 3").await;
        assert_eq!(got["out"], "from ps\r\n", "{auth} {url}");
        assert_eq!(got["code"], 3);
        let got = pywinrm("ps", "Write-Error 'it broke'").await;
        // pywinrm's own CLIXML cleaning reads the server's stderr.
        assert_eq!(got["err"], "it broke", "{auth} {url}");
        assert_eq!(got["code"], 1);
        let seen = &server.recorded()[before..];
        // A command's output and its end may take more than one Receive.
        let mut actions: Vec<&str> = seen.iter().map(|r| r.action.as_str()).collect();
        actions.dedup();
        assert_eq!(
            &actions[..5],
            ["Create", "Command", "Receive", "Signal", "Delete"],
            "{auth} {url}"
        );
        assert!(
            seen.iter().all(|r| r.auth == sealed),
            "{auth} {url}: {seen:?}"
        );
        let signal = seen.iter().find_map(|r| r.signal.as_deref()).unwrap();
        assert!(signal.ends_with("/signal/terminate"), "{signal}");
    }
    assert!(server.open_shells().is_empty());
    let wrong = run(&["pywinrm", &http, "ntlm", &user, "wrong", "cmd", "echo no"]).await;
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("InvalidCredentialsError")),
        "{wrong:?}"
    );
    let wrong = run(&["pywinrm", &http, "basic", &user, "wrong", "cmd", "echo no"]).await;
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("InvalidCredentialsError")),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_executes_commands_with_ntlm_and_basic() {
    let (server, user, pw, http, https) = start().await;
    for (url, auth, sealed) in [
        (&http, "ntlm", "ntlm-sealed"),
        (&http, "basic", "basic"),
        (&https, "ntlm", "ntlm"),
    ] {
        let before = server.recorded().len();
        let got = run(&["pypsrp", url, auth, &user, &pw, "cmd", "ipconfig"])
            .await
            .unwrap_or_else(|e| panic!("{auth} {url}: {e}"));
        assert_eq!(got["out"], "\r\nWindows IP Configuration\r\n\r\n", "{auth}");
        assert_eq!(got["code"], 0);
        let seen = &server.recorded()[before..];
        assert!(
            seen.iter().all(|r| r.auth == sealed),
            "{auth} {url}: {seen:?}"
        );
        // pypsrp ends a command with ctrl_c, in its own case.
        assert!(seen.iter().any(|r| r
            .signal
            .as_deref()
            .is_some_and(|s| s.ends_with("/signal/ctrl_c"))));
    }
    assert!(server.open_shells().is_empty());
}
