//! Job options: Rundeck's `options` list entries.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compat::{flag, is_false, Flag, NotYet, ScalarString, Values};
use super::*;

/// A job option (Rundeck's `options` list entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawJobOption")]
pub struct JobOption {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Allowed values; enforced only when `enforced` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Remote allowed values: an http(s) URL the control plane fetches
    /// (JSON, Rundeck's formats), for listing and, with `enforced` and no
    /// `values`, to check a run's value. `${job.x}`, `${globals.x}` and
    /// `${option.other.value}` are expanded in it.
    #[serde(rename = "valuesUrl", default, skip_serializing_if = "Option::is_none")]
    pub values_url: Option<String>,
    #[serde(default)]
    pub enforced: bool,
    /// A secret: its value is sealed at rest, handed only to the runner that
    /// claims the step, and masked as `[SECURE]` in the output. It can have
    /// no default (the job definition is stored in plain text), nor allowed
    /// `values`.
    #[serde(default)]
    pub secure: bool,
    /// With `secure`: the value is given to steps (`${option.x}`,
    /// `RD_OPTION_X`, `@option.x@`), Rundeck's "Secure" input. Without it a
    /// secure option is Rundeck's "Secure Remote Authentication": only the
    /// runner's SSH executor reads it (`ssh-password-option`), and no step
    /// sees it.
    #[serde(rename = "valueExposed", default, skip_serializing_if = "is_false")]
    pub value_exposed: bool,
    /// With `secure`: the default value is the key at this path
    /// (`keys/...`) in the key store of the runner that claims the step;
    /// the control plane never reads it.
    #[serde(
        rename = "storagePath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_path: Option<String>,
    /// Every value (each part of a multivalued one) must match it whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The value is a list joined by `delimiter`; each part is checked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub multivalued: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// With `multivalued` and no default: every allowed value is the
    /// default.
    #[serde(
        rename = "multivalueAllSelected",
        default,
        skip_serializing_if = "is_false"
    )]
    pub multivalue_all_selected: bool,
    /// UI hints, kept for export: `hidden`, `sortValues`, and the date
    /// picker's `isDate` and `dateFormat` (a value is not checked against
    /// the format, as Rundeck's API does not check it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub hidden: bool,
    #[serde(rename = "sortValues", default, skip_serializing_if = "is_false")]
    pub sort_values: bool,
    #[serde(rename = "isDate", default, skip_serializing_if = "is_false")]
    pub is_date: bool,
    #[serde(
        rename = "dateFormat",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub date_format: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawJobOption {
    name: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    required: bool,
    #[serde(default)]
    value: Option<ScalarString>,
    #[serde(default)]
    values: Option<Values>,
    #[serde(rename = "valuesUrl", default)]
    values_url: Option<String>,
    /// Splits `values` when it is one string (Rundeck's default `,`).
    #[serde(rename = "valuesListDelimiter", default)]
    values_list_delimiter: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    enforced: bool,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    secure: bool,
    #[serde(rename = "valueExposed", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    value_exposed: bool,
    #[serde(rename = "storagePath", default)]
    storage_path: Option<String>,
    #[serde(default, deserialize_with = "regex_text")]
    #[schemars(with = "Option<String>")]
    regex: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    multivalued: bool,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(rename = "multivalueAllSelected", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    multivalue_all_selected: bool,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    hidden: bool,
    #[serde(rename = "sortValues", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    sort_values: bool,
    #[serde(rename = "isDate", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    is_date: bool,
    #[serde(rename = "dateFormat", default)]
    date_format: Option<String>,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(rename = "configRemoteUrl", default)]
    _config_remote_url: NotYet,
    #[serde(rename = "remoteUrlAuthenticationType", default)]
    _remote_url_authentication_type: NotYet,
    #[serde(rename = "sortIndex", default)]
    _sort_index: NotYet,
    #[serde(rename = "type", default)]
    _option_type: NotYet,
    #[serde(rename = "config", default)]
    _config: NotYet,
    #[serde(rename = "optionValuesPluginType", default)]
    _option_values_plugin_type: NotYet,
}

impl TryFrom<RawJobOption> for JobOption {
    type Error = String;
    fn try_from(raw: RawJobOption) -> Result<Self, String> {
        check_name("option name", &raw.name, |c| {
            c == '_' || c == '-' || c == '.'
        })?;
        let value: Option<String> = raw.value.map(Into::into);
        let values: Vec<String> = raw
            .values
            .map(|v| v.into_list(raw.values_list_delimiter.as_deref().unwrap_or(",")))
            .unwrap_or_default();
        if raw.secure && (value.is_some() || !values.is_empty()) {
            return Err(format!(
                "option `{}` is secure, so it can have no `value` or `values`: the job definition is stored in plain text; pass the value at run time",
                raw.name
            ));
        }
        let values_url = raw.values_url.filter(|u| !u.trim().is_empty());
        if let Some(url) = &values_url {
            if raw.secure {
                return Err(format!(
                    "option `{}` is secure, so it can have no `valuesUrl`",
                    raw.name
                ));
            }
            let lower = url.trim().to_ascii_lowercase();
            let http = ["http://", "https://"]
                .iter()
                .any(|s| lower.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
            // With `${...}` the URL is only known per run.
            let templated = url.contains("${") && !lower.starts_with("file:");
            if !http && !templated {
                return Err(format!(
                    "option `{}`: valuesUrl `{url}` is not an http:// or https:// URL (the control plane fetches it; a file: URL would read the control plane's own files, and is refused)",
                    raw.name
                ));
            }
        }
        let storage_path = raw.storage_path.filter(|p| !p.trim().is_empty());
        if let Some(path) = &storage_path {
            if !raw.secure {
                return Err(format!(
                    "option `{}`: `storagePath` goes with `secure: true` (Rundeck ignores it on a plain option; Outpost refuses rather than drop it)",
                    raw.name
                ));
            }
            let rest = path.trim_start_matches('/').strip_prefix("keys/");
            let inside = rest.is_some_and(|r| {
                !r.is_empty()
                    && r.split('/')
                        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            });
            if !inside {
                return Err(format!(
                    "option `{}`: storagePath `{path}` must be a path below `keys/`, such as `keys/project/db/password`",
                    raw.name
                ));
            }
        }
        let delimiter = raw.delimiter.filter(|d| !d.is_empty());
        if raw.multivalued && delimiter.is_none() {
            return Err(format!(
                "option `{}` is multivalued but has no `delimiter`",
                raw.name
            ));
        }
        if !raw.multivalued && (delimiter.is_some() || raw.multivalue_all_selected) {
            return Err(format!(
                "option `{}`: `delimiter` and `multivalueAllSelected` go with `multivalued: true`",
                raw.name
            ));
        }
        if raw.secure && raw.multivalued {
            return Err(format!(
                "option `{}` cannot be both secure and multivalued",
                raw.name
            ));
        }
        let opt_check = |v: &str| -> Result<(), String> {
            let parts: Vec<&str> = match (&delimiter, raw.multivalued) {
                (Some(d), true) => v.split(d.as_str()).map(str::trim).collect(),
                _ => vec![v],
            };
            for part in parts {
                if let Some(re) = &raw.regex {
                    if !full_match(re, part) {
                        return Err(format!(
                            "option `{}`: default `{part}` does not match its regex `{re}`",
                            raw.name
                        ));
                    }
                }
                // Remote values are not known at import.
                if raw.enforced && !values.is_empty() && !values.iter().any(|x| x == part) {
                    return Err(format!(
                        "option `{}`: default `{part}` is not one of its `values`",
                        raw.name
                    ));
                }
            }
            Ok(())
        };
        if raw.enforced && values.is_empty() && values_url.is_none() {
            return Err(format!(
                "option `{}` is `enforced` but lists no `values` and has no `valuesUrl`",
                raw.name
            ));
        }
        if let Some(v) = &value {
            opt_check(v)?;
        }
        Ok(JobOption {
            name: raw.name,
            label: raw.label,
            description: raw.description,
            required: raw.required,
            value,
            values,
            values_url,
            enforced: raw.enforced,
            secure: raw.secure,
            value_exposed: raw.value_exposed,
            storage_path,
            regex: raw.regex,
            multivalued: raw.multivalued,
            delimiter,
            multivalue_all_selected: raw.multivalue_all_selected,
            hidden: raw.hidden,
            sort_values: raw.sort_values,
            is_date: raw.is_date,
            date_format: raw.date_format,
        })
    }
}

/// `options`: a list, or the older form Rundeck still reads, a map from
/// each option's name to the rest of it. Read in the file's order either
/// way; exported as a list.
pub(crate) fn list_or_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<JobOption>, D::Error> {
    use serde::de::{Error, MapAccess, SeqAccess, Visitor};
    struct Options;
    impl<'de> Visitor<'de> for Options {
        type Value = Vec<JobOption>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of options, or a map from option names to options")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(o) = seq.next_element()? {
                out.push(o);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                let mut fields = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::Object(m) => m,
                    serde_json::Value::Null => serde_json::Map::new(),
                    other => {
                        return Err(A::Error::custom(format!(
                            "option `{name}`: expected a map of its keys, not {other}"
                        )))
                    }
                };
                match fields.get("name") {
                    Some(serde_json::Value::String(n)) if *n != name => {
                        return Err(A::Error::custom(format!(
                            "option `{name}` says its name is `{n}`; give one"
                        )))
                    }
                    _ => {
                        fields.insert("name".into(), serde_json::Value::String(name.clone()));
                    }
                }
                let opt = JobOption::deserialize(serde_json::Value::Object(fields))
                    .map_err(|e| A::Error::custom(format!("option `{name}`: {e}")))?;
                out.push(opt);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Options)
}

/// `regex`, checked at import: Rundeck's are Java patterns; the ones this
/// engine cannot run (look-around, back-references) are refused, naming
/// why.
fn regex_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    super::compat::checked_text(d, |t| {
        regex::Regex::new(&format!("^(?:{t})$"))
            .map(drop)
            .map_err(|e| format!("regex `{t}` is not a pattern Outpost can run: {e}"))
    })
}

/// Whether `value` matches `re` whole, as Java's `String.matches` does.
fn full_match(re: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(value))
}

/// One of an option's remote values, as Rundeck reads them from its
/// `valuesUrl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteValue {
    /// What a person sees.
    pub name: String,
    /// What the option is set to.
    pub value: String,
    /// Pre-selected; with `enforced`, the first one is a run's default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub selected: bool,
}

/// Reads a `valuesUrl` answer in Rundeck's three forms: a list of strings,
/// a list of `{name, value, selected}`, or an object of name to value.
/// Stricter than Rundeck, a list mixing the first two forms is refused
/// rather than half read.
pub fn parse_remote_values(json: &serde_json::Value) -> Result<Vec<RemoteValue>, String> {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let values =
        match json {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(m) => {
                        let field = |k: &str| m.get(k).and_then(text).filter(|s| !s.is_empty());
                        let (Some(name), Some(value)) = (field("name"), field("value")) else {
                            return Err(format!("item {i} has no `name` or no `value`"));
                        };
                        let selected = matches!(m.get("selected"), Some(Value::Bool(true)))
                            || m.get("selected").and_then(Value::as_str) == Some("true");
                        Ok(RemoteValue {
                            name,
                            value,
                            selected,
                        })
                    }
                    other => match text(other) {
                        Some(s) if items.iter().all(|x| !x.is_object()) => Ok(RemoteValue {
                            name: s.clone(),
                            value: s,
                            selected: false,
                        }),
                        _ => Err(format!(
                        "item {i} is neither text nor {{name, value}}, or the list mixes the two"
                    )),
                    },
                })
                .collect::<Result<Vec<_>, _>>()?,
            Value::Object(m) => m
                .iter()
                .map(|(name, v)| match text(v) {
                    Some(value) => Ok(RemoteValue {
                        name: name.clone(),
                        value,
                        selected: false,
                    }),
                    None => Err(format!("`{name}` is not text")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(
                "expected a list of values, a list of {name, value}, or an object of name to value"
                    .into(),
            ),
        };
    if values.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(values)
}

impl JobOption {
    /// Its allowed values are the remote ones: `enforced`, with a
    /// `valuesUrl` and no `values`.
    pub fn remote_enforced(&self) -> bool {
        self.enforced && self.values.is_empty() && self.values_url.is_some()
    }

    /// A secure option whose value no step sees (Rundeck's "Secure Remote
    /// Authentication").
    pub fn auth_only(&self) -> bool {
        self.secure && !self.value_exposed
    }

    /// With `multivalueAllSelected` and no default: every allowed value.
    fn all_selected(&self) -> Option<String> {
        (self.multivalue_all_selected && !self.values.is_empty())
            .then(|| self.values.join(self.delimiter.as_deref().unwrap_or(",")))
    }

    /// Checks a run's value (each part of a multivalued one) against its
    /// remote values.
    fn check_listed(&self, value: &str, listed: &[RemoteValue]) -> Result<(), String> {
        let parts: Vec<&str> = match (&self.delimiter, self.multivalued) {
            (Some(d), true) => value.split(d.as_str()).map(str::trim).collect(),
            _ => vec![value],
        };
        for part in parts {
            if !listed.iter().any(|r| r.value == part) {
                let allowed: Vec<&str> = listed.iter().map(|r| r.value.as_str()).collect();
                return Err(format!(
                    "option `{}` must be one of the values its valuesUrl lists {allowed:?}, not `{part}`",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// Checks a run's value against the option's rules; the error names
    /// the option and the rule.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let parts: Vec<&str> = match (&self.delimiter, self.multivalued) {
            (Some(d), true) => value.split(d.as_str()).map(str::trim).collect(),
            _ => vec![value],
        };
        for part in parts {
            // With remote values only, the caller checks against them.
            if self.enforced && !self.values.is_empty() && !self.values.iter().any(|v| v == part) {
                return Err(format!(
                    "option `{}` must be one of {:?}, not `{part}`",
                    self.name, self.values
                ));
            }
            if let Some(re) = &self.regex {
                if !full_match(re, part) {
                    return Err(format!(
                        "option `{}` does not match its regex `{re}`: `{part}`",
                        self.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Option values: the plain ones and, apart, the secure ones.
pub type OptionValues = (BTreeMap<String, String>, BTreeMap<String, String>);

impl Job {
    /// Applies defaults and checks the given values against the job's
    /// options; the error names the option and the rule.
    pub fn resolve_options(&self, given: BTreeMap<String, String>) -> Result<OptionValues, String> {
        self.resolve_options_with(given, &BTreeMap::new())
    }

    /// As [`Job::resolve_options`], with the remote values of the options
    /// whose allowed values are remote ([`JobOption::remote_enforced`]): a
    /// missing value is the first selected one, and a value must be one of
    /// theirs. Such an option missing from `remote` is not checked (a job
    /// reference's child, which the control plane plans without fetching).
    pub fn resolve_options_with(
        &self,
        mut given: BTreeMap<String, String>,
        remote: &BTreeMap<String, Vec<RemoteValue>>,
    ) -> Result<OptionValues, String> {
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.options.iter().any(|o| &&o.name == k))
        {
            return Err(format!(
                "job `{}` has no option `{unknown}`",
                self.full_name()
            ));
        }
        let mut out = BTreeMap::new();
        let mut secure = BTreeMap::new();
        for opt in &self.options {
            let listed = remote.get(&opt.name).filter(|_| opt.remote_enforced());
            let value = given
                .remove(&opt.name)
                .or_else(|| opt.value.clone())
                .or_else(|| opt.all_selected())
                .or_else(|| {
                    let first = listed?.iter().find(|r| r.selected)?;
                    Some(first.value.clone())
                });
            match value {
                // A key-store default is read by the runner that claims
                // the step, which fails the step if it is not there.
                None if opt.required && opt.storage_path.is_none() => {
                    return Err(format!(
                        "option `{}` is required and has no default",
                        opt.name
                    ))
                }
                None => {}
                Some(v) => {
                    opt.check(&v)?;
                    if let Some(listed) = listed {
                        opt.check_listed(&v, listed)?;
                    }
                    if opt.secure {
                        secure.insert(opt.name.clone(), v);
                    } else {
                        out.insert(opt.name.clone(), v);
                    }
                }
            }
        }
        Ok((out, secure))
    }
}
