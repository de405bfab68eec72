//! The committed JSON Schemas are what outside consumers validate against, so
//! they must never drift from the Rust types.
use std::path::PathBuf;

#[test]
fn committed_schemas_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let mut stale = Vec::new();
    for (stem, schema) in outpost_schemas::all_schemas() {
        let name = outpost_schemas::schema_file_name(stem);
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if committed != outpost_schemas::render_schema(&schema) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/json is out of date for {stale:?}; run `just schemas` and commit the result"
    );
}

#[test]
fn no_stray_schema_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let expected: Vec<String> = outpost_schemas::all_schemas()
        .iter()
        .map(|(stem, _)| outpost_schemas::schema_file_name(stem))
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            expected.contains(&name),
            "schemas/json/{name} matches no message type"
        );
    }
}
