//! Job file formats: strict parsers that turn what users bring (Rundeck's
//! job YAML) into the wire contract's job model, with the field and line of
//! every error.

pub mod job_yaml;
