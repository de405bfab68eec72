//! Rules of the code base that a reader cannot check at a glance, checked
//! here as rust-analyzer's `tidy.rs` does: the docs' topology tables agree
//! with `topology.rs`, only the API module knows HTTP, and no source file
//! grows past a size without a recorded reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The rows of the markdown table under `heading`, split into cells.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in ARCHITECTURE.md"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn name_cell(cell: &str) -> String {
    cell.trim_matches('`').to_string()
}

/// "none", "N d": what the docs write for a bucket's max age.
fn days(d: Duration) -> String {
    if d.is_zero() {
        "none".into()
    } else {
        format!("{} d", d.as_secs() / 86_400)
    }
}

#[test]
fn architecture_bucket_table_matches_topology() {
    let doc = read("ARCHITECTURE.md");
    let rows = table(&doc, "### Key-value buckets");
    let mut documented: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (name_cell(&r[0]), r[3].clone(), r[4].clone()))
        .collect();
    let mut actual: Vec<(String, String, String)> =
        outpost_services::store::topology::bucket_configs()
            .into_iter()
            .map(|c| (c.bucket, c.history.to_string(), days(c.max_age)))
            .collect();
    documented.sort();
    actual.sort();
    assert_eq!(
        documented, actual,
        "ARCHITECTURE.md's bucket table (name, history, max age) disagrees with topology.rs"
    );
}

#[test]
fn architecture_stream_table_matches_topology() {
    let doc = read("ARCHITECTURE.md");
    let rows = table(&doc, "### Streams");
    let mut documented: Vec<String> = rows.iter().map(|r| name_cell(&r[0])).collect();
    let configs = outpost_services::store::topology::stream_configs();
    let mut actual: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    documented.sort();
    actual.sort();
    assert_eq!(documented, actual, "stream names");
    for c in &configs {
        let row = rows.iter().find(|r| name_cell(&r[0]) == c.name).unwrap();
        let limits = &row[3];
        let age = if c.max_age.is_zero() {
            "no max age".to_string()
        } else {
            format!("max age {}", days(c.max_age))
        };
        assert!(
            limits.contains(&age),
            "{}: `{limits}` should say `{age}`",
            c.name
        );
        let dedup = c.duplicate_window.as_secs() / 60;
        assert_eq!(
            limits.contains("dedup window"),
            dedup > 0,
            "{}: `{limits}` and a dedup window of {dedup} min",
            c.name
        );
        if dedup > 0 {
            assert!(
                limits.contains(&format!("dedup window {dedup} min")),
                "{}: `{limits}` should say `dedup window {dedup} min`",
                c.name
            );
        }
        assert_eq!(
            limits.contains("1 message per subject"),
            c.max_messages_per_subject == 1,
            "{}: `{limits}`",
            c.name
        );
    }
}

/// Every `.rs` file under the crates' `src/` and the tests.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for dir in [
        "schemas/src",
        "bus/src",
        "runner/src",
        "services/src",
        "tests/src",
        "tests/tests",
        "tests/benches",
    ] {
        walk(&root().join(dir), &mut out);
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn only_the_api_module_knows_http_serving() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|p| {
            let r = rel(p);
            r.starts_with("services/src/") && !r.starts_with("services/src/api/")
                || r.starts_with("runner/src/")
                || r.starts_with("bus/src/")
                || r.starts_with("schemas/src/")
        })
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .any(|l| !l.trim_start().starts_with("//") && l.contains("axum"))
        })
        .map(|p| rel(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "axum outside services/src/api: {offenders:?}"
    );
}

/// Source files may pass this many lines only with a reason here.
const MAX_LINES: usize = 800;
const LONG_FILES: &[(&str, &str)] = &[
    (
        "runner/src/outbox.rs",
        "one mechanism with its unit tests at the end",
    ),
    (
        "schemas/src/job.rs",
        "the whole job model in one place, as the wire contract",
    ),
    (
        "tests/src/lib.rs",
        "the test harness: servers, the stack, helpers",
    ),
    (
        "tests/tests/security.rs",
        "the zero-trust end-to-end suite; to be split by concern",
    ),
];

#[test]
fn no_source_file_passes_the_line_limit_without_a_reason() {
    let mut over = Vec::new();
    let mut stale = Vec::new();
    for p in sources() {
        let r = rel(&p);
        let lines = std::fs::read_to_string(&p).unwrap().lines().count();
        let allowed = LONG_FILES.iter().any(|(f, _)| *f == r);
        if lines > MAX_LINES && !allowed {
            over.push(format!("{r}: {lines} lines"));
        }
        if lines <= MAX_LINES && allowed {
            stale.push(r);
        }
    }
    assert!(
        over.is_empty(),
        "over {MAX_LINES} lines: {over:?}; split the file, or add it to LONG_FILES with why"
    );
    assert!(
        stale.is_empty(),
        "within the limit now, drop from LONG_FILES: {stale:?}"
    );
    for (f, _) in LONG_FILES {
        assert!(
            root().join(f).exists(),
            "LONG_FILES names {f}, which is gone"
        );
    }
}

/// A folder is a room with one job, so the codemap names each one: by its
/// path, or, for a module's own subfolder, by its name inside its parent's
/// row. Folders that hold only a module's tests and snapshots are exempt.
#[test]
fn the_codemap_names_every_source_folder() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                out.push(p.clone());
                walk(&p, out);
            }
        }
    }
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut dirs = Vec::new();
    for crate_src in ["schemas/src", "bus/src", "runner/src", "services/src"] {
        walk(&root().join(crate_src), &mut dirs);
    }
    let only_tests = |d: &Path| {
        std::fs::read_dir(d).unwrap().flatten().all(|e| {
            let name = e.file_name();
            name == "tests.rs" || name == "snapshots"
        })
    };
    let unnamed: Vec<String> = dirs
        .iter()
        .filter(|d| d.file_name().unwrap() != "snapshots" && !only_tests(d))
        .filter(|d| {
            let name = d.file_name().unwrap().to_string_lossy();
            !doc.contains(&format!("`{}/", rel(d))) && !doc.contains(&format!("`{name}/"))
        })
        .map(|d| rel(d))
        .collect();
    assert!(
        unnamed.is_empty(),
        "folders missing from ARCHITECTURE.md's codemap: {unnamed:?}"
    );
}
