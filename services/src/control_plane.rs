//! Runs any set of control-plane services, plus the embedded local runner,
//! in one process over one NATS connection.

use std::net::SocketAddr;
use std::path::PathBuf;

use outpost_bus::{self as bus, NatsOptions};
#[cfg(feature = "local-runner")]
use outpost_runner::{Runner, RunnerOptions};
#[cfg(feature = "local-runner")]
use outpost_schemas::job::TagSet;
#[cfg(feature = "local-runner")]
use outpost_schemas::subjects;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, TlsFiles};
use crate::engine::orchestrator::Orchestrator;
use crate::engine::projector::Projector;
use crate::fleet::registry::{Gateway, Registry};
use crate::security::KeyStore;
use crate::store::topology;
use crate::ServiceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub orchestrator: bool,
    pub projector: bool,
    /// Answers runner requests (claims, tag sets, secure values).
    pub registry: bool,
    pub local_runner: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        orchestrator: true,
        projector: true,
        registry: true,
        local_runner: true,
    };
    pub const NONE: Roles = Roles {
        api: false,
        orchestrator: false,
        projector: false,
        registry: false,
        local_runner: false,
    };
}

#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub nats: NatsOptions,
    pub roles: Roles,
    /// API listen address; port 0 picks one.
    pub listen: String,
    pub local_runner_work_dir: Option<PathBuf>,
    /// The control plane's keys (`outpost security init`); without them
    /// runners cannot be enrolled and secure options cannot be used.
    pub keys_dir: Option<PathBuf>,
    /// What enrolled runners are told about the gateway.
    pub gateway: Gateway,
    /// Serve the API over https with these; `None` is plain http.
    pub api_tls: Option<TlsFiles>,
    /// A claimed step whose runner replica has been silent this long ends
    /// as `runner-lost`.
    pub lost_runner_after: std::time::Duration,
    /// When silent runner replicas show as unknown, then down.
    pub runner_health: crate::fleet::health::HealthThresholds,
}

/// Default of [`ControlPlaneOptions::lost_runner_after`]: six missed
/// heartbeats at the runner's default 5 s cadence.
pub const DEFAULT_LOST_RUNNER_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

pub struct ControlPlane {
    opts: ControlPlaneOptions,
}

/// A started control plane: where its API listens, and its tasks.
pub struct ControlPlaneHandle {
    pub api_addr: Option<SocketAddr>,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    shutdown: CancellationToken,
}

impl ControlPlane {
    pub fn new(opts: ControlPlaneOptions) -> Self {
        ControlPlane { opts }
    }

    /// Connects, creates the topology and starts every role; returns once the
    /// API is bound. Everything stops when `shutdown` fires.
    pub async fn start(
        self,
        shutdown: CancellationToken,
    ) -> Result<ControlPlaneHandle, ServiceError> {
        let opts = self.opts;
        let (client, js) = bus::connect(&opts.nats, std::time::Duration::from_secs(60)).await?;
        topology::ensure(&js).await?;
        let mut tasks = JoinSet::new();
        let mut api_addr = None;
        let keys = match &opts.keys_dir {
            Some(dir) => Some(std::sync::Arc::new(
                KeyStore::open(dir).map_err(|e| ServiceError::Invalid(e.to_string()))?,
            )),
            None => None,
        };
        let registry = Registry::new(
            client.clone(),
            js.clone(),
            keys,
            opts.gateway.clone(),
            opts.lost_runner_after,
        )
        .await?;
        if opts.roles.registry {
            let r = registry.clone();
            let s = shutdown.clone();
            tasks.spawn(async move { ("registry", r.serve(s).await.map_err(|e| e.to_string())) });
        }
        if opts.roles.api {
            let api = Api::bind(
                &opts.listen,
                client.clone(),
                js.clone(),
                registry.clone(),
                opts.api_tls.clone(),
            )
            .await?
            .with_health(opts.runner_health);
            api_addr = Some(api.local_addr());
            let s = shutdown.clone();
            tasks.spawn(async move { ("api", api.run(s).await.map_err(|e| e.to_string())) });
        }
        if opts.roles.orchestrator {
            let o = Orchestrator::new(client.clone(), js.clone());
            let s = shutdown.clone();
            tasks.spawn(async move { ("orchestrator", o.run(s).await.map_err(|e| e.to_string())) });
            // Timeouts are the orchestrator's: every replica watches them.
            let d = crate::engine::deadline::Deadlines::new(js.clone());
            let s = shutdown.clone();
            tasks.spawn(async move { ("deadlines", d.run(s).await.map_err(|e| e.to_string())) });
        }
        if opts.roles.projector {
            let p = Projector::new(js.clone());
            let s = shutdown.clone();
            tasks.spawn(async move { ("projector", p.run(s).await.map_err(|e| e.to_string())) });
        }
        #[cfg(not(feature = "local-runner"))]
        if opts.roles.local_runner {
            return Err(ServiceError::Invalid(
                "this build has no embedded local runner (cargo feature `local-runner`)".into(),
            ));
        }
        #[cfg(feature = "local-runner")]
        if opts.roles.local_runner {
            let mut ro = RunnerOptions::new(
                subjects::LOCAL_RUNNER_ID,
                TagSet::new(Vec::<String>::new()).expect("empty tag set"),
                NatsOptions {
                    name: "outpost local runner".into(),
                    inbox_prefix: None,
                    ..opts.nats.clone()
                },
            );
            ro.local = true;
            if let Some(dir) = &opts.local_runner_work_dir {
                ro.work_dir = dir.clone();
            }
            let s = shutdown.clone();
            tasks.spawn(async move {
                (
                    "local runner",
                    Runner::new(ro).run(s).await.map_err(|e| e.to_string()),
                )
            });
        }
        Ok(ControlPlaneHandle {
            api_addr,
            tasks,
            shutdown,
        })
    }
}

impl ControlPlaneHandle {
    /// Waits for every role to stop. A role that fails stops the others, so
    /// that a half-working process exits (and gets restarted) rather than,
    /// say, accepting runs that no orchestrator will ever plan.
    pub async fn wait(mut self) -> Result<(), ServiceError> {
        let mut first_err = None;
        while let Some(res) = self.tasks.join_next().await {
            match res {
                Ok((_, Ok(()))) => {}
                Ok((role, Err(e))) => {
                    tracing::error!(error = %e, role, "service failed; stopping the others");
                    first_err.get_or_insert(ServiceError::Invalid(format!("{role}: {e}")));
                    self.shutdown.cancel();
                }
                Err(e) => {
                    first_err.get_or_insert(ServiceError::Invalid(format!("task panicked: {e}")));
                    self.shutdown.cancel();
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
