//! `outpost-runner`: the runner agent.
//!
//! Configuration is layered: defaults, then the TOML file (`--config`), then
//! `OUTPOST_*` environment variables, then flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use outpost_bus::NatsOptions;
use outpost_runner::plugins::{AllowList, Usable};
use outpost_runner::{Runner, RunnerOptions, DEFAULT_CAPACITY};
use outpost_schemas::job::{parse_tag_list, TagSet};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "outpost-runner",
    version,
    about = "Outpost runner: runs steps inside a private network, connecting outbound only"
)]
struct Cli {
    /// TOML config file.
    #[arg(long, env = "OUTPOST_RUNNER_CONFIG")]
    config: Option<PathBuf>,
    /// Runner id (shared by replicas).
    #[arg(long, env = "OUTPOST_RUNNER_ID")]
    id: Option<String>,
    /// Comma-separated tags this runner carries.
    #[arg(long, env = "OUTPOST_RUNNER_TAGS")]
    tags: Option<String>,
    /// NATS URL: ws://, wss:// or nats://.
    #[arg(long, env = "OUTPOST_NATS_URL")]
    nats_url: Option<String>,
    /// JetStream domain of the hub.
    #[arg(long, env = "OUTPOST_JS_DOMAIN")]
    domain: Option<String>,
    /// Most steps run at once by this process.
    #[arg(long, env = "OUTPOST_RUNNER_CAPACITY")]
    capacity: Option<usize>,
    /// Where scripts are written while they run.
    #[arg(long, env = "OUTPOST_RUNNER_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Seconds running steps get to finish on SIGTERM.
    #[arg(long, env = "OUTPOST_RUNNER_SHUTDOWN_GRACE")]
    shutdown_grace: Option<u64>,
    /// Rundeck resources.yaml of the nodes this runner serves.
    #[arg(long, env = "OUTPOST_RUNNER_NODES_FILE")]
    nodes_file: Option<PathBuf>,
    /// An Ansible inventory (any format `ansible-inventory` reads) of more
    /// nodes it serves.
    #[arg(long, env = "OUTPOST_RUNNER_ANSIBLE_INVENTORY")]
    ansible_inventory: Option<PathBuf>,
    /// Pods as more nodes: a YAML file of the keys of Rundeck's Kubernetes
    /// resource model (`label_selector`, `namespace_filter`, `config_file`, …).
    #[arg(long, env = "OUTPOST_RUNNER_KUBERNETES_PODS")]
    kubernetes_pods: Option<PathBuf>,
    /// Directory that `ssh-key-storage-path` / `ssh-password-storage-path` resolve in.
    #[arg(long, env = "OUTPOST_RUNNER_KEY_STORE")]
    key_store: Option<PathBuf>,
    /// known_hosts file for SSH nodes.
    #[arg(long, env = "OUTPOST_RUNNER_KNOWN_HOSTS")]
    known_hosts: Option<PathBuf>,
    /// `strict` (default) or `accept-new`.
    #[arg(long, env = "OUTPOST_RUNNER_HOST_KEY_POLICY")]
    host_key_policy: Option<String>,
    /// PEM file of a private CA that signed the hub's certificate (for wss://).
    #[arg(long, env = "OUTPOST_NATS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Credentials bundle from `outpost runner create`: identity, tags,
    /// gateway URL, CA and NATS credentials in one file.
    #[arg(long, env = "OUTPOST_RUNNER_CREDS")]
    creds: Option<PathBuf>,
    /// Seconds between heartbeats (default 5).
    #[arg(long, env = "OUTPOST_RUNNER_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// Allow a plain `ws://` or `nats://` gateway URL (development only).
    #[arg(long, env = "OUTPOST_INSECURE")]
    insecure: bool,
    /// Where events and logs wait for NATS's ack (default `<work-dir>/outbox`).
    /// Keep it on a disk that survives a restart.
    #[arg(long, env = "OUTPOST_RUNNER_OUTBOX_DIR")]
    outbox_dir: Option<PathBuf>,
    /// Size limit of the outbox in MiB (default 256). When full, steps that
    /// print wait until NATS acknowledges what is queued.
    #[arg(long, env = "OUTPOST_RUNNER_OUTBOX_MAX_MIB")]
    outbox_max_mib: Option<u64>,
    /// fsync each outbox entry, so it survives a host crash too.
    #[arg(long, env = "OUTPOST_RUNNER_OUTBOX_SYNC")]
    outbox_sync: bool,
    /// YAML allow-list of the plugins this runner may run, in the shape of
    /// Rundeck's `remoteRunnerAllowedPluginsFile` (`allowedPlugins:
    /// {WorkflowStep: [...], WorkflowNodeStep: [...]}`); without it, every
    /// plugin the runner has.
    #[arg(long, env = "OUTPOST_RUNNER_ALLOWED_PLUGINS")]
    allowed_plugins: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<String>,
    tags: Option<Vec<String>>,
    nats_url: Option<String>,
    domain: Option<String>,
    capacity: Option<usize>,
    work_dir: Option<PathBuf>,
    shutdown_grace: Option<u64>,
    nodes_file: Option<PathBuf>,
    ansible_inventory: Option<PathBuf>,
    kubernetes_pods: Option<PathBuf>,
    key_store: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    host_key_policy: Option<String>,
    ca_file: Option<PathBuf>,
    creds: Option<PathBuf>,
    insecure: Option<bool>,
    heartbeat_secs: Option<u64>,
    outbox_dir: Option<PathBuf>,
    outbox_max_mib: Option<u64>,
    outbox_sync: Option<bool>,
    allowed_plugins: Option<PathBuf>,
}

fn options(cli: Cli) -> anyhow::Result<RunnerOptions> {
    let file: FileConfig = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let creds = cli.creds.clone().or(file.creds.clone());
    let bundle = match &creds {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read credentials bundle {}", path.display()))?;
            let b: outpost_schemas::bundle::Bundle = toml::from_str(&text)
                .with_context(|| format!("credentials bundle {}", path.display()))?;
            Some(b)
        }
        None => None,
    };
    let id = match (&bundle, cli.id.or(file.id)) {
        (Some(b), Some(id)) if id != b.runner_id => bail!(
            "--id {id} contradicts the credentials bundle, which is runner {}",
            b.runner_id
        ),
        (Some(b), _) => b.runner_id.clone(),
        (None, Some(id)) => id,
        (None, None) => bail!(
            "no runner id: pass --creds (from `outpost runner create`), or --id / OUTPOST_RUNNER_ID / `id` in the config file"
        ),
    };
    let tags = match (&bundle, cli.tags) {
        // Its NATS permissions are built on the enrolled tags; others would
        // only fail later.
        (Some(_), Some(_)) => {
            bail!("--tags cannot be used with --creds: the bundle fixes the runner's tags")
        }
        (Some(b), None) => Ok(b.tags.clone()),
        (None, Some(t)) => parse_tag_list(&t),
        (None, None) => TagSet::new(file.tags.unwrap_or_default()).map(|t| t.tags().to_vec()),
    }
    .map_err(anyhow::Error::msg)?;
    let tags = TagSet::new(tags).map_err(anyhow::Error::msg)?;
    let url = cli
        .nats_url
        .or(file.nats_url)
        .or_else(|| bundle.as_ref().map(|b| b.url.clone()))
        .unwrap_or_else(|| "wss://127.0.0.1:8443".into());
    let insecure = cli.insecure || file.insecure.unwrap_or(false);
    let plain = url.split(',').any(|u| {
        let u = u.trim();
        u.starts_with("ws://") || u.starts_with("nats://")
    });
    if plain && !insecure {
        bail!(
            "{url} is not TLS; use wss:// (or tls://), or pass --insecure for a development setup"
        );
    }
    if plain {
        tracing::warn!(
            url,
            "--insecure: connecting without TLS; traffic and credentials can be read on the wire"
        );
    }
    let work_dir = cli.work_dir.or(file.work_dir);
    let mut ca_file = cli.ca_file.clone().or(file.ca_file.clone());
    if let (None, Some(pem)) = (&ca_file, bundle.as_ref().and_then(|b| b.ca.clone())) {
        // The bundle's CA, where async-nats can load it from.
        let dir = work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("outpost-runner-{id}")));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("gateway-ca.pem");
        std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
        ca_file = Some(path);
    }
    let nats = NatsOptions {
        url,
        domain: cli
            .domain
            .or(file.domain)
            .or_else(|| bundle.as_ref().map(|b| b.domain.clone()))
            .or_else(|| Some("hub".into())),
        name: format!("outpost-runner {id}"),
        inbox_prefix: Some(format!("_INBOX_{id}")),
        ca_file,
        api_prefix: bundle.as_ref().and_then(|b| b.api_prefix.clone()),
        creds_file: creds,
    };
    let mut opts = RunnerOptions::new(id, tags, nats);
    opts.capacity = cli.capacity.or(file.capacity).unwrap_or(DEFAULT_CAPACITY);
    if opts.capacity == 0 {
        bail!("capacity must be at least 1");
    }
    if let Some(dir) = work_dir {
        opts.work_dir = dir;
    }
    opts.nodes_file = cli.nodes_file.or(file.nodes_file);
    opts.ansible_inventory = cli.ansible_inventory.or(file.ansible_inventory);
    opts.kubernetes_pods = cli.kubernetes_pods.or(file.kubernetes_pods);
    if let Some(p) = cli.key_store.or(file.key_store) {
        opts.key_store = p;
    }
    if let Some(p) = cli.known_hosts.or(file.known_hosts) {
        opts.known_hosts = p;
    }
    opts.host_key_policy = match cli.host_key_policy.or(file.host_key_policy).as_deref() {
        None | Some("strict") => outpost_runner::ssh::HostKeyPolicy::Strict,
        Some("accept-new") => outpost_runner::ssh::HostKeyPolicy::AcceptNew,
        Some(other) => bail!("host key policy `{other}` is not `strict` or `accept-new`"),
    };
    if let Some(secs) = cli.heartbeat_secs.or(file.heartbeat_secs) {
        if secs == 0 {
            bail!("heartbeat_secs must be at least 1");
        }
        opts.heartbeat_every = Duration::from_secs(secs);
    }
    if let Some(secs) = cli.shutdown_grace.or(file.shutdown_grace) {
        opts.shutdown_grace = Duration::from_secs(secs);
    }
    opts.outbox_dir = cli.outbox_dir.or(file.outbox_dir);
    if let Some(mib) = cli.outbox_max_mib.or(file.outbox_max_mib) {
        if mib == 0 {
            bail!("outbox_max_mib must be at least 1");
        }
        opts.outbox_max_bytes = mib
            .checked_mul(1024 * 1024)
            .ok_or_else(|| anyhow::anyhow!("outbox_max_mib {mib} is too large"))?;
    }
    opts.outbox_sync = cli.outbox_sync || file.outbox_sync.unwrap_or(false);
    if let Some(path) = cli.allowed_plugins.or(file.allowed_plugins) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read allowed plugins file {}", path.display()))?;
        let (list, warnings) = AllowList::parse(&text, &Usable::services())
            .with_context(|| format!("allowed plugins file {}", path.display()))?;
        for warning in warnings {
            tracing::warn!(file = %path.display(), "{warning}");
        }
        opts.allowed_plugins = Some(list);
    }
    Ok(opts)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run().await {
        eprintln!("outpost-runner: {err:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let opts = options(Cli::parse())?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_to_cancel(shutdown.clone()));
    Runner::new(opts).run(shutdown).await?;
    Ok(())
}

async fn signal_to_cancel(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    token.cancel();
    // A second signal means "now": skip the drain.
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    std::process::exit(130);
}
