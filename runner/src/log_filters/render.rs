//! `render-datatype`: output between `#BEGIN:RUNDECK:DATATYPE:<type>` and
//! `#END:RUNDECK:DATATYPE` becomes one entry marked with its content type,
//! for a viewer to render; the lines themselves drop to `DEBUG`, as
//! Rundeck's `RenderDatatypeFilterPlugin` does.

use std::collections::BTreeMap;

use outpost_schemas::job::{content_type, EntryLevel};
use outpost_schemas::{LogEntry, LogStream};

const START_PREFIX: &str = "#BEGIN:RUNDECK:DATATYPE:";
const END_PREFIX: &str = "#END:RUNDECK:DATATYPE";

/// Most a rendered entry holds. A larger block goes out in entries of
/// about this size, each marked with the type, so that no entry outgrows
/// NATS's 1 MiB payload limit once its chunk is JSON (a piece of a JSON or
/// HTML block does not parse alone: such blocks are rare at this size).
pub const MAX_BLOCK: usize = 256 * 1024;

pub struct Render {
    datatype: Option<String>,
    started: bool,
    striped: bool,
    sanitize_html: bool,
    /// The block so far, lines joined by `\n` as Rundeck joins them (a
    /// blank line at the start adds nothing).
    buffer: String,
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
            buffer: String::new(),
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
            let piece = if self.buffer.len() + e.log.len() > MAX_BLOCK && !self.buffer.is_empty() {
                let held = std::mem::take(&mut self.buffer);
                self.entry(held)
            } else {
                None
            };
            if !self.buffer.is_empty() {
                self.buffer.push('\n');
            }
            self.buffer.push_str(&e.log);
            self.node = e.node.clone();
            e.level = debug;
            piece
        }
    }

    /// The step ended: a block still open ends with it.
    pub fn finish(mut self) -> Option<LogEntry> {
        self.emit()
    }

    fn emit(&mut self) -> Option<LogEntry> {
        let buffer = std::mem::take(&mut self.buffer);
        let entry = (self.started && !buffer.is_empty()).then(|| self.entry(buffer));
        self.started = false;
        self.datatype = None;
        self.node = None;
        entry.flatten()
    }

    fn entry(&self, buffer: String) -> Option<LogEntry> {
        let datatype = self.datatype.as_deref().filter(|d| !d.is_empty())?;
        let mut meta = BTreeMap::from([("content-data-type".to_string(), content_type(datatype))]);
        if self.striped {
            meta.insert("content-meta:css-class".into(), "table-striped".into());
        }
        if !self.sanitize_html {
            meta.insert("content-meta:no-strip".into(), "true".into());
        }
        Some(LogEntry {
            node: self.node.clone(),
            meta,
            ..LogEntry::now(LogStream::Stdout, EntryLevel::Normal.as_str(), buffer)
        })
    }
}
