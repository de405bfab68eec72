//! What the control plane knows about runners: their latest heartbeats.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use outpost_schemas::job::Target;
use outpost_schemas::{subjects, RunnerHeartbeat, RunnerState};

/// A runner replica whose last heartbeat is older than this is not live.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// The last message of every subject under `filter` in `stream`, decoded.
async fn last_per_subject<T: serde::de::DeserializeOwned>(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    fix: impl Fn(&str, chrono::DateTime<Utc>, &mut T),
) -> Result<Vec<T>, String> {
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let info = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| e.to_string())?;
    let subjects: Vec<String> = {
        use futures::TryStreamExt;
        info.try_collect::<std::collections::HashMap<String, usize>>()
            .await
            .map_err(|e| e.to_string())?
            .into_keys()
            .collect()
    };
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        match stream.direct_get_last_for_subject(&subject).await {
            Ok(msg) => match serde_json::from_slice::<T>(&msg.payload) {
                Ok(mut v) => {
                    fix(
                        &subject,
                        stored_time(msg.time.unix_timestamp(), msg.time.nanosecond()),
                        &mut v,
                    );
                    out.push(v)
                }
                Err(err) => tracing::warn!(error = %err, subject, "malformed message"),
            },
            Err(err) => tracing::debug!(error = %err, subject, "message vanished"),
        }
    }
    Ok(out)
}

/// The latest heartbeat of every replica that heartbeated within a day.
pub async fn heartbeats(js: &jetstream::Context) -> Result<Vec<RunnerHeartbeat>, String> {
    // The subject's runner id is the sender's (NATS permissions fix it);
    // the body's is only what the sender claims.
    let mut out: Vec<RunnerHeartbeat> = last_per_subject(
        js,
        subjects::HEARTBEATS_STREAM,
        "outpost.hb.>",
        |subject, stored, hb: &mut RunnerHeartbeat| {
            hb.runner_id = subject.split('.').nth(2).unwrap_or_default().to_string();
            hb.header.time = stored;
        },
    )
    .await?;
    out.sort_by(|a, b| (&a.runner_id, a.replica_id).cmp(&(&b.runner_id, b.replica_id)));
    Ok(out)
}

/// The latest heartbeat of one replica, if it sent any in the last day.
pub async fn heartbeat_of(
    js: &jetstream::Context,
    runner_id: &str,
    replica_id: uuid::Uuid,
) -> Result<Option<RunnerHeartbeat>, String> {
    let stream = js
        .get_stream_no_info(subjects::HEARTBEATS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let subject = subjects::heartbeat(runner_id, replica_id);
    let msg = match stream.direct_get_last_for_subject(&subject).await {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
            return Ok(None)
        }
        Err(e) => return Err(e.to_string()),
    };
    let Ok(mut hb) = serde_json::from_slice::<RunnerHeartbeat>(&msg.payload) else {
        return Ok(None);
    };
    hb.runner_id = runner_id.to_string();
    hb.header.time = stored_time(msg.time.unix_timestamp(), msg.time.nanosecond());
    Ok(Some(hb))
}

/// When the server stored a message: heartbeat ages are measured with it,
/// as the runner's clock may be off and a heartbeat retried after an
/// outage tells of the past.
fn stored_time(unix_seconds: i64, nanos: u32) -> chrono::DateTime<Utc> {
    chrono::DateTime::<Utc>::from_timestamp(unix_seconds, nanos).unwrap_or_else(Utc::now)
}

/// The latest node report of every runner that has a node source.
pub async fn node_reports(
    js: &jetstream::Context,
) -> Result<Vec<outpost_schemas::NodeReport>, String> {
    // The sender is the subject's runner id, whatever the body says; and a
    // report never carries credential attributes on, even if a runner sent
    // them.
    let mut out: Vec<outpost_schemas::NodeReport> = last_per_subject(
        js,
        subjects::NODE_REPORTS_STREAM,
        "outpost.nodes.>",
        |subject, _stored, r: &mut outpost_schemas::NodeReport| {
            r.runner_id = subject.split('.').nth(2).unwrap_or_default().to_string();
            r.nodes = r.nodes.iter().map(|n| n.redacted()).collect();
        },
    )
    .await?;
    out.sort_by(|a, b| a.runner_id.cmp(&b.runner_id));
    Ok(out)
}

/// Rundeck's runner health states.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Enrolled, never checked in.
    New,
    /// Stopped, or silent for `down_after`.
    Down,
    /// Silent for `unknown_after`.
    Unknown,
    /// Checking in, but taking no work: at capacity, or draining.
    Unhealthy,
    Healthy,
}

/// When silence turns a replica unknown, then down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    pub unknown_after: Duration,
    pub down_after: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            unknown_after: Duration::from_secs(30),
            down_after: Duration::from_secs(120),
        }
    }
}

/// The health of one replica, from its latest heartbeat.
pub fn replica_health(
    hb: &RunnerHeartbeat,
    now: chrono::DateTime<Utc>,
    th: HealthThresholds,
) -> Health {
    let silent = now
        .signed_duration_since(hb.header.time)
        .to_std()
        .unwrap_or_default();
    if hb.state == RunnerState::Stopped || silent > th.down_after {
        Health::Down
    } else if silent > th.unknown_after {
        Health::Unknown
    } else if hb.state == RunnerState::Draining || hb.running_steps >= hb.capacity {
        Health::Unhealthy
    } else {
        Health::Healthy
    }
}

/// A runner is as healthy as its healthiest replica; with none, `New`.
pub fn runner_health(replicas: impl IntoIterator<Item = Health>) -> Health {
    replicas.into_iter().max().unwrap_or(Health::New)
}

pub fn is_live(hb: &RunnerHeartbeat) -> bool {
    let age = Utc::now().signed_duration_since(hb.header.time);
    hb.state == RunnerState::Running && age.to_std().map(|a| a <= LIVE_WITHIN).unwrap_or(true)
}

pub fn serves(hb: &RunnerHeartbeat, target: &Target) -> bool {
    match target {
        Target::Local => hb.local,
        Target::Tags(set) => {
            !hb.local
                && outpost_schemas::job::TagSet::new(&hb.tags)
                    .map(|t| set.satisfied_by(&t.with_runner(&hb.runner_id)))
                    .unwrap_or(false)
        }
    }
}

/// Why a step for `target` that needs `plugins` cannot start now, or
/// `None` when a live runner serves it.
pub fn why_waiting<'a>(
    hbs: impl IntoIterator<Item = &'a RunnerHeartbeat>,
    target: &Target,
    plugins: &BTreeSet<String>,
) -> Option<String> {
    let live: Vec<&RunnerHeartbeat> = hbs.into_iter().filter(|h| is_live(h)).collect();
    let serving: Vec<&RunnerHeartbeat> =
        live.iter().copied().filter(|h| serves(h, target)).collect();
    if serving.iter().any(|h| runs_all(h, plugins)) {
        return None;
    }
    if !serving.is_empty() {
        return Some(lacking_plugins(&serving, target, plugins));
    }
    let mut others: Vec<String> = live
        .iter()
        .filter(|h| !h.local)
        .map(|h| format!("{} [{}]", h.runner_id, h.tags.join(",")))
        .collect();
    // The heartbeats come in no particular order; the reason reads the same
    // each time.
    others.sort();
    Some(match target {
        Target::Local => "the control plane's local runner is not running; the step starts when it connects".into(),
        Target::Tags(set) => format!(
            "no live runner carries all of the tags [{}] (live runners: {}); the step stays queued and starts when one connects",
            set.tags().join(","),
            if others.is_empty() { "none".into() } else { others.join(", ") }
        ),
    })
}

/// The replica runs every plugin in `plugins`.
fn runs_all(hb: &RunnerHeartbeat, plugins: &BTreeSet<String>) -> bool {
    plugins
        .iter()
        .all(|p| hb.plugins.iter().any(|v| &v.plugin_type == p))
}

/// Why the runners that serve a target cannot take a step that needs
/// `plugins`: for each, the plugins it does not allow or does not have.
fn lacking_plugins(
    serving: &[&RunnerHeartbeat],
    target: &Target,
    plugins: &BTreeSet<String>,
) -> String {
    let mut why: Vec<String> = serving
        .iter()
        .map(|h| {
            // Every runner with lanes has the HTTP steps, allowed or not,
            // so a heartbeat naming no plugin at all comes from a binary
            // or a credential issued before lanes.
            if h.plugins.is_empty() && h.plugins_not_allowed.is_empty() {
                return format!(
                    "runner {id} offers no plugins (its binary or its credential predates plugin lanes: upgrade it, or rotate its credential with `outpost runner rotate {id}` and restart it)",
                    id = h.runner_id
                );
            }
            let missing = plugins
                .iter()
                .filter(|p| !h.plugins.iter().any(|v| &&v.plugin_type == p));
            let (refused, absent): (Vec<&String>, Vec<&String>) =
                missing.partition(|p| h.plugins_not_allowed.contains(p));
            let mut parts = Vec::new();
            if !refused.is_empty() {
                parts.push(format!("does not allow {}", quoted(&refused)));
            }
            if !absent.is_empty() {
                parts.push(format!("does not have {}", quoted(&absent)));
            }
            format!("runner {} {}", h.runner_id, parts.join(" and "))
        })
        .collect();
    // Replicas of one runner say the same.
    why.sort();
    why.dedup();
    let whom = match target {
        Target::Local => "the control plane's local runner".to_string(),
        Target::Tags(set) => format!("the live runners with the tags [{}]", set.tags().join(",")),
    };
    format!(
        "no runner can run the plugin step: it needs {}, and of {whom}, {}; the step stays queued and starts when a runner that allows and has them connects",
        quoted(&plugins.iter().collect::<Vec<_>>()),
        why.join("; ")
    )
}

fn quoted(items: &[&String]) -> String {
    items
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_schemas::job::TagSet;
    use outpost_schemas::Header;

    fn hb(age_s: i64, state: RunnerState, running: u32, capacity: u32) -> RunnerHeartbeat {
        let mut header = Header::now();
        header.time = Utc::now() - chrono::Duration::seconds(age_s);
        RunnerHeartbeat {
            header,
            runner_id: "r".into(),
            replica_id: uuid::Uuid::now_v7(),
            version: "0".into(),
            hostname: "h".into(),
            tags: vec![],
            local: false,
            running_steps: running,
            capacity,
            state,
            steps: vec![],
            outbox_entries: 0,
            outbox_bytes: 0,
            plugins: vec![],
            plugins_not_allowed: vec![],
        }
    }

    const HTTP: &str = "edu.ohio.ais.rundeck.HttpWorkflowStepPlugin";
    const ANSIBLE: &str = "com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep";

    fn runner(id: &str, tags: &[&str], runs: &[&str], refuses: &[&str]) -> RunnerHeartbeat {
        let mut h = hb(1, RunnerState::Running, 0, 10);
        h.runner_id = id.into();
        h.tags = tags.iter().map(|t| t.to_string()).collect();
        h.plugins = runs
            .iter()
            .map(|p| outpost_schemas::PluginVersion {
                plugin_type: p.to_string(),
                version: "1".into(),
            })
            .collect();
        h.plugins_not_allowed = refuses.iter().map(|p| p.to_string()).collect();
        h
    }

    /// Each fleet and step beside why the step waits (or `-` when a live
    /// runner takes it).
    #[test]
    fn a_plugin_step_waits_for_a_runner_that_runs_its_plugins() {
        let dc = Target::Tags(TagSet::new(["dc"]).unwrap());
        let cases: Vec<(Vec<RunnerHeartbeat>, &[&str], &str)> = vec![
            (vec![runner("a", &["dc"], &[HTTP], &[])], &[HTTP], "-"),
            (vec![runner("a", &["dc"], &[], &[])], &[], "-"),
            (
                vec![runner("a", &["dc"], &[], &[HTTP])],
                &[HTTP],
                "no runner can run the plugin step: it needs `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`, and of the live runners with the tags [dc], runner a does not allow `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`; the step stays queued and starts when a runner that allows and has them connects",
            ),
            (
                vec![
                    runner("a", &["dc"], &[HTTP], &[]),
                    runner("a", &["dc"], &[HTTP], &[]),
                    runner("b", &["dc", "eu"], &[], &[HTTP]),
                    runner("c", &["eu"], &[HTTP, ANSIBLE], &[]),
                ],
                &[HTTP, ANSIBLE],
                "no runner can run the plugin step: it needs `com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep`, `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`, and of the live runners with the tags [dc], runner a does not have `com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep`; runner b does not allow `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin` and does not have `com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep`; the step stays queued and starts when a runner that allows and has them connects",
            ),
            (
                vec![runner("old", &["dc"], &[], &[])],
                &[HTTP],
                "no runner can run the plugin step: it needs `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`, and of the live runners with the tags [dc], runner old offers no plugins (its binary or its credential predates plugin lanes: upgrade it, or rotate its credential with `outpost runner rotate old` and restart it); the step stays queued and starts when a runner that allows and has them connects",
            ),
            (
                vec![runner("c", &["eu"], &[HTTP], &[])],
                &[HTTP],
                "no live runner carries all of the tags [dc] (live runners: c [eu]); the step stays queued and starts when one connects",
            ),
        ];
        for (fleet, plugins, want) in cases {
            let plugins: BTreeSet<String> = plugins.iter().map(|p| p.to_string()).collect();
            let got = why_waiting(&fleet, &dc, &plugins).unwrap_or_else(|| "-".into());
            assert_eq!(got, want, "{plugins:?}");
        }
    }

    #[test]
    fn health_follows_the_heartbeat() {
        use RunnerState::*;
        let th = HealthThresholds::default();
        let cases = [
            (hb(1, Running, 0, 50), Health::Healthy),
            (hb(1, Running, 50, 50), Health::Unhealthy),
            (hb(1, Draining, 1, 50), Health::Unhealthy),
            (hb(31, Running, 0, 50), Health::Unknown),
            (hb(121, Running, 0, 50), Health::Down),
            (hb(1, Stopped, 0, 50), Health::Down),
        ];
        for (h, want) in cases {
            assert_eq!(
                replica_health(&h, Utc::now(), th),
                want,
                "{:?} {}",
                h.state,
                h.running_steps
            );
        }
        assert_eq!(runner_health([]), Health::New);
        assert_eq!(
            runner_health([Health::Down, Health::Healthy, Health::Unknown]),
            Health::Healthy
        );
        assert_eq!(
            runner_health([Health::Down, Health::Unknown]),
            Health::Unknown
        );
    }
}
