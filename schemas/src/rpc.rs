//! Requests a runner makes to the control plane on `outpost.rpc.<runner_id>.<op>`
//! (core NATS request/reply), and their replies. The runner id is taken from
//! the subject, which the runner's NATS permissions fix; it is never read
//! from a body.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The value of a step's claim in `OUTPOST_CLAIMS`: who runs it. The literal
/// `_aborted` instead means the step was aborted before anyone claimed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Claim {
    pub runner_id: String,
    pub replica_id: Uuid,
    /// The claiming attempt: a repeated request of the same attempt (its
    /// reply was lost) is granted again; any other is not.
    pub attempt: Uuid,
}

/// Claim value the orchestrator writes when an abort beats every runner to
/// a step.
pub const ABORTED_CLAIM: &str = "_aborted";

impl Claim {
    /// A stored claim value: JSON, or the bare [`ABORTED_CLAIM`] marker
    /// (which reads as a claim by runner `_aborted`).
    pub fn decode(value: &[u8]) -> Claim {
        serde_json::from_slice(value).unwrap_or_else(|_| Claim {
            runner_id: String::from_utf8_lossy(value).into_owned(),
            replica_id: Uuid::nil(),
            attempt: Uuid::nil(),
        })
    }
}

/// `claim`: may this replica run this step?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimRequest {
    pub execution_id: Uuid,
    pub step: u32,
    pub replica_id: Uuid,
    /// Fresh for each delivery the runner handles.
    pub attempt: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClaimReply {
    /// Run it.
    Granted,
    /// Aborted before anyone claimed it: ack the message, run nothing.
    Aborted,
    /// Claimed before by a replica that stopped acknowledging it; the control
    /// plane has ended the step as `runner-lost`. Ack the message.
    Lost,
    /// Not the execution's current step (it finished, or the execution
    /// moved on): ack the message, run nothing.
    Stale,
    /// Another replica holds it and still heartbeats: hand the message back
    /// (nak with a delay); its holder acks it, or the sweep ends it.
    Held,
    /// This runner may not run this step (not its tag set, or revoked).
    Refused { reason: String },
}

/// `tagsets`: which registered tag sets does this runner serve? `tags` is
/// what the runner was started with; an enrolled runner's own tags come from
/// its enrolment record instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagSetsRequest {
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagSetsReply {
    /// Dispatch tokens; the consumer of each is `dispatch_<token>`.
    pub tokens: Vec<String>,
    /// The plugin lanes registered for those targets. A runner binds one
    /// (the consumer `dispatch_<token>` on the lane's stream) only if it
    /// can run every plugin the lane needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<LaneTarget>,
}

/// A plugin lane registered for one target (in `OUTPOST_TAGSETS`, under
/// [`crate::subjects::lane_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LaneTarget {
    /// [`crate::subjects::lane`] of `plugins`.
    pub lane: String,
    /// The Rundeck types a runner needs, every one, to serve the lane.
    pub plugins: Vec<String>,
    pub target: crate::job::Target,
}

impl LaneTarget {
    /// The dispatch token of the target, as for `OUTPOST_DISPATCH`.
    pub fn token(&self) -> String {
        self.target.token()
    }
}

/// `secrets`: the secure option values of a step this runner claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretsRequest {
    pub execution_id: Uuid,
    pub step: u32,
    /// A one-use curve25519 public key (nkeys `X…`); the values come back
    /// sealed to it, so they are never in clear text on the wire.
    pub reply_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum SecretsReply {
    /// `sealed`: base64 of the JSON map option → value, sealed by `sender`
    /// (the control plane's public xkey) to `reply_key`.
    Sealed {
        sender: String,
        sealed: String,
    },
    Refused {
        reason: String,
    },
}

/// The clear-text content of [`SecretsReply::Sealed`].
pub type SecretValues = BTreeMap<String, String>;

/// `rotated`: this runner now runs on the credential with this public key;
/// older credentials of the runner may be revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotatedRequest {
    pub public_key: String,
}

/// A ping to a runner (`outpost.ctl.<runner>.ping`), and each replica's
/// answer (`outpost.rpc.<runner>.pong`, no reply expected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ping {
    pub nonce: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pong {
    pub nonce: Uuid,
    pub replica_id: Uuid,
}

/// The whole payload of an abort notice on `outpost.abort.<runner>.<exec>`;
/// anything else there (a JetStream ack sent to a forged reply subject, say)
/// is not an abort.
pub const ABORT_NOTICE: &[u8] = b"abort";
/// The whole payload of a drain notice on `outpost.ctl.<runner>.drain`.
pub const DRAIN_NOTICE: &[u8] = b"drain";
/// The `<what>` tokens of `outpost.ctl.<runner>.<what>`.
pub const CONTROL_DRAIN: &str = "drain";
pub const CONTROL_PING: &str = "ping";

/// An `OUTPOST_SECRETS` value: an execution's secure option values
/// ([`SecretValues`] as JSON), sealed to the control plane's secrets key by
/// a one-use sender key, so that a writer needs only the public half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedSecrets {
    /// The sender's public curve key.
    pub sender: String,
    /// The sealed JSON, base64 (standard alphabet, padded).
    pub sealed: String,
}

/// A generic reply of requests that only succeed or fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RpcResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
