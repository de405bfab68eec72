//! Rundeck's option string (`argString`, a job reference's `args`):
//! `-name value -other 'two words'`.
//!
//! Split as Rundeck's `QuotedStringTokenizer` splits it: on white space;
//! a token that starts with `'` or `"` is quoted up to the same quote, a
//! doubled quote inside is one literal quote, and there is no backslash
//! escape. Then `-name` takes the next token as its value, verbatim.

/// The tokens of `s`.
pub fn tokens(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let blank = |c: char| c <= ' ';
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && blank(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            return out;
        }
        // Only the quote a token starts with quotes; others are text.
        let quote = Some(chars[i]).filter(|c| *c == '\'' || *c == '"');
        let mut quoting = quote.is_some();
        if quoting {
            i += 1;
        }
        let mut token = String::new();
        while i < chars.len() {
            let c = chars[i];
            if Some(c) == quote {
                if quoting && chars.get(i + 1) == Some(&c) {
                    token.push(c);
                    i += 2;
                    continue;
                }
                quoting = !quoting;
                i += 1;
                continue;
            }
            if !quoting && blank(c) {
                break;
            }
            token.push(c);
            i += 1;
        }
        out.push(token);
    }
}

/// The `(name, value)` pairs of an option string, in order. Rundeck skips
/// a token that is neither `-name` nor a value; Outpost refuses it, since
/// it is almost always a missing `-` or an unquoted space.
pub fn parse(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut tokens = tokens(s).into_iter();
    while let Some(token) = tokens.next() {
        let Some(name) = token.strip_prefix('-').filter(|n| !n.is_empty()) else {
            return Err(format!(
                "`{token}` is not an option name: write `-name value`, and quote a value with spaces"
            ));
        };
        let Some(value) = tokens.next() else {
            return Err(format!("option `-{name}` has no value"));
        };
        pairs.push((name.to_string(), value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_as_rundecks_tokenizer_does() {
        let cases: &[(&str, &[&str])] = &[
            ("-a 1 -b 2", &["-a", "1", "-b", "2"]),
            ("  -a\t1\n", &["-a", "1"]),
            ("-a 'two words'", &["-a", "two words"]),
            ("-a \"two words\"", &["-a", "two words"]),
            ("-a 'it''s'", &["-a", "it's"]),
            ("-a \"say \"\"hi\"\"\"", &["-a", "say \"hi\""]),
            // A quote inside a token that did not start with one is text.
            ("-a it's", &["-a", "it's"]),
            // Quoting resumes at the token's own quote; the other is text.
            ("'a b'c' d' \"x'y\"", &["a bc d", "x'y"]),
            ("-a ''", &["-a", ""]),
            // No backslash escape.
            ("-a 'c:\\dir'", &["-a", "c:\\dir"]),
            // An unterminated quote runs to the end.
            ("-a 'open end", &["-a", "open end"]),
            ("", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(tokens(input), *want, "{input:?}");
        }
    }

    #[test]
    fn pairs_take_the_next_token_verbatim_and_refuse_strays() {
        assert_eq!(
            parse("-env prod -count -1 -msg 'a b'").unwrap(),
            [
                ("env".to_string(), "prod".to_string()),
                ("count".into(), "-1".into()),
                ("msg".into(), "a b".into())
            ]
        );
        assert_eq!(parse("").unwrap(), []);
        assert!(parse("env prod")
            .unwrap_err()
            .contains("`env` is not an option name"));
        assert!(parse("-env").unwrap_err().contains("`-env` has no value"));
        assert!(parse("- x")
            .unwrap_err()
            .contains("`-` is not an option name"));
    }
}
