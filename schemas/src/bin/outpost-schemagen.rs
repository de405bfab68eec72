//! Writes `schemas/json/*.json` from the Rust types: `just schemas`.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    std::fs::create_dir_all(&dir)?;
    for (stem, schema) in outpost_schemas::all_schemas() {
        let path = dir.join(outpost_schemas::schema_file_name(stem));
        std::fs::write(&path, outpost_schemas::render_schema(&schema))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
