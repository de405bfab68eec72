//! The commands that run servers, not API calls: `up`, `serve` and
//! `projector rebuild`.

use anyhow::Context;
use outpost_bus as bus;
use outpost_services::config::{self, pick};
use outpost_services::control_plane::{ControlPlane, ControlPlaneOptions, Roles};
use outpost_services::{engine::projector, up};

use crate::args::{ProjectorCmd, Role, ServeArgs, UpArgs};
use crate::{cancel_on_signal, Ctx};

pub(crate) async fn up(ctx: &Ctx, a: UpArgs) -> anyhow::Result<i32> {
    let shutdown = cancel_on_signal();
    up::run(
        up::UpOptions {
            data_dir: pick(a.data_dir, ctx.file.data_dir.clone(), || {
                config::DEFAULT_DATA_DIR.into()
            }),
            listen: pick(a.listen, ctx.file.listen.clone(), || {
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
    Ok(0)
}

pub(crate) async fn serve(ctx: &Ctx, a: ServeArgs) -> anyhow::Result<i32> {
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
    let nats_opts = ctx.nats("outpost control plane");
    let keys_dir = a.keys_dir.or(ctx.file.keys_dir.clone());
    let tls_cert = a.tls_cert.or(ctx.file.tls_cert.clone());
    let tls_key = a.tls_key.or(ctx.file.tls_key.clone());
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
    let gateway_ca_file = a.gateway_ca_file.or(ctx.file.gateway_ca_file.clone());
    let gateway = outpost_services::fleet::registry::Gateway {
        url: a
            .gateway_url
            .or(ctx.file.gateway_url.clone())
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
            listen: pick(a.listen, ctx.file.listen.clone(), || {
                config::DEFAULT_LISTEN.into()
            }),
            local_runner_work_dir: a
                .local_runner_work_dir
                .or(ctx.file.local_runner_work_dir.clone()),
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
    Ok(0)
}

pub(crate) async fn projector(ctx: &Ctx, cmd: ProjectorCmd) -> anyhow::Result<i32> {
    let ProjectorCmd::Rebuild { bucket } = cmd;
    let (_client, js) = bus::connect(
        &ctx.nats("outpost projector rebuild"),
        std::time::Duration::from_secs(10),
    )
    .await?;
    let report = projector::rebuild(&js, &bucket).await?;
    let live = projector::read_all(&js, outpost_schemas::subjects::EXECUTIONS_BUCKET).await?;
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
    Ok(if differing.is_empty() { 0 } else { 1 })
}
