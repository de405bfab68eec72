//! Masks secure option values in step output before it leaves the runner.
//!
//! Masking works on the raw byte stream, before it is cut into lines and
//! chunks, so a value split across two reads, two 16 KiB line pieces or
//! several lines is still caught. The price: when the stream so far ends
//! with the beginning of a value, those bytes wait for the next read (or the
//! end of the stream) before they are emitted.

use std::sync::Arc;

/// What a value becomes, unless a `mask-passwords` log filter says
/// otherwise (Rundeck's default replacement too).
pub const MASK: &[u8] = b"[SECURE]";

/// The values to mask, and what each becomes; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    values: Vec<Vec<u8>>,
    /// None: [`MASK`].
    mask: Option<Vec<u8>>,
}

impl Secrets {
    pub fn new<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Self {
        let mut v: Vec<Vec<u8>> = values
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so that a value containing another is masked whole.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        Secrets(Arc::new(Inner {
            values: v,
            mask: None,
        }))
    }

    /// These values and `value` (a credential the runner read itself).
    pub fn with(&self, value: &str) -> Self {
        let mut values: Vec<String> = self
            .0
            .values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        values.push(value.to_string());
        let mut s = Secrets::new(values);
        if let Some(mask) = &self.0.mask {
            s = s.masked_as(&String::from_utf8_lossy(mask));
        }
        s
    }

    /// The same values, replaced by `mask` (a `mask-passwords` filter's
    /// replacement, which may be coloured).
    pub fn masked_as(self, mask: &str) -> Self {
        Secrets(Arc::new(Inner {
            values: self.0.values.clone(),
            mask: Some(mask.as_bytes().to_vec()),
        }))
    }

    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }

    fn values(&self) -> &[Vec<u8>] {
        &self.0.values
    }

    fn mask(&self) -> &[u8] {
        self.0.mask.as_deref().unwrap_or(MASK)
    }

    /// Masks a complete text (a line the runner writes itself).
    pub fn mask_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let mut m = Masker::new(self.clone());
        let mut out = m.push(text.as_bytes());
        out.extend(m.finish());
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A streaming masker for one output stream.
pub struct Masker {
    secrets: Secrets,
    held: Vec<u8>,
}

impl Masker {
    pub fn new(secrets: Secrets) -> Self {
        Masker {
            secrets,
            held: Vec::new(),
        }
    }

    /// Feeds `input`; returns what can be emitted now.
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return input.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(input);
        self.scan(buf, false)
    }

    /// The end of the stream: emits everything still held.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.held);
        self.scan(buf, true)
    }

    fn scan(&mut self, buf: Vec<u8>, last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'outer: while i < buf.len() {
            let rest = &buf[i..];
            // The rest may be the start of a value that the next read ends,
            // possibly a longer one than a value it already matches: wait.
            if !last
                && self
                    .secrets
                    .values()
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                self.held = rest.to_vec();
                return out;
            }
            for s in self.secrets.values() {
                if rest.starts_with(s) {
                    out.extend_from_slice(self.secrets.mask());
                    i += s.len();
                    continue 'outer;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_added_later_is_masked_with_the_same_replacement() {
        let s = Secrets::new(["alpha"]).masked_as("[X]").with("beta");
        assert_eq!(s.mask_str("alpha beta gamma"), "[X] [X] gamma");
        assert_eq!(
            Secrets::default().with("pw").mask_str("a pw"),
            format!("a {}", String::from_utf8_lossy(MASK))
        );
    }

    fn run(secrets: &[&str], pieces: &[&str]) -> String {
        let mut m = Masker::new(Secrets::new(secrets.iter().copied()));
        let mut out = Vec::new();
        for p in pieces {
            out.extend(m.push(p.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_values_and_values_split_across_reads() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            (&["hunter2"], &["pw=hunter2\n"], "pw=[SECURE]\n"),
            (&["hunter2"], &["pw=hun", "ter2 ok\n"], "pw=[SECURE] ok\n"),
            (
                &["hunter2"],
                &["h", "u", "n", "t", "e", "r", "2"],
                "[SECURE]",
            ),
            // A prefix that never completes is emitted as it was.
            (&["hunter2"], &["pw=hunt", "er3\n"], "pw=hunter3\n"),
            (&["hunter2"], &["ends with hunt"], "ends with hunt"),
            // Longest value first; overlapping values both masked.
            (&["abc", "abcdef"], &["xabcdefx abc"], "x[SECURE]x [SECURE]"),
            (&["a\nb"], &["a", "\nb\n"], "[SECURE]\n"),
            // A read ends after a shorter value that a longer one extends.
            (&["abc", "abcdef"], &["xabc", "def"], "x[SECURE]"),
            (&["abc", "abcdef"], &["xabc", "dx"], "x[SECURE]dx"),
            (&[], &["nothing to mask"], "nothing to mask"),
        ];
        for (secrets, pieces, want) in cases {
            assert_eq!(run(secrets, pieces), *want, "{secrets:?} {pieces:?}");
        }
    }

    #[test]
    fn emits_at_once_when_no_value_can_start() {
        let mut m = Masker::new(Secrets::new(["hunter2"]));
        assert_eq!(m.push(b"hello "), b"hello ".to_vec());
        assert_eq!(m.push(b"hu"), Vec::<u8>::new());
        assert_eq!(m.push(b"g\n"), b"hug\n".to_vec());
    }

    #[test]
    fn a_mask_passwords_filter_chooses_what_values_become() {
        let secrets = Secrets::new(["hunter2"]).masked_as("\u{1b}[31m***\u{1b}[0m");
        assert_eq!(
            secrets.mask_str("pw='hunter2'"),
            "pw='\u{1b}[31m***\u{1b}[0m'"
        );
    }
}
