//! Rundeck job YAML import: a YAML list of jobs, checked strictly.
//!
//! Errors name the field path and the line, so that a user with a 300-line
//! export can find a typo without bisecting the file.

use std::fmt;

use outpost_schemas::job::Job;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobYamlError {
    /// Path of the offending field, e.g. `[0].sequence.commands[1].exce`.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for JobYamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, "at `{}`: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Parses Rundeck's job YAML: a list of job mappings.
pub fn parse_jobs(text: &str) -> Result<Vec<Job>, JobYamlError> {
    if text.trim().is_empty() {
        return Err(JobYamlError {
            path: String::new(),
            line: None,
            column: None,
            message: "the file is empty; expected a YAML list of jobs".into(),
        });
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
        JobYamlError {
            path,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    })?;
    if jobs.is_empty() {
        return Err(JobYamlError {
            path: String::new(),
            line: None,
            column: None,
            message: "the list holds no job".into(),
        });
    }
    Ok(jobs)
}

/// Renders jobs back to Rundeck YAML (for `outpost job get --format yaml`).
pub fn to_yaml(jobs: &[Job]) -> String {
    serde_yaml_ng::to_string(jobs).expect("jobs serialise to YAML")
}

#[cfg(test)]
mod tests;
