//! `render-datatype`: output between `#BEGIN:RUNDECK:DATATYPE:<type>` and
//! `#END:RUNDECK:DATATYPE` becomes one entry marked with its content type,
//! for a viewer to render; the lines themselves drop to `DEBUG`, as
//! Rundeck's `RenderDatatypeFilterPlugin` does.

use std::collections::BTreeMap;

use outpost_schemas::job::{content_type, EntryLevel};
use outpost_schemas::{LogEntry, LogStream};

const START_PREFIX: &str = "#BEGIN:RUNDECK:DATATYPE:";
const END_PREFIX: &str = "#END:RUNDECK:DATATYPE";

pub struct Render {
    datatype: Option<String>,
    started: bool,
    striped: bool,
    sanitize_html: bool,
    buffer: Vec<String>,
    /// The node of the lines held, for the entry they become.
    node: Option<String>,
}

impl Render {
    /// With a `datatype`, the whole output is data and no marker is looked
    /// for.
    pub fn new(datatype: Option<String>, striped: bool, sanitize_html: bool) -> Self {
        Render {
            started: datatype.is_some(),
            datatype,
            striped,
            sanitize_html,
            buffer: Vec::new(),
            node: None,
        }
    }

    /// Reads a line; returns the entry a closed block becomes.
    pub fn observe(&mut self, e: &mut LogEntry) -> Option<LogEntry> {
        if EntryLevel::of_entry(&e.level) != EntryLevel::Normal {
            return None;
        }
        let debug = EntryLevel::Debug.as_str().to_string();
        if !self.started {
            if let Some(datatype) = e.log.strip_prefix(START_PREFIX) {
                self.started = true;
                self.datatype = Some(datatype.trim().to_string());
                e.level = debug;
            }
            None
        } else if e.log.starts_with(END_PREFIX) {
            e.level = debug;
            self.emit()
        } else {
            self.buffer.push(e.log.clone());
            self.node = e.node.clone();
            e.level = debug;
            None
        }
    }

    /// The step ended: a block still open ends with it.
    pub fn finish(mut self) -> Option<LogEntry> {
        self.emit()
    }

    fn emit(&mut self) -> Option<LogEntry> {
        let buffer = std::mem::take(&mut self.buffer);
        let datatype = self.datatype.take().filter(|d| !d.is_empty());
        let started = std::mem::replace(&mut self.started, false);
        let datatype = datatype.filter(|_| started && !buffer.is_empty())?;
        let mut meta = BTreeMap::from([("content-data-type".to_string(), content_type(&datatype))]);
        if self.striped {
            meta.insert("content-meta:css-class".into(), "table-striped".into());
        }
        if !self.sanitize_html {
            meta.insert("content-meta:no-strip".into(), "true".into());
        }
        Some(LogEntry {
            time: chrono::Utc::now(),
            stream: LogStream::Stdout,
            level: EntryLevel::Normal.as_str().into(),
            log: buffer.join("\n"),
            node: self.node.take(),
            meta,
        })
    }
}
