//! The filters that rewrite a line in place: `mask-log-output-regex`,
//! `quiet-output` and `highlight-output`.

use outpost_schemas::job::{EntryLevel, FilterKind, ANSI_RESET};
use outpost_schemas::LogEntry;

pub enum Rewrite {
    Mask {
        re: regex::Regex,
        replacement: String,
        only_value: bool,
    },
    Quiet {
        re: Option<regex::Regex>,
        match_level: Option<EntryLevel>,
        quiet_match: bool,
        level: EntryLevel,
    },
    Highlight {
        re: regex::Regex,
        mark: String,
    },
}

impl Rewrite {
    pub fn new(kind: FilterKind) -> Option<Self> {
        Some(match kind {
            FilterKind::MaskRegex {
                regex,
                replacement,
                mask_only_value,
            } => Rewrite::Mask {
                re: regex::Regex::new(&regex).ok()?,
                replacement,
                only_value: mask_only_value,
            },
            FilterKind::Quiet {
                regex,
                match_level,
                quiet_match,
                level,
            } => Rewrite::Quiet {
                re: match regex {
                    Some(r) => Some(regex::Regex::new(&r).ok()?),
                    None => None,
                },
                match_level,
                quiet_match,
                level,
            },
            FilterKind::Highlight { regex, mark } => Rewrite::Highlight {
                re: regex::Regex::new(&regex).ok()?,
                mark,
            },
            _ => return None,
        })
    }

    pub fn apply(&self, e: &mut LogEntry) {
        match self {
            // Any level, as Rundeck masks stderr too.
            Rewrite::Mask {
                re,
                replacement,
                only_value,
            } => {
                if e.log.is_empty() {
                    return;
                }
                let masked = re.replace_all(&e.log, |c: &regex::Captures| {
                    let text = java_replacement(replacement, re, c);
                    if *only_value {
                        format!("{}{text}", c.get(1).map_or("", |m| m.as_str()))
                    } else {
                        text
                    }
                });
                if let std::borrow::Cow::Owned(masked) = masked {
                    e.log = masked;
                }
            }
            Rewrite::Quiet {
                re,
                match_level,
                quiet_match,
                level,
            } => {
                if match_level.is_some_and(|l| l != EntryLevel::of_entry(&e.level)) {
                    return;
                }
                let matches = re.as_ref().is_none_or(|re| re.is_match(&e.log));
                if matches == *quiet_match {
                    e.level = level.as_str().to_string();
                }
            }
            Rewrite::Highlight { re, mark } => {
                if e.log.is_empty() || EntryLevel::of_entry(&e.level) != EntryLevel::Normal {
                    return;
                }
                if let Some(marked) = highlighted(re, mark, &e.log) {
                    e.log = marked;
                }
            }
        }
    }
}

/// A replacement as Java's `String.replaceAll` reads it, which Rundeck's
/// filter uses: `$n` (the longest group number that exists) and `${name}`
/// are groups, `\x` is `x`; a `$` that names no group stays.
fn java_replacement(replacement: &str, re: &regex::Regex, c: &regex::Captures) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut chars = replacement.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => out.extend(chars.next().map(|(_, x)| x)),
            '$' => {
                let rest = &replacement[i + 1..];
                if let Some(name) = rest
                    .strip_prefix('{')
                    .and_then(|r| r.split_once('}'))
                    .map(|(n, _)| n)
                {
                    // A group of that name that took no part in the match
                    // is empty, as in Java.
                    if re.capture_names().flatten().any(|n| n == name) {
                        out.push_str(c.name(name).map_or("", |m| m.as_str()));
                        for _ in 0..name.chars().count() + 2 {
                            chars.next();
                        }
                        continue;
                    }
                }
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                let group = (1..=digits)
                    .rev()
                    .find(|&n| rest[..n].parse::<usize>().is_ok_and(|g| g < c.len()));
                match group {
                    Some(n) => {
                        let g: usize = rest[..n].parse().expect("digits");
                        out.push_str(c.get(g).map_or("", |m| m.as_str()));
                        for _ in 0..n {
                            chars.next();
                        }
                    }
                    None => out.push('$'),
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `text` with each match (or each of its groups, when the pattern has
/// any) between `mark` and the reset; none when nothing matched.
fn highlighted(re: &regex::Regex, mark: &str, text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut start = 0;
    let mut found = false;
    for c in re.captures_iter(text) {
        found = true;
        let parts: Vec<regex::Match> = if c.len() > 1 {
            c.iter().skip(1).flatten().collect()
        } else {
            c.get(0).into_iter().collect()
        };
        for m in parts {
            if m.start() < start {
                continue;
            }
            out.push_str(&text[start..m.start()]);
            out.push_str(mark);
            out.push_str(m.as_str());
            out.push_str(ANSI_RESET);
            start = m.end();
        }
    }
    found.then(|| {
        out.push_str(&text[start..]);
        out
    })
}
