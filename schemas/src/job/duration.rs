//! Rundeck's job `timeout` text: `120` (seconds), `6h 30m`, `1d`, with the
//! units of its `Sizes.parseTimeDuration` (s, m, h, d, w, y).
//!
//! Rundeck's own parser skips what it cannot read (`1.5h` is 5 h, `120 ` is
//! no timeout at all); this one refuses it, naming what is wrong, since a
//! timeout that silently means something else is worse than an error. Every
//! text Rundeck itself writes reads the same here.

use std::time::Duration;

/// Seconds per unit, as in Rundeck (a year is 365 days).
fn unit_seconds(unit: char) -> Option<u64> {
    Some(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    })
}

/// Reads a timeout; none for an empty text or zero (no timeout, as in
/// Rundeck).
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!(
                "timeout `{text}`: expected a number at `{rest}`; write it as `120` (seconds) or `6h 30m` (units s, m, h, d, w, y)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("timeout `{text}` is too large"))?;
        rest = &rest[digits..];
        let seconds = match rest.chars().next() {
            None => 1,
            Some(c) if c.is_whitespace() => {
                if rest.trim_start().is_empty() {
                    1
                } else {
                    return Err(format!(
                        "timeout `{text}`: {n} has no unit; only the last number may go without one (seconds)"
                    ));
                }
            }
            Some(c) => {
                let per = unit_seconds(c).ok_or_else(|| {
                    format!("timeout `{text}`: `{c}` is not a unit; use s, m, h, d, w or y (lower case, as Rundeck reads them)")
                })?;
                rest = &rest[c.len_utf8()..];
                per
            }
        };
        total = n
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("timeout `{text}` is too large"))?;
        rest = rest.trim_start();
    }
    Ok((total > 0).then(|| Duration::from_secs(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_rundeck_writes_them_and_junk_is_refused() {
        let table: Vec<(&str, Result<Option<u64>, &str>)> = vec![
            ("120", Ok(Some(120))),
            ("6h 30m", Ok(Some(23_400))),
            ("6h30m", Ok(Some(23_400))),
            ("1d", Ok(Some(86_400))),
            ("2w", Ok(Some(14 * 86_400))),
            ("1y", Ok(Some(365 * 86_400))),
            ("1m 5", Ok(Some(65))),
            (" 90s ", Ok(Some(90))),
            ("", Ok(None)),
            ("0", Ok(None)),
            ("1.5h", Err("`.` is not a unit")),
            ("1H", Err("`H` is not a unit")),
            ("5 1m", Err("5 has no unit")),
            ("soon", Err("expected a number at `soon`")),
            ("99999999999999999999", Err("too large")),
            ("999999999999y", Err("too large")),
        ];
        for (text, want) in table {
            let got = parse_timeout(text).map(|d| d.map(|d| d.as_secs()));
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{text}: {g}"),
                _ => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
