//! Table-driven: filters against one inventory, and parse errors by column.
use super::*;
use crate::node::Node;

/// A minimal resources.yaml reader for these tests (the real parser, with
/// its checks, is `outpost_runner::inventory`).
fn parse_resources(yaml: &str) -> Result<Vec<Node>, String> {
    let map: BTreeMap<String, BTreeMap<String, serde_yaml_ng::Value>> =
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    Ok(map
        .into_iter()
        .map(|(name, attrs)| {
            let text = |v: &serde_yaml_ng::Value| match v {
                serde_yaml_ng::Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
            };
            let mut node = Node {
                nodename: name,
                hostname: String::new(),
                port: None,
                username: None,
                tags: Default::default(),
                attributes: Default::default(),
            };
            for (k, v) in attrs {
                match (k.as_str(), &v) {
                    ("hostname", _) => {
                        let h = text(&v);
                        match h.rsplit_once(':') {
                            Some((host, port)) => {
                                node.hostname = host.into();
                                node.port = port.parse().ok();
                            }
                            None => node.hostname = h,
                        }
                    }
                    ("tags", serde_yaml_ng::Value::Sequence(items)) => {
                        node.tags = items.iter().map(text).collect();
                    }
                    ("tags", _) => {
                        node.tags = text(&v).split(',').map(|t| t.trim().to_string()).collect();
                    }
                    _ => {
                        node.attributes.insert(k, text(&v));
                    }
                }
            }
            node
        })
        .collect())
}

const NODES: &str = r#"
web1:
  hostname: 10.0.0.1:2222
  tags: web, prod, eu
  osFamily: unix
  rack: "10"
web2:
  hostname: 10.0.0.2
  tags: web, staging
  osFamily: unix
  rack: "9"
db1:
  hostname: 10.0.0.3
  tags: db, prod
  osFamily: unix
  env: production
win1:
  hostname: 10.0.0.4
  tags: [windows, prod]
  osFamily: windows
"#;

fn names(filter: &str, exclude_precedence: bool) -> String {
    let nodes = parse_resources(NODES).unwrap();
    match parse(filter) {
        Ok(f) => f
            .select(&nodes, exclude_precedence)
            .iter()
            .map(|n| n.nodename.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn selection() {
    let cases: &[(&str, &str)] = &[
        (".*", "db1 web1 web2 win1"),
        ("", ""),
        ("web1", "web1"),
        ("web1 db1", "db1 web1"),
        ("name: web.*", "web1 web2"),
        ("name:web.*", "web1 web2"),
        ("nodename: web.*", "web1 web2"),
        // Whole string as one regex, else exact comma items (Rundeck #1338).
        ("name: web.*,db1", "db1"),
        // `web1|web2,db1` is the regex `web1` or `web2,db1`, plus the items.
        ("name: web1|web2,db1", "db1 web1"),
        ("/web[12]/", "web1 web2"),
        ("tags: web", "web1 web2"),
        ("tags: web+prod", "web1"),
        ("tags: web,db", "db1 web1 web2"),
        ("tags: web+prod,db", "db1 web1"),
        ("tags: w.*", "web1 web2 win1"),
        ("tags: prod !tags: windows", "db1 web1"),
        ("osFamily: unix tags: prod", "db1 web1"),
        ("os-family: windows", "win1"),
        ("hostname: 10.0.0.1:2222", "web1"),
        ("hostname: 10.0.0.1", ""),
        ("env: prod.*", "db1"),
        ("missing: .*", ""),
        // Only excludes: everything else.
        ("!tags: prod", "web2"),
        // Excludes AND across attributes.
        ("!tags: prod !osFamily: windows", "db1 web1 web2"),
        ("name: web.* !name: web2", "web1"),
        ("'name: web1'", "web1"),
        ("name: \"web1\"", "web1"),
        ("name:'web2'", "web2"),
        ("rack: 1.", "web1"),
    ];
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        let got = names(filter, true);
        if &got != expected {
            failures.push(format!("{filter:?}: got [{got}], expected [{expected}]"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn include_precedence_also_selects_nodes_matching_neither_side() {
    assert_eq!(names("name: web.* !name: web2", true), "web1");
    assert_eq!(
        names("name: web.* !name: web2", false),
        "db1 web1 web2 win1"
    );
    assert_eq!(
        names("tags: web !tags: staging", false),
        "db1 web1 web2 win1"
    );
}

#[test]
fn errors_point_at_the_column() {
    let cases: &[(&str, &str)] = &[
        ("tags: web name:", "node filter, column 11: `name:` has no value"),
        ("name: /web[/", "node filter, column 7: invalid regex /web[/"),
        ("tags: 'web", "node filter, column 7: unterminated ' quote"),
        ("web1 !web2", "node filter, column 6: `!web2` excludes nothing: an exclusion names its attribute, as in `!name: web2`"),
        (":x", "node filter, column 1: an attribute name is missing before `:`"),
    ];
    for (filter, expected) in cases {
        let got = names(filter, true);
        assert!(
            got.starts_with(&format!("error: {expected}")),
            "{filter:?}: {got}"
        );
    }
}

#[test]
fn parse_joins_repeated_attributes_and_splits_excludes() {
    let f = parse("tags: a tags:b !name: x web1 web2").unwrap();
    assert_eq!(f.include.get("tags").map(String::as_str), Some("a,b"));
    assert_eq!(f.include.get("name").map(String::as_str), Some("web1,web2"));
    assert_eq!(f.exclude.get("name").map(String::as_str), Some("x"));
}

#[test]
fn rank_orders_numerically_then_by_name_with_missing_last() {
    let nodes = parse_resources(NODES).unwrap();
    let order = |attr: Option<&str>, asc: bool| {
        let mut v: Vec<&Node> = nodes.iter().collect();
        rank(&mut v, attr, asc);
        v.iter()
            .map(|n| n.nodename.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(order(None, true), "db1 web1 web2 win1");
    assert_eq!(order(None, false), "win1 web2 web1 db1");
    // 9 < 10 numerically; nodes without `rack` last (first when descending).
    assert_eq!(order(Some("rack"), true), "web2 web1 db1 win1");
    assert_eq!(order(Some("rack"), false), "win1 db1 web1 web2");
}
