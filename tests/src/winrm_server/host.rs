//! The fake Windows host behind the WinRM test server: a few cmd and
//! PowerShell statements, enough for the tests' commands, with output
//! that comes while a command runs, stderr as PowerShell's CLIXML, exit
//! codes, and sleeps that a Signal or a Delete ends.
//!
//! PowerShell (`powershell -encodedcommand …`, decoded): statements split
//! on new lines and `;`, each one of `Write-Output X` (`$env:NAME` and
//! `$PID` expanded), `Write-Error X` (exit 1 at the end), `Start-Sleep
//! -Seconds N`, `exit N`, the plugin's `& {` … `}` wrapper, its file
//! copier's `Test-Path`/`rm`/`add-content` lines, `del`, and a script
//! file's path with args. cmd: `echo X`, `exit /b N`, `rem`, `@echo off`,
//! `del`, `ipconfig`, `taskkill /F /T /PID N`, a script file's path. A
//! `.bat` runs line by line, a `.ps1` as PowerShell. Anything else fails
//! as Windows says an unknown command fails.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// cmd.exe's limit.
pub const MAX_COMMAND_LINE: usize = 8191;

/// The pid `$PID` expands to.
pub const PID: u32 = 4242;

/// A script file run: its path and its bytes then.
pub type Ran = (String, Vec<u8>);

/// Its files (by path, lower-cased, as Windows matches them), and each
/// script it ran with the bytes it ran.
#[derive(Default, Clone)]
pub struct Host {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    ran: Arc<Mutex<Vec<Ran>>>,
}

#[derive(Default)]
struct Output {
    chunks: VecDeque<(&'static str, Vec<u8>)>,
    exit: Option<i32>,
}

struct Inner {
    script: String,
    output: Mutex<Output>,
    notify: Notify,
    stop: CancellationToken,
}

/// A command started on the host.
#[derive(Clone)]
pub struct Command(Arc<Inner>);

/// What one Receive takes.
pub struct Got {
    pub chunks: Vec<(&'static str, Vec<u8>)>,
    pub exit: Option<i32>,
}

enum Lang {
    Powershell,
    Cmd,
}

impl Host {
    /// Starts `line` with the shell's environment.
    pub fn start(&self, line: &str, env: BTreeMap<String, String>) -> Command {
        // WinRS runs every command through cmd.exe, which refuses longer.
        if line.len() > MAX_COMMAND_LINE {
            return self.start("too-long", env);
        }
        let (lang, script) = match line
            .trim()
            .strip_prefix("powershell -encodedcommand ")
            .or_else(|| line.trim().strip_prefix("powershell.exe -EncodedCommand "))
        {
            Some(b64) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .unwrap_or_default();
                let units: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                (Lang::Powershell, String::from_utf16_lossy(&units))
            }
            None => (Lang::Cmd, line.to_string()),
        };
        let inner = Arc::new(Inner {
            script: script.clone(),
            output: Mutex::new(Output::default()),
            notify: Notify::new(),
            stop: CancellationToken::new(),
        });
        let run = inner.clone();
        let host = self.clone();
        tokio::spawn(async move {
            let code = match lang {
                Lang::Powershell => powershell(&host, &run, &script, &env).await,
                Lang::Cmd => cmd(&host, &run, &script).await,
            };
            run.output.lock().unwrap().exit = Some(code);
            run.notify.notify_waiters();
        });
        Command(inner)
    }

    /// The files on the host now, by path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.files.lock().unwrap().clone()
    }

    /// Each script file run, with its bytes then.
    pub fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap().clone()
    }

    fn remove(&self, path: &str) {
        self.files
            .lock()
            .unwrap()
            .remove(&unquote(path).to_lowercase());
    }

    /// `line` as a script file and its args, when its first word is one.
    fn script_of(&self, line: &str) -> Option<(String, Vec<u8>, Vec<String>)> {
        let mut words = line.split_whitespace();
        let path = unquote(words.next()?).to_string();
        let body = self
            .files
            .lock()
            .unwrap()
            .get(&path.to_lowercase())
            .cloned()?;
        Some((path, body, words.map(str::to_string).collect()))
    }

    /// Runs a script file: a `.ps1` as PowerShell, anything else as a
    /// batch file, line by line, `%1`… its args.
    async fn run_file(
        &self,
        run: &Inner,
        (path, body, args): (String, Vec<u8>, Vec<String>),
        env: &BTreeMap<String, String>,
    ) -> i32 {
        self.ran.lock().unwrap().push((path.clone(), body.clone()));
        let text = String::from_utf8_lossy(&body).into_owned();
        if path.to_lowercase().ends_with(".ps1") {
            return Box::pin(powershell(self, run, &text, env)).await;
        }
        for line in text.lines() {
            let mut line = line.to_string();
            for (i, a) in args.iter().enumerate() {
                line = line.replace(&format!("%{}", i + 1), a);
            }
            if let Some(code) = cmd_line(self, run, &line) {
                return code;
            }
        }
        0
    }
}

impl Inner {
    fn write(&self, stream: &'static str, text: &str) {
        self.output
            .lock()
            .unwrap()
            .chunks
            .push_back((stream, text.as_bytes().to_vec()));
        self.notify.notify_waiters();
    }

    /// Sleeps; false when a signal ended the command first.
    async fn sleep(&self, secs: f64) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(secs)) => true,
            _ = self.stop.cancelled() => false,
        }
    }
}

impl Command {
    /// The command line, or the PowerShell script it encodes.
    pub fn script(&self) -> &str {
        &self.0.script
    }

    pub fn terminate(&self) {
        self.0.stop.cancel();
    }

    pub fn ended(&self) -> bool {
        self.0.output.lock().unwrap().exit.is_some()
    }

    /// Waits (up to `limit`) until it has ended, as Windows answers a
    /// Signal or a Delete once the process is gone.
    pub async fn ended_within(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.0.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.ended() {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// What came since the last Receive, waiting up to `timeout` for
    /// something; `None` when nothing came (the server's TimedOut fault).
    pub async fn receive(&self, timeout: Duration) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut out = self.0.output.lock().unwrap();
                if !out.chunks.is_empty() || out.exit.is_some() {
                    return Some(Got {
                        chunks: out.chunks.drain(..).collect(),
                        exit: out.exit,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// Splits on `;` and new lines outside quotes.
fn statements(script: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote) = (Vec::new(), String::new(), None);
    for c in script.chars() {
        match (c, quote) {
            ('"' | '\'', None) => {
                quote = Some(c);
                cur.push(c);
            }
            (q, Some(open)) if q == open => {
                quote = None;
                cur.push(c);
            }
            (';' | '\n', None) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn clixml_error(text: &str) -> String {
    format!(
        "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">{}_x000D__x000A_</S></Objs>",
        text.replace('&', "&amp;").replace('<', "&lt;")
    )
}

async fn powershell(host: &Host, run: &Inner, script: &str, env: &BTreeMap<String, String>) -> i32 {
    let expand = |s: &str| {
        let mut out = s.replace("$PID", &PID.to_string());
        for (k, v) in env {
            out = out.replace(&format!("$env:{k}"), v);
        }
        out
    };
    // powershell.exe -EncodedCommand exits 1 when its last statement
    // failed (a native command's own code is not passed on), else 0.
    let mut failed = false;
    for st in statements(script) {
        let (verb, arg) = st.split_once(' ').unwrap_or((st.as_str(), ""));
        match verb.to_lowercase().as_str() {
            "&" if host.script_of(arg).is_some() => {
                let script = host.script_of(arg).expect("checked");
                failed = host.run_file(run, script, env).await != 0;
            }
            "&" | "{" | "}" => {}
            "write-output" | "echo" => {
                run.write("stdout", &format!("{}\r\n", expand(unquote(arg))));
                failed = false;
            }
            "write-error" => {
                run.write("stderr", &clixml_error(&expand(unquote(arg))));
                failed = true;
            }
            "start-sleep" => {
                let secs = arg
                    .split_whitespace()
                    .filter_map(|w| w.parse::<f64>().ok())
                    .next()
                    .unwrap_or(1.0);
                if !run.sleep(secs).await {
                    return 1;
                }
            }
            "exit" => return arg.trim().parse().unwrap_or(0),
            // The WinRM file copier's text.
            "if" => {
                if st.contains("-PathType Leaf") {
                    if let Some((_, p)) = st.split_once("{ rm ") {
                        host.remove(p.trim_end_matches('}').trim());
                    }
                }
            }
            "add-content" => {
                let b64 = st
                    .split_once("FromBase64String(\"")
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(b, _)| b);
                let path = st
                    .rsplit_once("-path ")
                    .map(|(_, p)| unquote(p).to_lowercase());
                let (Some(b64), Some(path)) = (b64, path) else {
                    return 1;
                };
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                    return 1;
                };
                host.files
                    .lock()
                    .unwrap()
                    .entry(path)
                    .or_default()
                    .extend(bytes);
            }
            "del" | "rm" | "remove-item" => host.remove(arg),
            _ if host.script_of(&st).is_some() => {
                let script = host.script_of(&st).expect("checked");
                failed = host.run_file(run, script, env).await != 0;
            }
            _ => {
                run.write(
                    "stderr",
                    &clixml_error(&format!(
                        "{verb} : The term '{verb}' is not recognized as the name of a cmdlet, function, script file, or operable program."
                    )),
                );
                return 1;
            }
        }
    }
    i32::from(failed)
}

async fn cmd(host: &Host, run: &Inner, line: &str) -> i32 {
    match host.script_of(line) {
        Some(script) => host.run_file(run, script, &BTreeMap::new()).await,
        None => cmd_line(host, run, line).unwrap_or(0),
    }
}

/// One line of cmd: `Some(code)` when it ends the script.
fn cmd_line(host: &Host, run: &Inner, line: &str) -> Option<i32> {
    let line = line.trim();
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    match verb.to_lowercase().as_str() {
        "" | "rem" | "@echo" => None,
        "echo" => {
            run.write("stdout", &format!("{arg}\r\n"));
            None
        }
        "exit" => Some(
            arg.trim()
                .trim_start_matches("/b")
                .trim()
                .parse()
                .unwrap_or(0),
        ),
        "del" => {
            host.remove(arg);
            None
        }
        "too-long" => {
            run.write("stderr", "The command line is too long.\r\n");
            Some(1)
        }
        "ipconfig" => {
            run.write("stdout", "\r\nWindows IP Configuration\r\n\r\n");
            None
        }
        "taskkill" => {
            let pid = arg.rsplit(' ').next().unwrap_or_default();
            run.write(
                "stdout",
                &format!("SUCCESS: The process with PID {pid} has been terminated.\r\n"),
            );
            None
        }
        _ => {
            run.write(
                "stderr",
                &format!("'{verb}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"),
            );
            Some(1)
        }
    }
}
