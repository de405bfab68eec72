use super::*;

fn filter(t: &str, config: &[(&str, &str)]) -> LogFilter {
    let config: serde_json::Map<String, serde_json::Value> = config
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::from_value(serde_json::json!({"type": t, "config": config}))
        .unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn line(text: &str) -> LogEntry {
    entry(LogStream::Stdout, "NORMAL", text)
}

fn entry(stream: LogStream, level: &str, text: &str) -> LogEntry {
    LogEntry::now(stream, level, text)
}

/// Runs `lines` through `filters` at `loglevel`; each line out as
/// `LEVEL text {meta}`, with ESC shown as `^`.
fn run(filters: &[LogFilter], loglevel: LogLevel, lines: Vec<LogEntry>) -> Vec<String> {
    let mut f = LogFilters::new(filters, loglevel);
    let mut out: Vec<LogEntry> = lines.into_iter().flat_map(|e| f.observe(e)).collect();
    out.extend(f.finish().1);
    out.into_iter()
        .map(|e| {
            let mut s = format!("{} {}", e.level, e.log.replace('\u{1b}', "^"));
            if !e.meta.is_empty() {
                s.push_str(&format!(" {:?}", e.meta));
            }
            s
        })
        .collect()
}

#[test]
fn quiet_output_moves_lines_to_a_level_the_run_then_drops_unless_it_is_a_debug_run() {
    let quiet = [filter("quiet-output", &[("regex", "^progress")])];
    let lines = || {
        vec![
            line("progress 10%"),
            line("done"),
            entry(LogStream::Stderr, "ERROR", "boom"),
        ]
    };
    // Without quietMatch the lines that do not match are quieted; stderr
    // (ERROR) is not tested at the default match level.
    assert_eq!(
        run(&quiet, LogLevel::Info, lines()),
        ["NORMAL progress 10%", "ERROR boom"]
    );
    assert_eq!(
        run(&quiet, LogLevel::Debug, lines()),
        ["NORMAL progress 10%", "VERBOSE done", "ERROR boom"]
    );
    let matched = [filter(
        "quiet-output",
        &[
            ("regex", "^progress"),
            ("quietMatch", "true"),
            ("matchLoglevel", "all"),
            ("loglevel", "debug"),
        ],
    )];
    assert_eq!(
        run(&matched, LogLevel::Info, lines()),
        ["NORMAL done", "ERROR boom"]
    );
    assert_eq!(
        run(&matched, LogLevel::Verbose, lines()),
        ["NORMAL done", "ERROR boom"],
        "DEBUG is below a verbose run's threshold"
    );
}

#[test]
fn highlight_output_wraps_matches_or_their_groups_in_ansi_codes() {
    let whole = [filter(
        "highlight-output",
        &[("regex", "ERR"), ("fgcolor", "red")],
    )];
    assert_eq!(
        run(
            &whole,
            LogLevel::Info,
            vec![
                line("ERR one ERR two"),
                line("fine"),
                entry(LogStream::Stderr, "ERROR", "ERR")
            ]
        ),
        [
            "NORMAL ^[31mERR^[0m one ^[31mERR^[0m two",
            "NORMAL fine",
            "ERROR ERR"
        ]
    );
    let groups = [filter(
        "highlight-output",
        &[("regex", "this (is) a (test)"), ("mode", "bold")],
    )];
    assert_eq!(
        run(&groups, LogLevel::Info, vec![line("so this is a test!")]),
        ["NORMAL so this ^[1mis^[0m a ^[1mtest^[0m!"]
    );
}

#[test]
fn mask_log_output_regex_replaces_matches_or_only_their_values() {
    let all = [filter(
        "mask-log-output-regex",
        &[("regex", "tok_[a-z0-9]+")],
    )];
    assert_eq!(
        run(
            &all,
            LogLevel::Info,
            vec![
                line("got tok_abc1 and tok_x"),
                entry(LogStream::Stderr, "ERROR", "bad tok_9")
            ]
        ),
        ["NORMAL got [SECURE] and [SECURE]", "ERROR bad [SECURE]"]
    );
    let value = [filter(
        "mask-log-output-regex",
        &[
            ("regex", "(password=)(\\S+)"),
            ("maskOnlyValue", "true"),
            ("replacement", "***"),
        ],
    )];
    assert_eq!(
        run(
            &value,
            LogLevel::Info,
            vec![line("user=a password=s3cret end")]
        ),
        ["NORMAL user=a password=*** end"]
    );
}

#[test]
fn render_datatype_makes_a_marked_block_one_entry_of_its_type() {
    let render = [filter("render-datatype", &[("striped", "true")])];
    let lines = || {
        vec![
            line("before"),
            line("#BEGIN:RUNDECK:DATATYPE:csv"),
            line("a,b"),
            line("1,2"),
            line("#END:RUNDECK:DATATYPE"),
            line("after"),
        ]
    };
    assert_eq!(
        run(&render, LogLevel::Info, lines()),
        [
            "NORMAL before",
            r#"NORMAL a,b
1,2 {"content-data-type": "text/csv", "content-meta:css-class": "table-striped"}"#,
            "NORMAL after"
        ]
    );
    // A debug run keeps the block's own lines too, at DEBUG, before it.
    let debug = run(&render, LogLevel::Debug, lines());
    assert_eq!(
        debug[..5],
        [
            "NORMAL before",
            "DEBUG #BEGIN:RUNDECK:DATATYPE:csv",
            "DEBUG a,b",
            "DEBUG 1,2",
            r#"NORMAL a,b
1,2 {"content-data-type": "text/csv", "content-meta:css-class": "table-striped"}"#,
        ]
    );
    assert_eq!(debug[5..], ["DEBUG #END:RUNDECK:DATATYPE", "NORMAL after"]);
    // With a datatype, all the output is data, closed by the step's end.
    let preset = [filter("render-datatype", &[("datatype", "json")])];
    assert_eq!(
        run(&preset, LogLevel::Info, vec![line("{\"a\":"), line("1}")]),
        [r#"NORMAL {"a":
1} {"content-data-type": "application/json"}"#]
    );
}

#[test]
fn filters_run_in_order_and_data_reads_what_the_ones_before_left() {
    // Quieted lines are not NORMAL, so the capture after the quiet skips
    // them, as in Rundeck.
    let filters = [
        filter(
            "quiet-output",
            &[("regex", "^RUNDECK:DATA:secret"), ("quietMatch", "true")],
        ),
        filter("key-value-data", &[]),
    ];
    let mut f = LogFilters::new(&filters, LogLevel::Info);
    let mut out = Vec::new();
    for text in ["RUNDECK:DATA:secret=1", "RUNDECK:DATA:open=2"] {
        out.extend(f.observe(line(text)));
    }
    let (data, _) = f.finish();
    assert_eq!(
        data,
        BTreeMap::from([("open".to_string(), "2".to_string())])
    );
    assert_eq!(out.len(), 1);
    // The runner's own lines are not output: no filter touches them.
    let hl = [filter(
        "highlight-output",
        &[("regex", "step"), ("fgcolor", "red")],
    )];
    assert_eq!(
        run(
            &hl,
            LogLevel::Info,
            vec![entry(LogStream::System, "NORMAL", "step failed")]
        ),
        ["NORMAL step failed"]
    );
}

#[test]
fn the_first_mask_passwords_filter_chooses_the_replacement() {
    assert_eq!(mask_text(&[filter("quiet-output", &[])]), None);
    assert_eq!(
        mask_text(&[
            filter("mask-passwords", &[("replacement", "<hidden>")]),
            filter("mask-passwords", &[]),
        ])
        .as_deref(),
        Some("<hidden>")
    );
}

#[test]
fn a_capture_after_a_mask_reads_the_masked_line() {
    let filters = [
        filter(
            "key-value-data",
            &[("regex", "^raw=(.*)$"), ("name", "raw")],
        ),
        filter("mask-log-output-regex", &[("regex", "tok_[a-z]+")]),
        filter(
            "key-value-data",
            &[
                ("regex", "^raw=(.*)$"),
                ("name", "masked"),
                ("logData", "true"),
            ],
        ),
    ];
    let mut f = LogFilters::new(&filters, LogLevel::Info);
    let out = f.observe(line("raw=tok_abc"));
    assert_eq!(out[0].log, "raw=[SECURE]");
    let (data, said) = f.finish();
    assert_eq!(
        data,
        BTreeMap::from([
            ("masked".to_string(), "[SECURE]".to_string()),
            ("raw".into(), "tok_abc".into()),
        ])
    );
    // Each filter's logData says what that filter captured, as in Rundeck.
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].log, r#"{"masked":"[SECURE]"}"#);
    assert_eq!(said[0].meta["content-data-type"], "application/json");
}

#[test]
fn a_regex_masks_replacement_reads_groups_as_javas_replace_all() {
    let f = [filter(
        "mask-log-output-regex",
        &[("regex", "(key)=(\\w+)"), ("replacement", "$1:\\$***")],
    )];
    assert_eq!(
        run(&f, LogLevel::Info, vec![line("key=abc, $9")]),
        ["NORMAL key:$***, $9"]
    );
    // Named groups, one that took no part in the match (empty, as in
    // Java), and a name that is no group (left as written).
    let named = [filter(
        "mask-log-output-regex",
        &[
            ("regex", "(?P<k>user|pass)=(?P<v>\\w+)(?P<opt>!)?"),
            ("replacement", "${k}:${opt}${nope}é"),
        ],
    )];
    assert_eq!(
        run(&named, LogLevel::Info, vec![line("pass=x1 é")]),
        ["NORMAL pass:${nope}é é"]
    );
}

#[test]
fn a_large_block_goes_out_in_entries_no_larger_than_a_chunk_allows() {
    let render = [filter("render-datatype", &[("datatype", "text/csv")])];
    let row = "x".repeat(1000);
    let lines: Vec<LogEntry> = (0..700).map(|_| line(&row)).collect();
    let out = run(&render, LogLevel::Info, lines);
    assert!(out.len() >= 3, "{}", out.len());
    let mut rows = 0;
    for o in &out {
        assert!(o.len() <= render::MAX_BLOCK + 200, "{}", o.len());
        assert!(o.ends_with(r#"{"content-data-type": "text/csv"}"#));
        rows += o.matches(&row).count();
    }
    assert_eq!(rows, 700, "no row is lost or doubled");
}
