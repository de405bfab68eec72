//! Rundeck job YAML (`job-yaml-v12`): a YAML list of jobs, checked strictly.
//!
//! Errors name the field path and the line, so that a user with a 300-line
//! export can find a typo without bisecting the file.

use outpost_schemas::job::Job;

use super::{tidy_message, JobFileError};

/// Parses Rundeck's job YAML: a list of job mappings.
pub fn parse_jobs(text: &str) -> Result<Vec<Job>, JobFileError> {
    if text.trim().is_empty() {
        return Err(JobFileError::whole_file(
            "the file is empty; expected a YAML list of jobs",
        ));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let jobs: Vec<Job> = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.location();
        // serde_yaml appends " at line N column M"; we print the location ourselves.
        let mut message = inner.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        // ... and prefixes its own rendering of the path, which we also print.
        if message.starts_with('.') {
            if let Some(at) = message.find(": ") {
                message.drain(..at + 2);
            }
        }
        if message.contains("expected a sequence") {
            message.push_str(" (Rundeck job YAML is a list: start each job with `- name: ...`)");
        }
        // A check made after a whole mapping was read reports where the
        // enclosing one began; the field's own place is more use.
        let path = super::step_path(path, &message);
        let at = super::better_place(
            location.as_ref().map(|l| (l.line(), l.column())),
            super::locate::in_yaml(text, &path),
        );
        JobFileError {
            message: tidy_message(&path, message),
            path,
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            element: None,
        }
    })?;
    if jobs.is_empty() {
        return Err(JobFileError::whole_file("the list holds no job"));
    }
    Ok(jobs)
}

/// Renders jobs back to Rundeck YAML (for `outpost job get --format yaml`).
pub fn to_yaml(jobs: &[Job]) -> String {
    serde_yaml_ng::to_string(jobs).expect("jobs serialise to YAML")
}

#[cfg(test)]
mod tests;
