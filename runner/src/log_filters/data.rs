//! Rundeck's `key-value-data` log filter: lines of a step's output that
//! match its pattern set `data.KEY` for the later steps, which the runner
//! reports with the step's end.

use std::collections::BTreeMap;

use outpost_schemas::job::LogFilter;
use outpost_schemas::{LogEntry, LogStream};

pub struct DataCapture {
    filters: Vec<(regex::Regex, Option<String>)>,
    log_data: bool,
    data: BTreeMap<String, String>,
}

impl DataCapture {
    /// The step's `key-value-data` filters, compiled; patterns were checked
    /// at import, so one that no longer compiles is left out.
    pub fn new(filters: &[LogFilter]) -> Self {
        let kvs: Vec<_> = filters.iter().filter_map(|f| f.key_value_data()).collect();
        DataCapture {
            log_data: kvs.iter().any(|kv| kv.log_data),
            filters: kvs
                .into_iter()
                .filter_map(|kv| Some((regex::Regex::new(&kv.regex).ok()?, kv.name)))
                .collect(),
            data: BTreeMap::new(),
        }
    }

    /// Reads a line of the step's standard output at `NORMAL`, which is
    /// all Rundeck's filter sees (stderr is logged at ERROR, a quieted line
    /// is VERBOSE, the runner's own lines are not output). Returns a warning
    /// for a key it had to mend.
    pub fn observe(&mut self, e: &LogEntry) -> Option<LogEntry> {
        if self.filters.is_empty() || e.stream != LogStream::Stdout || e.level != "NORMAL" {
            return None;
        }
        let mut warnings = Vec::new();
        for (re, name) in &self.filters {
            let Some(c) = re.captures(&e.log) else {
                continue;
            };
            let (key, value) = match (name, c.get(1), c.get(2)) {
                (_, Some(k), Some(v)) => (k.as_str().to_string(), v.as_str()),
                (Some(n), Some(v), None) => (n.clone(), v.as_str()),
                _ => continue,
            };
            if key.is_empty() {
                continue;
            }
            // Rundeck's default invalidKeyPattern: white space, `$`, `{`,
            // `}` and `\` cannot be referenced as `${data.KEY}`.
            let mended: String = key
                .chars()
                .map(|ch| match ch {
                    '$' | '{' | '}' | '\\' => '_',
                    c if c.is_whitespace() => '_',
                    c => c,
                })
                .collect();
            if mended != key {
                warnings.push(format!(
                    "key-value-data: the key `{key}` holds characters a reference cannot; it is stored as `{mended}`"
                ));
            }
            // A later line sets the key again, as in Rundeck.
            self.data.insert(mended, value.to_string());
        }
        (!warnings.is_empty()).then(|| system(e, "WARN", warnings.join("; ")))
    }

    /// What was captured and, with `logData`, the line that says it: one
    /// line of JSON at the step's end, as Rundeck logs it.
    pub fn finish(self) -> (BTreeMap<String, String>, Option<LogEntry>) {
        let said = (self.log_data && !self.data.is_empty()).then(|| LogEntry {
            // As Rundeck marks it, for a viewer to show as a table.
            meta: [
                ("content-data-type", "application/json"),
                ("content-meta:table-title", "Key Value Data: Results"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..LogEntry::now(
                LogStream::System,
                "NORMAL",
                serde_json::to_string(&self.data).expect("a map of text"),
            )
        });
        (self.data, said)
    }
}

fn system(e: &LogEntry, level: &str, text: String) -> LogEntry {
    LogEntry {
        meta: Default::default(),
        time: e.time,
        stream: LogStream::System,
        level: level.into(),
        log: text,
        node: e.node.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(config: &[(&str, &str)]) -> LogFilter {
        let config: serde_json::Map<String, serde_json::Value> = config
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        serde_json::from_value(serde_json::json!({"type": "key-value-data", "config": config}))
            .unwrap()
    }

    fn line(text: &str, stream: LogStream) -> LogEntry {
        LogEntry::now(stream, "NORMAL", text)
    }

    #[test]
    fn stdout_lines_are_captured_as_rundecks_key_value_data_captures_them() {
        let mut c = DataCapture::new(&[
            filter(&[]),
            filter(&[
                ("regex", r"^version: (\S+)$"),
                ("name", "version"),
                ("logData", "true"),
            ]),
            filter(&[("regex", r"^set (.+?)=(.*)$")]),
        ]);
        for (text, stream) in [
            ("RUNDECK:DATA:release_id = 42", LogStream::Stdout),
            ("RUNDECK:DATA:url=https://x/y?a=b ", LogStream::Stdout),
            ("RUNDECK:DATA:from_stderr = 1", LogStream::Stderr),
            ("RUNDECK:DATA:runner = not read", LogStream::System),
            ("RUNDECK:DATA:release_id = 43", LogStream::Stdout),
            ("set =nokey", LogStream::Stdout),
            ("version: 1.2.3", LogStream::Stdout),
            ("nothing here", LogStream::Stdout),
        ] {
            assert_eq!(c.observe(&line(text, stream)), None, "{text}");
        }
        let warned = c.observe(&line("set my key=v", LogStream::Stdout)).unwrap();
        assert_eq!(warned.level, "WARN");
        assert!(warned.log.contains("stored as `my_key`"), "{}", warned.log);
        let (data, said) = c.finish();
        assert_eq!(
            data,
            BTreeMap::from([
                ("my_key".to_string(), "v".to_string()),
                ("release_id".into(), "43".into()),
                // Nothing is trimmed, as in Rundeck.
                ("url".into(), "https://x/y?a=b ".into()),
                ("version".into(), "1.2.3".into()),
            ])
        );
        assert_eq!(
            said.unwrap().log,
            r#"{"my_key":"v","release_id":"43","url":"https://x/y?a=b ","version":"1.2.3"}"#
        );
    }
}
