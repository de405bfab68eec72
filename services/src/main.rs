//! `outpost`: the control plane's binary and CLI.
//!
//! Exit codes: 0 success; 1 the execution failed or was aborted (`run
//! --follow`); 2 anything else went wrong (bad input, API unreachable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use outpost_bus::{self as bus, NatsOptions};
use outpost_schemas::state::ExecutionStatus;
use outpost_services::cli::{self, Client};
use outpost_services::config::{self, pick, FileConfig};
use outpost_services::control_plane::{ControlPlane, ControlPlaneOptions, Roles};
use outpost_services::{engine::projector, up};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "Outpost: automation that reaches private networks through outbound-only runners"
)]
struct Cli {
    /// TOML config file (keys: nats_url, domain, listen, data_dir, api_url,
    /// project, token, api_ca_file, nats_creds, nats_ca_file, keys_dir,
    /// gateway_url, gateway_ca_file, tls_cert, tls_key). Default:
    /// `.outpost/outpost.toml` when it exists.
    #[arg(long, global = true, env = "OUTPOST_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL of the Outpost API, for client commands.
    #[arg(long, global = true, env = "OUTPOST_API_URL")]
    api_url: Option<String>,
    /// Project for client commands.
    #[arg(long, short = 'p', global = true, env = "OUTPOST_PROJECT")]
    project: Option<String>,
    /// NATS URL, for services.
    #[arg(long, global = true, env = "OUTPOST_NATS_URL")]
    nats_url: Option<String>,
    /// JetStream domain of the hub.
    #[arg(long, global = true, env = "OUTPOST_JS_DOMAIN")]
    domain: Option<String>,
    /// API token, for client commands.
    #[arg(long, global = true, env = "OUTPOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Private CA that signed the API's certificate.
    #[arg(long, global = true, env = "OUTPOST_API_CA_FILE")]
    api_ca_file: Option<PathBuf>,
    /// NATS credentials (`.creds`) of the control plane, for services.
    #[arg(long, global = true, env = "OUTPOST_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// Private CA that signed NATS's certificate, for services.
    #[arg(long, global = true, env = "OUTPOST_NATS_CA_FILE")]
    nats_ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine: NATS, control plane, runners, UI.
    Up(UpArgs),
    /// Run control-plane services (all of them by default).
    Serve(ServeArgs),
    /// Projector maintenance.
    #[command(subcommand)]
    Projector(ProjectorCmd),
    /// Jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Run a job: `outpost run [GROUP/]NAME|UUID [-o name=value]... [--follow]`.
    Run(RunArgs),
    /// Executions.
    #[command(subcommand)]
    Exec(ExecCmd),
    /// Runners.
    #[command(subcommand)]
    Runner(RunnerCmd),
    /// List the project's nodes (`--filter` in Rundeck's syntax), or `load` a resources.yaml.
    Nodes(NodesArgs),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Messages a consumer could not read: counts per consumer, the newest with why.
    Deadletters,
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The control plane's keys.
    #[command(subcommand)]
    Security(SecurityCmd),
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once.
    Create {
        name: String,
        /// `admin`, `operator` or `viewer` on every project, or
        /// `PROJECT=ROLE`; repeatable.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
    /// Create an admin token straight in NATS, for a first start without
    /// any token (needs the control plane's NATS credentials).
    Bootstrap {
        #[arg(default_value = "admin")]
        name: String,
        /// Write the token here (mode 0600) instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SecurityCmd {
    /// Create the operator, account and signing keys (0600) if missing.
    Init {
        #[arg(long, env = "OUTPOST_KEYS_DIR")]
        keys_dir: PathBuf,
        /// Also write nats-server's auth include, with its resolver dir.
        #[arg(long)]
        resolver_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// The newest audit events; `--follow` keeps printing new ones.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Args)]
struct NodesArgs {
    /// Rundeck node filter, e.g. `tags: web+prod !name: web2`.
    #[arg(long, short = 'F')]
    filter: Option<String>,
    #[command(subcommand)]
    cmd: Option<NodesCmd>,
}

#[derive(Subcommand)]
enum NodesCmd {
    /// Replace the project's node source with a Rundeck resources.yaml.
    Load { file: PathBuf },
}

#[derive(Args)]
struct UpArgs {
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "OUTPOST_LISTEN")]
    listen: Option<String>,
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    #[arg(long, default_value_t = 8443)]
    ws_port: u16,
    #[arg(long, default_value_t = 7422)]
    leaf_port: u16,
    /// Start no remote runner.
    #[arg(long)]
    no_remote_runner: bool,
    /// Plain ws:// and http:// instead of TLS (development only).
    #[arg(long)]
    insecure: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Role {
    All,
    Api,
    Orchestrator,
    Projector,
    Registry,
    LocalRunner,
}

#[derive(Args)]
struct ServeArgs {
    /// Which services; repeatable.
    #[arg(value_enum, default_value = "all")]
    roles: Vec<Role>,
    /// API listen address.
    #[arg(long, env = "OUTPOST_LISTEN")]
    listen: Option<String>,
    /// The control plane's keys (`outpost security init`).
    #[arg(long, env = "OUTPOST_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// The URL runners connect to, written into their bundles.
    #[arg(long, env = "OUTPOST_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// CA certificate (PEM) of the gateway, written into runner bundles.
    #[arg(long, env = "OUTPOST_GATEWAY_CA_FILE")]
    gateway_ca_file: Option<PathBuf>,
    /// The API's TLS certificate chain (PEM).
    #[arg(long, env = "OUTPOST_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    #[arg(long, env = "OUTPOST_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the API over plain http (development only).
    #[arg(long, env = "OUTPOST_INSECURE")]
    insecure: bool,
    /// Seconds a runner replica may be silent before its claimed steps end
    /// as runner-lost.
    #[arg(long, env = "OUTPOST_LOST_RUNNER_AFTER")]
    lost_runner_after: Option<u64>,
    /// Seconds of silence after which a runner replica shows `unknown`.
    #[arg(long, env = "OUTPOST_RUNNER_UNKNOWN_AFTER", default_value_t = 30)]
    runner_unknown_after: u64,
    /// Seconds of silence after which a runner replica shows `down`.
    #[arg(long, env = "OUTPOST_RUNNER_DOWN_AFTER", default_value_t = 120)]
    runner_down_after: u64,
    /// The local runner's work dir, which holds its outbox; one per process
    /// on a host (default: `<tmp>/outpost-runner-_local`).
    #[arg(long, env = "OUTPOST_LOCAL_RUNNER_WORK_DIR")]
    local_runner_work_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProjectorCmd {
    /// Replay the event stream into a fresh bucket and compare it with the live state.
    Rebuild {
        #[arg(long, default_value = "OUTPOST_EXECUTIONS_REBUILD")]
        bucket: String,
    },
}

#[derive(Subcommand)]
enum JobCmd {
    /// Load jobs from a Rundeck job YAML file.
    Load {
        file: PathBuf,
        /// What to do with a job that exists: update, skip or create (fail).
        #[arg(long, default_value = "update")]
        dupe: String,
    },
    /// List the project's jobs.
    List,
    /// Show a job.
    Get {
        job: String,
        #[arg(long)]
        yaml: bool,
    },
    /// Delete a job.
    Delete { job: String },
}

#[derive(Args)]
struct RunArgs {
    job: String,
    /// Option value, `name=value`; repeatable.
    #[arg(short = 'o', long = "option", value_parser = cli::parse_option)]
    options: Vec<(String, String)>,
    /// Print the output live; exit 0 only if the execution succeeds.
    #[arg(short, long)]
    follow: bool,
}

#[derive(Subcommand)]
enum ExecCmd {
    /// Status, steps, runners, exit codes.
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// The output so far (all of it once the execution is over).
    Output { id: Uuid },
    /// Follow the output live until the execution ends.
    Follow { id: Uuid },
    /// Recent executions of the project.
    List {
        #[arg(long, default_value_t = 20)]
        max: usize,
    },
    /// Abort a running execution.
    Abort { id: Uuid },
}

#[derive(Subcommand)]
enum RunnerCmd {
    /// Runner replicas and their last heartbeats.
    List,
    /// Enrol a runner; writes its credentials bundle (mode 0600).
    Create {
        name: String,
        /// Comma-separated tags.
        #[arg(long, default_value = "")]
        tags: String,
        /// Bundle file; default `NAME.creds`.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Enrolled runner identities and their credentials' state.
    Enrolled,
    /// Cut a runner off now; its claimed steps end as runner-lost.
    Revoke { name: String },
    /// Stop the runner taking steps; running ones finish, then it stops.
    Drain { name: String },
    /// Round trip through each replica of the runner.
    Ping { name: String },
    /// Issue new credentials; the old ones stop working once the runner
    /// runs on the new ones.
    Rotate {
        name: String,
        /// Bundle file; default `NAME.creds`. Replacing the file the runner
        /// reads (`--creds`) is all the runner needs.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let quiet_client = !matches!(
        cli.command,
        Command::Up(_) | Command::Serve(_) | Command::Projector(_)
    );
    if quiet_client {
        // A client command piped into `head` or `less` ends quietly when
        // the reader goes away, as Unix tools do, instead of panicking on
        // EPIPE (Rust ignores SIGPIPE). Servers keep ignoring it: a closed
        // socket must not kill them.
        // SAFETY: called before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| {
                if quiet_client {
                    "warn"
                } else {
                    "info,async_nats=warn"
                }
                .into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("outpost: {err:#}");
            2
        }
    };
    drop(rt);
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    // Without --config, the file `outpost up` writes in the data dir, if any.
    let default_config = PathBuf::from(config::DEFAULT_DATA_DIR).join(config::CLIENT_CONFIG);
    let config_path = cli
        .config
        .clone()
        .or_else(|| default_config.exists().then_some(default_config));
    let file = FileConfig::load(config_path.as_deref())?;
    let api_url = pick(cli.api_url.clone(), file.api_url.clone(), || {
        format!("http://{}", config::DEFAULT_LISTEN)
    });
    let project = pick(cli.project.clone(), file.project.clone(), || {
        "default".into()
    });
    let nats = |name: &str| NatsOptions {
        url: pick(cli.nats_url.clone(), file.nats_url.clone(), || {
            config::DEFAULT_NATS_URL.into()
        }),
        domain: Some(pick(cli.domain.clone(), file.domain.clone(), || {
            config::DEFAULT_DOMAIN.into()
        })),
        name: name.into(),
        inbox_prefix: None,
        ca_file: cli.nats_ca_file.clone().or(file.nats_ca_file.clone()),
        api_prefix: None,
        creds_file: cli.nats_creds.clone().or(file.nats_creds.clone()),
    };
    let client = Client::new(
        &api_url,
        cli.token.as_deref().or(file.token.as_deref()),
        cli.api_ca_file.as_deref().or(file.api_ca_file.as_deref()),
    )?;
    let mut stdout = std::io::stdout();
    match cli.command {
        Command::Up(a) => {
            let shutdown = cancel_on_signal();
            up::run(
                up::UpOptions {
                    data_dir: pick(a.data_dir, file.data_dir.clone(), || {
                        config::DEFAULT_DATA_DIR.into()
                    }),
                    listen: pick(a.listen, file.listen.clone(), || {
                        config::DEFAULT_LISTEN.into()
                    }),
                    ports: up::NatsPorts {
                        client: a.nats_port.into(),
                        websocket: a.ws_port.into(),
                        leaf: a.leaf_port.into(),
                        websocket_host: "127.0.0.1".into(),
                        tls: None,
                    },
                    remote_runner: !a.no_remote_runner,
                    insecure: a.insecure,
                },
                shutdown,
            )
            .await?;
        }
        Command::Serve(a) => {
            let mut roles = Roles::NONE;
            for r in &a.roles {
                match r {
                    Role::All => roles = Roles::ALL,
                    Role::Api => roles.api = true,
                    Role::Orchestrator => roles.orchestrator = true,
                    Role::Projector => roles.projector = true,
                    Role::Registry => roles.registry = true,
                    Role::LocalRunner => roles.local_runner = true,
                }
            }
            let shutdown = cancel_on_signal();
            let nats_opts = nats("outpost control plane");
            let keys_dir = a.keys_dir.or(file.keys_dir.clone());
            let tls_cert = a.tls_cert.or(file.tls_cert.clone());
            let tls_key = a.tls_key.or(file.tls_key.clone());
            let api_tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(outpost_services::api::TlsFiles { cert, key }),
                _ if a.insecure => {
                    tracing::warn!("--insecure: the API serves plain http; tokens cross the network in clear text");
                    None
                }
                _ if roles.api => anyhow::bail!(
                    "the API serves https: pass --tls-cert and --tls-key (or --insecure for a development setup)"
                ),
                _ => None,
            };
            let gateway_ca_file = a.gateway_ca_file.or(file.gateway_ca_file.clone());
            let gateway = outpost_services::fleet::registry::Gateway {
                url: a
                    .gateway_url
                    .or(file.gateway_url.clone())
                    .unwrap_or_else(|| nats_opts.url.clone()),
                domain: nats_opts.domain.clone().unwrap_or_default(),
                ca_pem: match &gateway_ca_file {
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .with_context(|| format!("cannot read {}", p.display()))?,
                    ),
                    None => None,
                },
                nats_url: nats_opts.url.clone(),
                nats_ca_file: nats_opts.ca_file.clone(),
            };
            let https = api_tls.is_some();
            let handle = ControlPlane::new(ControlPlaneOptions {
                nats: nats_opts,
                roles,
                listen: pick(a.listen, file.listen.clone(), || {
                    config::DEFAULT_LISTEN.into()
                }),
                local_runner_work_dir: a
                    .local_runner_work_dir
                    .or(file.local_runner_work_dir.clone()),
                keys_dir,
                gateway,
                api_tls,
                lost_runner_after: match a.lost_runner_after {
                    Some(0) => anyhow::bail!(
                        "--lost-runner-after must be at least 1 (and well above the runners' heartbeat period)"
                    ),
                    Some(s) => std::time::Duration::from_secs(s),
                    None => outpost_services::control_plane::DEFAULT_LOST_RUNNER_AFTER,
                },
                runner_health: outpost_services::fleet::health::HealthThresholds {
                    unknown_after: std::time::Duration::from_secs(a.runner_unknown_after),
                    down_after: std::time::Duration::from_secs(a.runner_down_after),
                },
            })
            .start(shutdown)
            .await?;
            if let Some(addr) = handle.api_addr {
                eprintln!(
                    "outpost: API on {}://{addr}/",
                    if https { "https" } else { "http" }
                );
            }
            handle.wait().await?;
        }
        Command::Projector(ProjectorCmd::Rebuild { bucket }) => {
            let (_client, js) = bus::connect(
                &nats("outpost projector rebuild"),
                std::time::Duration::from_secs(10),
            )
            .await?;
            let report = projector::rebuild(&js, &bucket).await?;
            let live =
                projector::read_all(&js, outpost_schemas::subjects::EXECUTIONS_BUCKET).await?;
            let rebuilt = projector::read_all(&js, &bucket).await?;
            let differing: Vec<&String> = live
                .iter()
                .filter(|(k, v)| rebuilt.get(*k) != Some(v))
                .map(|(k, _)| k)
                .chain(rebuilt.keys().filter(|k| !live.contains_key(*k)))
                .collect();
            println!(
                "replayed {} events into {}: {} executions ({} events without their request); {} differ from the live state",
                report.events,
                report.bucket,
                report.executions,
                report.orphans,
                differing.len()
            );
            for k in differing.iter().take(20) {
                println!("  differs: {k}");
            }
            return Ok(if differing.is_empty() { 0 } else { 1 });
        }
        Command::Job(JobCmd::Load { file: path, dupe }) => {
            let yaml = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v = client
                .import(&project, yaml, &dupe)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for j in v["succeeded"].as_array().into_iter().flatten() {
                let name = match j["group"].as_str() {
                    Some(g) => format!("{g}/{}", j["name"].as_str().unwrap_or("")),
                    None => j["name"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{:<8} {}  {}",
                    j["action"].as_str().unwrap_or(""),
                    j["id"].as_str().unwrap_or(""),
                    name
                );
            }
        }
        Command::Job(JobCmd::List) => {
            let v = client.jobs(&project).await?;
            for j in v.as_array().into_iter().flatten() {
                let name = match j["group"].as_str() {
                    Some(g) => format!("{g}/{}", j["name"].as_str().unwrap_or("")),
                    None => j["name"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{}  {:<30} {}",
                    j["id"].as_str().unwrap_or(""),
                    name,
                    j["description"].as_str().unwrap_or("")
                );
            }
        }
        Command::Job(JobCmd::Get { job, yaml }) => {
            let id = client.resolve_job(&project, &job).await?;
            print!("{}", client.job(id, yaml).await?);
            if !yaml {
                println!();
            }
        }
        Command::Job(JobCmd::Delete { job }) => {
            let id = client.resolve_job(&project, &job).await?;
            client.delete_job(id).await?;
            println!("deleted {id}");
        }
        Command::Run(a) => {
            let id = client.resolve_job(&project, &a.job).await?;
            let options: BTreeMap<String, String> = a.options.into_iter().collect();
            let exec = client.run(id, options).await?;
            if !a.follow {
                println!("{exec}");
                return Ok(0);
            }
            eprintln!("execution {exec} started");
            return follow_exit(&client, exec, &mut stdout).await;
        }
        Command::Exec(ExecCmd::Show { id, json }) => {
            let st = client.execution(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", cli::describe(&st));
            }
        }
        Command::Exec(ExecCmd::Output { id }) => {
            let mut offset = String::from("0");
            loop {
                let page = client.output(id, &offset).await?;
                for e in &page.entries {
                    println!("{}", e.log);
                }
                if page.entries.is_empty() || page.offset == offset {
                    break;
                }
                offset = page.offset;
            }
        }
        Command::Exec(ExecCmd::Follow { id }) => {
            return follow_exit(&client, id, &mut stdout).await
        }
        Command::Exec(ExecCmd::List { max }) => {
            for st in client.executions(&project, max).await? {
                println!(
                    "{}  {:<10} {}  {}",
                    st.id,
                    cli::status_word(st.status),
                    st.requested_at.format("%Y-%m-%d %H:%M:%S"),
                    st.job_name
                );
            }
        }
        Command::Exec(ExecCmd::Abort { id }) => {
            let v = client.abort(id).await?;
            let status = v["abort"]["status"].as_str().unwrap_or("unknown");
            match v["abort"]["reason"].as_str() {
                Some(r) => println!("abort {status}: {r}"),
                None => println!("abort {status}"),
            }
        }
        Command::Nodes(NodesArgs {
            cmd: Some(NodesCmd::Load { file: path }),
            ..
        }) => {
            let yaml = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v = client
                .put_nodes(&project, yaml)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("loaded {} nodes into project {project}", v["nodes"]);
        }
        Command::Nodes(NodesArgs { filter, cmd: None }) => {
            let v = client.nodes(&project, filter.as_deref()).await?;
            for n in v.as_array().into_iter().flatten() {
                let source = match n["source"]["kind"].as_str() {
                    Some("runner") => {
                        format!("runner:{}", n["source"]["runner_id"].as_str().unwrap_or(""))
                    }
                    _ => "project".into(),
                };
                let host = match n["port"].as_u64() {
                    Some(p) => format!("{}:{p}", n["hostname"].as_str().unwrap_or("")),
                    None => n["hostname"].as_str().unwrap_or("").to_string(),
                };
                let tags: Vec<&str> = n["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                    .collect();
                println!(
                    "{:<20} {:<24} {:<18} tags=[{}]",
                    n["nodename"].as_str().unwrap_or(""),
                    host,
                    source,
                    tags.join(",")
                );
            }
        }
        Command::Audit(AuditCmd::Tail { lines, follow }) => {
            let mut after: Option<u64> = None;
            loop {
                let v = client
                    .audit(after, if after.is_some() { 1000 } else { lines })
                    .await?;
                for e in v.as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<9} {:<3} {:<40} {} {}",
                        e["time"].as_str().unwrap_or(""),
                        e["actor"].as_str().unwrap_or(""),
                        e["status"],
                        e["action"].as_str().unwrap_or(""),
                        e["target"].as_str().unwrap_or(""),
                        e["source"].as_str().unwrap_or(""),
                    );
                    after = e["seq"].as_u64().or(after);
                }
                if !follow {
                    break;
                }
                after = after.or(Some(0));
                // The audit API has no push form yet; a second's delay is
                // fine for a human watching.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        Command::Runner(RunnerCmd::Create { name, tags, output }) => {
            let tags = outpost_schemas::job::parse_tag_list(&tags).map_err(anyhow::Error::msg)?;
            let v = client.enrol_runner(&name, &tags).await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            write_bundle(&path, &v)?;
            println!(
                "enrolled runner {name} (tags: {}); credentials written to {} (mode 0600)\n\
                 start it with: outpost-runner --creds {}",
                if tags.is_empty() {
                    "none".to_string()
                } else {
                    tags.join(",")
                },
                path.display(),
                path.display()
            );
        }
        Command::Runner(RunnerCmd::Rotate { name, output }) => {
            let v = client.runner_action(&name, "rotate").await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            write_bundle(&path, &v)?;
            println!(
                "new credentials for runner {name} written to {}; replace the runner's --creds file with it. \
                 The old credentials stop working once the runner has switched.",
                path.display()
            );
        }
        Command::Runner(RunnerCmd::Revoke { name }) => {
            let v = client.runner_action(&name, "revoke").await?;
            println!(
                "revoked runner {name}; {} claimed step(s) ended as runner-lost",
                v["steps_ended"]
            );
            if v["connections_cut"] == false {
                eprintln!("warning: NATS is not in operator mode, so the runner's connections were not cut; the control plane refuses its work");
            }
        }
        Command::Runner(RunnerCmd::Drain { name }) => {
            let v = client.runner_action(&name, "drain").await?;
            println!(
                "draining runner {name} ({} live replica(s)): no new steps; running ones finish, then it stops",
                v["live_replicas"]
            );
        }
        Command::Runner(RunnerCmd::Ping { name }) => {
            let v = client.runner_action(&name, "ping").await?;
            let replicas = v["replicas"].as_array().cloned().unwrap_or_default();
            if replicas.is_empty() {
                eprintln!("no replica of runner {name} answered within 2 s");
                return Ok(1);
            }
            for r in replicas {
                println!(
                    "{name} replica {}: {:.2} ms",
                    r["replica_id"].as_str().unwrap_or(""),
                    r["rtt_ms"].as_f64().unwrap_or_default()
                );
            }
        }
        Command::Runner(RunnerCmd::Enrolled) => {
            let v = client.enrolled_runners().await?;
            for r in v.as_array().into_iter().flatten() {
                let creds = r["credentials"].as_array().cloned().unwrap_or_default();
                let state = |s: &str| creds.iter().filter(|c| c["state"] == s).count();
                println!(
                    "{:<16} {:<8} tags=[{}] credentials: {} active, {} superseded, {} revoked; created {} by {}",
                    r["name"].as_str().unwrap_or(""),
                    if r["revoked"].is_null() { "enrolled" } else { "REVOKED" },
                    r["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(","),
                    state("active"),
                    state("superseded"),
                    state("revoked"),
                    r["created"].as_str().unwrap_or(""),
                    r["created_by"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Deadletters => {
            let v = client.dead_letters().await?;
            for (subject, n) in v["counts"].as_object().into_iter().flatten() {
                println!("{n:>6}  {subject}");
            }
            for d in v["recent"].as_array().into_iter().flatten() {
                println!(
                    "#{} {} {} from {}: {}",
                    d["seq"],
                    d["time"].as_str().unwrap_or(""),
                    d["consumer"].as_str().unwrap_or(""),
                    d["subject"].as_str().unwrap_or(""),
                    d["error"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Token(TokenCmd::Create { name, roles }) => {
            let v = client.create_token(&name, &roles).await?;
            eprintln!(
                "token {} ({name}) created; it is shown once, here:",
                v["id"].as_str().unwrap_or("")
            );
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        Command::Token(TokenCmd::List) => {
            let v = client.tokens().await?;
            for t in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<20} {:<8} roles={} created {} by {}",
                    t["id"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    if t["revoked"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    },
                    t["roles"],
                    t["created"].as_str().unwrap_or(""),
                    t["created_by"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            client.revoke_token(&id).await?;
            println!("token {id} revoked");
        }
        Command::Token(TokenCmd::Bootstrap { name, output }) => {
            let (_c, js) = bus::connect(
                &nats("outpost token bootstrap"),
                std::time::Duration::from_secs(10),
            )
            .await?;
            outpost_services::store::topology::ensure(&js).await?;
            let tokens = outpost_services::security::auth::Tokens::open(&js).await?;
            let roles = outpost_services::security::auth::parse_roles(&["admin".into()])
                .map_err(anyhow::Error::msg)?;
            let (rec, token) = tokens
                .create(&name, roles, "bootstrap")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match output {
                Some(p) => {
                    outpost_services::security::write_private(&p, format!("{token}\n").as_bytes())
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    println!(
                        "admin token {} written to {} (mode 0600)",
                        rec.id,
                        p.display()
                    );
                }
                None => println!("{token}"),
            }
        }
        Command::Security(SecurityCmd::Init {
            keys_dir,
            resolver_dir,
        }) => {
            let keys = outpost_services::security::KeyStore::init(&keys_dir)?;
            println!(
                "keys in {} (mode 0600); account {}",
                keys_dir.display(),
                keys.account_public_key()
            );
            if let Some(dir) = resolver_dir {
                let conf = keys_dir.join(outpost_services::security::NATS_AUTH_CONF);
                if conf.exists() {
                    // It carries the revocations made since; a fresh one
                    // would let revoked runners back in.
                    println!(
                        "nats-server auth include: {} (kept; it holds the current revocations)",
                        conf.display()
                    );
                    return Ok(0);
                }
                let text = keys.nats_auth_conf(&dir, &Default::default())?;
                outpost_services::security::write_private(&conf, text.as_bytes())?;
                println!(
                    "nats-server auth include: {} (include it from nats-server's config)",
                    conf.display()
                );
            }
        }
        Command::Runner(RunnerCmd::List) => {
            let v = client.runners().await?;
            println!(
                "{:<16} {:<10} {:<10} {:<10} {:<9} {:<7} {:<8} {:<30} HOST (TAGS)",
                "RUNNER",
                "HEALTH",
                "REPLICA",
                "STATE",
                "STEPS",
                "OUTBOX",
                "VERSION",
                "LAST CHECK-IN"
            );
            for r in v.as_array().into_iter().flatten() {
                let replica = r["replica_id"].as_str().unwrap_or("-");
                println!(
                    "{:<16} {:<10} {:<10} {:<10} {:<9} {:<7} {:<8} {:<30} {} ({})",
                    r["runner_id"].as_str().unwrap_or(""),
                    r["health"].as_str().unwrap_or(""),
                    &replica[replica.len().saturating_sub(8)..],
                    r["state"].as_str().unwrap_or("-"),
                    if r["capacity"].is_null() {
                        "-".to_string()
                    } else {
                        format!("{}/{}", r["running_steps"], r["capacity"])
                    },
                    // Messages waiting for NATS: non-zero after a link cut.
                    r["outbox_entries"]
                        .as_u64()
                        .map_or("-".into(), |n| n.to_string()),
                    r["version"].as_str().unwrap_or("-"),
                    r["time"].as_str().unwrap_or("never"),
                    r["hostname"].as_str().unwrap_or("-"),
                    r["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
    }
    Ok(0)
}

async fn follow_exit(client: &Client, id: Uuid, out: &mut std::io::Stdout) -> anyhow::Result<i32> {
    let st = client.follow(id, out).await?;
    let failed: Vec<String> = st
        .steps
        .iter()
        .filter_map(|s| {
            s.reason
                .as_ref()
                .filter(|_| s.status >= outpost_schemas::state::StepStatus::Failed)
                .map(|r| format!("step {}: {r}", s.step))
        })
        .collect();
    eprintln!(
        "execution {id} {}{}",
        cli::status_word(st.status),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join("; "))
        }
    );
    Ok(if st.status == ExecutionStatus::Succeeded {
        0
    } else {
        1
    })
}

/// Writes the bundle of an enrol/rotate reply, mode 0600, atomically (a
/// runner watching the file never reads half of it).
fn write_bundle(path: &std::path::Path, reply: &serde_json::Value) -> anyhow::Result<()> {
    let bundle = reply["bundle"]
        .as_str()
        .context("unexpected API response: no bundle")?;
    outpost_services::security::write_private(path, bundle.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        t.cancel();
        eprintln!("outpost: stopping; press Ctrl-C again to exit at once");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        std::process::exit(130);
    });
    token
}
