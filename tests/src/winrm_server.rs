//! A WinRM test server: WS-Management's remote shell (Create, Command,
//! Receive, Signal, Delete) over HTTP and HTTPS, with Basic and NTLM
//! (sealed over HTTP), in front of a fake Windows host ([`host`]). No
//! Windows host can run here; the server is written from MS-WSMV and
//! MS-NLMP and shaped after Windows' recorded responses, and the real
//! clients (pywinrm, pypsrp) are run against it in `winrm_protocol.rs`.
//!
//! NTLM authenticates a TCP connection, so each connection is served by
//! its own service holding its security context. Every request is
//! recorded, so tests can see what an abort sent and what reached a
//! shell's environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use outpost_runner::plugins::winrm::{ntlm, transport, wsman};
use tokio::sync::watch;

pub mod host;

/// Who may log in, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub user: String,
    pub password: String,
    pub basic: bool,
    pub ntlm: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            user: "Administrator".into(),
            password: "W1n-p@ss".into(),
            basic: true,
            ntlm: true,
        }
    }
}

/// One request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `Create`, `Command`, `Receive`, `Signal` or `Delete`; `TimedOut`
    /// for a Receive that saw no output in its OperationTimeout.
    pub action: String,
    /// `basic`, `ntlm` or `ntlm-sealed`.
    pub auth: &'static str,
    pub shell: Option<String>,
    pub env: BTreeMap<String, String>,
    /// The command line, with a PowerShell `-encodedcommand` decoded.
    pub command: Option<String>,
    pub signal: Option<String>,
}

#[derive(Default)]
struct State {
    recorded: Vec<Recorded>,
    shells: BTreeMap<String, BTreeMap<String, String>>,
    /// By command id: its shell and the command.
    commands: BTreeMap<String, (String, host::Command)>,
}

struct Shared {
    options: Options,
    state: Mutex<State>,
    changed: watch::Sender<usize>,
    host: host::Host,
}

/// The server on `127.0.0.1`, over HTTP and HTTPS (a self-signed
/// certificate); stopped, with every fake command ended, on drop.
pub struct WinrmServer {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The HTTPS listener's certificate, PEM, for `winrm-certpath`.
    pub ca_pem: String,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WinrmServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, c) in self.shared.state.lock().unwrap().commands.values() {
            c.terminate();
        }
    }
}

impl WinrmServer {
    pub async fn start(options: Options) -> WinrmServer {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a certificate");
        let ca_pem = cert.cert.pem();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let shared = Arc::new(Shared {
            options,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            host: host::Host::default(),
        });
        let addrs = (http.local_addr().unwrap(), https.local_addr().unwrap());
        let plain = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = http.accept().await {
                    tokio::spawn(serve(tcp, shared.clone(), false));
                }
            })
        };
        let tls = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = https.accept().await {
                    let (acceptor, shared) = (acceptor.clone(), shared.clone());
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve(stream, shared, true).await;
                        }
                    });
                }
            })
        };
        WinrmServer {
            http: addrs.0,
            https: addrs.1,
            ca_pem,
            shared,
            tasks: vec![plain, tls],
        }
    }

    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// The fake host behind it: its files, and the scripts it ran.
    pub fn host(&self) -> &host::Host {
        &self.shared.host
    }

    /// Every request so far (and, as `TimedOut`, each Receive answered
    /// with the OperationTimeout fault).
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.state.lock().unwrap().recorded.clone()
    }

    /// Shells created and not deleted.
    pub fn open_shells(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .unwrap()
            .shells
            .keys()
            .cloned()
            .collect()
    }

    /// Commands still running on the fake host.
    pub fn running(&self) -> usize {
        let state = self.shared.state.lock().unwrap();
        state.commands.values().filter(|(_, c)| !c.ended()).count()
    }

    /// Waits until `until` holds of the requests recorded (a minute at
    /// most, then panics with them).
    pub async fn wait_for(&self, what: &str, until: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let mut changed = self.shared.changed.subscribe();
        let wait = async {
            loop {
                let now = self.recorded();
                if until(&now) {
                    return now;
                }
                let _ = changed.changed().await;
            }
        };
        match tokio::time::timeout(crate::WAIT, wait).await {
            Ok(r) => r,
            Err(_) => panic!("WinRM server: never {what}; saw {:#?}", self.recorded()),
        }
    }
}

/// Per connection: its NTLM context, from the NEGOTIATE on.
#[derive(Default)]
struct Conn {
    negotiate: Option<Vec<u8>>,
    challenge: Option<(ntlm::Challenge, Vec<u8>)>,
    session: Option<ntlm::Session>,
    authenticated: bool,
}

async fn serve<S>(stream: S, shared: Arc<Shared>, tls: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(tokio::sync::Mutex::new(Conn::default()));
    let service = hyper::service::service_fn(move |req| {
        let (shared, conn) = (shared.clone(), conn.clone());
        async move { Ok::<_, hyper::Error>(handle(req, &shared, &conn, tls).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn reply(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(body.into())).unwrap()
}

fn challenge_them(options: &Options) -> Response<Full<Bytes>> {
    let mut h = Vec::new();
    if options.ntlm {
        h.push(("WWW-Authenticate", "Negotiate".to_string()));
    }
    if options.basic {
        h.push(("WWW-Authenticate", r#"Basic realm="WSMAN""#.to_string()));
    }
    reply(401, &h, Vec::new())
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    shared: &Shared,
    conn: &tokio::sync::Mutex<Conn>,
    tls: bool,
) -> Response<Full<Bytes>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let sealed = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/encrypted"));
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(400, &[], Vec::new());
    };
    let options = &shared.options;
    let mut conn = conn.lock().await;
    let auth = match authorization.as_deref() {
        Some(a) if a.starts_with("Basic ") && options.basic => {
            let pair = b64
                .decode(a[6..].trim())
                .ok()
                .and_then(|p| String::from_utf8(p).ok());
            if pair != Some(format!("{}:{}", options.user, options.password)) {
                return challenge_them(options);
            }
            "basic"
        }
        Some(a) if options.ntlm && (a.starts_with("Negotiate ") || a.starts_with("NTLM ")) => {
            let (scheme, token) = a.split_once(' ').unwrap();
            let Ok(token) = b64.decode(token.trim()) else {
                return challenge_them(options);
            };
            match ntlm_step(&mut conn, options, &token) {
                Ok(Some(challenge)) => {
                    return reply(
                        401,
                        &[(
                            "WWW-Authenticate",
                            format!("{scheme} {}", b64.encode(challenge)),
                        )],
                        Vec::new(),
                    )
                }
                Ok(None) => {}
                Err(_) => {
                    *conn = Conn::default();
                    return challenge_them(options);
                }
            }
            if body.is_empty() {
                return reply(200, &[], Vec::new());
            }
            "ntlm"
        }
        None if conn.authenticated => "ntlm",
        _ => return challenge_them(options),
    };
    // Over HTTP an NTLM session's messages are sealed; plaintext then is
    // refused, as Windows refuses unencrypted traffic by default.
    let text = match (sealed, conn.session.as_mut()) {
        (true, Some(s)) => match transport::unseal_body(s, &body) {
            Ok(t) => t,
            Err(_) => return reply(400, &[], Vec::new()),
        },
        (false, Some(_)) if !tls => return reply(400, &[], Vec::new()),
        (true, None) => return reply(400, &[], Vec::new()),
        _ => body.to_vec(),
    };
    let auth = if sealed { "ntlm-sealed" } else { auth };
    let (status, xml) = soap(shared, &String::from_utf8_lossy(&text), auth).await;
    match conn.session.as_mut().filter(|_| sealed) {
        Some(s) => reply(
            status,
            &[("Content-Type", transport::SEALED_TYPE.to_string())],
            transport::seal_body(s, xml.as_bytes()),
        ),
        None => reply(
            status,
            &[("Content-Type", transport::SOAP_TYPE.to_string())],
            xml.into_bytes(),
        ),
    }
}

/// One NTLM leg: a CHALLENGE for a NEGOTIATE, nothing for an
/// AUTHENTICATE that holds (the session is then set).
fn ntlm_step(conn: &mut Conn, options: &Options, token: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    if let Ok(flags) = ntlm::negotiate_flags(token) {
        use ntlm::*;
        let mut reply =
            flags | NTLM | ALWAYS_SIGN | TARGET_INFO | TARGET_TYPE_SERVER | REQUEST_TARGET;
        if flags & UNICODE != 0 {
            reply &= !OEM;
        }
        let mut server_challenge = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut server_challenge);
        let filetime = transport::filetime_now();
        let challenge = Challenge {
            flags: reply,
            target_name: "WINHOST".into(),
            server_challenge,
            target_info: vec![
                AvPair {
                    id: av::NB_DOMAIN_NAME,
                    value: av_text("WINHOST"),
                },
                AvPair {
                    id: av::NB_COMPUTER_NAME,
                    value: av_text("WINHOST"),
                },
                AvPair {
                    id: av::DNS_COMPUTER_NAME,
                    value: av_text("winhost"),
                },
                AvPair {
                    id: av::TIMESTAMP,
                    value: filetime.to_le_bytes().to_vec(),
                },
            ],
        };
        let bytes = challenge.to_bytes();
        *conn = Conn {
            negotiate: Some(token.to_vec()),
            challenge: Some((challenge, bytes.clone())),
            ..Conn::default()
        };
        return Ok(Some(bytes));
    }
    let auth = ntlm::Authenticate::parse(token).map_err(|_| ())?;
    let (Some(negotiate), Some((challenge, bytes))) = (&conn.negotiate, &conn.challenge) else {
        return Err(());
    };
    let (_, want_user) = ntlm::split_user(&options.user);
    if !auth.user.eq_ignore_ascii_case(want_user) {
        return Err(());
    }
    let key = auth
        .accept(&options.password, negotiate, challenge, bytes)
        .map_err(|_| ())?;
    conn.session = Some(ntlm::Session::server(key));
    conn.authenticated = true;
    Ok(None)
}

fn find<'a>(
    doc: &'a roxmltree::Document<'a>,
    ns: &str,
    name: &str,
) -> Option<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .find(|n| n.tag_name().namespace() == Some(ns) && n.tag_name().name() == name)
}

/// `PT20S`, `PT20.000S`: the seconds.
fn duration_secs(text: &str) -> f64 {
    text.trim()
        .trim_start_matches("PT")
        .trim_end_matches('S')
        .parse()
        .unwrap_or(20.0)
}

/// A SOAP request's answer: the status and the envelope.
async fn soap(shared: &Shared, text: &str, auth: &'static str) -> (u16, String) {
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return (400, String::new());
    };
    let action = find(&doc, wsman::NS_ADDRESSING, "Action")
        .and_then(|n| n.text())
        .unwrap_or_default()
        .trim()
        .to_string();
    let message_id = find(&doc, wsman::NS_ADDRESSING, "MessageID")
        .and_then(|n| n.text())
        .unwrap_or_default()
        .trim()
        .to_string();
    let shell = doc
        .descendants()
        .find(|n| n.tag_name().name() == "Selector" && n.attribute("Name") == Some("ShellId"))
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string());
    let timeout = find(&doc, wsman::NS_WSMAN, "OperationTimeout")
        .and_then(|n| n.text())
        .map_or(20.0, duration_secs);
    let short = action.rsplit('/').next().unwrap_or_default().to_string();
    let mut rec = Recorded {
        action: short.clone(),
        auth,
        shell: shell.clone(),
        env: BTreeMap::new(),
        command: None,
        signal: None,
    };
    let shell_ns = wsman::NS_SHELL;
    let body = match short.as_str() {
        "Create" => {
            let id = uuid::Uuid::now_v7().to_string().to_uppercase();
            rec.env = doc
                .descendants()
                .filter(|n| n.tag_name().name() == "Variable")
                .filter_map(|n| {
                    Some((
                        n.attribute("Name")?.to_string(),
                        n.text().unwrap_or("").to_string(),
                    ))
                })
                .collect();
            rec.shell = Some(id.clone());
            shared
                .state
                .lock()
                .unwrap()
                .shells
                .insert(id.clone(), rec.env.clone());
            format!(
                r#"<x:ResourceCreated xmlns:x="{}"><a:Address>http://windows-host:5985/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>{}</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{id}</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>{id}</rsp:ShellId><rsp:ResourceUri>{}</rsp:ResourceUri><rsp:Owner>WINHOST\Administrator</rsp:Owner><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut></rsp:Shell>"#,
                wsman::NS_TRANSFER,
                wsman::RESOURCE_CMD,
                wsman::RESOURCE_CMD
            )
        }
        "Command" => {
            let env = shell
                .as_ref()
                .and_then(|s| shared.state.lock().unwrap().shells.get(s).cloned());
            let Some(env) = env else {
                return record_fault(shared, rec, &message_id, "2150858843", "The request for the Windows Remote Shell with ShellId failed because the shell was not found on the server.");
            };
            let mut line = find(&doc, shell_ns, "Command")
                .and_then(|n| n.text())
                .unwrap_or_default()
                .to_string();
            for arg in doc.descendants().filter(|n| {
                n.tag_name().namespace() == Some(shell_ns) && n.tag_name().name() == "Arguments"
            }) {
                line.push(' ');
                line.push_str(arg.text().unwrap_or_default());
            }
            let id = uuid::Uuid::now_v7().to_string().to_uppercase();
            let command = shared.host.start(&line, env);
            rec.command = Some(command.script().to_string());
            let shell = shell.clone().unwrap_or_default();
            shared
                .state
                .lock()
                .unwrap()
                .commands
                .insert(id.clone(), (shell, command));
            format!(
                "<rsp:CommandResponse><rsp:CommandId>{id}</rsp:CommandId></rsp:CommandResponse>"
            )
        }
        "Receive" => {
            let id = doc
                .descendants()
                .find(|n| n.tag_name().name() == "DesiredStream")
                .and_then(|n| n.attribute("CommandId"))
                .unwrap_or_default()
                .to_string();
            let command = shared
                .state
                .lock()
                .unwrap()
                .commands
                .get(&id)
                .map(|(_, c)| c.clone());
            let Some(command) = command else {
                return record_fault(
                    shared,
                    rec,
                    &message_id,
                    "2150858843",
                    "The command was not found.",
                );
            };
            let shell_of = rec.shell.clone();
            record(shared, rec);
            let Some(got) = command
                .receive(std::time::Duration::from_secs_f64(timeout.min(60.0)))
                .await
            else {
                // Recorded too, so a test can see the client poll again.
                record(
                    shared,
                    Recorded {
                        action: "TimedOut".into(),
                        auth,
                        shell: shell_of,
                        env: BTreeMap::new(),
                        command: None,
                        signal: None,
                    },
                );
                return (500, fault(&message_id, wsman::FAULT_TIMED_OUT, "The WS-Management service cannot complete the operation within the time specified in OperationTimeout."));
            };
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut streams = String::new();
            for (name, bytes) in got.chunks {
                streams.push_str(&format!(
                    r#"<rsp:Stream Name="{name}" CommandId="{id}">{}</rsp:Stream>"#,
                    b64.encode(bytes)
                ));
            }
            let state = match got.exit {
                Some(code) => {
                    streams.push_str(&format!(r#"<rsp:Stream Name="stdout" CommandId="{id}" End="true"></rsp:Stream><rsp:Stream Name="stderr" CommandId="{id}" End="true"></rsp:Stream>"#));
                    format!(
                        r#"<rsp:CommandState CommandId="{id}" State="{}"><rsp:ExitCode>{}</rsp:ExitCode></rsp:CommandState>"#,
                        wsman::STATE_DONE,
                        code as u32
                    )
                }
                None => format!(
                    r#"<rsp:CommandState CommandId="{id}" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"></rsp:CommandState>"#
                ),
            };
            let xml = envelope(
                &action,
                &message_id,
                &format!("<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>"),
            );
            return (200, xml);
        }
        "Signal" => {
            let signal = doc
                .descendants()
                .find(|n| n.tag_name().name() == "Code")
                .and_then(|n| n.text())
                .unwrap_or_default()
                .trim()
                .to_string();
            let id = doc
                .descendants()
                .find(|n| n.tag_name().name() == "Signal")
                .and_then(|n| n.attribute("CommandId"))
                .unwrap_or_default();
            if signal.to_lowercase().ends_with("/terminate")
                || signal.to_lowercase().ends_with("/ctrl_c")
            {
                let command = shared
                    .state
                    .lock()
                    .unwrap()
                    .commands
                    .get(id)
                    .map(|(_, c)| c.clone());
                if let Some(c) = command {
                    c.terminate();
                    // Windows answers once the process is gone.
                    c.ended_within(std::time::Duration::from_secs(5)).await;
                }
            }
            rec.signal = Some(signal);
            "<rsp:SignalResponse/>".to_string()
        }
        "Delete" => {
            // Deleting a shell ends what runs in it (inferred from Windows).
            let ending: Vec<host::Command> = {
                let mut state = shared.state.lock().unwrap();
                if let Some(s) = &shell {
                    state.shells.remove(s);
                }
                state
                    .commands
                    .values()
                    .filter(|(of, _)| Some(of) == shell.as_ref())
                    .map(|(_, c)| c.clone())
                    .collect()
            };
            for c in ending {
                c.terminate();
                c.ended_within(std::time::Duration::from_secs(5)).await;
            }
            String::new()
        }
        _ => {
            return record_fault(
                shared,
                rec,
                &message_id,
                "2150858817",
                "The WS-Management service does not support the specified action.",
            );
        }
    };
    record(shared, rec);
    (200, envelope(&action, &message_id, &body))
}

fn record(shared: &Shared, rec: Recorded) {
    let mut state = shared.state.lock().unwrap();
    state.recorded.push(rec);
    let n = state.recorded.len();
    drop(state);
    shared.changed.send_replace(n);
}

fn record_fault(
    shared: &Shared,
    rec: Recorded,
    message_id: &str,
    code: &str,
    text: &str,
) -> (u16, String) {
    record(shared, rec);
    (500, fault(message_id, code, text))
}

fn envelope(action: &str, relates: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xml:lang="en-US" xmlns:s="{}" xmlns:a="{}" xmlns:w="{}" xmlns:rsp="{}" xmlns:p="{}"><s:Header><a:Action>{action}Response</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:RelatesTo>{relates}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
        wsman::NS_SOAP,
        wsman::NS_ADDRESSING,
        wsman::NS_WSMAN,
        wsman::NS_SHELL,
        wsman::NS_MS_WSMAN,
        uuid::Uuid::now_v7().to_string().to_uppercase(),
    )
}

fn fault(relates: &str, code: &str, text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xml:lang="en-US" xmlns:s="{}" xmlns:a="{}" xmlns:w="{}"><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:RelatesTo>{relates}</a:RelatesTo></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{text}</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="{}" Code="{code}" Machine="winhost"><f:Message>{text}</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"#,
        wsman::NS_SOAP,
        wsman::NS_ADDRESSING,
        wsman::NS_WSMAN,
        uuid::Uuid::now_v7().to_string().to_uppercase(),
        wsman::NS_FAULT,
    )
}
