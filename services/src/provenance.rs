//! Which runner may report on a step: the one holding its claim.
//!
//! NATS permissions already confine each runner to event subjects ending in
//! its own id. This check closes the rest: a runner reporting on a step that
//! another runner claimed, or publishing an event kind only the control
//! plane may publish. The orchestrator and the projector both apply it to
//! every event before it can change anything; a refusal is audited once
//! (the audit message's dedup id is derived from the event's).

use async_nats::jetstream;
use outpost_runner::bus;
use outpost_schemas::{subjects, AuditEvent, AuditResult, Event, Header};

use crate::ServiceError;

/// A verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    Genuine,
    Forged(String),
}

pub struct ProvenanceCheck {
    js: jetstream::Context,
    claims: crate::registry::ClaimLookup,
}

impl ProvenanceCheck {
    pub async fn new(js: jetstream::Context) -> Result<Self, ServiceError> {
        Ok(ProvenanceCheck {
            claims: crate::registry::ClaimLookup::open(&js).await?,
            js,
        })
    }

    async fn holder(
        &self,
        execution: uuid::Uuid,
        step: u32,
    ) -> Result<Option<String>, ServiceError> {
        let key = subjects::claim_key(execution, step);
        Ok(self.claims.get(&key).await?.map(|c| c.runner_id))
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
        // Which step's claim vouches for the event. Node steps all run under
        // the single dispatch of a node job, step 1.
        let step = match event {
            Event::StepClaimed(e) => e.step,
            Event::StepStarted(e) => e.step,
            Event::StepFinished(e) => e.step,
            Event::NodeStepStarted(_) | Event::NodeStepFinished(_) => 1,
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
        match self.holder(event.execution_id(), step).await? {
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
        };
        let id = format!("forged.{}", event.header().message_id);
        if let Err(err) = bus::publish_json(&self.js, subjects::AUDIT_EVENTS, &id, &audit).await {
            tracing::error!(error = %err, "cannot record audit event");
        }
    }
}
