//! Rundeck's WinRM node executor (`WinRMPython`): an exec step on a
//! Windows node runs in a WinRS shell over WS-Management, as
//! `py-winrm-plugin` runs it (its `winrm-*` attributes, its PowerShell
//! `-encodedcommand`, its exit-status rules), with Basic or NTLM over
//! HTTP (sealed) or HTTPS. Where the plugin leaves a shell behind on
//! abort, this sends Signal `terminate` and Delete on a second
//! connection; where it puts the password in the shell's environment,
//! this leaves every secret out.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use outpost_schemas::job::winrm as keys;
use outpost_schemas::job::NOT_SUPPORTED_YET;
use outpost_schemas::node::Node;
use outpost_schemas::{LogEntry, StepCommand};
use tokio::sync::mpsc;

use crate::executor::{spawn_task, ExecError, RunningStep};
use crate::mask::Secrets;

pub mod ntlm;
mod session;
pub mod transport;
pub mod wsman;

use session::{Run, Work};
use transport::{AuthKind, Endpoint, Tls};

/// The marker the plugin's `winrm-terminate-on-abort` preamble prints.
const PID_MARKER: &str = "RUNDECK:WINRM:REMOTE_PID:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Powershell,
    Cmd,
}

/// A node's WinRM settings, read as the plugin reads them.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    pub shell: Shell,
    pub operation_timeout: u64,
    pub tries: u32,
    pub retry_delay: Duration,
    pub terminate_on_abort: bool,
}

/// Reads `node`'s `winrm-*` attributes; the password from the job option
/// `winrmpassword` or the key store path of `winrm-password-storage-path`.
pub fn target(
    node: &Node,
    options: &BTreeMap<String, String>,
    read_stored: impl Fn(&str) -> Result<String, String>,
) -> Result<Target, String> {
    let attr = |k: &str| {
        node.attributes
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    for (key, default) in keys::NOT_BUILT {
        if let Some(v) = attr(key).filter(|v| !v.eq_ignore_ascii_case(default)) {
            return Err(format!("{NOT_SUPPORTED_YET}: {key} ({v})"));
        }
    }
    let flag = |k: &str| attr(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let number = |k: &str, default: u64| -> Result<u64, String> {
        attr(k).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("{k}: `{v}` is not a whole number"))
        })
    };
    let https = match attr(keys::TRANSPORT).unwrap_or("http") {
        t if t.eq_ignore_ascii_case("http") => false,
        t if t.eq_ignore_ascii_case("https") => true,
        other => {
            return Err(format!(
                "{}: `{other}` is not http or https",
                keys::TRANSPORT
            ))
        }
    };
    let auth = match attr(keys::AUTH_TYPE)
        .unwrap_or("basic")
        .to_lowercase()
        .as_str()
    {
        "basic" => AuthKind::Basic,
        "ntlm" => AuthKind::Ntlm,
        a @ ("kerberos" | "credssp" | "certificate") => {
            return Err(format!("{NOT_SUPPORTED_YET}: WinRM {a} authentication"))
        }
        other => {
            return Err(format!(
                "{}: `{other}` is not basic, ntlm, kerberos or credssp",
                keys::AUTH_TYPE
            ))
        }
    };
    let shell = match attr(keys::SHELL)
        .unwrap_or("powershell")
        .to_lowercase()
        .as_str()
    {
        "powershell" => Shell::Powershell,
        "cmd" => Shell::Cmd,
        other => {
            return Err(format!(
                "{}: `{other}` is not powershell or cmd",
                keys::SHELL
            ))
        }
    };
    let port = match attr(keys::PORT) {
        Some(p) => p
            .parse()
            .map_err(|_| format!("{}: `{p}` is not a port", keys::PORT))?,
        None => node.port.unwrap_or(5985),
    };
    let operation_timeout = number(keys::OPERATION_TIMEOUT, 20)?;
    let read_timeout = number(keys::READ_TIMEOUT, 30)?;
    // pywinrm's rule: a Receive must time out on the server first.
    if read_timeout <= operation_timeout {
        return Err(format!(
            "{} ({read_timeout}) must be above {} ({operation_timeout})",
            keys::READ_TIMEOUT,
            keys::OPERATION_TIMEOUT
        ));
    }
    let option = |k: &str| options.get(k).filter(|v| !v.trim().is_empty());
    // The plugin strips the quotes Rundeck's option strings may leave.
    let user = option(keys::USERNAME_OPTION)
        .map(|u| u.trim().trim_matches('\'').to_string())
        .or_else(|| node.username.clone())
        .ok_or("no user name: set the node's username, or the job option `username`")?;
    let password = match (
        option(keys::PASSWORD_OPTION),
        attr(keys::PASSWORD_STORAGE_PATH),
    ) {
        (Some(pw), _) => pw.clone(),
        (None, Some(path)) => read_stored(path)
            .map_err(|why| format!("cannot read the password at storage path `{path}`: {why}"))?,
        (None, None) => {
            return Err(format!(
                "no password: set {} to a key store path, or give the job option `{}`",
                keys::PASSWORD_STORAGE_PATH,
                keys::PASSWORD_OPTION
            ))
        }
    };
    let tls = https.then(|| {
        if flag(keys::NO_SSL) {
            Tls::NoVerify
        } else {
            Tls::Verify(attr(keys::CERT_PATH).map(Into::into))
        }
    });
    Ok(Target {
        endpoint: Endpoint {
            host: node.hostname.clone(),
            port,
            tls,
            auth,
            user,
            password,
            read_timeout: Duration::from_secs(read_timeout),
        },
        shell,
        operation_timeout,
        tries: number(keys::RETRY_CONNECTION, 1)?.max(1) as u32,
        // The plugin's default as Rundeck fills it in (its yaml's 10).
        retry_delay: Duration::from_secs(number(keys::RETRY_CONNECTION_DELAY, 10)?),
        terminate_on_abort: flag("winrm-terminate-on-abort"),
    })
}

/// The command line WinRS runs: the command as it is under cmd; under
/// PowerShell, `powershell -encodedcommand` of its UTF-16 text, with the
/// plugin's PID preamble when the node asks for terminate-on-abort.
pub fn command_line(shell: Shell, command: &str, report_pid: bool) -> String {
    match shell {
        Shell::Cmd => command.to_string(),
        Shell::Powershell => {
            let script = if report_pid {
                format!("Write-Output \"{PID_MARKER}$PID\"; & {{\n{command}\n}}")
            } else {
                command.to_string()
            };
            let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
            format!(
                "powershell -encodedcommand {}",
                base64::engine::general_purpose::STANDARD.encode(utf16)
            )
        }
    }
}

/// stderr as the plugin shows it: PowerShell's CLIXML reduced to its
/// `<S>` texts (empty when it holds only progress records), anything
/// else as it is.
pub fn clean_stderr(raw: &str) -> String {
    let clixml = raw.starts_with("#< CLIXML")
        || raw.contains("<Objs Version=")
        || raw.contains("-1</PI><PC>");
    if !clixml {
        return raw.to_string();
    }
    let xml = raw.strip_prefix("#< CLIXML").unwrap_or(raw).trim_start();
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return raw.to_string();
    };
    doc.root_element()
        .children()
        .filter(|n| n.tag_name().name() == "S")
        .filter_map(|n| n.text())
        .map(|t| t.replace("_x000D__x000A_", "\n"))
        .collect()
}

/// Runs `command` on `node` over WinRM; `options` are the job's secure
/// options that no step sees.
pub fn start_executor(
    command: &StepCommand,
    node: &Node,
    env: &BTreeMap<String, String>,
    options: &BTreeMap<String, String>,
    read_stored: impl Fn(&str) -> Result<String, String>,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    let refuse = |why: String| {
        ExecError::Plugin(secrets.mask_str(&format!(
            "node {} (node-executor {}): {why}",
            node.nodename,
            keys::NODE_EXECUTOR
        )))
    };
    // The plugin reads `RD_OPTION_USERNAME` and `RD_OPTION_WINRMPASSWORD`;
    // a secure option that no step sees (Secure Remote Authentication)
    // is read too, as SSH reads its password option.
    let mut from_job = BTreeMap::new();
    for name in [keys::USERNAME_OPTION, keys::PASSWORD_OPTION] {
        let exported = env.get(&format!("RD_OPTION_{}", name.to_uppercase()));
        if let Some(v) = options.get(name).or(exported) {
            from_job.insert(name.to_string(), v.clone());
        }
    }
    let target = target(node, &from_job, read_stored).map_err(refuse)?;
    let secrets = secrets.with(&target.endpoint.password);
    let work = match command {
        StepCommand::Exec { command } => Work::Command(command_line(
            target.shell,
            command,
            target.terminate_on_abort,
        )),
        StepCommand::Script {
            script,
            args,
            interpreter,
            interpreter_args_quoted,
            file_extension,
            ..
        } => {
            let copier = node.attributes.get("file-copier").map(|c| c.trim());
            if copier != Some(keys::FILE_COPIER) {
                return Err(refuse(format!(
                    "{NOT_SUPPORTED_YET}: a script step on a WinRM node whose file-copier is {}; Rundeck copies scripts to Windows with `file-copier: {}`",
                    copier.map_or("not set (Rundeck's default is SCP)".to_string(), |c| format!("`{c}`")),
                    keys::FILE_COPIER
                )));
            }
            let path = script_path(node, env, file_extension.as_deref());
            let args = args.as_deref().map(str::trim).filter(|a| !a.is_empty());
            let run = script_line(
                target.shell,
                interpreter.as_deref(),
                *interpreter_args_quoted,
                &path,
                args,
            );
            Work::Script {
                line: command_line(target.shell, &run, target.terminate_on_abort),
                body: crlf(script).into_bytes(),
                path,
            }
        }
        StepCommand::LocalExec { .. } | StepCommand::Plugin { .. } => {
            return Err(refuse("runs on the runner, not on the node".into()))
        }
    };
    // The plugin sends every RD_ variable; secrets stay here, and, as in
    // the plugin, values with `%` (cmd would expand them) are left out.
    let shell_env: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, v)| {
            k.starts_with("RD_")
                && !v.contains('%')
                && !k.starts_with("RD_CONFIG_")
                && k.as_str() != "RD_OPTION_WINRMPASSWORD"
                && secrets.mask_str(v) == **v
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let masked = secrets.clone();
    Ok(spawn_task(lines, &secrets, move |out, stop| async move {
        let mut run = Run {
            url: target.endpoint.url(),
            target,
            out,
            secrets: masked,
            pid: None,
        };
        run.run(&work, &shell_env, &stop).await
    }))
}

/// Where Rundeck puts a script on a Windows node:
/// `<dir><n>-<execid>-<node>-dispatch-script.tmp<ext>`, the directory the
/// node's `file-copy-destination-dir` or `C:\WINDOWS\TEMP\`, the
/// extension `.bat` unless the step names one; unsafe characters as `_`.
fn script_path(node: &Node, env: &BTreeMap<String, String>, extension: Option<&str>) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut dir = node
        .attributes
        .get("file-copy-destination-dir")
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| r"C:\WINDOWS\TEMP\".to_string());
    if !dir.ends_with('\\') {
        dir.push('\\');
    }
    let ext = match extension.map(|e| e.trim().trim_start_matches('.')) {
        Some(e) if !e.is_empty() => format!(".{e}"),
        _ => ".bat".to_string(),
    };
    let exec = env.get("RD_JOB_EXECID").map_or("0", |e| e.as_str());
    let n = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{dir}{}-{}-{}-dispatch-script.tmp{ext}",
        &n[n.len() - 8..],
        safe(exec),
        safe(&node.nodename)
    )
}

/// Windows line ends, as Rundeck writes a script for a Windows node.
/// Rundeck writes a script line by line with the node's line ends, the
/// last line ended too.
fn crlf(text: &str) -> String {
    let unix = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = unix.replace('\n', "\r\n");
    if !out.is_empty() && !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// How a copied script is run, as Rundeck runs one: its path (quoted, in
/// the shell's way, where Rundeck leaves it bare), after the interpreter
/// if the step names one; with `interpreterArgsQuoted`, the path and args
/// as one argument of the interpreter.
fn script_line(
    shell: Shell,
    interpreter: Option<&str>,
    args_quoted: bool,
    path: &str,
    args: Option<&str>,
) -> String {
    let with_args = |head: String| match args {
        Some(a) => format!("{head} {a}"),
        None => head,
    };
    let quoted = |text: &str| match shell {
        Shell::Cmd => format!("\"{text}\""),
        Shell::Powershell => session::ps_quote(text),
    };
    match (interpreter, args_quoted) {
        (Some(i), true) => format!(
            "{i} {}",
            quoted(&args.map_or(path.to_string(), |a| format!("{path} {a}")))
        ),
        (Some(i), false) => with_args(format!("{i} {}", quoted(path))),
        // PowerShell runs a quoted path with `&`.
        (None, _) => with_args(match shell {
            Shell::Cmd => quoted(path),
            Shell::Powershell => format!("& {}", quoted(path)),
        }),
    }
}

#[cfg(test)]
mod tests;
