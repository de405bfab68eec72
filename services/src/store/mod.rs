//! Jobs, projects and execution state as the API reads and writes them.
//!
//! Jobs live in `OUTPOST_JOBS` under `job.<uuid>`, with a name index
//! `name.<project>.<base64url(group/name)>` → uuid whose `create` is what
//! keeps names unique per project, across API replicas.

pub mod bucket;
pub mod execution_index;
pub mod running;
pub mod topology;
pub mod watched;

use async_nats::jetstream::{self, kv};
use std::collections::BTreeMap;

use base64::Engine;
use chrono::Utc;
use futures::StreamExt;
use outpost_schemas::job::{check_name, Job};
use outpost_schemas::state::ExecutionState;
use outpost_schemas::subjects;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::bucket::{Bucket, Cas};
use crate::ServiceError;

pub use outpost_schemas::records::{JobRecord, ProjectNodes, ProjectRecord as Project};

/// Rundeck's `dupeOption` for imports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DupeOption {
    #[default]
    Update,
    Skip,
    Create,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportAction {
    Created,
    Updated,
    Skipped,
}

#[derive(Debug, Clone)]
pub struct Imported {
    pub id: Uuid,
    pub name: String,
    pub group: Option<String>,
    pub project: String,
    pub action: ImportAction,
    /// What the stored job asks for that has no effect yet.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("project `{0}` does not exist")]
    NoProject(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

fn nats(e: impl std::fmt::Display) -> StoreError {
    StoreError::Service(ServiceError::Nats(e.to_string()))
}

/// Where a node came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum NodeSource {
    /// The project's uploaded resources.yaml.
    Project,
    /// A runner's own node source; the runner serves these nodes.
    Runner { runner_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub node: outpost_schemas::node::Node,
    pub source: NodeSource,
}

#[derive(Clone)]
pub struct Store {
    nodes: Bucket,
    jobs: Bucket,
    projects: Bucket,
    executions: Bucket,
    running: Bucket,
}

fn job_key(id: Uuid) -> String {
    format!("job.{}", id.simple())
}

fn name_key(project: &str, full_name: &str) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(full_name);
    format!("name.{project}.{enc}")
}

impl Store {
    pub async fn open(js: &jetstream::Context) -> Result<Self, ServiceError> {
        Ok(Store {
            nodes: Bucket::open(js, subjects::NODES_BUCKET).await?,
            jobs: Bucket::open(js, subjects::JOBS_BUCKET).await?,
            projects: Bucket::open(js, subjects::PROJECTS_BUCKET).await?,
            executions: Bucket::open(js, subjects::EXECUTIONS_BUCKET).await?,
            running: Bucket::open(js, subjects::RUNNING_BUCKET).await?,
        })
    }

    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let mut keys = self.projects.raw().keys().await.map_err(nats)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(nats)?;
            if let Some(v) = self.projects.get_bytes(&k).await? {
                if let Ok(p) = serde_json::from_slice::<Project>(&v) {
                    out.push(p);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn require_project(&self, name: &str) -> Result<(), StoreError> {
        if check_name("project", name, |c| c == '_' || c == '-').is_err() {
            return Err(StoreError::NoProject(name.into()));
        }
        match self.projects.get_bytes(name).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NoProject(name.into())),
        }
    }

    pub async fn project(&self, name: &str) -> Result<Option<Project>, StoreError> {
        Ok(self.projects.get(name).await?.map(|(p, _)| p))
    }

    /// Changes a project's configuration with compare-and-set; returns the
    /// configuration as stored.
    pub async fn update_project_config(
        &self,
        name: &str,
        mut change: impl FnMut(&mut BTreeMap<String, String>),
    ) -> Result<BTreeMap<String, String>, StoreError> {
        self.projects
            .modify(name, |p: Option<Project>| {
                let Some(mut p) = p else {
                    return Err(StoreError::NoProject(name.into()));
                };
                let before = p.config.clone();
                change(&mut p.config);
                let config = p.config.clone();
                Ok(if config == before {
                    Cas::Keep(config)
                } else {
                    Cas::Write(p, config)
                })
            })
            .await
    }

    pub async fn create_project(&self, p: &Project) -> Result<(), StoreError> {
        check_name("project name", &p.name, |c| c == '_' || c == '-')
            .map_err(StoreError::Invalid)?;
        let value = serde_json::to_vec(p).expect("project serialises");
        match self.projects.raw().create(&p.name, value.into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(StoreError::Conflict(
                format!("project `{}` already exists", p.name),
            )),
            Err(e) => Err(nats(e)),
        }
    }

    pub async fn job(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        match self.jobs.get_bytes(&job_key(id)).await? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| ServiceError::Corrupt(format!("job {id}: {e}")).into()),
            None => Ok(None),
        }
    }

    /// Finds a job by `group/name` (or just `name`) in a project.
    pub async fn job_by_name(
        &self,
        project: &str,
        full_name: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let full_name = full_name.trim_matches('/');
        let Some(v) = self.jobs.get_bytes(&name_key(project, full_name)).await? else {
            return Ok(None);
        };
        let id =
            Uuid::from_slice(&v).map_err(|e| ServiceError::Corrupt(format!("name index: {e}")))?;
        self.job(id).await
    }

    pub async fn jobs(&self, project: &str) -> Result<Vec<JobRecord>, StoreError> {
        let mut keys = self.jobs.raw().keys().await.map_err(nats)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(nats)?;
            if !k.starts_with("job.") {
                continue;
            }
            if let Some(v) = self.jobs.get_bytes(&k).await? {
                let rec: JobRecord = serde_json::from_slice(&v)
                    .map_err(|e| ServiceError::Corrupt(format!("{k}: {e}")))?;
                if rec.project == project {
                    out.push(rec);
                }
            }
        }
        out.sort_by_key(|r| r.job.full_name());
        Ok(out)
    }

    /// Stores parsed jobs. Every conflict is checked before anything is
    /// written, so a refused import stores nothing.
    pub async fn import(
        &self,
        project: &str,
        jobs: Vec<Job>,
        dupe: DupeOption,
    ) -> Result<Vec<Imported>, StoreError> {
        self.require_project(project).await?;
        let mut plan = Vec::with_capacity(jobs.len());
        let mut names = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for job in jobs {
            let full = job.full_name();
            if !names.insert(full.clone()) {
                return Err(StoreError::Invalid(format!(
                    "the file defines job `{full}` twice"
                )));
            }
            let by_name = self.job_by_name(project, &full).await?;
            let by_id = match job.uuid {
                Some(id) => self.job(id).await?,
                None => None,
            };
            if let Some(rec) = &by_id {
                if rec.project != project {
                    return Err(StoreError::Conflict(format!(
                        "job uuid {} belongs to `{}` in project `{}`",
                        rec.id,
                        rec.job.full_name(),
                        rec.project
                    )));
                }
            }
            if let (Some(n), Some(id)) = (&by_name, job.uuid) {
                if n.id != id {
                    return Err(StoreError::Conflict(format!(
                        "project `{project}` already has a job `{full}` with uuid {}; the file gives uuid {id}",
                        n.id
                    )));
                }
            }
            let existing = by_id.or(by_name);
            // Two entries that land on one record would each write from a
            // stale copy of it; refuse the file instead.
            if let Some(id) = existing.as_ref().map(|r| r.id).or(job.uuid) {
                if !ids.insert(id) {
                    return Err(StoreError::Invalid(format!(
                        "two jobs in the file resolve to job {id} (the second is `{full}`)"
                    )));
                }
            }
            if existing.is_some() && dupe == DupeOption::Create {
                return Err(StoreError::Conflict(format!(
                    "job `{full}` already exists in project `{project}` (dupeOption=create)"
                )));
            }
            let mut job = job;
            if !(existing.is_some() && dupe == DupeOption::Skip) {
                job.uuid = Some(
                    existing
                        .as_ref()
                        .map(|r| r.id)
                        .or(job.uuid)
                        .unwrap_or_else(Uuid::now_v7),
                );
            }
            plan.push((job, existing));
        }
        if plan.iter().any(|(j, _)| j.references().next().is_some()) {
            self.refuse_cycles(project, &plan, dupe).await?;
        }
        let mut out = Vec::with_capacity(plan.len());
        let now = Utc::now();
        for (mut job, existing) in plan {
            let full = job.full_name();
            let (id, created_at, action) = match &existing {
                Some(rec) if dupe == DupeOption::Skip => {
                    out.push(Imported {
                        id: rec.id,
                        name: rec.job.name.clone(),
                        group: rec.job.group.clone(),
                        project: project.into(),
                        action: ImportAction::Skipped,
                        warnings: Vec::new(),
                    });
                    continue;
                }
                Some(rec) => (rec.id, rec.created_at, ImportAction::Updated),
                None => (
                    job.uuid.expect("assigned when planned"),
                    now,
                    ImportAction::Created,
                ),
            };
            job.uuid = Some(id);
            let index = name_key(project, &full);
            let id_bytes: bytes::Bytes = id.as_bytes().to_vec().into();
            match &existing {
                Some(rec) if rec.job.full_name() != full => {
                    self.create_index(&index, id_bytes, &full).await?;
                    self.jobs
                        .raw()
                        .delete(name_key(project, &rec.job.full_name()))
                        .await
                        .map_err(nats)?;
                }
                Some(_) => {}
                None => self.create_index(&index, id_bytes, &full).await?,
            }
            let rec = JobRecord {
                id,
                project: project.into(),
                job,
                created_at,
                updated_at: now,
            };
            let value = serde_json::to_vec(&rec).expect("job serialises");
            self.jobs
                .raw()
                .put(job_key(id), value.into())
                .await
                .map_err(nats)?;
            out.push(Imported {
                id,
                warnings: rec.job.inactive(),
                name: rec.job.name,
                group: rec.job.group,
                project: project.into(),
                action,
            });
        }
        Ok(out)
    }

    /// Refuses an import whose references, with the project's other jobs,
    /// would make a cycle. References to jobs that do not exist yet are no
    /// edge: Rundeck accepts them and resolves them at run time, which
    /// checks the chain again.
    async fn refuse_cycles(
        &self,
        project: &str,
        plan: &[(Job, Option<JobRecord>)],
        dupe: DupeOption,
    ) -> Result<(), StoreError> {
        let mut jobs: std::collections::BTreeMap<Uuid, Job> = self
            .jobs(project)
            .await?
            .into_iter()
            .map(|r| (r.id, r.job))
            .collect();
        for (job, existing) in plan {
            if existing.is_some() && dupe == DupeOption::Skip {
                continue;
            }
            jobs.insert(job.uuid.expect("assigned above"), job.clone());
        }
        let by_name: std::collections::BTreeMap<String, Uuid> =
            jobs.iter().map(|(id, j)| (j.full_name(), *id)).collect();
        let edges = jobs
            .iter()
            .map(|(id, j)| {
                let targets = j
                    .references()
                    .filter(|r| r.project.as_deref().is_none_or(|p| p == project))
                    .filter_map(|r| match (r.by_name(), r.uuid) {
                        (false, Some(u)) => jobs.contains_key(&u).then_some(u),
                        _ => by_name.get(&r.full_name()?).copied(),
                    })
                    .collect();
                (*id, (j.full_name(), targets))
            })
            .collect();
        match outpost_schemas::job::find_cycle(&edges) {
            Some(cycle) => Err(StoreError::Invalid(format!(
                "job references would make a cycle: {}",
                cycle.join(" → ")
            ))),
            None => Ok(()),
        }
    }

    async fn create_index(
        &self,
        key: &str,
        id: bytes::Bytes,
        full: &str,
    ) -> Result<(), StoreError> {
        match self.jobs.raw().create(key, id).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(StoreError::Conflict(
                format!("job `{full}` was created concurrently; retry the import"),
            )),
            Err(e) => Err(nats(e)),
        }
    }

    pub async fn delete_job(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        let Some(rec) = self.job(id).await? else {
            return Ok(None);
        };
        self.jobs.raw().delete(job_key(id)).await.map_err(nats)?;
        self.jobs
            .raw()
            .delete(name_key(&rec.project, &rec.job.full_name()))
            .await
            .map_err(nats)?;
        Ok(Some(rec))
    }

    pub async fn execution(&self, id: Uuid) -> Result<Option<ExecutionState>, StoreError> {
        match self
            .executions
            .get_bytes(&subjects::execution_key(id))
            .await?
        {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| ServiceError::Corrupt(format!("execution {id}: {e}")).into()),
            None => Ok(None),
        }
    }

    /// The states of `ids` that still exist, in the order given.
    pub async fn executions(&self, ids: &[Uuid]) -> Result<Vec<ExecutionState>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(st) = self.execution(*id).await? {
                out.push(st);
            }
        }
        Ok(out)
    }

    /// Replaces the project's node source.
    pub async fn put_project_nodes(
        &self,
        project: &str,
        nodes: Vec<outpost_schemas::node::Node>,
    ) -> Result<(), StoreError> {
        self.require_project(project).await?;
        let value = serde_json::to_vec(&ProjectNodes {
            nodes,
            updated_at: Utc::now(),
        })
        .expect("nodes serialise");
        self.nodes
            .raw()
            .put(project, value.into())
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// The project's nodes, then every runner-reported node (runners' nodes
    /// belong to every project: they describe the runner's network).
    pub async fn nodes(
        &self,
        project: &str,
        reports: Vec<outpost_schemas::NodeReport>,
    ) -> Result<Vec<NodeView>, StoreError> {
        self.require_project(project).await?;
        let mut out = Vec::new();
        if let Some(v) = self.nodes.get_bytes(project).await? {
            let p: ProjectNodes = serde_json::from_slice(&v)
                .map_err(|e| ServiceError::Corrupt(format!("nodes of {project}: {e}")))?;
            out.extend(p.nodes.into_iter().map(|node| NodeView {
                node,
                source: NodeSource::Project,
            }));
        }
        for r in reports {
            out.extend(r.nodes.into_iter().map(|node| NodeView {
                node,
                source: NodeSource::Runner {
                    runner_id: r.runner_id.clone(),
                },
            }));
        }
        Ok(out)
    }

    pub fn executions_bucket(&self) -> &kv::Store {
        self.executions.raw()
    }
}
