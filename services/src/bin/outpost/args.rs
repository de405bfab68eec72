//! The `outpost` command line: every command, subcommand and flag.

use outpost_services::formats::Format;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use outpost_services::cli;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "Outpost: automation that reaches private networks through outbound-only runners"
)]
pub(crate) struct Cli {
    /// TOML config file (keys: nats_url, domain, listen, data_dir, api_url,
    /// project, token, api_ca_file, nats_creds, nats_ca_file, keys_dir,
    /// gateway_url, gateway_ca_file, tls_cert, tls_key). Default:
    /// `.outpost/outpost.toml` when it exists.
    #[arg(long, global = true, env = "OUTPOST_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Base URL of the Outpost API, for client commands.
    #[arg(long, global = true, env = "OUTPOST_API_URL")]
    pub(crate) api_url: Option<String>,
    /// Project for client commands.
    #[arg(long, short = 'p', global = true, env = "OUTPOST_PROJECT")]
    pub(crate) project: Option<String>,
    /// NATS URL, for services.
    #[arg(long, global = true, env = "OUTPOST_NATS_URL")]
    pub(crate) nats_url: Option<String>,
    /// JetStream domain of the hub.
    #[arg(long, global = true, env = "OUTPOST_JS_DOMAIN")]
    pub(crate) domain: Option<String>,
    /// API token, for client commands.
    #[arg(long, global = true, env = "OUTPOST_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Private CA that signed the API's certificate.
    #[arg(long, global = true, env = "OUTPOST_API_CA_FILE")]
    pub(crate) api_ca_file: Option<PathBuf>,
    /// NATS credentials (`.creds`) of the control plane, for services.
    #[arg(long, global = true, env = "OUTPOST_NATS_CREDS")]
    pub(crate) nats_creds: Option<PathBuf>,
    /// Private CA that signed NATS's certificate, for services.
    #[arg(long, global = true, env = "OUTPOST_NATS_CA_FILE")]
    pub(crate) nats_ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Projects: their configuration (`project.globals.NAME` is
    /// `${globals.NAME}` in their jobs).
    #[command(subcommand)]
    Project(ProjectCmd),
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
pub(crate) enum ProjectCmd {
    /// The project's configuration, `key=value` per line; or change it.
    Config {
        #[command(subcommand)]
        change: Option<ConfigCmd>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// Set a key: `outpost project config set project.globals.region eu`.
    Set { key: String, value: String },
    /// Remove a key.
    Unset { key: String },
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
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
pub(crate) enum SecurityCmd {
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
pub(crate) enum AuditCmd {
    /// The newest audit events; `--follow` keeps printing new ones.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Args)]
pub(crate) struct NodesArgs {
    /// Rundeck node filter, e.g. `tags: web+prod !name: web2`.
    #[arg(long, short = 'F')]
    pub(crate) filter: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Option<NodesCmd>,
}

#[derive(Subcommand)]
pub(crate) enum NodesCmd {
    /// Replace the project's node source with a Rundeck resources.yaml.
    Load { file: PathBuf },
}

#[derive(Args)]
pub(crate) struct UpArgs {
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[arg(long, env = "OUTPOST_LISTEN")]
    pub(crate) listen: Option<String>,
    #[arg(long, default_value_t = 4222)]
    pub(crate) nats_port: u16,
    #[arg(long, default_value_t = 8443)]
    pub(crate) ws_port: u16,
    #[arg(long, default_value_t = 7422)]
    pub(crate) leaf_port: u16,
    /// Start no remote runner.
    #[arg(long)]
    pub(crate) no_remote_runner: bool,
    /// Plain ws:// and http:// instead of TLS (development only).
    #[arg(long)]
    pub(crate) insecure: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Role {
    All,
    Api,
    Orchestrator,
    Projector,
    Registry,
    LocalRunner,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Which services; repeatable.
    #[arg(value_enum, default_value = "all")]
    pub(crate) roles: Vec<Role>,
    /// API listen address.
    #[arg(long, env = "OUTPOST_LISTEN")]
    pub(crate) listen: Option<String>,
    /// The control plane's keys (`outpost security init`).
    #[arg(long, env = "OUTPOST_KEYS_DIR")]
    pub(crate) keys_dir: Option<PathBuf>,
    /// The URL runners connect to, written into their bundles.
    #[arg(long, env = "OUTPOST_GATEWAY_URL")]
    pub(crate) gateway_url: Option<String>,
    /// CA certificate (PEM) of the gateway, written into runner bundles.
    #[arg(long, env = "OUTPOST_GATEWAY_CA_FILE")]
    pub(crate) gateway_ca_file: Option<PathBuf>,
    /// The API's TLS certificate chain (PEM).
    #[arg(long, env = "OUTPOST_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    #[arg(long, env = "OUTPOST_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Serve the API over plain http (development only).
    #[arg(long, env = "OUTPOST_INSECURE")]
    pub(crate) insecure: bool,
    /// Seconds a runner replica may be silent before its claimed steps end
    /// as runner-lost.
    #[arg(long, env = "OUTPOST_LOST_RUNNER_AFTER")]
    pub(crate) lost_runner_after: Option<u64>,
    /// Seconds of silence after which a runner replica shows `unknown`.
    #[arg(long, env = "OUTPOST_RUNNER_UNKNOWN_AFTER", default_value_t = 30)]
    pub(crate) runner_unknown_after: u64,
    /// Seconds of silence after which a runner replica shows `down`.
    #[arg(long, env = "OUTPOST_RUNNER_DOWN_AFTER", default_value_t = 120)]
    pub(crate) runner_down_after: u64,
    /// The local runner's work dir, which holds its outbox; one per process
    /// on a host (default: `<tmp>/outpost-runner-_local`).
    #[arg(long, env = "OUTPOST_LOCAL_RUNNER_WORK_DIR")]
    pub(crate) local_runner_work_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum ProjectorCmd {
    /// Replay the event stream into a fresh bucket and compare it with the live state.
    Rebuild {
        #[arg(long, default_value = "OUTPOST_EXECUTIONS_REBUILD")]
        bucket: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum JobCmd {
    /// Load jobs from a Rundeck job file: YAML, XML or JSON (told by the
    /// file's extension, else by its text).
    Load {
        file: PathBuf,
        /// What to do with a job that exists: update, skip or create (fail).
        #[arg(long, default_value = "update", value_parser = parse_dupe)]
        dupe: outpost_services::contract::DupeOption,
        /// The file's format, if neither its extension nor its text tells.
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
    },
    /// Check a job file without a server: each job is read as `load` reads
    /// it, and its export must read back the same in every format. Exit 2
    /// with the line and field of the first fault.
    Check {
        file: PathBuf,
        /// The file's format, if neither its extension nor its text tells.
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
        /// Print the jobs as a file of this format (yaml, xml or json).
        #[arg(long, value_parser = parse_format)]
        to: Option<Format>,
    },
    /// List the project's jobs.
    List,
    /// Show a job: as stored (JSON), or its definition as a job file.
    Get {
        job: String,
        /// yaml, xml or json: the definition as a one-job file of that format.
        #[arg(long, value_parser = parse_format, conflicts_with = "yaml")]
        format: Option<Format>,
        /// Same as `--format yaml`.
        #[arg(long)]
        yaml: bool,
    },
    /// List an option's remote values, read from its valuesUrl now.
    Values {
        job: String,
        option: String,
        /// Another option's value for the URL's `${option.NAME.value}`,
        /// `name=value`; repeatable.
        #[arg(short = 'o', long = "option", value_parser = cli::parse_option)]
        options: Vec<(String, String)>,
    },
    /// Print every job of the project as one job file (yaml, xml or json).
    Export {
        #[arg(long, default_value = "yaml", value_parser = parse_format)]
        format: Format,
    },
    /// Delete a job.
    Delete { job: String },
}

#[derive(Args)]
pub(crate) struct RunArgs {
    pub(crate) job: String,
    /// Option value, `name=value`; repeatable.
    #[arg(short = 'o', long = "option", value_parser = cli::parse_option)]
    pub(crate) options: Vec<(String, String)>,
    /// Print the output live; exit 0 only if the execution succeeds.
    #[arg(short, long)]
    pub(crate) follow: bool,
}

#[derive(Subcommand)]
pub(crate) enum ExecCmd {
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
pub(crate) enum RunnerCmd {
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

fn parse_dupe(s: &str) -> Result<outpost_services::contract::DupeOption, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("`{s}` is not one of update, skip, create"))
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s).ok_or_else(|| format!("`{s}` is not one of yaml, xml, json"))
}
