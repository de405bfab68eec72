//! Jobs: their summaries and definitions, imports, and run requests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use outpost_schemas::job::Job;
use outpost_schemas::state::ExecutionStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::store::{DupeOption, ImportAction};

/// One job in a project's list (`GET /project/{project}/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobSummary {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub project: String,
    #[serde(default)]
    pub description: String,
    /// The job's own path (`/api/v1/job/{id}`).
    pub href: String,
    /// False when the job asks for something stored but not in effect yet
    /// (a schedule, notifications); `inactive` says what.
    pub active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inactive: Vec<String>,
}

/// A stored job and its definition (`GET /job/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobDetail {
    pub id: Uuid,
    pub project: String,
    /// The definition, as imported (see `schemas/json/job.v1.json`).
    pub job: Job,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// False when the job asks for something stored but not in effect yet
    /// (a schedule, notifications); `inactive` says what.
    pub active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inactive: Vec<String>,
}

/// A job file in Rundeck's job JSON (`job-json-v44`): the definitions alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct JobList(pub Vec<Job>);

/// What an import did with each job of the file (Rundeck's `succeeded`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportResult {
    pub succeeded: Vec<ImportedJob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportedJob {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub project: String,
    pub action: ImportAction,
    /// What the stored job asks for that has no effect yet: `schedule
    /// stored, not active yet: …`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ImportedJob {
    /// `group/name`, or `name`.
    pub fn full_name(&self) -> String {
        match &self.group {
            Some(g) => format!("{g}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// `POST /job/{id}/run`. The body may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunRequest {
    /// Option values by name; defaults fill the rest.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Option values as Rundeck's option string, `-name value -other 'two
    /// words'`, as `rd` and pyrundeck send them. An option may be given here
    /// or in `options`, not in both.
    #[serde(rename = "argString", default, skip_serializing_if = "Option::is_none")]
    pub arg_string: Option<String>,
}

/// The answer to a run: the execution exists from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunAccepted {
    pub id: Uuid,
    /// The execution's path (`/api/v1/execution/{id}`).
    pub href: String,
    pub status: ExecutionStatus,
    pub project: String,
    pub job: JobRef,
}

/// Which job an execution runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobRef {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl From<crate::store::Imported> for ImportedJob {
    fn from(i: crate::store::Imported) -> Self {
        ImportedJob {
            id: i.id,
            name: i.name,
            group: i.group,
            project: i.project,
            action: i.action,
            warnings: i.warnings,
        }
    }
}

impl From<&crate::store::JobRecord> for JobSummary {
    fn from(r: &crate::store::JobRecord) -> Self {
        let inactive = r.job.inactive();
        JobSummary {
            id: r.id,
            name: r.job.name.clone(),
            group: r.job.group.clone(),
            project: r.project.clone(),
            description: r.job.description.clone(),
            href: format!("{}/job/{}", super::API_PREFIX, r.id),
            active: inactive.is_empty(),
            inactive,
        }
    }
}

impl From<crate::store::JobRecord> for JobDetail {
    fn from(r: crate::store::JobRecord) -> Self {
        let inactive = r.job.inactive();
        JobDetail {
            id: r.id,
            project: r.project,
            job: r.job,
            created_at: r.created_at,
            updated_at: r.updated_at,
            active: inactive.is_empty(),
            inactive,
        }
    }
}

/// `GET /job/{id}/option/{name}/values`: an option's remote values, read
/// from its `valuesUrl` now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OptionValues {
    pub option: String,
    /// The URL as fetched, its references expanded.
    pub url: String,
    pub values: Vec<outpost_schemas::job::RemoteValue>,
}
