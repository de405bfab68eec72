//! Job reference steps (`jobref`): a step that runs another job as a child
//! execution, with Rundeck's keys and meanings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::compat::{flag, is_false, Flag, ScalarString};
use super::*;

/// How deep references may nest: a job that references a job that
/// references … stops here, so that a cycle through a job edited after its
/// import still ends.
pub const MAX_REFERENCE_DEPTH: usize = 10;

/// `jobref:` — which job to run, and with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawJobRef")]
pub struct JobRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Another project's job; absent means the referencing job's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The child's option values, as Rundeck's option string
    /// (`-env prod -msg "two words"`); may use the parent's `${option.*}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// Pass the parent's option values to the child's options of the same
    /// name (values in `args` win).
    #[serde(rename = "importOptions", default, skip_serializing_if = "is_false")]
    pub import_options: bool,
    /// Fail the step when the child has `executionEnabled: false`; without
    /// it the step is skipped as a success, as in Rundeck.
    #[serde(rename = "failOnDisable", default, skip_serializing_if = "is_false")]
    pub fail_on_disable: bool,
    /// Look the job up by `group`/`name` even when `uuid` is set.
    #[serde(rename = "useName", default, skip_serializing_if = "is_false")]
    pub use_name: bool,
    /// The child sends no notifications of its own.
    #[serde(
        rename = "ignoreNotifications",
        default,
        skip_serializing_if = "is_false"
    )]
    pub ignore_notifications: bool,
    /// Runs the child on these nodes instead of its own filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodefilters: Option<JobRefNodeFilters>,
    /// A node step: one child for each node of the parent, with that node's
    /// `${node.*}` in `args` and the filter, as Rundeck runs it.
    #[serde(rename = "nodeStep", default, skip_serializing_if = "is_false")]
    pub node_step: bool,
    /// Select the child's nodes from the child's own project; without it,
    /// from the parent's, as Rundeck does for a job in another project.
    #[serde(rename = "childNodes", default, skip_serializing_if = "is_false")]
    pub child_nodes: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawJobRef {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    args: Option<String>,
    #[serde(rename = "importOptions", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    import_options: bool,
    #[serde(rename = "failOnDisable", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    fail_on_disable: bool,
    #[serde(rename = "useName", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    use_name: bool,
    #[serde(rename = "ignoreNotifications", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    ignore_notifications: bool,
    #[serde(default)]
    nodefilters: Option<JobRefNodeFilters>,
    #[serde(rename = "nodeStep", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    node_step: bool,
    #[serde(rename = "childNodes", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    child_nodes: bool,
}

impl TryFrom<RawJobRef> for JobRef {
    type Error = String;
    fn try_from(raw: RawJobRef) -> Result<Self, String> {
        let uuid = raw
            .uuid
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| Uuid::parse_str(u).map_err(|e| format!("jobref `uuid` is not a UUID: {e}")))
            .transpose()?;
        let name = raw
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        let group = raw
            .group
            .map(|g| g.trim().trim_matches('/').to_string())
            .filter(|g| !g.is_empty());
        if uuid.is_none() && name.is_none() {
            return Err("a jobref names its job by `uuid`, or by `name` (and `group`)".into());
        }
        if raw.use_name && name.is_none() {
            return Err("jobref has `useName: true` but no `name`".into());
        }
        if let Some(args) = &raw.args {
            arg_string::parse(args).map_err(|e| format!("jobref `args`: {e}"))?;
        }
        let project = raw
            .project
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
        Ok(JobRef {
            uuid,
            name,
            group,
            project,
            args: raw.args.filter(|a| !a.trim().is_empty()),
            import_options: raw.import_options,
            fail_on_disable: raw.fail_on_disable,
            use_name: raw.use_name,
            ignore_notifications: raw.ignore_notifications,
            nodefilters: raw.nodefilters,
            node_step: raw.node_step,
            child_nodes: raw.child_nodes,
        })
    }
}

impl JobRef {
    /// `group/name` (or `name`), when the reference names its job; a
    /// by-name lookup always has one.
    pub fn full_name(&self) -> Option<String> {
        let name = self.name.as_deref()?;
        Some(match &self.group {
            Some(g) => format!("{g}/{name}"),
            None => name.to_string(),
        })
    }

    /// `group/name` when named, else the uuid: how errors name the job.
    pub fn label(&self) -> String {
        self.full_name()
            .or_else(|| self.uuid.map(|u| u.to_string()))
            .unwrap_or_default()
    }

    /// Looks the reference up by uuid unless `useName` (or no uuid) says
    /// by name, as Rundeck does.
    pub fn by_name(&self) -> bool {
        self.use_name || self.uuid.is_none()
    }

    /// The filter that replaces the child's own, if the reference sets one.
    pub fn filter_override(&self) -> Option<&JobRefNodeFilters> {
        self.nodefilters.as_ref().filter(|n| !n.filter.is_empty())
    }

    /// Rundeck's `nodeIntersect`: the child runs only on those of its nodes
    /// that the parent (for a node step, the parent's current node) has.
    pub fn node_intersect(&self) -> bool {
        self.nodefilters
            .as_ref()
            .and_then(|n| n.dispatch.as_ref())
            .is_some_and(|d| d.node_intersect)
    }
}

/// `jobref.nodefilters`: the child's nodes, overriding its own filter. The
/// filter is empty only when the dispatch asks for `nodeIntersect` alone,
/// which Rundeck reads without a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawJobRefNodeFilters")]
pub struct JobRefNodeFilters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<JobRefDispatch>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawJobRefNodeFilters {
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    dispatch: Option<JobRefDispatch>,
}

impl TryFrom<RawJobRefNodeFilters> for JobRefNodeFilters {
    type Error = String;
    fn try_from(raw: RawJobRefNodeFilters) -> Result<Self, String> {
        let filter = raw.filter.unwrap_or_default().trim().to_string();
        if filter.is_empty() {
            return match raw.dispatch {
                Some(d) if d.node_intersect && d.is_empty() => Ok(JobRefNodeFilters {
                    filter,
                    dispatch: Some(d),
                }),
                // Rundeck ignores these without a filter; saying so is
                // better than dropping them.
                Some(d) if d.node_intersect => Err(
                    "jobref `nodefilters.dispatch` overrides the child's dispatch, but there is no `filter` to dispatch to (only `nodeIntersect` works alone)".into(),
                ),
                _ => Err("jobref `nodefilters` has no `filter`".into()),
            };
        }
        if !filter.contains("${") {
            crate::node_filter::parse(&filter)
                .map_err(|e| format!("jobref `nodefilters.filter`: {e}"))?;
        }
        Ok(JobRefNodeFilters {
            filter,
            // An empty dispatch overrides nothing; as none, it reads back
            // the same from XML, which cannot tell it from no element.
            dispatch: raw.dispatch.filter(|d| !d.is_empty() || d.node_intersect),
        })
    }
}

/// `jobref.nodefilters.dispatch`: overrides of the child's own dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRefDispatch {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_count"
    )]
    #[schemars(with = "Option<u32>")]
    pub threadcount: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_flag"
    )]
    #[schemars(with = "Option<Flag>")]
    pub keepgoing: Option<bool>,
    #[serde(
        rename = "rankAttribute",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rank_attribute: Option<String>,
    #[serde(rename = "rankOrder", default, skip_serializing_if = "Option::is_none")]
    pub rank_order: Option<RankOrder>,
    /// Rundeck's "intersect with the parent's nodes".
    #[serde(
        rename = "nodeIntersect",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "flag"
    )]
    #[schemars(with = "Flag")]
    pub node_intersect: bool,
}

impl JobRefDispatch {
    /// Whether it overrides none of the child's own dispatch values.
    pub fn is_empty(&self) -> bool {
        self.threadcount.is_none()
            && self.keepgoing.is_none()
            && self.rank_attribute.is_none()
            && self.rank_order.is_none()
    }
}

/// A count, also written as text (`"2"`), as Rundeck's XML has it.
fn optional_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    match Option::<ScalarString>::deserialize(d)? {
        None => Ok(None),
        Some(ScalarString::I(i)) => u32::try_from(i)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("threadcount {i} is out of range"))),
        Some(ScalarString::S(s)) if s.trim().is_empty() => Ok(None),
        Some(ScalarString::S(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("threadcount `{s}` is not a number"))),
        Some(other) => Err(D::Error::custom(format!(
            "threadcount {:?} is not a number",
            String::from(other)
        ))),
    }
}

fn optional_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Flag>::deserialize(d)?.map(|f| f.0))
}

/// Names the cycle a new set of jobs would make, if any. `edges` maps each
/// job (by id, with its label) to the jobs its steps reference; references
/// that resolve to nothing are no edge (Rundeck resolves them at run time).
pub fn find_cycle(edges: &BTreeMap<Uuid, (String, Vec<Uuid>)>) -> Option<Vec<String>> {
    fn visit(
        at: Uuid,
        edges: &BTreeMap<Uuid, (String, Vec<Uuid>)>,
        path: &mut Vec<Uuid>,
        done: &mut BTreeSet<Uuid>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| *p == at) {
            let mut names: Vec<String> = path[start..]
                .iter()
                .map(|id| edges.get(id).map(|e| e.0.clone()).unwrap_or_default())
                .collect();
            names.push(names[0].clone());
            return Some(names);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for next in edges.get(&at).map(|e| e.1.as_slice()).unwrap_or_default() {
            if let Some(cycle) = visit(*next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if let Some(cycle) = visit(*start, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}
