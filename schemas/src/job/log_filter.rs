//! Log filters: Rundeck's `LogFilter` plugins on a step
//! (`plugins: {LogFilter: [{type, config}]}`), run by the runner over the
//! step's output as it reads it. Built: `key-value-data`, which captures
//! `RUNDECK:DATA:key = value` lines as `${data.key}` for the later steps.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compat::{ScalarString, NOT_SUPPORTED_YET};

/// Rundeck's default pattern for `key-value-data`.
pub const KEY_VALUE_DEFAULT_REGEX: &str = r"^RUNDECK:DATA:\s*([^\s]+?)\s*=\s*(.+)$";

/// Characters a captured key may not hold; each becomes `_`, as in
/// Rundeck.
pub const INVALID_KEY_DEFAULT: &str = r"\s|\$|\{|\}|\\";

/// The log filter types Rundeck's core ships that Outpost knows but has
/// not built.
const NOT_BUILT: &[&str] = &[
    "mask-passwords",
    "mask-log-output-regex",
    "highlight-output",
    "quiet-output",
    "render-datatype",
    "key-value-data-multilines",
    "json-mapper",
];

/// A step's plugins, as Rundeck writes them: only `LogFilter` is a kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepPlugins {
    #[serde(
        rename = "LogFilter",
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub log_filter: Vec<LogFilter>,
}

impl StepPlugins {
    pub fn is_empty(&self) -> bool {
        self.log_filter.is_empty()
    }
}

/// The workflow's plugins (`sequence.pluginConfig`): log filters for
/// every step, and Rundeck's strategy settings, accepted when empty as its
/// exports write them (`WorkflowStrategy: {parallel: {}}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPlugins {
    #[serde(
        rename = "LogFilter",
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub log_filter: Vec<LogFilter>,
    #[serde(rename = "WorkflowStrategy", default, skip_serializing)]
    #[schemars(skip)]
    _workflow_strategy: super::compat::NotYet,
}

impl WorkflowPlugins {
    pub fn is_empty(&self) -> bool {
        self.log_filter.is_empty()
    }
}

/// `sequence.pluginConfig`: a map, or nothing.
pub(crate) fn workflow_plugins<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<WorkflowPlugins>, D::Error> {
    step_plugins_like(d)
}

/// One log filter, checked when the job is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawLogFilter")]
pub struct LogFilter {
    #[serde(rename = "type")]
    pub filter_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawLogFilter {
    #[serde(rename = "type")]
    filter_type: String,
    #[serde(default)]
    config: Option<BTreeMap<String, ScalarString>>,
}

/// What a `key-value-data` filter does, read from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueData {
    pub regex: String,
    /// With one capture group: the key every match sets.
    pub name: Option<String>,
    /// Print what was captured in the log.
    pub log_data: bool,
}

impl LogFilter {
    /// Its key-value capture, for a `key-value-data` filter.
    pub fn key_value_data(&self) -> Option<KeyValueData> {
        (self.filter_type == "key-value-data").then(|| KeyValueData {
            regex: self
                .config
                .get("regex")
                .filter(|r| !r.is_empty())
                .cloned()
                .unwrap_or_else(|| KEY_VALUE_DEFAULT_REGEX.to_string()),
            name: self.config.get("name").filter(|n| !n.is_empty()).cloned(),
            log_data: self
                .config
                .get("logData")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        })
    }
}

impl TryFrom<RawLogFilter> for LogFilter {
    type Error = String;
    fn try_from(raw: RawLogFilter) -> Result<Self, String> {
        let config: BTreeMap<String, String> = raw
            .config
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from(v)))
            .collect();
        let t = raw.filter_type.trim().to_string();
        if t != "key-value-data" {
            return Err(if NOT_BUILT.contains(&t.as_str()) {
                format!("{NOT_SUPPORTED_YET}: log filter type `{t}` (Outpost runs `key-value-data` so far)")
            } else {
                format!(
                    "unknown log filter type `{t}`; the types Outpost knows are `key-value-data`, {}",
                    NOT_BUILT
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        for (k, v) in &config {
            match k.as_str() {
                "regex" | "name" => {}
                "logData" => {
                    if !matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "false" | "") {
                        return Err(format!(
                            "log filter `{t}`: logData `{v}` is not a flag: use true or false"
                        ));
                    }
                }
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
        let filter = LogFilter {
            filter_type: t.clone(),
            config,
        };
        let kv = filter.key_value_data().expect("key-value-data");
        let re = regex::Regex::new(&kv.regex).map_err(|e| {
            format!(
                "log filter `{t}`: regex `{}` is not a pattern Outpost can run: {e}",
                kv.regex
            )
        })?;
        match (re.captures_len() - 1, &kv.name) {
            (2, _) | (1, Some(_)) => Ok(filter),
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
}

/// One map or a list of them: Rundeck's XML codec makes a lone
/// `<LogFilter>` a map.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<LogFilter>, D::Error> {
    use serde::de::{value::MapAccessDeserializer, MapAccess, SeqAccess, Visitor};
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<LogFilter>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of log filters, or one")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(f) = seq.next_element()? {
                out.push(f);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok(vec![LogFilter::deserialize(MapAccessDeserializer::new(
                map,
            ))?])
        }
    }
    d.deserialize_any(V)
}

/// A step's `plugins`: a map, or nothing (`null`, or the empty text
/// Rundeck's XML codec makes of `<plugins/>`).
pub(crate) fn step_plugins<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<StepPlugins>, D::Error> {
    step_plugins_like(d)
}

fn step_plugins_like<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    use serde::de::{value::MapAccessDeserializer, Error, MapAccess, Visitor};
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of plugin kinds (LogFilter)")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V(std::marker::PhantomData))
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
            if s.trim().is_empty() {
                Ok(None)
            } else {
                Err(E::custom(format!(
                    "`{s}` is not a map of plugin kinds (LogFilter)"
                )))
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}
