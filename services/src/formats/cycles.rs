//! Checks across the jobs of one file: references between them must not
//! make a cycle. The store checks again against the project's other jobs
//! at import; this check runs first so that the error names the step and
//! its line.

use std::collections::BTreeMap;

use outpost_schemas::job::{find_cycle, Job};
use uuid::Uuid;

/// A fault found after every job parsed: where (a field path such as
/// `[1].sequence.commands[0].jobref`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileFault {
    pub path: String,
    pub message: String,
}

/// The first reference cycle among the file's jobs, if any. A reference
/// naming another project is no edge: the file does not say which project
/// it is imported into, and the store's check sees it then.
pub(crate) fn reference_cycle(jobs: &[Job]) -> Option<FileFault> {
    // Jobs without a uuid still take part, under a stand-in id.
    let ids: Vec<Uuid> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| j.uuid.unwrap_or(Uuid::from_u128(i as u128 + 1)))
        .collect();
    let by_name: BTreeMap<String, Uuid> = jobs
        .iter()
        .zip(&ids)
        .map(|(j, id)| (j.full_name(), *id))
        .collect();
    // Per job: (step index, target id) for each reference that resolves here.
    let targets: Vec<Vec<(usize, Uuid)>> = jobs
        .iter()
        .map(|j| {
            j.sequence
                .commands
                .iter()
                .enumerate()
                .filter_map(|(step, c)| {
                    let r = c.jobref.as_ref()?;
                    if r.project.is_some() {
                        return None;
                    }
                    let target = match (r.by_name(), r.uuid) {
                        (false, Some(u)) => ids.contains(&u).then_some(u),
                        _ => by_name.get(&r.full_name()?).copied(),
                    }?;
                    Some((step, target))
                })
                .collect()
        })
        .collect();
    let edges = jobs
        .iter()
        .zip(&ids)
        .zip(&targets)
        .map(|((j, id), t)| (*id, (j.full_name(), t.iter().map(|(_, u)| *u).collect())))
        .collect();
    let cycle = find_cycle(&edges)?;
    // The cycle starts at a job and its next name is the job it calls.
    let from = jobs.iter().position(|j| j.full_name() == cycle[0])?;
    let to = by_name.get(cycle.get(1)?)?;
    let step = targets[from].iter().find(|(_, t)| t == to)?.0;
    Some(FileFault {
        path: format!("[{from}].sequence.commands[{step}].jobref"),
        message: format!("job references make a cycle: {}", cycle.join(" → ")),
    })
}
