//! Creates the NATS topology, idempotently. Every service calls [`ensure`] at
//! start; creating what exists with the same config is a no-op, and a changed
//! config is applied as an update. ARCHITECTURE.md documents each item.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy},
    kv,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use outpost_schemas::job::{TagSet, Target};
use outpost_schemas::rpc::LaneTarget;
use outpost_schemas::subjects::{self as s};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// How long a step may run or wait for a runner: its claim, its in-flight
/// entry and its sealed secure values live this long, as its events do.
pub const STEP_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long a redelivered dispatch is kept from being stored twice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Unacknowledged work is redelivered after this long without progress acks.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot create stream {name}: {message}")]
    Stream { name: String, message: String },
    #[error("cannot create bucket {name}: {message}")]
    Bucket { name: String, message: String },
    #[error("cannot create consumer {name}: {message}")]
    Consumer { name: String, message: String },
    #[error("cannot register tag set {token}: {message}")]
    TagSet { token: String, message: String },
    #[error("no plugin lane is free for [{plugins}]: held are {held}")]
    LaneTaken { plugins: String, held: String },
}

/// Every stream, as `ensure` creates it (pure: the tidy test checks
/// ARCHITECTURE.md against it).
pub fn stream_configs() -> Vec<stream::Config> {
    vec![
        dispatch_stream_config(None),
        stream::Config {
            name: s::EVENTS_STREAM.into(),
            description: Some("Execution events: the source of truth that projections fold".into()),
            subjects: vec!["outpost.ev.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            // Grants in here decide provenance: the buckets that hold a
            // step's claim live exactly as long.
            max_age: STEP_LIFETIME,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            ..Default::default()
        },
        stream::Config {
            name: s::LOGS_STREAM.into(),
            description: Some("Step output, one subject per execution, step and runner".into()),
            subjects: vec!["outpost.log.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: 30 * DAY,
            max_message_size: 1024 * 1024,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            ..Default::default()
        },
        stream::Config {
            name: s::HEARTBEATS_STREAM.into(),
            description: Some("Latest heartbeat of each runner replica".into()),
            subjects: vec!["outpost.hb.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_messages_per_subject: 1,
            max_age: DAY,
            discard: DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        },
        stream::Config {
            name: s::AUDIT_STREAM.into(),
            description: Some("Audit trail: every mutating API call, and its result".into()),
            subjects: vec!["outpost.audit.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: 365 * DAY,
            // Forged events are audited once each by dedup id, by however
            // many replicas refuse them, redelivered for as long as a
            // handler may retry.
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            ..Default::default()
        },
        stream::Config {
            name: s::DEADLETTER_STREAM.into(),
            description: Some(
                "Messages a consumer could not read: the original payload, and where from and why in headers"
                    .into(),
            ),
            subjects: vec!["outpost.dlq.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: 30 * DAY,
            allow_direct: true,
            ..Default::default()
        },
        stream::Config {
            name: s::NODE_REPORTS_STREAM.into(),
            description: Some("Latest node list each runner serves from its own source".into()),
            subjects: vec!["outpost.nodes.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_messages_per_subject: 1,
            discard: DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        },
    ]
}

/// Every bucket, as `ensure` creates it.
pub fn bucket_configs() -> Vec<kv::Config> {
    let bucket = |name: &str, description: &str, history: i64, max_age: Duration| kv::Config {
        bucket: name.into(),
        description: description.into(),
        history,
        max_age,
        storage: StorageType::File,
        ..Default::default()
    };
    vec![
        bucket(
            s::JOBS_BUCKET,
            "Job definitions and name index",
            5,
            Duration::ZERO,
        ),
        bucket(s::PROJECTS_BUCKET, "Projects", 1, Duration::ZERO),
        bucket(
            s::EXECUTIONS_BUCKET,
            "Projected execution state",
            1,
            90 * DAY,
        ),
        bucket(
            s::EXECUTION_INDEX_BUCKET,
            "Each project's executions, for listing",
            1,
            90 * DAY,
        ),
        bucket(
            s::RUNS_BUCKET,
            "Orchestrator progress per execution",
            1,
            90 * DAY,
        ),
        bucket(
            s::RUNNING_BUCKET,
            "Each job's running executions, for multipleExecutions limits",
            1,
            90 * DAY,
        ),
        bucket(
            s::DEADLINES_BUCKET,
            "Running executions' timeout deadlines",
            1,
            90 * DAY,
        ),
        bucket(
            s::TAGSETS_BUCKET,
            "Registered dispatch tag sets",
            1,
            Duration::ZERO,
        ),
        bucket(
            s::NODES_BUCKET,
            "Project node sources (resources.yaml uploads)",
            5,
            Duration::ZERO,
        ),
        bucket(
            s::CLAIMS_BUCKET,
            "Step claims: the creator of a key runs the step",
            1,
            STEP_LIFETIME,
        ),
        bucket(
            s::ACTIVE_BUCKET,
            "Claimed steps not yet seen finished (the lost-runner sweep's work list)",
            1,
            STEP_LIFETIME,
        ),
        bucket(
            s::RUNNERS_BUCKET,
            "Enrolled runners: tags, credential public keys and their state",
            5,
            Duration::ZERO,
        ),
        bucket(
            s::TOKENS_BUCKET,
            "API tokens: SHA-256 hashes and roles",
            1,
            Duration::ZERO,
        ),
        bucket(
            s::SECRETS_BUCKET,
            "Secure option values of executions, sealed with the secrets key",
            1,
            STEP_LIFETIME,
        ),
    ]
}

async fn create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), TopologyError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|e| TopologyError::Stream {
            name,
            message: e.to_string(),
        })?;
    Ok(())
}

/// Creates every stream, bucket and fixed consumer; safe to call from any
/// number of replicas at once.
pub async fn ensure(js: &jetstream::Context) -> Result<(), TopologyError> {
    for config in stream_configs() {
        create_stream(js, config).await?;
    }
    for config in bucket_configs() {
        let name = config.bucket.clone();
        js.create_or_update_key_value(config)
            .await
            .map_err(|e| TopologyError::Bucket {
                name,
                message: e.to_string(),
            })?;
    }
    ensure_consumer(
        js,
        s::EVENTS_STREAM,
        pull::Config {
            durable_name: Some(s::ORCHESTRATOR_CONSUMER.into()),
            description: Some("Drives executions: requests, finished steps, aborts".into()),
            filter_subjects: s::orchestrator_filters(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 1000,
            ..Default::default()
        },
    )
    .await?;
    ensure_consumer(
        js,
        s::EVENTS_STREAM,
        pull::Config {
            durable_name: Some(s::PROJECTOR_CONSUMER.into()),
            description: Some("Folds every event into execution state".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 1000,
            ..Default::default()
        },
    )
    .await?;
    ensure_dispatch_consumer(js, None, s::LOCAL_TOKEN).await?;
    let projects =
        js.get_key_value(s::PROJECTS_BUCKET)
            .await
            .map_err(|e| TopologyError::Bucket {
                name: s::PROJECTS_BUCKET.into(),
                message: e.to_string(),
            })?;
    // `create` fails when the project exists, which is the point.
    let _ = projects
        .create(
            s::DEFAULT_PROJECT,
            br#"{"name":"default","description":"Created at start"}"#
                .to_vec()
                .into(),
        )
        .await;
    Ok(())
}

async fn ensure_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: pull::Config,
) -> Result<(), TopologyError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let created = js.create_consumer_on_stream(config.clone(), stream).await;
    let result = match created {
        Ok(_) => Ok(()),
        // Differs from what exists (e.g. an older version's filters): update.
        Err(_) => js.update_consumer_on_stream(config, stream).await.map(drop),
    };
    result.map_err(|e| TopologyError::Consumer {
        name,
        message: e.to_string(),
    })
}

/// `OUTPOST_DISPATCH`, or a plugin lane's stream: the same work queue.
pub fn dispatch_stream_config(lane: Option<&str>) -> stream::Config {
    stream::Config {
        name: s::dispatch_stream(lane),
        description: Some(match lane {
            None => "Steps waiting for a runner; one subject token per target".into(),
            Some(l) => format!("Steps that need the plugins of lane `{l}`, waiting for a runner that has them all; one subject token per target"),
        }),
        subjects: vec![match lane {
            None => "outpost.dispatch.>".into(),
            Some(l) => s::lane_subjects(l),
        }],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        // No max age: a step waiting for its runner must not vanish.
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        ..Default::default()
    }
}

/// Runner replicas that may wait on one dispatch consumer at once, each
/// with its one long-poll pull. The server's default is 512, past which a
/// pull fails with "409 Exceeded MaxWaiting": a fleet of 1,000 runners on
/// one tag set hit it.
pub const MAX_WAITING_PULLS: i64 = 10_000;

async fn ensure_dispatch_consumer(
    js: &jetstream::Context,
    lane: Option<&str>,
    token: &str,
) -> Result<(), TopologyError> {
    let stream = s::dispatch_stream(lane);
    let ensured = ensure_consumer(
        js,
        &stream,
        pull::Config {
            durable_name: Some(s::dispatch_consumer(token)),
            description: Some(format!(
                "Work for target `{token}`, shared by every runner that satisfies it{}",
                match lane {
                    Some(_) => " and runs the lane's plugins",
                    None => "",
                }
            )),
            filter_subject: match lane {
                None => s::dispatch_filter(token),
                Some(l) => s::lane_dispatch_filter(l, token),
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 10_000,
            max_waiting: MAX_WAITING_PULLS,
            ..Default::default()
        },
    )
    .await;
    match ensured {
        Err(err) if consumer_exists(js, &stream, &s::dispatch_consumer(token)).await => {
            // The server fixes `max_waiting` at creation, so a consumer made
            // by an older version cannot take the new limit; it keeps working
            // with its own.
            tracing::warn!(error = %err, consumer = %s::dispatch_consumer(token), "dispatch consumer keeps the settings it was created with");
            Ok(())
        }
        other => other,
    }
}

async fn consumer_exists(js: &jetstream::Context, stream: &str, name: &str) -> bool {
    js.get_consumer_from_stream::<pull::Config, _, _>(name, stream)
        .await
        .is_ok()
}

/// Makes a tag set servable: its consumer, then its registry entry (which
/// runners watch). Idempotent; cheap when already registered.
pub async fn ensure_tag_set(
    js: &jetstream::Context,
    registry: &kv::Store,
    set: &TagSet,
) -> Result<(), TopologyError> {
    let key = s::tagset_key(set.tags());
    if let Ok(Some(_)) = registry.get(&key).await {
        return Ok(());
    }
    ensure_dispatch_consumer(js, None, &set.token()).await?;
    let value = serde_json::to_vec(set).expect("tag set serialises");
    registry
        .put(&key, value.into())
        .await
        .map_err(|e| TopologyError::TagSet {
            token: set.token(),
            message: e.to_string(),
        })?;
    // Runners re-ask which sets they serve. Best effort: they also re-ask
    // with every heartbeat.
    let _ = js
        .client()
        .publish(s::TAGSETS_CHANGED, bytes::Bytes::new())
        .await;
    Ok(())
}

/// Makes sure the lane for `plugins` exists for `target` (its stream, the
/// target's consumer on it, and its entry in the registry, which is how
/// runners learn to bind it), and returns the lane's name.
///
/// A readable name held by another plugin set (`com.a.Step` and
/// `org.b.step` read alike) is not shared: a runner binds a lane by the
/// plugins its entry names, so sharing would hand it steps it lacks. The
/// second set goes on its hashed name instead. The registry entry is
/// created, not overwritten, so that two replicas racing for one name
/// agree on who has it.
pub async fn ensure_lane(
    js: &jetstream::Context,
    registry: &kv::Store,
    plugins: &std::collections::BTreeSet<String>,
    target: &Target,
) -> Result<String, TopologyError> {
    let parts = match target {
        Target::Local => vec![s::LOCAL_TOKEN.to_string()],
        Target::Tags(set) => set.tags().to_vec(),
    };
    let wanted: Vec<String> = plugins.iter().cloned().collect();
    let names = s::lane(plugins)
        .into_iter()
        .chain([s::hashed_lane(plugins)]);
    let mut held = Vec::new();
    for name in names {
        let lane = LaneTarget {
            lane: name.clone(),
            plugins: wanted.clone(),
            target: target.clone(),
        };
        let err = |message: String| TopologyError::TagSet {
            token: format!("{} (lane {name})", lane.token()),
            message,
        };
        let key = s::lane_key(&name, &parts);
        let holder = |raw: &[u8]| {
            serde_json::from_slice::<LaneTarget>(raw)
                .map(|t| t.plugins)
                .unwrap_or_default()
        };
        if let Ok(Some(raw)) = registry.get(&key).await {
            let has = holder(&raw);
            if has == wanted {
                return Ok(name);
            }
            held.push((name, has));
            continue;
        }
        create_stream(js, dispatch_stream_config(Some(&name))).await?;
        ensure_dispatch_consumer(js, Some(&name), &lane.token()).await?;
        let value = serde_json::to_vec(&lane).expect("lane serialises");
        match registry.create(&key, value.into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let raw = registry
                    .get(&key)
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .unwrap_or_default();
                let has = holder(&raw);
                if has != wanted {
                    held.push((name, has));
                    continue;
                }
            }
            Err(e) => return Err(err(e.to_string())),
        }
        let _ = js
            .client()
            .publish(s::TAGSETS_CHANGED, bytes::Bytes::new())
            .await;
        return Ok(name);
    }
    Err(TopologyError::LaneTaken {
        plugins: wanted.join(", "),
        held: held
            .into_iter()
            .map(|(lane, has)| format!("{lane} by [{}]", has.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
    })
}
