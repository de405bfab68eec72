//! Finds where a field path (`[1].sequence.commands[0].jobref`) sits in a
//! YAML or JSON text, for faults found after parsing, when the parser's
//! own positions are gone.
//!
//! The text is read again with a seed that walks down the path, skipping
//! everything else, and fails on reaching the field: the deserialiser then
//! stamps the failure with its position, as it does for any error.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Marks the failure that means "found".
const HERE: &str = "outpost: the located field";

enum Seg {
    Index(usize),
    Key(String),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for index in rest.split(['[', ']']).filter(|s| !s.is_empty()) {
            if let Ok(i) = index.parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// The line and column (1-based) of the field at `path` in YAML text.
pub(crate) fn in_yaml(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = segments(path);
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let err = Walk(&segs).deserialize(de).err()?;
    let found = err.to_string().contains(HERE);
    let at = err.location()?;
    found.then_some((at.line(), at.column()))
}

/// The line and column (1-based) of the field at `path` in JSON text.
pub(crate) fn in_json(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = segments(path);
    let mut de = serde_json::Deserializer::from_str(text);
    let err = Walk(&segs).deserialize(&mut de).err()?;
    (err.to_string().contains(HERE) && err.line() > 0).then_some((err.line(), err.column()))
}

struct Walk<'a>(&'a [Seg]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(i), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        for _ in 0..*i {
            seq.next_element::<IgnoredAny>()?;
        }
        seq.next_element_seed(Walk(rest))?;
        Err(de::Error::custom("no such field"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(key), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        while let Some(k) = map.next_key::<String>()? {
            if &k == key {
                return map.next_value_seed(Walk(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("no such field"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Walk<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        Err(de::Error::custom(if self.0.is_empty() {
            HERE
        } else {
            "no such field"
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str =
        "- name: a\n  sequence:\n    commands:\n    - exec: one\n    - jobref:\n        name: b\n";
    const JSON: &str = "[\n  {\n    \"name\": \"a\",\n    \"sequence\": {\n      \"commands\": [\n        {\"exec\": \"one\"},\n        {\n          \"jobref\": {\"name\": \"b\"}\n        }\n      ]\n    }\n  }\n]\n";

    #[test]
    fn finds_a_nested_field_on_its_line() {
        assert_eq!(
            in_yaml(YAML, "[0].sequence.commands[1].jobref").map(|p| p.0),
            Some(6)
        );
        assert_eq!(
            in_yaml(YAML, "[0].sequence.commands[1]").map(|p| p.0),
            Some(5)
        );
        assert_eq!(in_yaml(YAML, "[0].name").map(|p| p.0), Some(1));
        assert_eq!(
            in_json(JSON, "[0].sequence.commands[1].jobref").map(|p| p.0),
            Some(8)
        );
        assert_eq!(
            in_json(JSON, "[0].sequence.commands[0]").map(|p| p.0),
            Some(6)
        );
    }

    #[test]
    fn a_path_that_is_not_there_has_no_place() {
        assert_eq!(in_yaml(YAML, "[0].sequence.commands[7]"), None);
        assert_eq!(in_yaml(YAML, "[3]"), None);
        assert_eq!(in_json(JSON, "[0].nodefilters"), None);
    }
}
