//! Rundeck's data references over one flat context map, with its views:
//! `${data.KEY}`, `${N:data.KEY}`, a node's own (`${data.KEY@NODE}`) and
//! every node's (`${data.KEY*}`), as Rundeck's `ArgumentVarExpander`
//! parses them (`docs/research/rundeck-data-context.md`).
//!
//! The map holds Rundeck's views as key shapes:
//!
//! | view | key |
//! |---|---|
//! | global | `data.KEY` |
//! | step(N) | `N:data.KEY` |
//! | node(NODE) | `data.KEY@NODE` |
//! | nodeStep(N, NODE) | `N:data.KEY@NODE` |
//!
//! so a plain lookup of the reference's text already finds the global,
//! step and explicitly qualified forms; what needs this module is a node
//! step's widening (its own node's view first) and the `*` lists.

use std::collections::BTreeMap;

/// A reference split as Rundeck splits it.
#[derive(Debug, PartialEq, Eq)]
struct Ref<'a> {
    /// `N:` and the group and key, the step as a number (`02:` is `2:`,
    /// as Rundeck reads it): `2:data.k`.
    base: String,
    scope: Scope<'a>,
}

#[derive(Debug, PartialEq, Eq)]
enum Scope<'a> {
    /// No qualifier: the current node's view, then the wider one.
    Current,
    /// `@NODE` (`/NODE` in a script token): that node's view only.
    Node(&'a str),
    /// `*` and an optional one-character delimiter: every node's value.
    Every(char),
}

/// Parses `[N:]GROUP.KEY[@NODE|*FORMAT]` (with `qualifier` for `@`); `None`
/// for anything else, which is then looked up as it is written. Only the
/// `data` group has node views here, so only it takes `*`: a shell's
/// `${f%.tar.*}` is not a list.
fn parse(name: &str, qualifier: char) -> Option<Ref<'_>> {
    let (step, body) = match name.split_once(':') {
        Some((step, rest)) if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) => {
            (Some(step.parse::<u32>().ok()?), rest)
        }
        _ => (None, name),
    };
    let (group, rest) = body.split_once('.')?;
    if group.is_empty() || group.chars().any(char::is_whitespace) {
        return None;
    }
    let key_end = rest
        .find(|c: char| c == qualifier || c == '*' || c.is_whitespace())
        .unwrap_or(rest.len());
    if key_end == 0 {
        return None;
    }
    let (key, tail) = rest.split_at(key_end);
    let base = match step {
        Some(n) => format!("{n}:{group}.{key}"),
        None => format!("{group}.{key}"),
    };
    let scope = if tail.is_empty() {
        Scope::Current
    } else if let Some(node) = tail.strip_prefix(qualifier) {
        if node.is_empty() || node.chars().any(char::is_whitespace) {
            return None;
        }
        Scope::Node(node)
    } else if let Some(format) = tail.strip_prefix('*') {
        if group != "data" || format.chars().any(char::is_whitespace) {
            return None;
        }
        // Rundeck takes the format as the delimiter only when it is one
        // character (`BaseVarExpander`); any other keeps `,`.
        let mut chars = format.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Scope::Every(c),
            _ => Scope::Every(','),
        }
    } else {
        return None;
    };
    Some(Ref { base, scope })
}

/// The value of a reference's text (`data.k`, `2:data.k@web1`,
/// `data.k*`), seen from `node` (a node step) or from the workflow
/// (`None`). `qualifier` is `@` in `${…}` and `/` in a script's `@…@`.
pub fn resolve(
    name: &str,
    vars: &BTreeMap<String, String>,
    node: Option<&str>,
    qualifier: char,
) -> Option<String> {
    let Some(r) = parse(name, qualifier) else {
        return vars.get(name).cloned();
    };
    match r.scope {
        // nodeStep(N, node) widens to step(N), node(node) to global; a
        // workflow step sees the wide view only.
        Scope::Current => node
            .and_then(|n| vars.get(&format!("{}@{n}", r.base)))
            .or_else(|| vars.get(&r.base))
            .cloned(),
        // An explicit node never falls back to a wider view.
        Scope::Node(n) => vars.get(&format!("{}@{n}", r.base)).cloned(),
        // Every node view that holds the key, by node name as Rundeck's
        // `TreeSet` orders them; none is the empty string, not unresolved.
        Scope::Every(sep) => {
            let prefix = format!("{}@", r.base);
            let values: Vec<&str> = vars
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.as_str())
                .collect();
            Some(values.join(&sep.to_string()))
        }
    }
}

/// Replaces each `${…}` that resolves (see [`resolve`]); the others stay
/// as written, as [`super::substitute`] leaves them.
pub fn expand(text: &str, vars: &BTreeMap<String, String>, node: Option<&str>) -> String {
    super::substitute_with(text, |name| resolve(name, vars, node, '@'))
}

/// True for a key of the `data` group in any view (`data.k`, `2:data.k`,
/// `data.k@web1`): what a node step resolves with its own node's view.
pub fn is_data_key(key: &str) -> bool {
    let body = match key.split_once(':') {
        Some((step, rest)) if step.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => key,
    };
    body.starts_with("data.")
}

/// The keys a node's capture in `step` is stored under: its node view
/// (`data.KEY@NODE`, later steps overwrite it) and its node-step view
/// (`STEP:data.KEY@NODE`).
pub fn node_capture_keys(step: u32, key: &str, node: &str) -> [String; 2] {
    [
        format!("data.{key}@{node}"),
        format!("{step}:data.{key}@{node}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [
            ("data.v", "global"),
            ("data.v@web1", "one"),
            ("data.v@web10", "ten"),
            ("data.v@web2", "two"),
            ("2:data.v@web1", "s2-one"),
            ("2:data.v", "step2"),
            ("option.x", "opt"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Rundeck's search chains (`SharedDataContextUtilsSpec`,
    /// `ArgumentVarExpanderSpec`), one row each: reference, node, value.
    #[test]
    fn references_resolve_through_rundecks_views() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            // A node step sees its own node's value first.
            ("data.v", Some("web1"), Some("one")),
            ("data.v", Some("db1"), Some("global")),
            // A workflow step sees the global view only.
            ("data.v", None, Some("global")),
            // An explicit node: that view only, never the global one.
            ("data.v@web2", None, Some("two")),
            ("data.v@db1", Some("web1"), None),
            // nodeStep(2, node) widens to step(2).
            ("2:data.v", Some("web1"), Some("s2-one")),
            ("2:data.v", Some("web2"), Some("step2")),
            ("2:data.v@web2", None, None),
            // Every node's value, by node name (`web10` before `web2`).
            ("data.v*", None, Some("one,ten,two")),
            ("data.v*;", Some("web1"), Some("one;ten;two")),
            ("data.v*json", None, Some("one,ten,two")),
            ("data.missing*", None, Some("")),
            ("2:data.v*", None, Some("s2-one")),
            // A step written with a leading zero is that step.
            ("02:data.v", Some("web1"), Some("s2-one")),
            // Other groups as written, and the shell's own forms left
            // alone (`*` lists only the data group).
            ("option.x", Some("web1"), Some("opt")),
            ("HOME", None, None),
            ("f%.tar.*", None, None),
            ("HOSTNAME%%.corp.*", Some("web1"), None),
            ("s#*.prod.*", None, None),
            ("VAR:-x", None, None),
        ];
        for (name, node, want) in cases {
            assert_eq!(
                resolve(name, &vars(), *node, '@').as_deref(),
                *want,
                "{name} on {node:?}"
            );
        }
    }

    #[test]
    fn script_tokens_qualify_a_node_with_a_slash() {
        assert_eq!(
            resolve("data.v/web2", &vars(), None, '/').as_deref(),
            Some("two")
        );
        assert_eq!(
            resolve("data.v*", &vars(), Some("web1"), '/').as_deref(),
            Some("one,ten,two")
        );
    }

    #[test]
    fn expand_keeps_what_does_not_resolve() {
        assert_eq!(
            expand(
                "${data.v} ${data.v@web2} ${data.v*+} ${data.nope} ${HOME} ${data.v",
                &vars(),
                Some("web1")
            ),
            "one two one+ten+two ${data.nope} ${HOME} ${data.v"
        );
    }

    #[test]
    fn data_keys_in_every_view() {
        for k in ["data.k", "2:data.k", "data.k@web1", "12:data.k@web1"] {
            assert!(is_data_key(k), "{k}");
        }
        for k in ["option.data", "export.k", "x:data.k", "node.data.k"] {
            assert!(!is_data_key(k), "{k}");
        }
    }
}
