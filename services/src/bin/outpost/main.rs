//! `outpost`: the control plane's binary and CLI.
//!
//! Exit codes: 0 success; 1 the execution failed or was aborted (`run
//! --follow`); 2 anything else went wrong (bad input, API unreachable).

mod args;
mod client;
mod server;

use std::path::PathBuf;

use clap::Parser;
use outpost_bus::NatsOptions;
use outpost_services::cli::Client;
use outpost_services::config::{self, pick, FileConfig};
use tokio_util::sync::CancellationToken;

use args::{Cli, Command};

/// What every command may need: the layered config and the API client.
pub(crate) struct Ctx {
    pub(crate) file: FileConfig,
    pub(crate) project: String,
    pub(crate) client: Client,
    nats_url: Option<String>,
    domain: Option<String>,
    nats_ca_file: Option<PathBuf>,
    nats_creds: Option<PathBuf>,
}

impl Ctx {
    /// How to reach NATS: flags, then the config file, then the defaults.
    pub(crate) fn nats(&self, name: &str) -> NatsOptions {
        NatsOptions {
            url: pick(self.nats_url.clone(), self.file.nats_url.clone(), || {
                config::DEFAULT_NATS_URL.into()
            }),
            domain: Some(pick(self.domain.clone(), self.file.domain.clone(), || {
                config::DEFAULT_DOMAIN.into()
            })),
            name: name.into(),
            inbox_prefix: None,
            ca_file: self.nats_ca_file.clone().or(self.file.nats_ca_file.clone()),
            api_prefix: None,
            creds_file: self.nats_creds.clone().or(self.file.nats_creds.clone()),
        }
    }
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
    let client = Client::new(
        &api_url,
        cli.token.as_deref().or(file.token.as_deref()),
        cli.api_ca_file.as_deref().or(file.api_ca_file.as_deref()),
    )?;
    let ctx = Ctx {
        file,
        project,
        client,
        nats_url: cli.nats_url,
        domain: cli.domain,
        nats_ca_file: cli.nats_ca_file,
        nats_creds: cli.nats_creds,
    };
    match cli.command {
        Command::Up(a) => server::up(&ctx, a).await,
        Command::Serve(a) => server::serve(&ctx, a).await,
        Command::Projector(cmd) => server::projector(&ctx, cmd).await,
        other => client::run(&ctx, other).await,
    }
}

pub(crate) fn cancel_on_signal() -> CancellationToken {
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
