//! Rundeck's job `retry`: `retry: 3`, `retry: '${option.n}'`, or with a
//! delay, `retry: {retry: 3, delay: 30s}` (and the older top-level
//! `retryDelay`). A failed execution is retried as a new one with the same
//! option values; see ARCHITECTURE.md, "Retries".

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::ser::SerializeMap;
use serde::{de, Deserializer, Serialize, Serializer};

use super::{option_references, parse_timeout, substitute};

/// As the job holds it: text, so that either part may name an option.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct JobRetry {
    /// How many times a failed execution is retried.
    pub retry: String,
    /// How long to wait before each retry (`30s`, `1h 1m`).
    pub delay: Option<String>,
}

/// A run's retry policy, its options substituted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max: u32,
    pub delay: Option<Duration>,
}

impl JobRetry {
    /// The policy for a run with these option values. A missing value is
    /// blank, as in Rundeck; a blank count is no retry.
    pub fn policy(&self, options: &BTreeMap<String, String>) -> Result<RetryPolicy, String> {
        let expand = |text: &str| {
            let vars: BTreeMap<String, String> = option_references(text)
                .map(|n| {
                    (
                        format!("option.{n}"),
                        options.get(n).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            substitute(text, &vars)
        };
        let count = expand(&self.retry);
        let max = match count.trim() {
            "" => 0,
            n => n.parse::<u32>().map_err(|_| {
                format!(
                    "the value for 'retry' was not a valid integer: `{}` (from `{}`)",
                    count.trim(),
                    self.retry
                )
            })?,
        };
        let delay = match &self.delay {
            None => None,
            Some(d) => parse_timeout(&expand(d)).map_err(|e| format!("retry delay: {e}"))?,
        };
        Ok(RetryPolicy { max, delay })
    }
}

/// Checks `retry` text as Rundeck does at save: an option reference, or a
/// whole number.
pub(crate) fn check_count(text: &str) -> Result<(), String> {
    if text.contains("${") || text.trim().parse::<u32>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "retry `{text}`: the retry value must be a valid integer, or contain an option reference"
        ))
    }
}

pub(crate) fn check_delay(text: &str) -> Result<(), String> {
    if text.contains("${") {
        return Ok(());
    }
    parse_timeout(text)
        .map(drop)
        .map_err(|e| format!("retry delay: {e}"))
}

impl Serialize for JobRetry {
    /// As Rundeck exports it: the map form only when there is a delay.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.delay {
            None => s.serialize_str(&self.retry),
            Some(delay) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("retry", &self.retry)?;
                m.serialize_entry("delay", delay)?;
                m.end()
            }
        }
    }
}

/// Reads `retry` in either form; checks run inside the visitor, so that an
/// error carries the value's line.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JobRetry>, D::Error> {
    d.deserialize_any(Retry)
}

struct Retry;

impl<'de> de::Visitor<'de> for Retry {
    type Value = Option<JobRetry>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a retry count, or {retry, delay}")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let text = s.trim();
        if text.is_empty() {
            return Ok(None);
        }
        check_count(text).map_err(E::custom)?;
        Ok(Some(JobRetry {
            retry: text.to_string(),
            delay: None,
        }))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut retry, mut delay) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let value: Option<super::compat::ScalarString> = map.next_value()?;
            let value = value.map(String::from).map(|v| v.trim().to_string());
            match key.as_str() {
                "retry" => retry = value,
                "delay" => delay = value.filter(|v| !v.is_empty()),
                other => {
                    return Err(de::Error::unknown_field(other, &["retry", "delay"]));
                }
            }
        }
        let Some(retry) = retry.filter(|r| !r.is_empty()) else {
            return match delay {
                Some(_) => Err(de::Error::custom("retry has a delay but no `retry` count")),
                None => Ok(None),
            };
        };
        check_count(&retry).map_err(de::Error::custom)?;
        if let Some(d) = &delay {
            check_delay(d).map_err(de::Error::custom)?;
        }
        Ok(Some(JobRetry { retry, delay }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_read_per_run() {
        let r = JobRetry {
            retry: "${option.n}".into(),
            delay: Some("${option.wait}".into()),
        };
        let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            r.policy(&opts(&[("n", "2"), ("wait", "1m")])).unwrap(),
            RetryPolicy {
                max: 2,
                delay: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(r.policy(&opts(&[])).unwrap().max, 0, "blank: no retry");
        let e = r.policy(&opts(&[("n", "many")])).unwrap_err();
        assert!(e.contains("not a valid integer: `many`"), "{e}");
    }
}
