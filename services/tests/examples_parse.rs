//! The examples in the README must stay valid input.
use std::path::PathBuf;

fn example(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn example_jobs_and_nodes_load() {
    for job in ["hello.yaml", "nodes/restart-web.yaml"] {
        let jobs = outpost_services::formats::job_yaml::parse_jobs(&example(job))
            .unwrap_or_else(|e| panic!("{job}: {e}"));
        assert!(!jobs.is_empty());
    }
    let nodes =
        outpost_schemas::resources::parse_resources(&example("nodes/runner-nodes.yaml")).unwrap();
    assert_eq!(nodes.len(), 3);
    let filter = outpost_schemas::node_filter::parse("tags: web+prod").unwrap();
    let web: Vec<&str> = filter
        .select(&nodes, true)
        .iter()
        .map(|n| n.nodename.as_str())
        .collect();
    assert_eq!(web, ["web1", "web2"]);
}
