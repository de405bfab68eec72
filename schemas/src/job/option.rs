//! Job options: Rundeck's `options` list entries.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compat::{flag, Flag, NotYet, ScalarString, Values};
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
    #[serde(default)]
    pub enforced: bool,
    /// A secret: its value is sealed at rest, handed only to the runner that
    /// claims the step, and masked as `[SECURE]` in the output. It can have
    /// no default (the job definition is stored in plain text), nor allowed
    /// `values`.
    #[serde(default)]
    pub secure: bool,
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
    /// Splits `values` when it is one string (Rundeck's default `,`).
    #[serde(rename = "valuesListDelimiter", default)]
    values_list_delimiter: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    enforced: bool,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    secure: bool,
    /// Only matters with `storagePath`, which is not built.
    #[serde(rename = "valueExposed", default)]
    _value_exposed: Option<Flag>,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(rename = "regex", default)]
    _regex: NotYet,
    #[serde(rename = "multivalued", default)]
    _multivalued: NotYet,
    #[serde(rename = "delimiter", default)]
    _delimiter: NotYet,
    #[serde(rename = "multivalueAllSelected", default)]
    _multivalue_all_selected: NotYet,
    #[serde(rename = "valuesUrl", default)]
    _values_url: NotYet,
    #[serde(rename = "configRemoteUrl", default)]
    _config_remote_url: NotYet,
    #[serde(rename = "remoteUrlAuthenticationType", default)]
    _remote_url_authentication_type: NotYet,
    #[serde(rename = "storagePath", default)]
    _storage_path: NotYet,
    #[serde(rename = "isDate", default)]
    _is_date: NotYet,
    #[serde(rename = "dateFormat", default)]
    _date_format: NotYet,
    #[serde(rename = "hidden", default)]
    _hidden: NotYet,
    #[serde(rename = "sortValues", default)]
    _sort_values: NotYet,
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
        if raw.enforced {
            if values.is_empty() {
                return Err(format!(
                    "option `{}` is `enforced` but lists no `values`",
                    raw.name
                ));
            }
            if let Some(v) = &value {
                if !values.contains(v) {
                    return Err(format!(
                        "option `{}`: default `{v}` is not one of its `values`",
                        raw.name
                    ));
                }
            }
        }
        Ok(JobOption {
            name: raw.name,
            label: raw.label,
            description: raw.description,
            required: raw.required,
            value,
            values,
            enforced: raw.enforced,
            secure: raw.secure,
        })
    }
}

/// Option values: the plain ones and, apart, the secure ones.
pub type OptionValues = (BTreeMap<String, String>, BTreeMap<String, String>);

impl Job {
    /// Applies defaults and checks the given values against the job's
    /// options; the error names the option and the rule.
    pub fn resolve_options(
        &self,
        mut given: BTreeMap<String, String>,
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
            let value = given.remove(&opt.name).or_else(|| opt.value.clone());
            match value {
                None if opt.required => {
                    return Err(format!(
                        "option `{}` is required and has no default",
                        opt.name
                    ))
                }
                None => {}
                Some(v) => {
                    if opt.enforced && !opt.values.contains(&v) {
                        return Err(format!(
                            "option `{}` must be one of {:?}, not `{v}`",
                            opt.name, opt.values
                        ));
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
