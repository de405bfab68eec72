//! Outpost's wire contract.
//!
//! Everything that crosses NATS is defined here: the subjects ([`subjects`]),
//! the messages ([`messages`]) and the job model they carry ([`job`]). Outside
//! consumers validate against the JSON Schemas generated from these types and
//! committed under `schemas/json/`; `just schemas` regenerates them and the
//! `committed_schemas_are_current` test fails when they drift.

pub mod bundle;
pub mod job;
pub mod messages;
pub mod node;
pub mod node_filter;
pub mod records;
pub mod resources;
pub mod rpc;
pub mod run;
pub mod state;
pub mod subjects;

pub use messages::*;

/// Every JSON Schema we publish: file stem and schema.
pub fn all_schemas() -> Vec<(&'static str, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        ("event", schema_for!(messages::Event)),
        (
            "execution_requested",
            schema_for!(messages::ExecutionRequested),
        ),
        ("step_dispatched", schema_for!(messages::StepDispatched)),
        ("step_waiting", schema_for!(messages::StepWaiting)),
        ("step_granted", schema_for!(messages::StepGranted)),
        ("step_claimed", schema_for!(messages::StepClaimed)),
        ("step_started", schema_for!(messages::StepStarted)),
        ("log_chunk", schema_for!(messages::LogChunk)),
        ("step_finished", schema_for!(messages::StepFinished)),
        (
            "execution_finished",
            schema_for!(messages::ExecutionFinished),
        ),
        ("abort_requested", schema_for!(messages::AbortRequested)),
        ("runner_heartbeat", schema_for!(messages::RunnerHeartbeat)),
        ("node_report", schema_for!(messages::NodeReport)),
        ("audit_event", schema_for!(messages::AuditEvent)),
        ("node_step_started", schema_for!(messages::NodeStepStarted)),
        ("jobref_started", schema_for!(messages::JobRefStarted)),
        ("jobref_finished", schema_for!(messages::JobRefFinished)),
        (
            "node_step_finished",
            schema_for!(messages::NodeStepFinished),
        ),
        ("execution_state", schema_for!(state::ExecutionState)),
        (
            "plugin_http_request",
            schema_for!(job::http::HttpRequestConfig),
        ),
        ("plugin_ansible", schema_for!(job::ansible::AnsibleConfig)),
        (
            "plugin_copyfile",
            schema_for!(job::copyfile::CopyFileConfig),
        ),
        (
            "plugin_kubernetes",
            schema_for!(job::kubernetes::KubernetesExecConfig),
        ),
        (
            "plugin_kubernetes_create_pod",
            schema_for!(job::kubernetes::CreatePodConfig),
        ),
        (
            "plugin_kubernetes_create_job",
            schema_for!(job::kubernetes::CreateJobConfig),
        ),
        (
            "plugin_kubernetes_wait",
            schema_for!(job::kubernetes::WaitConfig),
        ),
        (
            "plugin_kubernetes_logs",
            schema_for!(job::kubernetes::LogsConfig),
        ),
        (
            "plugin_kubernetes_delete",
            schema_for!(job::kubernetes::DeleteConfig),
        ),
        (
            "plugin_kubernetes_generic_create",
            schema_for!(job::kubernetes::GenericCreateConfig),
        ),
        (
            "plugin_kubernetes_generic_delete",
            schema_for!(job::kubernetes::GenericDeleteConfig),
        ),
        (
            "plugin_kubernetes_rollout_wait",
            schema_for!(job::kubernetes::RolloutWaitConfig),
        ),
        (
            "plugin_kubernetes_pods_source",
            schema_for!(job::kubernetes::PodsSourceConfig),
        ),
        ("job", schema_for!(job::Job)),
        ("rpc_claim_request", schema_for!(rpc::ClaimRequest)),
        ("rpc_claim_reply", schema_for!(rpc::ClaimReply)),
        ("rpc_tagsets_request", schema_for!(rpc::TagSetsRequest)),
        ("rpc_tagsets_reply", schema_for!(rpc::TagSetsReply)),
        ("rpc_secrets_request", schema_for!(rpc::SecretsRequest)),
        ("rpc_secrets_reply", schema_for!(rpc::SecretsReply)),
        ("rpc_rotated_request", schema_for!(rpc::RotatedRequest)),
        ("ctl_ping", schema_for!(rpc::Ping)),
        ("rpc_pong", schema_for!(rpc::Pong)),
        ("kv_sealed_secrets", schema_for!(rpc::SealedSecrets)),
        ("kv_job", schema_for!(records::JobRecord)),
        ("kv_project", schema_for!(records::ProjectRecord)),
        ("kv_project_nodes", schema_for!(records::ProjectNodes)),
        ("kv_running", schema_for!(records::RunningRecord)),
        ("kv_deadline", schema_for!(records::DeadlineRecord)),
        ("kv_runner", schema_for!(records::RunnerRecord)),
        ("kv_token", schema_for!(records::TokenRecord)),
    ]
}

/// File name of a schema under `schemas/json/`.
pub fn schema_file_name(stem: &str) -> String {
    format!("{stem}.v{}.json", messages::SCHEMA_VERSION)
}

/// The pretty-printed text we commit for a schema.
pub fn render_schema(schema: &schemars::Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("schema serialises");
    s.push('\n');
    s
}
