//! Rundeck's log limit: `loglimit` (`1000` lines, `1000/node` lines per
//! node, `100MB`), `loglimitAction` (`halt` or `truncate`) and
//! `loglimitStatus` (how a halted execution ends). The runner enforces it
//! on the output it reads, so an endless log never crosses the network.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogMeasure {
    /// Output lines of the whole execution.
    Lines,
    /// Output lines of each node (a step without nodes counts as one).
    LinesPerNode,
    /// Output bytes of the whole execution.
    Bytes,
}

/// What happens once the limit is passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// Stop the execution (Rundeck's default).
    #[default]
    Halt,
    /// Keep running, and drop the rest of the output.
    Truncate,
}

/// How an execution halted by its log limit ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HaltStatus {
    #[default]
    Failed,
    Aborted,
    Succeeded,
}

impl HaltStatus {
    /// How the halted step itself ends.
    pub fn step_outcome(self) -> crate::StepOutcome {
        match self {
            HaltStatus::Failed => crate::StepOutcome::Failed,
            HaltStatus::Aborted => crate::StepOutcome::Aborted,
            HaltStatus::Succeeded => crate::StepOutcome::Succeeded,
        }
    }

    /// How the execution it halts ends.
    pub fn execution_outcome(self) -> crate::ExecutionOutcome {
        match self {
            HaltStatus::Failed => crate::ExecutionOutcome::Failed,
            HaltStatus::Aborted => crate::ExecutionOutcome::Aborted,
            HaltStatus::Succeeded => crate::ExecutionOutcome::Succeeded,
        }
    }
}

/// A job's log limit as the runner applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogLimit {
    pub measure: LogMeasure,
    pub max: u64,
    pub action: LimitAction,
    pub status: HaltStatus,
}

impl LogLimit {
    /// Rundeck's words for the limit, as its `ThresholdLogWriter` logs them.
    pub fn description(&self) -> String {
        let what = match self.measure {
            LogMeasure::Lines => "Maximum Line count",
            LogMeasure::LinesPerNode => "Maximum node line count",
            LogMeasure::Bytes => "Maximum size in Bytes",
        };
        let action = match self.action {
            LimitAction::Halt => "halt",
            LimitAction::Truncate => "truncate",
        };
        format!("{what}: {}, action: {action}", self.max)
    }

    /// The log line written once, when the limit is passed.
    pub fn exceeded_message(&self) -> String {
        format!("Log output limit exceeded: {}", self.description())
    }
}

/// How much output an execution has written so far, carried from step to
/// step (steps may run on different runners).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogUsage {
    pub lines: u64,
    pub bytes: u64,
    /// Lines per node name; `""` for a step that runs on no node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_lines: BTreeMap<String, u64>,
    /// The limit was passed: with `truncate`, all later output is dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exceeded: bool,
}

/// What the limit says about one more line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// This line passes the limit: write the limit's message instead, then
    /// halt or drop the rest.
    Exceeded,
    /// Past the limit already (truncate): drop the line.
    Drop,
}

impl LogUsage {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Counts a line of `bytes` bytes on `node`, as Rundeck does: the
    /// limit is passed when a count goes over `max` (strictly greater).
    pub fn count(&mut self, limit: &LogLimit, node: &str, bytes: u64) -> Verdict {
        if self.exceeded {
            return Verdict::Drop;
        }
        self.lines += 1;
        self.bytes += bytes;
        let per_node = self.node_lines.entry(node.to_string()).or_default();
        *per_node += 1;
        let value = match limit.measure {
            LogMeasure::Lines => self.lines,
            LogMeasure::LinesPerNode => *per_node,
            LogMeasure::Bytes => self.bytes,
        };
        if value > limit.max {
            self.exceeded = true;
            Verdict::Exceeded
        } else {
            Verdict::Keep
        }
    }
}

/// Reads `loglimit` as Rundeck's `parseLogOutputThreshold` does
/// (`(\d+)((?i)[gmk]?b?)?(/node)?`, sizes in 1024s), but refuses what
/// Rundeck would quietly take as no limit.
pub fn parse_log_limit(text: &str) -> Result<(LogMeasure, u64), String> {
    let t = text.trim();
    let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err(format!(
            "loglimit `{text}`: expected a number of lines (`1000`), lines per node (`1000/node`) or a size (`100MB`)"
        ));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("loglimit `{text}` is too large"))?;
    let rest = &t[digits..];
    let (unit, per_node) = match rest.strip_suffix("/node") {
        Some(u) => (u, true),
        None => (rest, false),
    };
    let multiplier: Option<u64> = match unit.to_ascii_lowercase().as_str() {
        "" => None,
        "b" => Some(1),
        "k" | "kb" => Some(1 << 10),
        "m" | "mb" => Some(1 << 20),
        "g" | "gb" => Some(1 << 30),
        _ => {
            return Err(format!(
                "loglimit `{text}`: `{unit}` is not a size unit; use B, KB, MB or GB"
            ))
        }
    };
    match (multiplier, per_node) {
        (None, false) => Ok((LogMeasure::Lines, n)),
        (None, true) => Ok((LogMeasure::LinesPerNode, n)),
        (Some(m), false) => n
            .checked_mul(m)
            .map(|b| (LogMeasure::Bytes, b))
            .ok_or_else(|| format!("loglimit `{text}` is too large")),
        (Some(_), true) => Err(format!(
            "loglimit `{text}`: a size limits the whole execution; `/node` goes with a line count only (Rundeck would ignore it here)"
        )),
    }
}

/// Reads `loglimitStatus`.
pub fn parse_halt_status(text: &str) -> Result<HaltStatus, String> {
    match text.trim() {
        "" | "failed" => Ok(HaltStatus::Failed),
        "aborted" => Ok(HaltStatus::Aborted),
        "succeeded" => Ok(HaltStatus::Succeeded),
        other => Err(format!(
            "{}: loglimitStatus `{other}` (a custom status; `failed`, `aborted` and `succeeded` are built)",
            super::NOT_SUPPORTED_YET
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static str, Result<(LogMeasure, u64), &'static str>);

    #[test]
    fn limits_read_as_rundeck_reads_them_and_junk_is_refused() {
        let table: Vec<Case> = vec![
            ("1000", Ok((LogMeasure::Lines, 1000))),
            ("5000/node", Ok((LogMeasure::LinesPerNode, 5000))),
            ("100MB", Ok((LogMeasure::Bytes, 100 << 20))),
            ("100mb", Ok((LogMeasure::Bytes, 100 << 20))),
            ("2K", Ok((LogMeasure::Bytes, 2048))),
            ("1GB", Ok((LogMeasure::Bytes, 1 << 30))),
            ("512B", Ok((LogMeasure::Bytes, 512))),
            ("0", Ok((LogMeasure::Lines, 0))),
            ("10 lines", Err("is not a size unit")),
            ("lots", Err("expected a number")),
            ("10MB/node", Err("`/node` goes with a line count only")),
            ("99999999999GB", Err("too large")),
        ];
        for (text, want) in table {
            let got = parse_log_limit(text);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{text}: {g}"),
                _ => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_limit_is_passed_by_the_line_that_goes_over_it() {
        let limit = LogLimit {
            measure: LogMeasure::Lines,
            max: 2,
            action: LimitAction::Truncate,
            status: HaltStatus::Failed,
        };
        let mut used = LogUsage::default();
        let verdicts: Vec<Verdict> = (0..4).map(|_| used.count(&limit, "", 10)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Keep,
                Verdict::Keep,
                Verdict::Exceeded,
                Verdict::Drop
            ]
        );
        assert_eq!(
            limit.exceeded_message(),
            "Log output limit exceeded: Maximum Line count: 2, action: truncate"
        );

        let per_node = LogLimit {
            measure: LogMeasure::LinesPerNode,
            max: 1,
            ..limit
        };
        let mut used = LogUsage::default();
        assert_eq!(used.count(&per_node, "a", 1), Verdict::Keep);
        assert_eq!(used.count(&per_node, "b", 1), Verdict::Keep);
        assert_eq!(used.count(&per_node, "a", 1), Verdict::Exceeded);

        let bytes = LogLimit {
            measure: LogMeasure::Bytes,
            max: 10,
            ..limit
        };
        let mut used = LogUsage::default();
        assert_eq!(used.count(&bytes, "", 10), Verdict::Keep);
        assert_eq!(used.count(&bytes, "", 1), Verdict::Exceeded);
    }
}
