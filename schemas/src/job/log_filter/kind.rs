//! What each log filter type does, read from its configuration as
//! Rundeck's core `LogFilter` plugins read theirs (`rundeckapp/.../plugins/
//! logging/*FilterPlugin.groovy`). Reading checks the configuration, so a
//! bad one is refused at import with its line; the runner reads the same
//! value again when it runs the filter.

use std::collections::BTreeMap;

use crate::job::NOT_SUPPORTED_YET;

/// Rundeck's default pattern for `key-value-data`.
pub const KEY_VALUE_DEFAULT_REGEX: &str = r"^RUNDECK:DATA:\s*([^\s]+?)\s*=\s*(.+)$";

/// Characters a captured key may not hold; each becomes `_`, as in
/// Rundeck.
pub const INVALID_KEY_DEFAULT: &str = r"\s|\$|\{|\}|\\";

/// What `mask-passwords` and `mask-log-output-regex` write by default.
pub const MASK_DEFAULT: &str = "[SECURE]";

const ESC: &str = "\u{1b}";
/// Ends a highlight or a coloured mask.
pub const ANSI_RESET: &str = "\u{1b}[0m";

/// The types Outpost runs.
pub const BUILT: &[&str] = &[
    "key-value-data",
    "mask-passwords",
    "mask-log-output-regex",
    "quiet-output",
    "highlight-output",
    "render-datatype",
];

/// Log filters Rundeck users install from plugin repositories, which
/// Outpost knows but has not built.
const NOT_BUILT: &[&str] = &["key-value-data-multilines", "json-mapper", "progress-badge"];

/// A log line's level, in Rundeck's order: a threshold keeps the levels at
/// or before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryLevel {
    Error,
    Warn,
    Normal,
    Verbose,
    Debug,
}

impl EntryLevel {
    /// The word a log entry carries (`NORMAL`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryLevel::Error => "ERROR",
            EntryLevel::Warn => "WARN",
            EntryLevel::Normal => "NORMAL",
            EntryLevel::Verbose => "VERBOSE",
            EntryLevel::Debug => "DEBUG",
        }
    }

    /// Reads an entry's level as Rundeck's `LogLevel.looseValueOf` does
    /// (`INFO` is `NORMAL`); anything else is `NORMAL`.
    pub fn of_entry(level: &str) -> EntryLevel {
        match level {
            "ERROR" | "ERR" | "SEVERE" => EntryLevel::Error,
            "WARN" => EntryLevel::Warn,
            "VERBOSE" => EntryLevel::Verbose,
            "DEBUG" | "CONFIG" => EntryLevel::Debug,
            _ => EntryLevel::Normal,
        }
    }

    /// The lines an execution keeps at its job's `loglevel`.
    pub fn threshold(level: crate::job::LogLevel) -> EntryLevel {
        use crate::job::LogLevel as L;
        match level {
            L::Debug => EntryLevel::Debug,
            L::Verbose => EntryLevel::Verbose,
            L::Info => EntryLevel::Normal,
            L::Warn => EntryLevel::Warn,
            L::Error => EntryLevel::Error,
        }
    }

    fn read(word: &str) -> Option<EntryLevel> {
        Some(match word {
            "error" => EntryLevel::Error,
            "warn" => EntryLevel::Warn,
            "normal" => EntryLevel::Normal,
            "verbose" => EntryLevel::Verbose,
            "debug" => EntryLevel::Debug,
            _ => return None,
        })
    }
}

/// What a `key-value-data` filter does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueData {
    pub regex: String,
    /// With one capture group: the key every match sets.
    pub name: Option<String>,
    /// Print what was captured in the log.
    pub log_data: bool,
}

/// A log filter, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterKind {
    KeyValueData(KeyValueData),
    /// Secure option values become `replacement` (coloured, if asked).
    MaskPasswords {
        replacement: String,
    },
    /// Matches of `regex` become `replacement`; with `mask_only_value`,
    /// the first group stays.
    MaskRegex {
        regex: String,
        replacement: String,
        mask_only_value: bool,
    },
    /// Lines of `match_level` (any, if none) that match `regex` (or that
    /// do not, without `quiet_match`) are moved to `level`.
    Quiet {
        regex: Option<String>,
        match_level: Option<EntryLevel>,
        quiet_match: bool,
        level: EntryLevel,
    },
    /// Matches of `regex` in `NORMAL` lines (its groups, if it has any)
    /// are wrapped in `mark` and [`ANSI_RESET`].
    Highlight {
        regex: String,
        mark: String,
    },
    /// Output between `#BEGIN:RUNDECK:DATATYPE:<type>` and
    /// `#END:RUNDECK:DATATYPE` (or all of it, with `datatype`) becomes one
    /// entry marked with its content type.
    RenderDatatype {
        datatype: Option<String>,
        striped: bool,
        sanitize_html: bool,
    },
}

/// Reads (and so checks) one filter's configuration.
pub fn read(t: &str, config: &BTreeMap<String, String>) -> Result<FilterKind, String> {
    let c = Config { t, config };
    match t {
        "key-value-data" => key_value_data(&c),
        "mask-passwords" => {
            c.only(&["replacement", "color"])?;
            let color = c.select("color", &COLORS)?;
            // Rundeck's default, and its `*****` for a blank one.
            let text = match config.get("replacement") {
                None => MASK_DEFAULT.to_string(),
                Some(r) if r.is_empty() => "*****".to_string(),
                Some(r) => r.clone(),
            };
            Ok(FilterKind::MaskPasswords {
                replacement: match color {
                    Some(code) => format!("{ESC}[{code}m{text}{ANSI_RESET}"),
                    None => text,
                },
            })
        }
        "mask-log-output-regex" => {
            c.only(&["regex", "replacement", "maskOnlyValue"])?;
            let regex = c.pattern("regex")?.ok_or_else(|| c.missing("regex"))?;
            let mask_only_value = c.flag("maskOnlyValue")?.unwrap_or(false);
            if mask_only_value && compiled(&regex).captures_len() < 2 {
                return Err(format!(
                    "log filter `{t}`: maskOnlyValue needs a regex whose first group is the key, which stays; `{regex}` has no group"
                ));
            }
            Ok(FilterKind::MaskRegex {
                regex,
                replacement: config
                    .get("replacement")
                    .cloned()
                    .unwrap_or_else(|| MASK_DEFAULT.to_string()),
                mask_only_value,
            })
        }
        "quiet-output" => {
            c.only(&["regex", "matchLoglevel", "quietMatch", "loglevel"])?;
            let regex = c.pattern("regex")?;
            let match_level = match config.get("matchLoglevel").map(|s| s.trim()) {
                None => Some(EntryLevel::Normal),
                Some("" | "all") => None,
                Some(w) => Some(EntryLevel::read(w).ok_or_else(|| {
                    c.not_one_of("matchLoglevel", w, "error, warn, normal, verbose, debug, all")
                })?),
            };
            let level = match config.get("loglevel").map(|s| s.trim()) {
                // Rundeck's `quiet()`: VERBOSE.
                None | Some("") => EntryLevel::Verbose,
                Some(w) => EntryLevel::read(w).ok_or_else(|| {
                    c.not_one_of("loglevel", w, "error, warn, normal, verbose, debug")
                })?,
            };
            Ok(FilterKind::Quiet {
                regex,
                match_level,
                quiet_match: c.flag("quietMatch")?.unwrap_or(false),
                level,
            })
        }
        "highlight-output" => {
            c.only(&["regex", "fgcolor", "bgcolor", "mode"])?;
            let regex = c.pattern("regex")?.ok_or_else(|| c.missing("regex"))?;
            // Rundeck's mark: ESC[ then the codes joined by `;`, then `m`.
            let codes: Vec<&str> = [
                c.select("fgcolor", &COLORS)?,
                c.select("bgcolor", &BGCOLORS)?,
                c.select("mode", &MODES)?,
            ]
            .into_iter()
            .flatten()
            .collect();
            let mark = if codes.is_empty() {
                String::new()
            } else {
                format!("{ESC}[{}m", codes.join(";"))
            };
            Ok(FilterKind::Highlight { regex, mark })
        }
        "render-datatype" => {
            c.only(&["datatype", "striped", "sanitizeHtml"])?;
            Ok(FilterKind::RenderDatatype {
                datatype: config
                    .get("datatype")
                    .map(|d| d.trim())
                    .filter(|d| !d.is_empty())
                    .map(str::to_string),
                striped: c.flag("striped")?.unwrap_or(false),
                sanitize_html: c.flag("sanitizeHtml")?.unwrap_or(true),
            })
        }
        t if NOT_BUILT.contains(&t) => Err(format!(
            "{NOT_SUPPORTED_YET}: log filter type `{t}` (a plugin outside Rundeck's core; Outpost runs {})",
            listed(BUILT)
        )),
        t => Err(format!(
            "unknown log filter type `{t}`; the types Outpost knows are {}, and (not built yet) {}",
            listed(BUILT),
            listed(NOT_BUILT)
        )),
    }
}

/// A content type Rundeck knows by a short name.
pub fn content_type(datatype: &str) -> String {
    match datatype.to_ascii_lowercase().as_str() {
        "json" => "application/json",
        "properties" => "application/x-java-properties",
        "csv" => "text/csv",
        "html" => "text/html",
        "markdown" | "md" => "text/x-markdown",
        _ => datatype,
    }
    .to_string()
}

const COLORS: [(&str, &str); 7] = [
    ("red", "31"),
    ("green", "32"),
    ("yellow", "33"),
    ("blue", "34"),
    ("magenta", "35"),
    ("cyan", "36"),
    ("white", "37"),
];
const BGCOLORS: [(&str, &str); 8] = [
    ("black", "40"),
    ("red", "41"),
    ("green", "42"),
    ("yellow", "43"),
    ("blue", "44"),
    ("magenta", "45"),
    ("cyan", "46"),
    ("white", "47"),
];
const MODES: [(&str, &str); 4] = [
    ("bold", "1"),
    ("underline", "4"),
    ("blink", "5"),
    ("reverse", "7"),
];

fn listed(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn compiled(regex: &str) -> regex::Regex {
    regex::Regex::new(regex).expect("checked by Config::pattern")
}

/// One filter's configuration, with the checks every type shares.
struct Config<'a> {
    t: &'a str,
    config: &'a BTreeMap<String, String>,
}

impl Config<'_> {
    fn only(&self, keys: &[&str]) -> Result<(), String> {
        match self.config.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(other) => Err(format!(
                "log filter `{}` has no configuration key `{other}`; it takes {}",
                self.t,
                keys.join(", ")
            )),
            None => Ok(()),
        }
    }

    fn missing(&self, key: &str) -> String {
        format!("log filter `{}` needs `{key}`", self.t)
    }

    fn not_one_of(&self, key: &str, value: &str, allowed: &str) -> String {
        format!(
            "log filter `{}`: {key} `{value}` is not one of {allowed}",
            self.t
        )
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, String> {
        match self.config.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) if v == "true" => Ok(Some(true)),
            Some(v) if v == "false" => Ok(Some(false)),
            Some(v) => Err(format!(
                "log filter `{}`: {key} `{v}` is not a flag: use true or false",
                self.t
            )),
        }
    }

    /// A pattern the runner can run; blank is none.
    fn pattern(&self, key: &str) -> Result<Option<String>, String> {
        let Some(re) = self.config.get(key).filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        regex::Regex::new(re).map_err(|e| {
            format!(
                "log filter `{}`: {key} `{re}` is not a pattern Outpost can run: {e}",
                self.t
            )
        })?;
        Ok(Some(re.clone()))
    }

    /// The code of a `@SelectValues` choice; blank is none.
    fn select(
        &self,
        key: &str,
        choices: &[(&str, &'static str)],
    ) -> Result<Option<&'static str>, String> {
        let Some(v) = self
            .config
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        match choices.iter().find(|(name, _)| *name == v) {
            Some((_, code)) => Ok(Some(code)),
            None => Err(self.not_one_of(
                key,
                v,
                &choices
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }
}

fn key_value_data(c: &Config) -> Result<FilterKind, String> {
    let t = c.t;
    for (k, v) in c.config {
        match k.as_str() {
            "regex" | "name" | "logData" => {}
            // Rundeck's later keys, accepted at their defaults, which
            // Outpost does.
            "invalidKeyPattern" if v.is_empty() || v == INVALID_KEY_DEFAULT => {}
            "invalidCharactersReplacement" if v.is_empty() || v == "_" => {}
            "replaceFilteredResult" | "matchSubstrings" | "allowMultipleMatches"
                if v.is_empty() || v.eq_ignore_ascii_case("false") => {}
            "invalidKeyPattern"
            | "invalidCharactersReplacement"
            | "replaceFilteredResult"
            | "matchSubstrings"
            | "allowMultipleMatches" => {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: log filter `{t}`: {k} `{v}` (only its default is built)"
                ))
            }
            other => {
                return Err(format!(
                    "log filter `{t}` has no configuration key `{other}`; it takes regex, name, logData, invalidKeyPattern, invalidCharactersReplacement, replaceFilteredResult, matchSubstrings, allowMultipleMatches"
                ))
            }
        }
    }
    let kv = KeyValueData {
        regex: c
            .pattern("regex")?
            .unwrap_or_else(|| KEY_VALUE_DEFAULT_REGEX.to_string()),
        name: c.config.get("name").filter(|n| !n.is_empty()).cloned(),
        log_data: c.flag("logData")?.unwrap_or(false),
    };
    // The runner matches whole lines, as Rundeck's `matches()`.
    if regex::Regex::new(&format!("^(?:{})$", kv.regex)).is_err() {
        return Err(format!(
            "log filter `{t}`: regex `{}` cannot be matched against a whole line (a trailing `(?x)` comment?)",
            kv.regex
        ));
    }
    match (compiled(&kv.regex).captures_len() - 1, &kv.name) {
        (2, _) | (1, Some(_)) => Ok(FilterKind::KeyValueData(kv)),
        (1, None) => Err(format!(
            "log filter `{t}`: regex `{}` has one capture group, so `name` must say which key it sets",
            kv.regex
        )),
        (n, _) => Err(format!(
            "log filter `{t}`: regex `{}` has {n} capture groups; it needs one (the value, with `name`) or two (the key and the value)",
            kv.regex
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_one(t: &str, config: &[(&str, &str)]) -> Result<FilterKind, String> {
        let config = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(t, &config)
    }

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

    /// Each type's configuration, read as Rundeck's plugin reads it.
    #[test]
    fn configurations_read_as_rundecks_plugins_read_them() {
        let cases: Vec<Case> = vec![
            ("mask-passwords", vec![], "MaskPasswords { replacement: \"[SECURE]\" }".into()),
            ("mask-passwords", vec![("replacement", "")], "MaskPasswords { replacement: \"*****\" }".into()),
            (
                "mask-passwords",
                vec![("replacement", "XX"), ("color", "red")],
                format!("MaskPasswords {{ replacement: {:?} }}", "\u{1b}[31mXX\u{1b}[0m"),
            ),
            (
                "mask-log-output-regex",
                vec![("regex", "(token=)(\\S+)"), ("maskOnlyValue", "true")],
                "MaskRegex { regex: \"(token=)(\\\\S+)\", replacement: \"[SECURE]\", mask_only_value: true }".into(),
            ),
            (
                "quiet-output",
                vec![],
                "Quiet { regex: None, match_level: Some(Normal), quiet_match: false, level: Verbose }".into(),
            ),
            (
                "quiet-output",
                vec![("regex", "^ok"), ("matchLoglevel", "all"), ("quietMatch", "true"), ("loglevel", "debug")],
                "Quiet { regex: Some(\"^ok\"), match_level: None, quiet_match: true, level: Debug }".into(),
            ),
            (
                "highlight-output",
                vec![("regex", "ERROR"), ("fgcolor", "red"), ("bgcolor", "black"), ("mode", "bold")],
                format!("Highlight {{ regex: \"ERROR\", mark: {:?} }}", "\u{1b}[31;40;1m"),
            ),
            ("highlight-output", vec![("regex", "x")], "Highlight { regex: \"x\", mark: \"\" }".into()),
            (
                "render-datatype",
                vec![("datatype", "json"), ("striped", "true")],
                "RenderDatatype { datatype: Some(\"json\"), striped: true, sanitize_html: true }".into(),
            ),
        ];
        for (t, config, want) in cases {
            let got = read_one(t, &config).unwrap_or_else(|e| panic!("{t} {config:?}: {e}"));
            assert_eq!(format!("{got:?}"), want, "{t} {config:?}");
        }
    }

    type Refusal<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn bad_configurations_are_refused_naming_the_key() {
        let cases: &[Refusal] = &[
            (
                "mask-passwords",
                &[("colour", "red")],
                "no configuration key `colour`",
            ),
            (
                "mask-passwords",
                &[("color", "pink")],
                "color `pink` is not one of red, green",
            ),
            ("mask-log-output-regex", &[], "needs `regex`"),
            (
                "mask-log-output-regex",
                &[("regex", "a(")],
                "regex `a(` is not a pattern",
            ),
            (
                "mask-log-output-regex",
                &[("regex", "secret"), ("maskOnlyValue", "true")],
                "has no group",
            ),
            (
                "quiet-output",
                &[("loglevel", "all")],
                "loglevel `all` is not one of",
            ),
            (
                "quiet-output",
                &[("quietMatch", "yes")],
                "quietMatch `yes` is not a flag",
            ),
            ("highlight-output", &[("fgcolor", "red")], "needs `regex`"),
            (
                "highlight-output",
                &[("regex", "x"), ("bgcolor", "white2")],
                "bgcolor `white2`",
            ),
            (
                "json-mapper",
                &[],
                "not supported yet: log filter type `json-mapper`",
            ),
            ("nope", &[], "unknown log filter type `nope`"),
        ];
        for (t, config, want) in cases {
            let err = read_one(t, config).expect_err(t);
            assert!(err.contains(want), "{t} {config:?}: {err}");
        }
    }
}
