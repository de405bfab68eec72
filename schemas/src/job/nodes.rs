//! Rundeck's `nodefilters`: which nodes a node job runs on, and how.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compat::{flag, Flag, ScalarString};
use super::*;

/// Rundeck's `nodefilters`: which nodes, and how to dispatch to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawNodeFilters")]
pub struct NodeFilters {
    /// Rundeck node filter (`tags: web+prod !name: web2`); may use `${option.*}`.
    pub filter: String,
    #[serde(default)]
    pub dispatch: NodeDispatch,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawNodeFilters {
    filter: String,
    #[serde(default)]
    dispatch: NodeDispatch,
}

impl TryFrom<RawNodeFilters> for NodeFilters {
    type Error = String;
    fn try_from(raw: RawNodeFilters) -> Result<Self, String> {
        // A filter with option references is checked once substituted.
        if !raw.filter.contains("${") {
            let parsed = crate::node_filter::parse(&raw.filter)
                .map_err(|e| format!("nodefilters.filter: {e}"))?;
            if parsed.is_blank() {
                return Err("nodefilters.filter is empty; use `.*` for every node".into());
            }
        }
        Ok(NodeFilters {
            filter: raw.filter,
            dispatch: raw.dispatch,
        })
    }
}

/// `nodefilters.dispatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDispatch {
    /// Nodes run at once.
    #[serde(default = "one", deserialize_with = "count")]
    pub threadcount: u32,
    /// Go on to other nodes after a node fails.
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    pub keepgoing: bool,
    /// Dispatch order attribute (default: the node name).
    #[serde(
        rename = "rankAttribute",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rank_attribute: Option<String>,
    #[serde(rename = "rankOrder", default)]
    pub rank_order: RankOrder,
    /// Exclusions win over inclusions (Rundeck's default).
    #[serde(
        rename = "excludePrecedence",
        default = "yes",
        deserialize_with = "flag"
    )]
    #[schemars(with = "Flag")]
    pub exclude_precedence: bool,
    /// Succeed, running nothing, when no node matches; otherwise fail.
    #[serde(
        rename = "successOnEmptyNodeFilter",
        default,
        deserialize_with = "flag"
    )]
    #[schemars(with = "Flag")]
    pub success_on_empty_node_filter: bool,
}

impl Default for NodeDispatch {
    fn default() -> Self {
        NodeDispatch {
            threadcount: 1,
            keepgoing: false,
            rank_attribute: None,
            rank_order: RankOrder::Ascending,
            exclude_precedence: true,
            success_on_empty_node_filter: false,
        }
    }
}

fn one() -> u32 {
    1
}

/// Rundeck exports `threadcount` as a number or as a string.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n: u32 = match ScalarString::deserialize(d)? {
        ScalarString::I(i) => u32::try_from(i)
            .map_err(|_| serde::de::Error::custom("threadcount must be at least 1"))?,
        ScalarString::S(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("threadcount `{s}` is not a whole number"))
        })?,
        _ => {
            return Err(serde::de::Error::custom(
                "threadcount must be a whole number",
            ))
        }
    };
    if n == 0 {
        return Err(serde::de::Error::custom("threadcount must be at least 1"));
    }
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RankOrder {
    #[default]
    Ascending,
    Descending,
}
