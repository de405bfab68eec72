//! Rules of the code base that a reader cannot check at a glance, checked
//! here as rust-analyzer's `tidy.rs` does: the docs' topology tables agree
//! with `topology.rs`, only the API module serves HTTP and only the CLI
//! calls it, every NATS payload type is defined in `schemas`, the API's
//! bodies are the contract's types, and no source file grows past a size
//! without a recorded reason.

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
    let mut configs = outpost_services::store::topology::stream_configs();
    // The plugin lanes are made as dispatches need them; one row stands for
    // them all.
    configs.push(outpost_services::store::topology::dispatch_stream_config(
        Some("<lane>"),
    ));
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

/// Library sources outside `schemas`: where a NATS payload type must not be.
fn sources_outside_schemas() -> Vec<(String, String)> {
    sources()
        .into_iter()
        .map(|p| (rel(&p), p))
        .filter(|(r, _)| {
            r.starts_with("services/src/")
                || r.starts_with("runner/src/")
                || r.starts_with("bus/src/")
        })
        .map(|(r, p)| (r, std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// Every type with a serde derive: (its name, the derive's text).
fn serde_types(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[derive(") {
        rest = &rest[at..];
        let end = rest.find(")]").expect("a derive closes");
        let derive = &rest[..end];
        rest = &rest[end..];
        if !(derive.contains("Serialize") || derive.contains("Deserialize")) {
            continue;
        }
        // The item the derive is on: the next `struct` or `enum` keyword.
        let keyword = ["struct ", "enum "]
            .iter()
            .filter_map(|k| rest.find(k).map(|at| at + k.len()))
            .min()
            .expect("a derive is on a struct or an enum");
        let name: String = rest[keyword..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

/// Serde types outside `schemas` that never cross NATS, with why.
const SERDE_OUTSIDE_SCHEMAS: &[(&str, &str, &str)] = &[
    (
        "runner/src/plugins/allow.rs",
        "File",
        "the runner's allow-list file, in Rundeck's shape",
    ),
    (
        "services/src/config.rs",
        "FileConfig",
        "the control plane's config file",
    ),
    (
        "runner/src/main.rs",
        "FileConfig",
        "the runner's config file",
    ),
    (
        "runner/src/outbox.rs",
        "OnDisk",
        "the outbox's own file on the runner's disk",
    ),
    (
        "services/src/engine/projector.rs",
        "RebuildReport",
        "what `outpost projector rebuild` prints",
    ),
    (
        "services/src/store/mod.rs",
        "DupeOption",
        "a value of the HTTP contract (Rundeck's `dupeOption`)",
    ),
    (
        "services/src/store/mod.rs",
        "ImportAction",
        "a value of the HTTP contract",
    ),
    (
        "services/src/store/mod.rs",
        "NodeSource",
        "a value of the HTTP contract",
    ),
    (
        "services/src/fleet/health.rs",
        "Health",
        "a value of the HTTP contract",
    ),
];

/// What crosses NATS (a stream message, a KV value, an RPC payload) is
/// defined in `schemas`, where it has a committed JSON Schema; a serde type
/// anywhere else is an HTTP body, a query string, or on the list above.
#[test]
fn every_nats_payload_type_is_defined_in_schemas() {
    let mut unlisted = Vec::new();
    let mut seen = Vec::new();
    for (r, text) in sources_outside_schemas() {
        for name in serde_types(&text) {
            let listed = SERDE_OUTSIDE_SCHEMAS
                .iter()
                .any(|(f, n, _)| *f == r && *n == name);
            let http = r.starts_with("services/src/contract/")
                || (r.starts_with("services/src/api/") && name.ends_with("Query"));
            if listed {
                seen.push((r.clone(), name.clone()));
            } else if !http {
                unlisted.push(format!("{r}: {name}"));
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "serde types outside schemas: {unlisted:?}. A NATS payload belongs in schemas/src (with \
         its JSON Schema); an HTTP body in services/src/contract; anything else goes in \
         SERDE_OUTSIDE_SCHEMAS with why"
    );
    for (f, n, _) in SERDE_OUTSIDE_SCHEMAS {
        assert!(
            seen.iter().any(|(sf, sn)| sf == f && sn == n),
            "SERDE_OUTSIDE_SCHEMAS names {f}: {n}, which has no serde derive there now"
        );
    }
}

/// The API answers with the contract's types, never a hand-built `json!`
/// body (the OpenAPI module builds the document itself as JSON).
#[test]
fn the_api_builds_no_json_bodies_by_hand() {
    let offenders: Vec<String> = sources_outside_schemas()
        .into_iter()
        .filter(|(r, _)| {
            (r.starts_with("services/src/api/") && r != "services/src/api/openapi.rs")
                || r.starts_with("services/src/cli/")
                || r.starts_with("services/src/bin/")
        })
        .filter(|(_, text)| text.contains("json!("))
        .map(|(r, _)| r)
        .collect();
    assert!(
        offenders.is_empty(),
        "json! in the API or its clients: {offenders:?}; use a type of services/src/contract"
    );
}

/// HTTP clients that are not API clients, each with why.
const HTTP_OUTSIDE_CLI: &[(&str, &str)] = &[
    (
        "runner/src/plugins/http.rs",
        "Rundeck's HTTP request step, which calls what the job names from the runner's own network; it never calls the API",
    ),
    (
        "runner/src/script.rs",
        "fetches a `scripturl` step's script from the runner's own network; it never calls the API",
    ),
    (
        "services/src/remote_values.rs",
        "fetches an option's `valuesUrl` for the control plane; it never calls the API",
    ),
];

/// Only the CLI's client calls the API over HTTP.
#[test]
fn only_the_cli_calls_http() {
    let offenders: Vec<String> = sources_outside_schemas()
        .into_iter()
        .filter(|(r, _)| !r.starts_with("services/src/cli/"))
        .filter(|(r, _)| !HTTP_OUTSIDE_CLI.iter().any(|(f, _)| f == r))
        .filter(|(_, text)| {
            text.lines()
                .any(|l| !l.trim_start().starts_with("//") && l.contains("reqwest"))
        })
        .map(|(r, _)| r)
        .collect();
    assert!(
        offenders.is_empty(),
        "reqwest outside services/src/cli: {offenders:?}"
    );
}
