//! A step's log filters, run by the runner over the step's output before
//! the log limit and the log pump, as Rundeck runs its `LogFilter`
//! plugins: each in the job's order (the workflow's, then the step's) sees
//! the line as the ones before it left it. Then the execution's `loglevel`
//! keeps the lines at or above it, as Rundeck's `LoglevelThresholdLogWriter`
//! does, so a quieted line is stored only in a debug run; the log limit
//! counts only what is kept, as Rundeck's does.
//!
//! `mask-passwords` is not here: secure values are masked on the raw byte
//! stream before any line exists (`crate::mask`), always; the filter only
//! chooses their replacement ([`mask_text`]).

use std::collections::BTreeMap;

use outpost_schemas::job::{EntryLevel, FilterKind, LogFilter, LogLevel};
use outpost_schemas::{LogEntry, LogStream};

mod data;
mod render;
mod text;

use data::DataCapture;

/// What secure values become, if a `mask-passwords` filter says: the first
/// one, as in Rundeck, where the first filter's replacement leaves nothing
/// for a later one to find.
pub fn mask_text(filters: &[LogFilter]) -> Option<String> {
    filters.iter().find_map(|f| match f.kind() {
        Ok(FilterKind::MaskPasswords { replacement }) => Some(replacement),
        _ => None,
    })
}

/// [`mask_text`] for a dispatch. Masking is one for the whole dispatch, so
/// in a node run the first node step's filters (the workflow's first among
/// them) decide.
pub fn dispatch_mask(d: &outpost_schemas::StepDispatched) -> Option<String> {
    let node_steps = d.node_run.iter().flat_map(|nr| &nr.steps);
    let filters: Vec<LogFilter> = d
        .log_filters
        .iter()
        .chain(node_steps.flat_map(|s| &s.log_filters))
        .cloned()
        .collect();
    mask_text(&filters)
}

enum Stage {
    Data(DataCapture),
    Text(text::Rewrite),
    Render(render::Render),
}

/// One step's filters (on one node, in a node job), with their state.
pub struct LogFilters {
    stages: Vec<Stage>,
    /// What every `key-value-data` filter captured, in the order the lines
    /// came: Rundeck's filters share the step's output context.
    data: BTreeMap<String, String>,
    threshold: EntryLevel,
}

impl LogFilters {
    /// The filters were checked when the job was read; one that no longer
    /// reads is left out.
    pub fn new(filters: &[LogFilter], loglevel: LogLevel) -> Self {
        let mut stages = Vec::new();
        for f in filters {
            match f.kind() {
                Ok(FilterKind::KeyValueData(kv)) => {
                    stages.extend(DataCapture::new(kv).map(Stage::Data))
                }
                Ok(FilterKind::MaskPasswords { .. }) | Err(_) => {}
                Ok(FilterKind::RenderDatatype {
                    datatype,
                    striped,
                    sanitize_html,
                }) => stages.push(Stage::Render(render::Render::new(
                    datatype,
                    striped,
                    sanitize_html,
                ))),
                Ok(kind) => stages.extend(text::Rewrite::new(kind).map(Stage::Text)),
            }
        }
        LogFilters {
            stages,
            data: BTreeMap::new(),
            threshold: EntryLevel::threshold(loglevel),
        }
    }

    /// What `e` becomes: the lines to pass on, in order (none, when the
    /// level drops it).
    pub fn observe(&mut self, mut e: LogEntry) -> Vec<LogEntry> {
        let mut before = Vec::new();
        let mut after = Vec::new();
        // The runner's own lines are not the step's output.
        if e.stream != LogStream::System {
            for stage in &mut self.stages {
                match stage {
                    Stage::Data(d) => {
                        let (captured, warned) = d.observe(&e);
                        self.data.extend(captured);
                        after.extend(warned);
                    }
                    Stage::Text(t) => t.apply(&mut e),
                    Stage::Render(r) => before.extend(r.observe(&mut e)),
                }
            }
        }
        before.push(e);
        before.extend(after);
        kept(self.threshold, before)
    }

    /// The step has ended: what was captured, and the lines the filters
    /// still hold (a rendered block never closed, each `logData` line).
    pub fn finish(self) -> (BTreeMap<String, String>, Vec<LogEntry>) {
        let mut out: Vec<LogEntry> = Vec::new();
        for stage in self.stages {
            match stage {
                Stage::Render(r) => out.extend(r.finish()),
                Stage::Data(d) => out.extend(d.finish()),
                Stage::Text(_) => {}
            }
        }
        (self.data, kept(self.threshold, out))
    }
}

/// The lines at or above the run's log level.
fn kept(threshold: EntryLevel, mut lines: Vec<LogEntry>) -> Vec<LogEntry> {
    lines.retain(|e| EntryLevel::of_entry(&e.level) <= threshold);
    lines
}

#[cfg(test)]
mod tests;
