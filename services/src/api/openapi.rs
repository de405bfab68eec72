//! The OpenAPI 3.1 document: operations from the handlers' `utoipa::path`
//! attributes, body schemas from the contract's schemars derives (the same
//! generator as the wire contract's JSON Schemas), and each operation's
//! access need from the route policy itself.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::contract;
use crate::security::auth::{self, Need, ProjectOf};

use super::{
    audit, deadletters, executions, jobs, nodes, option_values, projects, runners, tokens,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost API",
        description = "Outpost's own REST API, under `/api/v1`. Send an API token as `Authorization: Bearer <token>`. \
            Every error is an `ErrorBody`. Each operation's `x-outpost-access` says which role it needs.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::health,
        serve,
        projects::list_projects,
        projects::create_project,
        projects::get_config,
        projects::put_config,
        projects::put_config_key,
        projects::delete_config_key,
        jobs::list_jobs,
        jobs::import_jobs,
        jobs::export_jobs,
        jobs::job_by_name,
        jobs::get_job,
        jobs::put_job,
        jobs::delete_job,
        jobs::run_job,
        option_values::option_values,
        executions::list_executions,
        executions::get_execution,
        executions::get_output,
        executions::stream_output,
        executions::abort_execution,
        runners::list_runners,
        runners::enrol_runner,
        runners::list_enrolled,
        runners::revoke_runner,
        runners::rotate_runner,
        runners::drain_runner,
        runners::ping_runner,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
        nodes::list_nodes,
        nodes::put_nodes,
        audit::list_audit,
        deadletters::list_dead_letters,
    )
)]
struct Operations;

/// utoipa sees each body type as a reference into `components.schemas`;
/// [`document`] fills those in from schemars.
macro_rules! components {
    ($($ty:ident),* $(,)?) => {
        $(
            impl utoipa::PartialSchema for contract::$ty {
                fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                    utoipa::openapi::Ref::from_schema_name(stringify!($ty)).into()
                }
            }
            impl utoipa::ToSchema for contract::$ty {}
        )*
        fn component_roots(gen: &mut schemars::SchemaGenerator) -> Vec<(&'static str, Value)> {
            vec![$((stringify!($ty), gen.subschema_for::<contract::$ty>().to_value())),*]
        }
    };
}

components!(
    ErrorBody,
    HealthReply,
    Project,
    ProjectConfig,
    ConfigValue,
    JobSummary,
    JobDetail,
    JobList,
    ImportResult,
    RunRequest,
    RunAccepted,
    OptionValues,
    Execution,
    ExecutionList,
    OutputPage,
    AbortReply,
    RunnerReplica,
    EnrolRequest,
    EnrolledRunner,
    Enrolment,
    Rotation,
    Revocation,
    Draining,
    PingReply,
    Token,
    TokenRequest,
    CreatedToken,
    Node,
    NodesLoaded,
    AuditEntry,
    DeadLetters,
);

/// The document, as committed in `docs/openapi.json` and served at
/// `GET /api/v1/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Operations::openapi()).expect("document serialises");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["components"]["schemas"] = Value::Object(schemas());
    doc["components"]["securitySchemes"] = json!({
        "token": {"type": "http", "scheme": "bearer", "description": "An API token (`outpost token create`)"}
    });
    for (path, item) in doc["paths"].as_object_mut().expect("paths").iter_mut() {
        for (method, op) in item.as_object_mut().expect("path item").iter_mut() {
            annotate(path, &method.to_uppercase(), op);
        }
    }
    doc
}

fn schemas() -> Map<String, Value> {
    let mut gen = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .for_serialize()
        .into_generator();
    for (name, reference) in component_roots(&mut gen) {
        // utoipa refers to each root by its type name: a second type of the
        // same name would be renamed by schemars and silently mismatch.
        assert_eq!(
            reference,
            json!({"$ref": format!("#/components/schemas/{name}")}),
            "contract::{name} must be its own component"
        );
    }
    gen.take_definitions(true)
}

/// Adds the operation's access need (from [`auth::policy`], so the document
/// cannot disagree with what the API enforces) and the error responses every
/// operation can give.
fn annotate(path: &str, method: &str, op: &mut Value) {
    // The router's catch-all `{*name}` is OpenAPI's `{name}`.
    let route = path.replace("/job/{name}", "/job/{*name}");
    let need = auth::policy(method, &route);
    let access = match need {
        Need::Nothing => "none: no token needed".to_string(),
        Need::AnyToken => {
            "any valid token (a project list holds only the projects it may see)".to_string()
        }
        Need::Global(role) => format!("{} on every project", role_word(role)),
        Need::Project(role, of) => format!(
            "{} on {}",
            role_word(role),
            match of {
                ProjectOf::Path => "the project in the path",
                ProjectOf::Job => "the job's project",
                ProjectOf::Execution => "the execution's project",
            }
        ),
    };
    op["x-outpost-access"] = json!(access);
    op["security"] = match need {
        Need::Nothing => json!([]),
        _ => json!([{"token": []}]),
    };
    let error = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let responses = op["responses"].as_object_mut().expect("responses");
    if need != Need::Nothing {
        responses
            .entry("401")
            .or_insert_with(|| error("No token, or one that is unknown or revoked"));
        responses
            .entry("403")
            .or_insert_with(|| error("The token's roles do not allow this"));
    }
    responses
        .entry("4XX")
        .or_insert_with(|| error("Invalid input, or what it names does not exist"));
    responses
        .entry("5XX")
        .or_insert_with(|| error("NATS or JetStream cannot be reached; retry"));
}

fn role_word(role: auth::Role) -> &'static str {
    match role {
        auth::Role::Viewer => "viewer",
        auth::Role::Operator => "operator",
        auth::Role::Admin => "admin",
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API, as committed in `docs/openapi.json`")))]
pub(super) async fn serve() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| render(&document()));
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}

/// The document as committed: pretty, with a final newline.
pub fn render(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("document serialises");
    s.push('\n');
    s
}
