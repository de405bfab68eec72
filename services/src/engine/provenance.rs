//! Which runner may report on a step: the one holding its claim.
//!
//! NATS permissions already confine each runner to event subjects ending in
//! its own id. This check closes the rest: a runner reporting on a step that
//! another runner claimed, or publishing an event kind only the control
//! plane may publish. The orchestrator and the projector both apply it to
//! every event before it can change anything; a refusal is audited once
//! (the audit message's dedup id is derived from the event's).

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use backon::Retryable;
use outpost_bus as bus;
use outpost_schemas::{subjects, AuditEvent, AuditResult, Event, Header};
use uuid::Uuid;

use crate::ServiceError;

/// A verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    Genuine,
    Forged(String),
}

/// Which runner holds each step's claim, read from the `step_granted`
/// events the registry publishes when it creates a claim. The events live as
/// long as the rest of the execution's history, so a verdict reached today
/// is reached again by a rebuild months later; the claims bucket is the
/// registry's tool for deciding, not an input here.
pub struct Grants {
    events: jetstream::stream::Stream<()>,
    /// Per execution: the holders found so far, and the stream sequence to
    /// read on from. A grant never changes once published.
    known: Mutex<HashMap<Uuid, Known>>,
}

#[derive(Default)]
struct Known {
    holders: HashMap<u32, String>,
    /// Later steps of node runs, by the holder of the node run's grant.
    node_holders: HashMap<u32, String>,
    /// The holder of a grant that names no last step (see `node_holder`).
    legacy: Option<String>,
    next_seq: u64,
}

/// Executions whose grants are remembered before the memory starts afresh.
const KNOWN_EXECUTIONS: usize = 20_000;

impl Grants {
    pub async fn open(js: &jetstream::Context) -> Result<Self, ServiceError> {
        let events = js
            .get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| ServiceError::Nats(format!("{}: {e}", subjects::EVENTS_STREAM)))?;
        Ok(Grants {
            events,
            known: Default::default(),
        })
    }

    /// The runner the control plane granted `step` of `execution` to, if
    /// any yet.
    pub async fn holder(&self, execution: Uuid, step: u32) -> Result<Option<String>, ServiceError> {
        let mut next_seq = {
            let known = self.known.lock().unwrap();
            match known.get(&execution) {
                Some(k) => match k.holders.get(&step) {
                    Some(h) => return Ok(Some(h.clone())),
                    None => k.next_seq,
                },
                None => 1,
            }
        };
        let subject = subjects::event(
            outpost_schemas::STEP_GRANTED,
            execution,
            subjects::CONTROL_PLANE_SOURCE,
        );
        let mut found = Vec::new();
        // Reads go to the stream leader (not a direct get, which a replica
        // may answer before it has the grant): the runner's events come
        // after the grant's acknowledgement, so the leader has it.
        loop {
            let read = (|| async {
                self.events
                    .raw_message_builder()
                    .sequence(next_seq)
                    .next_by_subject(subject.clone())
                    .send()
                    .await
            })
            .retry(crate::store::bucket::read_backoff())
            .when(|e| {
                !matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound)
                    && crate::store::bucket::is_transient(false, e)
            })
            .await;
            let msg = match read {
                Ok(m) => m,
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => break,
                Err(e) => return Err(ServiceError::Nats(format!("grants of {execution}: {e}"))),
            };
            next_seq = msg.sequence + 1;
            // Only the control plane can publish here; anything else on the
            // subject is not a grant.
            if let Ok(Event::StepGranted(g)) = serde_json::from_slice::<Event>(&msg.payload) {
                found.push((g.step, g.last_step, g.runner_id));
            }
        }
        let mut known = self.known.lock().unwrap();
        if known.len() > KNOWN_EXECUTIONS {
            known.clear();
        }
        let k = known.entry(execution).or_default();
        k.next_seq = k.next_seq.max(next_seq);
        for (s, last, runner) in found {
            k.holders.entry(s).or_insert(runner.clone());
            for covered in s + 1..=last.unwrap_or(s) {
                k.node_holders.entry(covered).or_insert(runner.clone());
            }
            if last.is_none() && s == 1 {
                k.legacy.get_or_insert(runner);
            }
        }
        Ok(k.holders.get(&step).cloned())
    }

    /// The holder of the node run that covers `step`: its own grant, or
    /// the grant of the node run it is a later step of. A grant from before
    /// node runs were split covered every step of its node job.
    pub async fn node_holder(
        &self,
        execution: Uuid,
        step: u32,
    ) -> Result<Option<String>, ServiceError> {
        if let Some(h) = self.holder(execution, step).await? {
            return Ok(Some(h));
        }
        let known = self.known.lock().unwrap();
        let k = known.get(&execution);
        Ok(k.and_then(|k| k.node_holders.get(&step).or(k.legacy.as_ref()).cloned()))
    }
}

pub struct ProvenanceCheck {
    js: jetstream::Context,
    grants: Grants,
}

impl ProvenanceCheck {
    pub async fn new(js: jetstream::Context) -> Result<Self, ServiceError> {
        Ok(ProvenanceCheck {
            grants: Grants::open(&js).await?,
            js,
        })
    }

    async fn holder(&self, execution: Uuid, step: u32) -> Result<Option<String>, ServiceError> {
        self.grants.holder(execution, step).await
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// Judges `event`, received on `subject`.
    pub async fn check(&self, subject: &str, event: &Event) -> Result<Provenance, ServiceError> {
        let source = subject.rsplit('.').next().unwrap_or_default();
        if source == subjects::CONTROL_PLANE_SOURCE {
            return Ok(Provenance::Genuine);
        }
        let forged = |why: String| Ok(Provenance::Forged(why));
        // Which step's claim vouches for the event: a per-node report may
        // name any step of the node run the claim covers.
        let (step, node_report) = match event {
            Event::StepClaimed(e) => (e.step, false),
            Event::StepStarted(e) => (e.step, false),
            Event::StepFinished(e) => (e.step, false),
            Event::NodeStepStarted(e) => (e.step, true),
            Event::NodeStepFinished(e) => (e.step, true),
            other => {
                return forged(format!(
                    "`{}` events come only from the control plane, not from runner {source}",
                    other.kind()
                ))
            }
        };
        if event.source() != source {
            return forged(format!(
                "runner {source} published an event in the name of runner {}",
                event.source()
            ));
        }
        let holder = match node_report {
            true => self.grants.node_holder(event.execution_id(), step).await?,
            false => self.holder(event.execution_id(), step).await?,
        };
        match holder {
            Some(h) if h == source => Ok(Provenance::Genuine),
            Some(h) => forged(format!(
                "runner {source} reported on step {step}, which runner {h} claimed"
            )),
            None => forged(format!(
                "runner {source} reported on step {step}, which nobody claimed"
            )),
        }
    }

    /// Records a refused event on the audit stream, once per event.
    pub async fn audit(&self, subject: &str, event: &Event, why: &str) {
        let source = subject.rsplit('.').next().unwrap_or_default();
        tracing::warn!(runner_id = source, execution_id = %event.execution_id(), kind = event.kind(), reason = why, "refused a forged event");
        let audit = AuditEvent {
            header: Header::now(),
            actor: format!("runner:{source}"),
            action: format!("publish {}", event.kind()),
            target: subject.to_string(),
            source: "nats".into(),
            result: AuditResult::Denied,
            status: 403,
            detail: Some(why.to_string()),
            request_id: None,
        };
        let id = format!("forged.{}", event.header().message_id);
        if let Err(err) = bus::publish_json(&self.js, subjects::AUDIT_EVENTS, &id, &audit).await {
            tracing::error!(error = %err, "cannot record audit event");
        }
    }
}
