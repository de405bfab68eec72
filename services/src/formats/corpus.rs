//! The job-file corpus (`services/test_data/jobs/`): Rundeck job files in
//! the three formats, written from Rundeck's documentation, that Outpost
//! must read (`valid/`) or refuse with a line (`broken/`). Each valid file
//! must read back the same from every format's export, and together the
//! files must use every key `docs/rundeck-compatibility.md` lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{export, parse_jobs, reads_back, Format};

fn corpus(kind: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data/jobs")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| format_of(p).is_some())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("corpus file reads");
            (p, text)
        })
        .collect()
}

fn format_of(path: &Path) -> Option<Format> {
    Format::from_name(path.extension()?.to_str()?)
}

fn name(path: &Path) -> String {
    path.file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "_")
}

fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../../test_data/jobs/snapshots");
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn the_corpus_is_large_enough_and_spans_the_formats() {
    let valid = corpus("valid");
    let count = |f: Format| {
        valid
            .iter()
            .filter(|(p, _)| format_of(p) == Some(f))
            .count()
    };
    assert!(valid.len() >= 60, "{} valid files", valid.len());
    for f in [Format::Yaml, Format::Xml, Format::Json] {
        assert!(count(f) >= 10, "{} {} files", count(f), f.name());
    }
    assert!(corpus("broken").len() >= 15);
}

#[test]
fn every_valid_file_reads_and_reads_back_the_same_from_each_format() {
    let mut failures = Vec::new();
    for (path, text) in corpus("valid") {
        let format = format_of(&path).unwrap();
        assert_eq!(Format::sniff(&text), format, "{}: sniffed", path.display());
        let jobs = match parse_jobs(&text, format) {
            Ok(jobs) => jobs,
            Err(err) => {
                failures.push(format!("{}: {err}", path.display()));
                continue;
            }
        };
        for f in [Format::Yaml, Format::Xml, Format::Json] {
            if let Err(why) = reads_back(&jobs, f) {
                failures.push(format!("{}: {why}", path.display()));
            }
        }
        // Across formats, as a user moving files between tools would.
        let mut chain = jobs.clone();
        for f in [Format::Xml, Format::Json, Format::Yaml] {
            chain = parse_jobs(&export(&chain, f), f).expect("an export reads");
        }
        if chain != jobs {
            failures.push(format!(
                "{}: YAML → XML → JSON → YAML differs",
                path.display()
            ));
        }
        snapshots().bind(|| {
            insta::assert_snapshot!(
                format!("valid_{}", name(&path)),
                export(&jobs, Format::Yaml)
            )
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_broken_file_is_refused_with_its_line() {
    let mut failures = Vec::new();
    for (path, text) in corpus("broken") {
        let format = format_of(&path).unwrap();
        match parse_jobs(&text, format) {
            Ok(jobs) => failures.push(format!("{}: read {} job(s)", path.display(), jobs.len())),
            Err(err) => {
                // The fault is never on the first line, so a line that is
                // there and past it points somewhere.
                if err.line.unwrap_or(0) < 2 {
                    failures.push(format!("{}: no useful line: {err}", path.display()));
                }
                snapshots().bind(|| {
                    insta::assert_snapshot!(format!("broken_{}", name(&path)), err.to_string())
                });
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The keys each table row of the compatibility doc names: the first
/// column's for YAML and JSON, the second's (`<element attr>`) for XML.
fn documented_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rundeck-compatibility.md"),
    )
    .expect("the compatibility doc reads");
    let (mut keys, mut xml) = (BTreeSet::new(), BTreeSet::new());
    let mut in_table = false;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_table = ["Job", "Option", "Sequence and steps"].contains(&heading.trim());
            continue;
        }
        if !in_table || !line.starts_with('|') || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').collect();
        if cells.len() < 3 || cells[1].trim().starts_with("key") {
            continue;
        }
        for token in backticked(cells[1]) {
            // `type: flow-control` names the value; `jobref.args` the key.
            let token = token.rsplit(": ").next().unwrap();
            if token.contains('*') || token.contains(' ') {
                continue;
            }
            keys.insert(token.rsplit('.').next().unwrap().to_string());
        }
        for token in backticked(cells[2]) {
            for tag in token.split('<').skip(1) {
                let tag = tag.split('>').next().unwrap();
                let mut words = tag.split_whitespace();
                if let Some(element) = words.next() {
                    xml.insert(format!("<{}", element.trim_matches('/')));
                }
                for attr in words {
                    let attr = attr.split('=').next().unwrap();
                    xml.insert(format!("{}=", attr.trim_end_matches('…')));
                }
            }
            if token.ends_with('=') {
                xml.insert(token.to_string());
            }
        }
    }
    (keys, xml)
}

fn backticked(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

#[test]
fn the_corpus_uses_every_key_the_compatibility_doc_lists() {
    let (keys, xml) = documented_keys();
    assert!(
        keys.len() > 80 && xml.len() > 40,
        "the doc's tables were read"
    );
    let files: Vec<_> = corpus("valid")
        .into_iter()
        .chain(corpus("broken"))
        .collect();
    let text = |f: Format| {
        files
            .iter()
            .filter(|(p, _)| format_of(p) == Some(f))
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (yaml, json, xml_text) = (text(Format::Yaml), text(Format::Json), text(Format::Xml));
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !yaml.contains(k.as_str()) && !json.contains(k.as_str()))
        .chain(xml.iter().filter(|k| !xml_text.contains(k.as_str())))
        .collect();
    assert!(missing.is_empty(), "keys no corpus file uses: {missing:?}");
}
