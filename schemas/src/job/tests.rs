use super::*;

#[test]
fn script_tokens_are_replaced_as_rundeck_replaces_them() {
    let vars: BTreeMap<String, String> = [("option.env", "prod"), ("node.name", "web1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (text, want) in [
        ("deploy @option.env@ on @node.name@", "deploy prod on web1"),
        ("missing: [@option.nope@]", "missing: []"),
        ("no dot: [@foo@]", "no dot: []"),
        ("mail me@example.com today", "mail me@example.com today"),
        ("a@@b", "a@b"),
        ("trailing @", "trailing @"),
        ("@option.env@@option.env@", "prodprod"),
    ] {
        assert_eq!(replace_tokens(text, &vars), want, "{text}");
    }
}

#[test]
fn secure_options_keep_rundecks_two_kinds_and_key_store_defaults() {
    let read = |options: &str| -> Result<Job, String> {
        let json = format!(
            r#"{{"name": "j", "options": [{options}], "sequence": {{"commands": [{{"exec": "true"}}]}}}}"#
        );
        serde_json::from_str(&json).map_err(|e| e.to_string())
    };
    let job = read(r#"{"name": "pw", "secure": true}, {"name": "tok", "secure": true, "valueExposed": "true", "storagePath": "keys/app/tok"}"#).unwrap();
    assert!(job.options[0].auth_only());
    assert!(!job.options[1].auth_only());
    assert_eq!(job.options[1].storage_path.as_deref(), Some("keys/app/tok"));
    // A key-store default satisfies `required` on the control plane:
    // the runner reads it, or fails the step.
    let job = read(
        r#"{"name": "tok", "secure": true, "required": true, "storagePath": "/keys/app/tok"}"#,
    )
    .unwrap();
    assert!(job.resolve_options(Default::default()).is_ok());
    for bad in [
        "keys/",
        "keys/../etc/shadow",
        "app/tok",
        "keys//tok",
        "keys/a/./b",
    ] {
        let err = read(&format!(
            r#"{{"name": "t", "secure": true, "storagePath": "{bad}"}}"#
        ))
        .unwrap_err();
        assert!(err.contains("must be a path below `keys/`"), "{bad}: {err}");
    }
    let err = read(r#"{"name": "t", "storagePath": "keys/a"}"#).unwrap_err();
    assert!(err.contains("goes with `secure: true`"), "{err}");
}

#[test]
fn options_may_be_the_older_map_from_names() {
    let json = r#"{"name": "j", "options": {"b": {"value": "2"}, "a": {"name": "a", "required": true}}, "sequence": {"commands": [{"exec": "echo ${option.a}"}]}}"#;
    let job: Job = serde_json::from_str(json).unwrap();
    let names: Vec<&str> = job.options.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["b", "a"], "in the file's order");
    assert_eq!(job.options[0].value.as_deref(), Some("2"));
    let json = r#"{"name": "j", "options": {"a": {"name": "b"}}, "sequence": {"commands": [{"exec": "true"}]}}"#;
    let err = serde_json::from_str::<Job>(json).unwrap_err().to_string();
    assert!(err.contains("says its name is `b`"), "{err}");
}

#[test]
fn remote_values_are_read_in_rundecks_three_forms() {
    use serde_json::json;
    let read = |v: serde_json::Value| {
        parse_remote_values(&v).map(|vs| {
            vs.into_iter()
                .map(|r| {
                    format!(
                        "{}={}{}",
                        r.name,
                        r.value,
                        if r.selected { "*" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        read(json!(["a", "b"])),
        Ok(vec!["a=a".into(), "b=b".into()])
    );
    assert_eq!(
        read(json!([{"name": "A", "value": "a"}, {"name": "B", "value": 2, "selected": "true"}])),
        Ok(vec!["A=a".into(), "B=2*".into()])
    );
    assert_eq!(
        read(json!({"One": "1", "Two": "2"})),
        Ok(vec!["One=1".into(), "Two=2".into()])
    );
    assert!(read(json!([])).unwrap_err().contains("empty"));
    assert!(read(json!(["a", {"name": "B", "value": "b"}]))
        .unwrap_err()
        .contains("mixes"));
    assert!(read(json!([{"name": "A"}]))
        .unwrap_err()
        .contains("no `value`"));
    assert!(read(json!("a,b")).unwrap_err().contains("expected a list"));
}

#[test]
fn remote_enforced_values_default_to_the_selected_one_and_are_checked() {
    let job: Job = serde_json::from_str(
        r#"{"name": "j", "options": [{"name": "env", "enforced": true, "required": true, "valuesUrl": "http://h/envs"}], "sequence": {"commands": [{"exec": "true"}]}}"#,
    )
    .unwrap();
    let remote = BTreeMap::from([(
        "env".to_string(),
        vec![
            RemoteValue {
                name: "QA".into(),
                value: "qa".into(),
                selected: false,
            },
            RemoteValue {
                name: "Prod".into(),
                value: "prod".into(),
                selected: true,
            },
        ],
    )]);
    let (plain, _) = job
        .resolve_options_with(Default::default(), &remote)
        .unwrap();
    assert_eq!(plain["env"], "prod");
    let given = BTreeMap::from([("env".to_string(), "dev".to_string())]);
    let err = job
        .resolve_options_with(given.clone(), &remote)
        .unwrap_err();
    assert!(err.contains("its valuesUrl lists"), "{err}");
    // Planned without fetching (a job reference's child): not checked.
    assert!(job.resolve_options(given).is_ok());
}
