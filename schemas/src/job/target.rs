//! Where steps run: Rundeck Enterprise's runner selector, tag sets and targets.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// Rundeck Enterprise's runner selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawRunnerSelector")]
pub struct RunnerSelector {
    /// Comma-separated tags; a runner must carry all of them.
    #[serde(default)]
    pub filter: String,
    #[serde(rename = "runnerFilterMode")]
    pub mode: RunnerFilterMode,
    #[serde(rename = "runnerFilterType")]
    pub filter_type: RunnerFilterType,
    /// The canonical tag set parsed from `filter` (sorted, deduplicated).
    #[serde(skip)]
    #[schemars(skip)]
    tags: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRunnerSelector {
    #[serde(default)]
    filter: String,
    #[serde(rename = "runnerFilterMode", default)]
    mode: Option<RunnerFilterMode>,
    #[serde(rename = "runnerFilterType", default)]
    filter_type: Option<RunnerFilterType>,
}

impl TryFrom<RawRunnerSelector> for RunnerSelector {
    type Error = String;
    fn try_from(raw: RawRunnerSelector) -> Result<Self, String> {
        let (mode, filter_type) = match (raw.mode, raw.filter_type) {
            (Some(RunnerFilterMode::Local), None | Some(RunnerFilterType::LocalRunner))
            | (None, Some(RunnerFilterType::LocalRunner)) => {
                (RunnerFilterMode::Local, RunnerFilterType::LocalRunner)
            }
            (Some(RunnerFilterMode::Tags) | None, Some(RunnerFilterType::TagFilterAnd) | None) => {
                (RunnerFilterMode::Tags, RunnerFilterType::TagFilterAnd)
            }
            (m, t) => {
                return Err(format!(
                    "runnerSelector: runnerFilterMode {m:?} does not go with runnerFilterType {t:?}; use TAGS with TAG_FILTER_AND, or LOCAL with LOCAL_RUNNER"
                ))
            }
        };
        let tags = if mode == RunnerFilterMode::Tags {
            let tags = parse_tag_list(&raw.filter).map_err(|e| format!("runnerSelector: {e}"))?;
            if tags.is_empty() {
                return Err("runnerSelector: mode TAGS needs at least one tag in `filter`".into());
            }
            tags
        } else {
            Vec::new()
        };
        Ok(RunnerSelector {
            filter: raw.filter,
            mode,
            filter_type,
            tags,
        })
    }
}

impl RunnerSelector {
    pub fn local() -> Self {
        RunnerSelector {
            filter: String::new(),
            mode: RunnerFilterMode::Local,
            filter_type: RunnerFilterType::LocalRunner,
            tags: Vec::new(),
        }
    }

    pub fn tags(tags: &[&str]) -> Result<Self, String> {
        RawRunnerSelector {
            filter: tags.join(","),
            mode: Some(RunnerFilterMode::Tags),
            filter_type: Some(RunnerFilterType::TagFilterAnd),
        }
        .try_into()
    }

    pub fn target(&self) -> Target {
        match self.mode {
            RunnerFilterMode::Local => Target::Local,
            RunnerFilterMode::Tags => Target::Tags(TagSet(self.tags.clone())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunnerFilterMode {
    Tags,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunnerFilterType {
    TagFilterAnd,
    LocalRunner,
}

/// Where a step is routed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "tags")]
pub enum Target {
    /// The control plane's embedded local runner.
    Local,
    /// Any runner that carries every tag.
    Tags(TagSet),
}

impl Target {
    /// The subject token and consumer suffix for this target; see
    /// [`crate::subjects`] for the partitioning scheme.
    pub fn token(&self) -> String {
        match self {
            Target::Local => crate::subjects::LOCAL_TOKEN.to_string(),
            Target::Tags(t) => t.token(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local => f.write_str("local runner"),
            Target::Tags(t) => match t.0.first().and_then(|x| x.strip_prefix(RUNNER_TAG_PREFIX)) {
                Some(id) if t.0.len() == 1 => write!(f, "runner {id}"),
                _ => write!(f, "runners tagged {}", t.0.join("+")),
            },
        }
    }
}

/// A canonical tag set: sorted, deduplicated, each tag `[A-Za-z0-9][A-Za-z0-9_-]*`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "Vec<String>")]
pub struct TagSet(Vec<String>);

/// On the wire a set may also hold a runner's implicit tag (`_r_<id>`),
/// which users cannot write.
impl TryFrom<Vec<String>> for TagSet {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for t in v {
            let name = t.strip_prefix(RUNNER_TAG_PREFIX).unwrap_or(&t);
            check_name("tag", name, |c| c == '_' || c == '-')?;
            out.insert(t);
        }
        Ok(TagSet(out.into_iter().collect()))
    }
}

impl TagSet {
    pub fn new<S: AsRef<str>>(tags: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for t in tags {
            let t = t.as_ref().trim();
            check_name("tag", t, |c| c == '_' || c == '-')?;
            out.insert(t.to_string());
        }
        Ok(TagSet(out.into_iter().collect()))
    }

    pub fn tags(&self) -> &[String] {
        &self.0
    }

    /// `a+b+c`: one subject token, one consumer per distinct set.
    pub fn token(&self) -> String {
        self.0.join("+")
    }

    /// A runner carrying `runner_tags` may take work for this set.
    pub fn satisfied_by(&self, runner_tags: &TagSet) -> bool {
        self.0
            .iter()
            .all(|t| runner_tags.0.binary_search(t).is_ok())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The set only runner `runner_id` satisfies: it carries this tag
    /// implicitly, and user tags cannot start with `_`.
    pub fn runner(runner_id: &str) -> TagSet {
        TagSet(vec![format!("{RUNNER_TAG_PREFIX}{runner_id}")])
    }

    /// These tags plus the runner's implicit one.
    pub fn with_runner(&self, runner_id: &str) -> TagSet {
        let mut t = self.0.clone();
        t.push(format!("{RUNNER_TAG_PREFIX}{runner_id}"));
        t.sort();
        t.dedup();
        TagSet(t)
    }
}

/// Prefix of the implicit tag each runner carries (`_r_<id>`).
pub const RUNNER_TAG_PREFIX: &str = "_r_";

/// Parses Rundeck's comma-separated tag filter (`"linux, prod"`).
pub fn parse_tag_list(filter: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    Ok(TagSet::new(parts)?.0)
}

/// Names that end up in subject tokens or KV keys: ASCII letters, digits and
/// a few separators, starting with a letter or digit.
pub fn check_name(what: &str, s: &str, extra: impl Fn(char) -> bool) -> Result<(), String> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s.chars().all(|c| c.is_ascii_alphanumeric() || extra(c));
    if !ok_first || !ok_rest || s.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} `{s}` is not valid: use letters, digits, `_` or `-` (starting with a letter or digit, at most {MAX_NAME_LEN} characters)"
        ));
    }
    Ok(())
}
