//! `outpost`: the control plane's binary and CLI.
//!
//! Exit codes: 0 success; 1 the execution failed or was aborted (`run
//! --follow`); 2 anything else went wrong (bad input, API unreachable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use outpost_runner::bus::{self, NatsOptions};
use outpost_schemas::state::ExecutionStatus;
use outpost_services::cli::{self, Client};
use outpost_services::config::{self, pick, FileConfig};
use outpost_services::control_plane::{ControlPlane, ControlPlaneOptions, Roles};
use outpost_services::{projector, up};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "Outpost: automation that reaches private networks through outbound-only runners"
)]
struct Cli {
    /// TOML config file (keys: nats_url, domain, listen, data_dir, api_url, project).
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
    #[arg(long, default_value_t = 8080)]
    ws_port: u16,
    #[arg(long, default_value_t = 7422)]
    leaf_port: u16,
    /// Start no remote runner.
    #[arg(long)]
    no_remote_runner: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Role {
    All,
    Api,
    Orchestrator,
    Projector,
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
}

fn main() {
    let cli = Cli::parse();
    let quiet_client = !matches!(
        cli.command,
        Command::Up(_) | Command::Serve(_) | Command::Projector(_)
    );
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
    let file = FileConfig::load(cli.config.as_deref())?;
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
        ca_file: None,
    };
    let client = Client::new(&api_url);
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
                        websocket_tls: None,
                    },
                    remote_runner: !a.no_remote_runner,
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
                    Role::LocalRunner => roles.local_runner = true,
                }
            }
            let shutdown = cancel_on_signal();
            let handle = ControlPlane::new(ControlPlaneOptions {
                nats: nats("outpost control plane"),
                roles,
                listen: pick(a.listen, file.listen.clone(), || {
                    config::DEFAULT_LISTEN.into()
                }),
                local_runner_work_dir: None,
            })
            .start(shutdown)
            .await?;
            if let Some(addr) = handle.api_addr {
                eprintln!("outpost: API on http://{addr}/");
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
        Command::Runner(RunnerCmd::List) => {
            let v = client.runners().await?;
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:<6} tags=[{}] running={}/{} last={} host={}",
                    r["runner_id"].as_str().unwrap_or(""),
                    if r["live"].as_bool() == Some(true) {
                        "live"
                    } else {
                        "stale"
                    },
                    r["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    r["running_steps"],
                    r["capacity"],
                    r["time"].as_str().unwrap_or(""),
                    r["hostname"].as_str().unwrap_or(""),
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
