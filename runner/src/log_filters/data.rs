//! Rundeck's `key-value-data` log filter: lines of a step's output that
//! match its pattern set `data.KEY` for the later steps, which the runner
//! reports with the step's end.

use std::collections::BTreeMap;

use outpost_schemas::job::KeyValueData;
use outpost_schemas::{LogEntry, LogStream};

/// One `key-value-data` filter.
pub struct DataCapture {
    re: regex::Regex,
    name: Option<String>,
    log_data: bool,
    /// What this filter captured, for its `logData` line.
    data: BTreeMap<String, String>,
}

impl DataCapture {
    /// The filter, compiled to match whole lines, as Rundeck's default
    /// (`matchSubstrings: false`) uses `Matcher.matches()`; the pattern was
    /// checked at import, so one that no longer compiles is left out.
    pub fn new(kv: KeyValueData) -> Option<Self> {
        Some(DataCapture {
            re: regex::Regex::new(&format!("^(?:{})$", kv.regex)).ok()?,
            name: kv.name,
            log_data: kv.log_data,
            data: BTreeMap::new(),
        })
    }

    /// Reads a line of the step's standard output at `NORMAL`, which is
    /// all Rundeck's filter sees (stderr is logged at ERROR, a quieted line
    /// is VERBOSE, the runner's own lines are not output). Returns what it
    /// captured, and a warning for a key it had to mend.
    pub fn observe(&mut self, e: &LogEntry) -> (Option<(String, String)>, Option<LogEntry>) {
        if e.stream != LogStream::Stdout || e.level != "NORMAL" || e.log.is_empty() {
            return (None, None);
        }
        let Some(c) = self.re.captures(&e.log) else {
            return (None, None);
        };
        let (key, value) = match (&self.name, c.get(1), c.get(2)) {
            (_, Some(k), Some(v)) => (k.as_str().to_string(), v.as_str()),
            (Some(n), Some(v), None) => (n.clone(), v.as_str()),
            _ => return (None, None),
        };
        if key.is_empty() {
            return (None, None);
        }
        // Rundeck's default invalidKeyPattern: white space, `$`, `{`, `}`
        // and `\` cannot be referenced as `${data.KEY}`.
        let mended: String = key
            .chars()
            .map(|ch| match ch {
                '$' | '{' | '}' | '\\' => '_',
                c if c.is_whitespace() => '_',
                c => c,
            })
            .collect();
        let warning = (mended != key).then(|| {
            system(
                e,
                "WARN",
                format!(
                    "key-value-data: a captured key holds characters a reference cannot; it is stored as `{mended}`"
                ),
            )
        });
        // A later line sets the key again, as in Rundeck.
        self.data.insert(mended.clone(), value.to_string());
        (Some((mended, value.to_string())), warning)
    }

    /// With `logData`, the line that says what this filter captured: one
    /// line of JSON at the step's end, as Rundeck logs it.
    pub fn finish(self) -> Option<LogEntry> {
        (self.log_data && !self.data.is_empty()).then(|| LogEntry {
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
        })
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
    use outpost_schemas::job::LogFilter;

    fn capture(config: &[(&str, &str)]) -> DataCapture {
        let config: serde_json::Map<String, serde_json::Value> = config
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let f: LogFilter =
            serde_json::from_value(serde_json::json!({"type": "key-value-data", "config": config}))
                .unwrap();
        DataCapture::new(f.key_value_data().unwrap()).unwrap()
    }

    fn line(text: &str, stream: LogStream) -> LogEntry {
        LogEntry::now(stream, "NORMAL", text)
    }

    #[test]
    fn stdout_lines_are_captured_as_rundecks_key_value_data_captures_them() {
        let mut c = capture(&[]);
        let cases = [
            (
                "RUNDECK:DATA:release_id = 42",
                LogStream::Stdout,
                Some(("release_id", "42")),
            ),
            // Nothing is trimmed, as in Rundeck.
            (
                "RUNDECK:DATA:url=https://x/y?a=b ",
                LogStream::Stdout,
                Some(("url", "https://x/y?a=b ")),
            ),
            ("RUNDECK:DATA:from_stderr = 1", LogStream::Stderr, None),
            ("RUNDECK:DATA:runner = not read", LogStream::System, None),
            (
                "RUNDECK:DATA:release_id = 43",
                LogStream::Stdout,
                Some(("release_id", "43")),
            ),
            ("nothing here", LogStream::Stdout, None),
        ];
        for (text, stream, want) in cases {
            let (got, warned) = c.observe(&line(text, stream));
            assert_eq!(
                got,
                want.map(|(k, v)| (k.to_string(), v.to_string())),
                "{text}"
            );
            assert!(warned.is_none());
        }
        assert_eq!(c.finish(), None, "no logData");

        // The pattern must match the whole line, as Rundeck's
        // `matches()`: `ver=12 ok` is not `ver=(\d+)`.
        let mut c = capture(&[
            ("regex", r"ver=(\d+)"),
            ("name", "version"),
            ("logData", "true"),
        ]);
        assert_eq!(c.observe(&line("ver=12 ok", LogStream::Stdout)).0, None);
        assert_eq!(
            c.observe(&line("ver=12", LogStream::Stdout)).0,
            Some(("version".to_string(), "12".to_string()))
        );
        assert_eq!(c.finish().unwrap().log, r#"{"version":"12"}"#);

        let mut c = capture(&[("regex", r"^set (.+?)=(.*)$")]);
        assert_eq!(c.observe(&line("set =nokey", LogStream::Stdout)).0, None);
        let (got, warned) = c.observe(&line("set my key=v", LogStream::Stdout));
        assert_eq!(got, Some(("my_key".to_string(), "v".to_string())));
        let warned = warned.unwrap();
        assert_eq!(warned.level, "WARN");
        assert!(warned.log.contains("stored as `my_key`"), "{}", warned.log);
        assert!(
            !warned.log.contains("my key"),
            "the raw key is not repeated: {}",
            warned.log
        );
    }
}
