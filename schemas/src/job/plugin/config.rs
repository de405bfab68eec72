//! Reading a plugin step's `configuration` map as Rundeck's plugins read
//! it: every value text, a flag `true` or `false`, a `${…}` reference left
//! for the runner to check once it has expanded.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

/// Reads `config` into a plugin's configuration type (whose serde names
/// are the plugin's keys); an unknown key is an error naming `step` and
/// listing its keys.
pub fn from_map<T: DeserializeOwned>(
    step: &str,
    config: &BTreeMap<String, String>,
) -> Result<T, String> {
    let value = serde_json::to_value(config).expect("a map of text serialises");
    serde_json::from_value(value).map_err(|e| {
        let e = e.to_string();
        match e.strip_prefix("unknown field ") {
            Some(rest) => format!(
                "{step} has no configuration key {}",
                rest.replacen(", expected one of", "; its keys are", 1)
            ),
            None => format!("configuration: {e}"),
        }
    })
}

/// A value that expands only at run time: checked then, on the runner.
pub fn deferred(v: &str) -> bool {
    v.contains("${")
}

/// The value, trimmed; none when it is unset or blank.
pub fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A flag: `true` or `false` in any case, `default` when blank; at import
/// a reference reads as the default until the runner expands it.
pub fn flag(key: &str, v: &Option<String>, default: bool, at_import: bool) -> Result<bool, String> {
    match text(v) {
        None => Ok(default),
        Some(v) if at_import && deferred(v) => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(format!(
            "configuration.{key}: `{v}` is not a flag: use true or false"
        )),
    }
}

/// [`from_map`] for a configuration type with flattened parts (serde's
/// `deny_unknown_fields` does not see through `flatten`): its keys are the
/// properties of its JSON Schema, the one committed for it.
pub fn from_map_flat<T: DeserializeOwned + schemars::JsonSchema>(
    step: &str,
    config: &BTreeMap<String, String>,
) -> Result<T, String> {
    from_map_flat_without(step, config, &[])
}

/// [`from_map_flat`] for a step that lacks some keys of the type it shares
/// with another (`without`).
pub fn from_map_flat_without<T: DeserializeOwned + schemars::JsonSchema>(
    step: &str,
    config: &BTreeMap<String, String>,
    without: &[&str],
) -> Result<T, String> {
    let schema = schemars::schema_for!(T);
    let keys: Vec<&String> = schema
        .as_value()
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| {
            p.keys()
                .filter(|k| !without.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(k) = config.keys().find(|k| !keys.contains(k)) {
        let listed: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        return Err(format!(
            "{step} has no configuration key `{k}`; its keys are {}",
            listed.join(", ")
        ));
    }
    from_map(step, config)
}
