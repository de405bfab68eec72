//! Rundeck job JSON (`job-json-v44`): the YAML format's structure in JSON,
//! a list of job objects, checked strictly.

use outpost_schemas::job::Job;

use super::{tidy_message, JobFileError};

pub fn parse_jobs(text: &str) -> Result<Vec<Job>, JobFileError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let jobs: Vec<Job> = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let mut message = inner.to_string();
        // serde_json appends " at line N column M"; we print it ourselves.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        if message.contains("expected a sequence") {
            message.push_str(" (Rundeck job JSON is a list: `[{\"name\": ...}]`)");
        }
        // serde_json places a check made after a value was read at the
        // value's end; the field's start is where to look.
        let path = super::step_path(path, &message);
        let at = super::better_place(
            (inner.line() > 0).then(|| (inner.line(), inner.column())),
            super::locate::in_json(text, &path),
        );
        JobFileError {
            message: tidy_message(&path, message),
            path,
            line: at.map(|a| a.0),
            column: at.map(|a| a.1).filter(|c| *c > 0),
            element: None,
        }
    })?;
    de.end().map_err(|e| JobFileError {
        path: String::new(),
        line: Some(e.line()),
        column: Some(e.column()),
        element: None,
        message: "text after the list of jobs".into(),
    })?;
    Ok(jobs)
}

/// Rundeck's JSON layout: pretty, two-space indent, a final newline.
pub fn to_json(jobs: &[Job]) -> String {
    let mut s = serde_json::to_string_pretty(jobs).expect("jobs serialise to JSON");
    s.push('\n');
    s
}
