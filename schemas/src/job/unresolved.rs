//! What an `exec` command does with a reference nothing resolved.
//!
//! Rundeck 5's command step blanks every `${…}` it cannot resolve
//! (`CommandNodeStepPlugin`, research: docs/research/rundeck-data-context.md
//! §4), including the shell's own `${HOME}`, which rundeck/rundeck#8773
//! confirms as a bug. Outpost blanks what reads as one of Rundeck's
//! references, `${group.key}` (with its `N:` step, `@node` and `*` forms),
//! and keeps the shell's: `${HOME}`, `${FILE:-a.txt}`.

/// `text` with its unresolved Rundeck references blank.
pub fn blank_unresolved(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) if is_reference(&after[..end]) => rest = &after[end + 1..],
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Rundeck's reference: `[N:]group.key[@node|*delim]`, the group a word.
fn is_reference(inner: &str) -> bool {
    if inner.is_empty() || inner.chars().any(char::is_whitespace) {
        return false;
    }
    let inner = match inner.split_once(':') {
        Some((step, rest)) if !step.is_empty() && step.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => inner,
    };
    let Some((group, key)) = inner.split_once('.') else {
        return false;
    };
    let word = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let key = key.split(['@', '*']).next().unwrap_or_default();
    word(group) && !key.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rundecks_references_are_blank_and_the_shells_stay() {
        let cases = [
            ("echo ${data.missing}!", "echo !"),
            (
                "echo [${2:data.k}] [${data.k@web1}] [${data.k*}] [${data.k*;}]",
                "echo [] [] [] []",
            ),
            (
                "echo ${job.nope} ${node.os-family} ${export.x_y}",
                "echo   ",
            ),
            (
                "echo ${HOME} ${PATH:-/bin} ${FILE:-a.txt} ${#ARR[@]}",
                "echo ${HOME} ${PATH:-/bin} ${FILE:-a.txt} ${#ARR[@]}",
            ),
            (
                "echo ${ data.x } ${.x} ${1x.y} ${} ${unclosed.x",
                "echo ${ data.x } ${.x} ${1x.y} ${} ${unclosed.x",
            ),
            ("awk '{print $1}' ${a.b}c", "awk '{print $1}' c"),
        ];
        for (text, want) in cases {
            assert_eq!(blank_unresolved(text), want, "{text}");
        }
    }
}
