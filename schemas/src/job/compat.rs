//! Rundeck's spellings that the job model reads beyond plain serde: flags
//! written as text, keys whose feature is not built yet, and option values
//! as one delimited string.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer};

/// What a key that Outpost knows but has not built fails with. The
/// importer names the key from the error's path: `not supported yet: retry`.
pub const NOT_SUPPORTED_YET: &str = "not supported yet";

/// A key Rundeck documents whose feature Outpost has not built. A value
/// that asks for nothing (null, `false`, `''`, `[]`, or a map of such, as
/// Rundeck exports for an unset feature: `plugins: {ExecutionLifecycle: {}}`)
/// is accepted; anything else is refused, so that nothing a job asks for is
/// silently dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotYet;

impl<'de> Deserialize<'de> for NotYet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The refusal is raised inside the visitor, so that the parser puts
        // the line of the value itself on it.
        d.deserialize_any(Judge {
            refuse: true,
            depth: 0,
        })
        .map(|_| NotYet)
    }
}

/// Whether a value asks for anything (`refuse: false`: only tell; `true`:
/// fail when it does). `depth`: how many maps hold it.
struct Judge {
    refuse: bool,
    depth: usize,
}

/// A value nested in a not-yet key: only told about, so that the error
/// stays on the key itself (`not supported yet: schedule`, not `crontab`).
struct Asks {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for Asks {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(Judge {
            refuse: false,
            depth: self.depth,
        })
    }
}

impl Judge {
    fn verdict<E: de::Error>(&self, asks: bool) -> Result<bool, E> {
        if asks && self.refuse {
            Err(E::custom(NOT_SUPPORTED_YET))
        } else {
            Ok(asks)
        }
    }
}

impl<'de> de::Visitor<'de> for Judge {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
        self.verdict(b)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        self.verdict(true)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        self.verdict(true)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        self.verdict(true)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        self.verdict(!(s.is_empty() || s.eq_ignore_ascii_case("false")))
    }

    /// An element asks, even an empty one (`conditionGroups: [{}]` is a
    /// condition group).
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut asks = false;
        while seq
            .next_element_seed(Asks {
                depth: self.depth + 1,
            })?
            .is_some()
        {
            asks = true;
        }
        self.verdict(asks)
    }

    /// A key of a map inside a map names a thing, which asks for it even
    /// with nothing set (`plugins: {ExecutionLifecycle: {killhandler: {}}}`
    /// turns a plugin on); one level down a key is a kind or a setting,
    /// which asks only with a value (`{ExecutionLifecycle: {}}`, as Rundeck
    /// exports an unset one).
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut asks = false;
        while let Some(de::IgnoredAny) = map.next_key()? {
            asks |= map.next_value_seed(Asks {
                depth: self.depth + 1,
            })?;
            asks |= self.depth >= 1;
        }
        self.verdict(asks)
    }
}

impl JsonSchema for NotYet {
    fn schema_name() -> Cow<'static, str> {
        "NotSupportedYet".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A Rundeck key whose feature is not built yet: only a value that asks for nothing (null, false, '', [], {}) is accepted."
        })
    }
}

/// A flag as Rundeck writes it: a boolean, or text (its XML, and older
/// exports) — `true`/`false`, or YAML 1.1's `yes`/`no`/`on`/`off`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Flag;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true or false")
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag(b))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Flag, E> {
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Ok(Flag(true)),
                    "false" | "no" | "off" | "" => Ok(Flag(false)),
                    _ => Err(E::custom(format!("`{s}` is not a flag: use true or false"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Flag {
    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "true or false; also as text (true, false, yes, no, on, off; any case).",
            "type": ["boolean", "string"]
        })
    }
}

/// Text (or a number, as text) that `check` accepts; empty or null is none.
/// The check runs inside the visitor, so that the parser puts the value's
/// line on its error.
pub(crate) fn checked_text<'de, D, F>(d: D, check: F) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
    F: Fn(&str) -> Result<(), String>,
{
    struct Checked<F>(F);

    impl<'de, F: Fn(&str) -> Result<(), String>> de::Visitor<'de> for Checked<F> {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("text")
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
            (self.0)(text).map_err(E::custom)?;
            Ok(Some(text.to_string()))
        }
    }

    d.deserialize_any(Checked(check))
}

/// For `#[serde(deserialize_with = "flag")]` on a `bool`.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Flag::deserialize(d).map(|f| f.0)
}

/// Rundeck's option `values`: a list, or one string that its
/// `valuesListDelimiter` (`,` by default) splits.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum Values {
    List(Vec<ScalarString>),
    One(ScalarString),
}

impl Values {
    /// The values in order, each once, trimmed, none empty (as Rundeck
    /// reads a delimited string back).
    pub(crate) fn into_list(self, delimiter: &str) -> Vec<String> {
        let items: Vec<String> = match self {
            Values::List(v) => v.into_iter().map(String::from).collect(),
            Values::One(s) => String::from(s)
                .split(if delimiter.is_empty() { "," } else { delimiter })
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect(),
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for v in items {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_ask_nothing_and_others_do() {
        for empty in [
            "null",
            "false",
            "''",
            "'false'",
            "[]",
            "{}",
            "{ExecutionLifecycle: {}}",
        ] {
            let v: Result<NotYet, _> = serde_yaml_ng::from_str(empty);
            assert!(v.is_ok(), "{empty}");
        }
        for asks in ["3", "true", "'1h'", "[a]", "{crontab: '0 0 * * * ?'}"] {
            let e = serde_yaml_ng::from_str::<NotYet>(asks).unwrap_err();
            assert!(e.to_string().contains(NOT_SUPPORTED_YET), "{asks}: {e}");
        }
    }

    #[test]
    fn flags_read_as_rundeck_writes_them() {
        for (text, want) in [
            ("true", true),
            ("'TRUE'", true),
            ("'yes'", true),
            ("'off'", false),
            ("false", false),
            ("''", false),
        ] {
            assert_eq!(
                serde_yaml_ng::from_str::<Flag>(text).unwrap().0,
                want,
                "{text}"
            );
        }
        assert!(serde_yaml_ng::from_str::<Flag>("'maybe'").is_err());
    }

    #[test]
    fn a_delimited_values_string_is_split_trimmed_and_deduplicated() {
        let v: Values = serde_yaml_ng::from_str("'a, b,,a ,c'").unwrap();
        assert_eq!(v.into_list(","), ["a", "b", "c"]);
        let v: Values = serde_yaml_ng::from_str("'x|y'").unwrap();
        assert_eq!(v.into_list("|"), ["x", "y"]);
        let v: Values = serde_yaml_ng::from_str("[1, two]").unwrap();
        assert_eq!(v.into_list(","), ["1", "two"]);
    }
}

/// YAML writes `value: 3` as a number; Rundeck treats every option as text.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum ScalarString {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl From<ScalarString> for String {
    fn from(s: ScalarString) -> String {
        match s {
            ScalarString::S(s) => s,
            ScalarString::I(i) => i.to_string(),
            ScalarString::F(f) => f.to_string(),
            ScalarString::B(b) => b.to_string(),
        }
    }
}

/// For `skip_serializing_if`: a flag Rundeck leaves out when off.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
