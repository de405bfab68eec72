//! Rundeck's node filter language: parsing, matching and ranking.
//!
//! Semantics follow Rundeck's `NodeSet` (see `docs/research/rundeck-node-filters.md`):
//! `attr: value` clauses, different attributes AND, a repeated attribute's
//! values join with `,` (OR); a bare value filters on the node name; `!attr:`
//! excludes. A value matches if, as one regex, it fully matches the attribute,
//! or if one of its comma items equals it exactly; `/…/` means regex only.
//! Tags take `a+b` (all) and `a,b` (any). `.*` selects every node.
//!
//! Where Rundeck silently does something surprising, we refuse with an
//! error that points at the column instead: an invalid `/regex/`, an
//! unterminated quote, an attribute with no value, and a bare `!word` (which
//! Rundeck reads as the node *named* `!word`).

use std::collections::BTreeMap;

use regex::Regex;

use crate::node::Node;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node filter, column {column}: {message}")]
pub struct FilterError {
    /// 1-based column in the filter text.
    pub column: usize,
    pub message: String,
}

/// A parsed filter: attribute → value, for includes and for excludes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeFilter {
    pub include: BTreeMap<String, String>,
    pub exclude: BTreeMap<String, String>,
}

struct Token {
    text: String,
    column: usize,
}

/// Splits on whitespace; a token that starts with a quote (or whose value
/// after `key:` does) runs to the matching quote, `''`/`""` escaping it.
fn tokenize(filter: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = filter.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let mut text = String::new();
        let mut quote: Option<(char, usize)> = None;
        let mut may_open = true;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some((q, _)) if c == q => {
                    if chars.get(i + 1) == Some(&q) {
                        text.push(q);
                        i += 2;
                        continue;
                    }
                    quote = None;
                    may_open = false;
                }
                Some(_) => text.push(c),
                None if c.is_whitespace() => break,
                None if may_open && (c == '"' || c == '\'') => quote = Some((c, i)),
                None => {
                    text.push(c);
                    // A quote may also open the value right after `key:`.
                    may_open = c == ':' && !text[..text.len() - 1].contains(':');
                }
            }
            i += 1;
        }
        if let Some((q, at)) = quote {
            return Err(FilterError {
                column: at + 1,
                message: format!("unterminated {q} quote"),
            });
        }
        tokens.push(Token {
            text,
            column: start + 1,
        });
    }
    Ok(tokens)
}

/// Parses a filter. A blank filter selects no node.
pub fn parse(filter: &str) -> Result<NodeFilter, FilterError> {
    let mut f = NodeFilter::default();
    let mut pending: Option<(String, usize)> = None;
    let add = |f: &mut NodeFilter,
               key: String,
               value: String,
               column: usize|
     -> Result<(), FilterError> {
        let (map, key) = match key.strip_prefix('!') {
            Some(k) => (&mut f.exclude, k.to_string()),
            None => (&mut f.include, key),
        };
        if key.is_empty() {
            return Err(FilterError {
                column,
                message: "an attribute name is missing before `:`".into(),
            });
        }
        if value.starts_with('/') && value.len() >= 2 && value.ends_with('/') {
            Regex::new(&format!("^(?:{})$", &value[1..value.len() - 1])).map_err(|e| {
                FilterError {
                    column,
                    message: format!(
                        "invalid regex {value}: {}",
                        e.to_string().lines().last().unwrap_or_default()
                    ),
                }
            })?;
        }
        map.entry(key)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
        Ok(())
    };
    for tok in tokenize(filter)? {
        if let Some((key, _)) = pending.take() {
            add(&mut f, key, tok.text, tok.column)?;
            continue;
        }
        if let Some(key) = tok.text.strip_suffix(':') {
            pending = Some((key.to_string(), tok.column));
            continue;
        }
        if let Some((key, value)) = tok.text.split_once(':') {
            add(&mut f, key.to_string(), value.to_string(), tok.column)?;
            continue;
        }
        if tok.text.starts_with('!') && tok.text.len() > 1 {
            return Err(FilterError {
                column: tok.column,
                message: format!(
                    "`{}` excludes nothing: an exclusion names its attribute, as in `!name: {}`",
                    tok.text,
                    &tok.text[1..]
                ),
            });
        }
        add(&mut f, "name".into(), tok.text, tok.column)?;
    }
    if let Some((key, column)) = pending {
        return Err(FilterError {
            column,
            message: format!("`{key}:` has no value"),
        });
    }
    Ok(f)
}

/// Rundeck's value match: the whole selector as a full-match regex, or one
/// of its comma items exactly; `/…/` is regex only.
fn value_matches(selector: &str, value: Option<&str>) -> bool {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return false;
    };
    regex_or_equals(selector, value) || selector.split(',').any(|item| item == value)
}

fn regex_or_equals(selector: &str, value: &str) -> bool {
    if selector.len() >= 2 && selector.starts_with('/') && selector.ends_with('/') {
        // Validated at parse time.
        return full_match(selector[1..selector.len() - 1].trim(), value).unwrap_or(false);
    }
    let sel = selector.trim();
    full_match(sel, value).unwrap_or(false) || sel == value
}

fn full_match(pattern: &str, value: &str) -> Option<bool> {
    Regex::new(&format!("^(?:{pattern})$"))
        .ok()
        .map(|r| r.is_match(value))
}

/// `a+b,c`: any comma clause whose `+` terms each name (or match) a tag.
fn tags_match(selector: &str, tags: &std::collections::BTreeSet<String>) -> bool {
    if tags.is_empty() {
        return false;
    }
    selector.split(',').any(|clause| {
        clause.split('+').all(|term| {
            let term = term.trim();
            !term.is_empty()
                && (tags.contains(term) || tags.iter().any(|t| regex_or_equals(term, t)))
        })
    })
}

fn attribute_of(node: &Node, key: &str) -> Option<String> {
    let canonical = match key {
        "os-name" => "osName",
        "os-family" => "osFamily",
        "os-arch" => "osArch",
        "os-version" => "osVersion",
        other => other,
    };
    node.attribute(canonical)
}

/// All of a side's clauses match (a blank side matches nothing).
fn side_matches(side: &BTreeMap<String, String>, node: &Node) -> bool {
    !side.is_empty()
        && side.iter().all(|(key, selector)| match key.as_str() {
            "tags" => tags_match(selector, &node.tags),
            _ => value_matches(selector, attribute_of(node, key).as_deref()),
        })
}

impl NodeFilter {
    pub fn is_blank(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Rundeck's `NodeSet.shouldExclude`, inverted.
    pub fn selects(&self, node: &Node, exclude_precedence: bool) -> bool {
        let inc = side_matches(&self.include, node);
        let exc = side_matches(&self.exclude, node);
        match (self.include.is_empty(), self.exclude.is_empty()) {
            (_, true) => inc,
            (true, false) => !exc,
            (false, false) if exclude_precedence => inc && !exc,
            (false, false) => inc || !exc,
        }
    }

    /// The selected nodes, in inventory order.
    pub fn select<'a>(&self, nodes: &'a [Node], exclude_precedence: bool) -> Vec<&'a Node> {
        nodes
            .iter()
            .filter(|n| self.selects(n, exclude_precedence))
            .collect()
    }
}

/// Dispatch order: by `attribute` (default the node name), numerically when
/// both values are integers, nodes without it last; ties by name. Descending
/// reverses all of it, as Rundeck does.
pub fn rank(nodes: &mut [&Node], attribute: Option<&str>, ascending: bool) {
    let attr = attribute.unwrap_or("nodename");
    nodes.sort_by(|a, b| {
        let (va, vb) = (a.attribute(attr), b.attribute(attr));
        let by_value = match (&va, &vb) {
            (Some(x), Some(y)) => match (x.parse::<i64>(), y.parse::<i64>()) {
                (Ok(i), Ok(j)) if i != j => i.cmp(&j),
                _ => x.cmp(y),
            },
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        let ord = by_value.then_with(|| a.nodename.cmp(&b.nodename));
        if ascending {
            ord
        } else {
            ord.reverse()
        }
    });
}

#[cfg(test)]
mod tests;
