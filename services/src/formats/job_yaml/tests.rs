//! Data-driven: every case is a YAML input and the snapshot of what we make of it.
use super::*;

fn outcome(yaml: &str) -> String {
    match parse_jobs(yaml) {
        Ok(jobs) => format!("ok:\n{}", to_yaml(&jobs)),
        Err(e) => format!("error: {e}"),
    }
}

macro_rules! case {
    ($name:ident, $yaml:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(outcome($yaml));
        }
    };
}

case!(
    minimal_exec,
    "- name: hello\n  sequence:\n    commands:\n    - exec: echo hello\n"
);

case!(
    rundeck_export_with_cosmetic_keys,
    r#"- defaultTab: nodes
  description: 'Restart the web tier'
  executionEnabled: true
  id: 0192f0c4-7c1e-7cc0-9a43-0d3c1a2b3c4d
  loglevel: INFO
  name: restart
  group: ops/web
  nodeFilterEditable: false
  scheduleEnabled: true
  options:
  - name: service
    required: true
    value: nginx
  - name: count
    value: 3
  runnerSelector:
    filter: 'linux, prod'
    runnerFilterMode: TAGS
    runnerFilterType: TAG_FILTER_AND
  sequence:
    keepgoing: true
    strategy: step-first
    commands:
    - exec: systemctl restart ${option.service}
    - script: |
        #!/bin/sh
        echo "$1"
      args: ${option.count}
      runnerSelector:
        runnerFilterMode: LOCAL
        runnerFilterType: LOCAL_RUNNER
  uuid: 0192f0c4-7c1e-7cc0-9a43-0d3c1a2b3c4d
"#
);

case!(
    unknown_field_in_step,
    "- name: hello\n  sequence:\n    commands:\n    - exec: echo hi\n    - exce: echo typo\n"
);

case!(
    unknown_top_level_field,
    "- name: hello\n  schedul: daily\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(
    wrong_type_keepgoing,
    "- name: hello\n  sequence:\n    keepgoing: perhaps\n    commands:\n    - exec: echo hi\n"
);

case!(
    malformed_yaml,
    "- name: hello\n  sequence:\n    commands:\n    - exec: \"echo hi\n"
);

case!(
    not_a_list,
    "name: hello\nsequence:\n  commands:\n  - exec: echo hi\n"
);

case!(
    both_exec_and_script,
    "- name: hello\n  sequence:\n    commands:\n    - exec: echo hi\n      script: echo there\n"
);

case!(
    args_with_exec,
    "- name: hello\n  sequence:\n    commands:\n    - exec: echo hi\n      args: x\n"
);

case!(
    undefined_option_reference,
    "- name: hello\n  sequence:\n    commands:\n    - exec: echo ${option.nope}\n"
);

case!(
    bad_tag,
    "- name: hello\n  runnerSelector:\n    filter: 'prod.eu'\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(
    empty_tag_filter,
    "- name: hello\n  runnerSelector:\n    filter: ''\n    runnerFilterMode: TAGS\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(
    tag_filter_or_unsupported,
    "- name: hello\n  runnerSelector:\n    filter: a\n    runnerFilterType: TAG_FILTER_OR\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(
    empty_commands,
    "- name: hello\n  sequence:\n    commands: []\n"
);

case!(
    duplicate_option,
    "- name: hello\n  options:\n  - name: a\n  - name: a\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(
    enforced_default_not_allowed,
    "- name: hello\n  options:\n  - name: env\n    value: qa\n    values: [dev, prod]\n    enforced: true\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(
    name_with_slash,
    "- name: ops/hello\n  sequence:\n    commands:\n    - exec: echo hi\n"
);

case!(empty_file, "   \n");

case!(
    unknown_strategy,
    "- name: hello\n  sequence:\n    strategy: random\n    commands:\n    - exec: echo hi\n"
);

case!(
    nodefilters_rundeck_export,
    "- name: deploy\n  nodefilters:\n    dispatch:\n      excludePrecedence: true\n      keepgoing: false\n      rankOrder: ascending\n      successOnEmptyNodeFilter: false\n      threadcount: '4'\n    filter: 'tags: web !name: web2'\n  nodesSelectedByDefault: true\n  sequence:\n    strategy: node-first\n    commands:\n    - exec: uptime\n"
);

case!(
    nodefilters_bad_filter_points_at_the_column,
    "- name: deploy\n  nodefilters:\n    filter: 'tags: web name:'\n  sequence:\n    commands:\n    - exec: uptime\n"
);

case!(
    nodefilters_with_a_step_selector,
    "- name: deploy\n  nodefilters:\n    filter: '.*'\n  sequence:\n    commands:\n    - exec: uptime\n      runnerSelector: {filter: eu}\n"
);

case!(
    nodefilters_zero_threads,
    "- name: deploy\n  nodefilters:\n    filter: '.*'\n    dispatch:\n      threadcount: 0\n  sequence:\n    commands:\n    - exec: uptime\n"
);
