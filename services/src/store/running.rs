//! Each job's running executions, for `multipleExecutions` and
//! `maxMultipleExecutions`. One key per job in `OUTPOST_RUNNING` lists the
//! executions admitted and not yet seen finished; admission is a
//! compare-and-set on that key, so a limit holds across API replicas, where
//! Rundeck holds it with a lock inside one server.
//!
//! Nothing has to remember to leave the list: an admission drops the
//! executions that the projected state shows finished before it counts.
//! That read is made only when the count would refuse (or the list of an
//! unlimited job grows long), so a run usually costs one read and one
//! write.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use outpost_schemas::records::{AdmittedRun, RunningRecord};
use uuid::Uuid;

use crate::store::bucket::Cas;
use crate::store::{Store, StoreError};

/// An unlimited job's list is pruned once it is this long.
const PRUNE_UNLIMITED_AT: usize = 32;

/// An admitted execution that the projected state has not heard of after
/// this long was never requested (its replica died between admitting and
/// publishing), and stops counting. The projector folds a request within
/// milliseconds, and a projector down this long already stops every run.
const NEVER_REQUESTED_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// What an admission decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The job already runs as many executions as its limit allows.
    Full {
        running: Vec<Uuid>,
    },
}

fn key(job: Uuid) -> String {
    format!("job.{}", job.simple())
}

impl Store {
    /// Admits `execution` as a running execution of `job` unless `limit`
    /// (none: no limit) executions of it already run.
    pub async fn admit(
        &self,
        job: Uuid,
        limit: Option<u32>,
        execution: Uuid,
    ) -> Result<Admission, StoreError> {
        let key = key(job);
        // What this admission has read from the projected state, so that
        // each listed execution is read at most once.
        let mut finished = BTreeSet::new();
        let mut still_running = BTreeSet::new();
        loop {
            let decided = self
                .running
                .modify(&key, |current: Option<RunningRecord>| {
                    let mut list = current.unwrap_or_default();
                    list.executions
                        .retain(|a| !finished.contains(&a.execution_id));
                    let full = limit.is_some_and(|l| list.executions.len() >= l as usize);
                    let long = limit.is_none() && list.executions.len() >= PRUNE_UNLIMITED_AT;
                    let unchecked: Vec<(Uuid, DateTime<Utc>)> = list
                        .executions
                        .iter()
                        .filter(|a| !still_running.contains(&a.execution_id))
                        .map(|a| (a.execution_id, a.admitted_at))
                        .collect();
                    if (full || long) && !unchecked.is_empty() {
                        return Ok::<_, StoreError>(Cas::Keep(Decision::Check(unchecked)));
                    }
                    if full {
                        return Ok(Cas::Keep(Decision::Full(
                            list.executions.iter().map(|a| a.execution_id).collect(),
                        )));
                    }
                    list.executions.push(AdmittedRun {
                        execution_id: execution,
                        admitted_at: Utc::now(),
                    });
                    Ok(Cas::Write(list, Decision::Admitted))
                })
                .await?;
            match decided {
                Decision::Admitted => return Ok(Admission::Admitted),
                Decision::Full(running) => return Ok(Admission::Full { running }),
                Decision::Check(ids) => {
                    for (id, admitted_at) in ids {
                        // An execution not projected yet counts as running:
                        // its request may still be on its way.
                        let done = match self.execution(id).await? {
                            Some(st) => st.status.is_terminal(),
                            None => Utc::now() - admitted_at > NEVER_REQUESTED_AFTER,
                        };
                        if done {
                            finished.insert(id);
                        } else {
                            still_running.insert(id);
                        }
                    }
                }
            }
        }
    }

    /// Takes `execution` off `job`'s list: for a run that was admitted but
    /// could not be requested.
    pub async fn release(&self, job: Uuid, execution: Uuid) -> Result<(), StoreError> {
        self.running
            .modify(&key(job), |current: Option<RunningRecord>| {
                let Some(mut list) = current else {
                    return Ok::<_, StoreError>(Cas::Keep(()));
                };
                let before = list.executions.len();
                list.executions.retain(|a| a.execution_id != execution);
                Ok(if list.executions.len() == before {
                    Cas::Keep(())
                } else {
                    Cas::Write(list, ())
                })
            })
            .await
    }
}

enum Decision {
    Admitted,
    Full(Vec<Uuid>),
    Check(Vec<(Uuid, DateTime<Utc>)>),
}
