//! Job file formats: strict parsers that turn what users bring (Rundeck's
//! job YAML, XML and JSON) into the wire contract's job model, with the
//! field and line of every error, and writers for the same three formats.
//!
//! The three parsers share the model's serde definitions: YAML and JSON
//! deserialise straight into it, XML is first read into the map Rundeck's
//! own XML codec makes (the YAML shape) and then deserialised the same way.

use std::fmt;

use outpost_schemas::job::{Job, NOT_SUPPORTED_YET};

mod cycles;
pub mod job_json;
pub mod job_xml;
pub mod job_yaml;
mod locate;

/// A job file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Rundeck's `job-yaml-v12`.
    Yaml,
    /// Rundeck's `job-v20`.
    Xml,
    /// Rundeck's `job-json-v44`.
    Json,
}

impl Format {
    /// `yaml` (or `yml`), `xml`, `json`.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.trim().to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "xml" => Some(Format::Xml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// From a `Content-Type` such as `application/xml` or `text/yaml`.
    pub fn from_media_type(media_type: &str) -> Option<Format> {
        let m = media_type.to_ascii_lowercase();
        let essence = m.split(';').next().unwrap_or_default().trim();
        if essence.ends_with("xml") {
            Some(Format::Xml)
        } else if essence.ends_with("json") {
            Some(Format::Json)
        } else if essence.ends_with("yaml") || essence.ends_with("yml") {
            Some(Format::Yaml)
        } else {
            None
        }
    }

    /// Guessed from the text: `<` starts XML, `[` or `{` JSON, anything
    /// else is YAML.
    pub fn sniff(text: &str) -> Format {
        match text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .chars()
            .next()
        {
            Some('<') => Format::Xml,
            Some('[') | Some('{') => Format::Json,
            _ => Format::Yaml,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Xml => "xml",
            Format::Json => "json",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Yaml => "application/yaml",
            Format::Xml => "application/xml",
            Format::Json => "application/json",
        }
    }
}

/// Why a job file was refused: where (the field path, the line, and for
/// XML the element path) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobFileError {
    /// Path of the offending field, e.g. `[0].sequence.commands[1].exce`.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// For XML: the element, e.g. `joblist/job[1]/sequence/command[2]`.
    pub element: Option<String>,
    pub message: String,
}

impl JobFileError {
    pub(crate) fn whole_file(message: impl Into<String>) -> Self {
        JobFileError {
            path: String::new(),
            line: None,
            column: None,
            element: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for JobFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, "at `{}`", self.path)?;
            if let Some(element) = &self.element {
                write!(f, " (<{element}>)")?;
            }
            f.write_str(": ")?;
        } else if let Some(element) = &self.element {
            write!(f, "at <{element}>: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Parses a job file: a list of jobs, each checked strictly. Nothing is
/// returned unless every job is valid.
pub fn parse_jobs(text: &str, format: Format) -> Result<Vec<Job>, JobFileError> {
    if text.trim().is_empty() {
        return Err(JobFileError::whole_file(format!(
            "the file is empty; expected a {} list of jobs",
            format.name().to_uppercase()
        )));
    }
    let jobs = match format {
        Format::Yaml => job_yaml::parse_jobs(text)?,
        Format::Xml => job_xml::parse_jobs(text)?,
        Format::Json => job_json::parse_jobs(text)?,
    };
    if jobs.is_empty() {
        return Err(JobFileError::whole_file("the list holds no job"));
    }
    if let Some(fault) = cycles::reference_cycle(&jobs) {
        return Err(located(text, format, fault));
    }
    Ok(jobs)
}

/// Where to say an error is: the parser's place, unless the field's own
/// place is on another line (a check made after a whole mapping was read
/// is placed where the enclosing mapping began in YAML, and where the
/// value ended in JSON). On the same line the parser's column is kept: it
/// points at an unknown key itself.
fn better_place(
    parser: Option<(usize, usize)>,
    field: Option<(usize, usize)>,
) -> Option<(usize, usize)> {
    match (parser, field) {
        (Some(p), Some(f)) if p.0 != f.0 => Some(f),
        (Some(p), _) => Some(p),
        (None, f) => f,
    }
}

/// A fault found across jobs, placed in the text it came from.
fn located(text: &str, format: Format, fault: cycles::FileFault) -> JobFileError {
    let mut err = match format {
        Format::Xml => job_xml::locate(text, &fault.path)
            .unwrap_or_else(|| JobFileError::whole_file(String::new())),
        Format::Yaml | Format::Json => {
            let at = match format {
                Format::Yaml => locate::in_yaml(text, &fault.path),
                _ => locate::in_json(text, &fault.path),
            };
            JobFileError {
                path: String::new(),
                line: at.map(|a| a.0),
                column: at.map(|a| a.1),
                element: None,
                message: String::new(),
            }
        }
    };
    err.path = fault.path;
    err.message = fault.message;
    err
}

/// Writes jobs in a format; [`parse_jobs`] reads the text back to the same jobs.
pub fn export(jobs: &[Job], format: Format) -> String {
    match format {
        Format::Yaml => job_yaml::to_yaml(jobs),
        Format::Xml => job_xml::to_xml(jobs),
        Format::Json => job_json::to_json(jobs),
    }
}

/// Whether the jobs, written in `format`, read back to the same jobs. A
/// difference is a bug in that format's writer; `outpost job check` and
/// the corpus tests ask.
pub fn reads_back(jobs: &[Job], format: Format) -> Result<(), String> {
    let text = export(jobs, format);
    match parse_jobs(&text, format) {
        Ok(back) if back == jobs => Ok(()),
        Ok(back) => {
            let first = jobs
                .iter()
                .zip(&back)
                .position(|(a, b)| a != b)
                .unwrap_or(jobs.len().min(back.len()));
            Err(format!(
                "its {} export reads back differently (first at job {})",
                format.name(),
                first + 1
            ))
        }
        Err(err) => Err(format!(
            "its {} export does not read back: {err}",
            format.name()
        )),
    }
}

/// A deserialiser's message, said for people: a key that is known but not
/// built names itself (`not supported yet: retry`).
/// A job-wide check that names a step (`job \`n\`: step 2: …`) is about
/// that step: its path, so that the error points at the step's line.
pub(crate) fn step_path(path: String, message: &str) -> String {
    let is_job = path.starts_with('[') && path.ends_with(']') && !path[1..].contains('[');
    let step = message
        .split_once("`: step ")
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(n, _)| n.parse::<usize>().ok())
        .filter(|n| *n >= 1);
    match step {
        Some(n) if is_job => format!("{path}.sequence.commands[{}]", n - 1),
        _ => path,
    }
}

pub(crate) fn tidy_message(path: &str, message: String) -> String {
    if message != NOT_SUPPORTED_YET {
        return message;
    }
    let key = path
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .split('[')
        .next()
        .unwrap_or_default();
    format!(
        "{NOT_SUPPORTED_YET}: {key} (Outpost knows this Rundeck key but has not built what it does; it is accepted only empty, see docs/rundeck-compatibility.md)"
    )
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;
