//! Data-driven: each case is a job file and the snapshot of what we make of
//! it, in every format; and every valid case reads back the same from each
//! format's export (`export(import(x))` imports to the same job).
use super::*;

fn outcome(text: &str, format: Format) -> String {
    match parse_jobs(text, format) {
        Ok(jobs) => {
            round_trips(&jobs);
            format!("ok:\n{}", job_yaml::to_yaml(&jobs))
        }
        Err(e) => format!("error: {e}"),
    }
}

/// YAML → XML → JSON → YAML gives the same jobs at every step.
fn round_trips(jobs: &[Job]) {
    let mut current = jobs.to_vec();
    for format in [Format::Xml, Format::Json, Format::Yaml, Format::Xml] {
        let text = export(&current, format);
        let back = parse_jobs(&text, format)
            .unwrap_or_else(|e| panic!("{} export does not read back: {e}\n{text}", format.name()));
        assert_eq!(
            back,
            jobs,
            "{} export changed the jobs:\n{text}",
            format.name()
        );
        current = back;
    }
}

macro_rules! case {
    ($name:ident, $format:ident, $text:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(outcome($text, Format::$format));
        }
    };
}

// XML, as Rundeck exports it: sorted elements, single-quoted attributes,
// CDATA scripts, options under <context>, <dispatch> beside <nodefilters>.
case!(
    xml_rundeck_export,
    Xml,
    r#"<joblist>
  <job>
    <context>
      <options preserveOrder='true'>
        <option enforcedvalues='true' name='env' required='true' value='qa' values='qa,prod' valuesListDelimiter=','>
          <description>Where to deploy</description>
          <label>Environment</label>
        </option>
        <option name='count' value='3' />
        <option name='token' secure='true' valueExposed='false' />
      </options>
    </context>
    <defaultTab>nodes</defaultTab>
    <description>Deploy the web tier</description>
    <dispatch>
      <excludePrecedence>true</excludePrecedence>
      <keepgoing>false</keepgoing>
      <rankOrder>ascending</rankOrder>
      <successOnEmptyNodeFilter>false</successOnEmptyNodeFilter>
      <threadcount>2</threadcount>
    </dispatch>
    <executionEnabled>true</executionEnabled>
    <group>ops/web</group>
    <id>0192f0c4-7c1e-7cc0-9a43-0d3c1a2b3c4d</id>
    <loglevel>INFO</loglevel>
    <name>deploy</name>
    <nodeFilterEditable>false</nodeFilterEditable>
    <nodefilters>
      <filter>tags: web</filter>
    </nodefilters>
    <nodesSelectedByDefault>true</nodesSelectedByDefault>
    <plugins />
    <scheduleEnabled>true</scheduleEnabled>
    <sequence keepgoing='false' strategy='node-first'>
      <command>
        <description>restart</description>
        <exec>systemctl restart nginx</exec>
      </command>
      <command>
        <script><![CDATA[#!/bin/sh
echo "deploying to $1 <&> done"
]]></script>
        <scriptargs>${option.env}</scriptargs>
        <scriptinterpreter>bash -e</scriptinterpreter>
      </command>
    </sequence>
    <uuid>0192f0c4-7c1e-7cc0-9a43-0d3c1a2b3c4d</uuid>
  </job>
</joblist>
"#
);

// Without preserveOrder, Rundeck sorts options by name.
case!(
    xml_options_sorted_without_preserve_order,
    Xml,
    "<joblist><job><context><options><option name='zeta'/><option name='alpha'/></options></context>\
     <description/><name>n</name><sequence><command><exec>echo ${option.alpha}</exec></command></sequence></job></joblist>"
);

// Rundeck 5.0 and 5.1 exported built-in steps as plugin steps.
case!(
    xml_builtin_plugin_steps,
    Xml,
    "<joblist><job><description/><name>n</name><sequence keepgoing='true' strategy='sequential'>\
     <command><node-step-plugin type='exec-command'><configuration><entry key='adhocRemoteString' value='ls -l'/></configuration></node-step-plugin></command>\
     <command><node-step-plugin type='script-inline'><configuration><entry key='adhocLocalString' value='echo x'/><entry key='argString' value='a b'/><entry key='interpreterArgsQuoted' value='false'/></configuration></node-step-plugin></command>\
     </sequence></job></joblist>"
);

case!(
    xml_unknown_element_names_line_and_element,
    Xml,
    "<joblist>\n  <job>\n    <description/>\n    <name>n</name>\n    <sequence>\n      <command>\n        <exce>ls</exce>\n      </command>\n    </sequence>\n  </job>\n</joblist>\n"
);

case!(
    xml_not_supported_yet_names_the_key,
    Xml,
    "<joblist>\n  <job>\n    <description/>\n    <name>n</name>\n    <orchestrator><type>rankTiered</type></orchestrator>\n    <sequence><command><exec>ls</exec></command></sequence>\n  </job>\n</joblist>\n"
);

// Rundeck reads a crontab and writes the structured form back.
case!(
    xml_schedule_crontab_is_exported_structured,
    Xml,
    "<joblist>\n  <job>\n    <description/>\n    <name>n</name>\n    <schedule crontab='0 0 12 * * ?'/>\n    <sequence><command><exec>ls</exec></command></sequence>\n    <timeZone>Europe/Paris</timeZone>\n  </job>\n</joblist>\n"
);

case!(
    xml_schedule_and_notification_as_rundeck_exports_them,
    Xml,
    r#"<joblist>
  <job>
    <name>nightly</name>
    <notification>
      <onfailure>
        <email recipients='ops@x.com' subject='FAILED'/>
        <format>json</format>
        <httpMethod>post</httpMethod>
        <webhook urls='https://hooks.example/rd'/>
      </onfailure>
      <onsuccess>
        <plugin type='slack'><configuration><entry key='channel' value='#ops'/></configuration></plugin>
      </onsuccess>
    </notification>
    <notifyAvgDurationThreshold>+30</notifyAvgDurationThreshold>
    <schedule>
      <month month='*'/>
      <time hour='02' minute='30' seconds='0'/>
      <weekday day='MON-FRI'/>
      <year year='*'/>
    </schedule>
    <scheduleEnabled>false</scheduleEnabled>
    <sequence><command><exec>ls</exec></command></sequence>
  </job>
</joblist>
"#
);

case!(
    yaml_schedule_and_notification_as_rundeck_exports_them,
    Yaml,
    "- name: nightly\n  schedule:\n    month: '*'\n    time: {hour: '02', minute: '30', seconds: '0'}\n    dayofmonth: {day: '1'}\n    year: '*'\n  timeZone: America/New_York\n  notification:\n    onsuccess:\n    - email: {recipients: a@x.com}\n    - email: {recipients: b@x.com, attachLog: true}\n    onstart:\n      urls: http://h/start\n  notifyAvgDurationThreshold: 20%\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_notification_bare_recipients_is_refused,
    Yaml,
    "- name: n\n  notification:\n    onfailure:\n      recipients: ops@x.com\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    xml_log_limit_is_the_logging_element,
    Xml,
    "<joblist>\n  <job>\n    <description/>\n    <logging limit='100MB' limitAction='halt'/>\n    <name>n</name>\n    <sequence><command><exec>ls</exec></command></sequence>\n  </job>\n</joblist>\n"
);

case!(
    xml_bad_flag,
    Xml,
    "<joblist>\n  <job>\n    <description/>\n    <executionEnabled>maybe</executionEnabled>\n    <name>n</name>\n    <sequence><command><exec>ls</exec></command></sequence>\n  </job>\n</joblist>\n"
);

case!(xml_wrong_root, Xml, "<jobs>\n  <job/>\n</jobs>\n");

case!(
    xml_not_well_formed,
    Xml,
    "<joblist>\n  <job>\n    <name>n</nam>\n  </job>\n</joblist>\n"
);

case!(
    json_rundeck_export,
    Json,
    r#"[ {
  "defaultTab" : "output",
  "description" : "",
  "executionEnabled" : true,
  "id" : "0192f0c4-7c1e-7cc0-9a43-0d3c1a2b3c4e",
  "loglevel" : "INFO",
  "name" : "json-job",
  "nodeFilterEditable" : false,
  "options" : [ {
    "name" : "size",
    "value" : "10",
    "values" : [ "10", "20" ],
    "valuesListDelimiter" : ","
  } ],
  "plugins" : {
    "ExecutionLifecycle" : null
  },
  "scheduleEnabled" : true,
  "schedules" : [ ],
  "sequence" : {
    "commands" : [ {
      "autoSecureInput" : "false",
      "exec" : "echo ${option.size}",
      "passSecureInput" : "false"
    } ],
    "keepgoing" : false,
    "strategy" : "node-first"
  },
  "uuid" : "0192f0c4-7c1e-7cc0-9a43-0d3c1a2b3c4e"
} ]
"#
);

case!(
    json_unknown_key_names_line,
    Json,
    "[\n  {\n    \"name\": \"n\",\n    \"sequence\": {\"commands\": [{\"exec\": \"ls\"}]},\n    \"exectionEnabled\": true\n  }\n]\n"
);

case!(json_not_a_list, Json, "{\"name\": \"n\"}");

// Job references and error handlers, as Rundeck's YAML codec writes them:
// flags as text, `args` as one option string, a handler under its step.
case!(
    yaml_jobref_and_errorhandler,
    Yaml,
    r#"- name: parent
  options:
  - name: env
    value: qa
  sequence:
    keepgoing: false
    commands:
    - jobref:
        group: ops/web
        name: deploy
        args: -env ${option.env} -msg "two words"
        importOptions: 'true'
        failOnDisable: true
        ignoreNotifications: false
        nodeStep: 'false'
        useName: 'true'
        uuid: 0190f1c2-58a4-7cc2-9d1e-2a3b4c5d6e7f
        nodefilters:
          filter: 'tags: web'
          dispatch:
            threadcount: '2'
            keepgoing: 'true'
            rankOrder: descending
      description: deploy it
      errorhandler:
        exec: echo deploy failed
        keepgoingOnSuccess: true
    - exec: ./check.sh
      errorhandler:
        script: |-
          echo cleaning up
          exit 0
        args: -v
    - jobref:
        uuid: 0190f1c2-58a4-7cc2-9d1e-000000000001
"#
);

// The same in XML: <arg line>, <dispatch> beside <nodefilters>, and the
// handler's keepgoingOnSuccess as an attribute.
case!(
    xml_jobref_and_errorhandler,
    Xml,
    r#"<joblist>
  <job>
    <description></description>
    <name>parent</name>
    <sequence keepgoing='false' strategy='node-first'>
      <command>
        <errorhandler keepgoingOnSuccess='true'>
          <exec>echo deploy failed</exec>
        </errorhandler>
        <jobref group='ops/web' name='deploy' nodeStep='false'>
          <arg line='-env prod' />
          <dispatch>
            <keepgoing>true</keepgoing>
            <threadcount>2</threadcount>
          </dispatch>
          <importOptions>true</importOptions>
          <nodefilters>
            <filter>tags: web</filter>
          </nodefilters>
          <useName>true</useName>
          <uuid>0190f1c2-58a4-7cc2-9d1e-2a3b4c5d6e7f</uuid>
        </jobref>
      </command>
      <command>
        <errorhandler>
          <script><![CDATA[echo cleaning
exit 0]]></script>
          <scriptargs>-v</scriptargs>
        </errorhandler>
        <exec>./check.sh</exec>
      </command>
    </sequence>
  </job>
</joblist>"#
);

case!(
    xml_jobref_unknown_key_names_its_element,
    Xml,
    "<joblist>\n  <job>\n    <description/>\n    <name>p</name>\n    <sequence>\n      <command>\n        <jobref name='c'>\n          <nodeFilter>x</nodeFilter>\n        </jobref>\n      </command>\n    </sequence>\n  </job>\n</joblist>"
);

// A node job is split around the steps that run once; a node-step
// reference runs once per node.
case!(
    yaml_jobrefs_in_a_step_first_node_job,
    Yaml,
    "- name: n\n  nodefilters:\n    filter: 'tags: web'\n  sequence:\n    strategy: sequential\n    commands:\n    - exec: a\n    - jobref: {name: child}\n    - jobref:\n        name: per-node\n        nodeStep: true\n        childNodes: true\n        args: -host ${node.name}\n        nodefilters:\n          filter: 'name: ${node.name}'\n          dispatch: {nodeIntersect: true, threadcount: 2}\n    - type: export-var\n      nodeStep: false\n      configuration: {export: x, value: y}\n    - exec: b\n"
);

case!(
    xml_jobrefs_in_a_step_first_node_job,
    Xml,
    "<joblist>\n  <job>\n    <name>n</name>\n    <nodefilters><filter>tags: web</filter></nodefilters>\n    <sequence strategy='sequential'>\n      <command><exec>a</exec></command>\n      <command>\n        <jobref name='per-node' nodeStep='true'>\n          <childNodes>true</childNodes>\n          <dispatch><nodeIntersect>true</nodeIntersect></dispatch>\n        </jobref>\n      </command>\n    </sequence>\n  </job>\n</joblist>"
);

// nodeIntersect is the one dispatch key Rundeck reads without a filter.
case!(
    yaml_jobref_node_intersect_without_a_filter,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - jobref:\n        name: child\n        nodefilters:\n          dispatch: {nodeIntersect: true}\n"
);

case!(
    yaml_jobref_dispatch_without_a_filter,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - jobref:\n        name: child\n        nodefilters:\n          dispatch: {nodeIntersect: true, threadcount: 2}\n"
);

case!(
    yaml_node_step_jobref_in_a_node_first_job_not_supported_yet,
    Yaml,
    "- name: n\n  nodefilters:\n    filter: 'tags: web'\n  sequence:\n    commands:\n    - exec: a\n    - jobref: {name: child, nodeStep: true}\n"
);

case!(
    yaml_jobref_in_a_parallel_node_job_not_supported_yet,
    Yaml,
    "- name: n\n  nodefilters:\n    filter: 'tags: web'\n  sequence:\n    strategy: parallel\n    commands:\n    - exec: a\n    - jobref: {name: child}\n"
);

// A node step's handler runs on each node where the step failed.
case!(
    yaml_errorhandler_in_a_node_job,
    Yaml,
    "- name: n\n  nodefilters:\n    filter: 'tags: web'\n  sequence:\n    commands:\n    - exec: a\n      errorhandler: {exec: b, keepgoingOnSuccess: true}\n"
);

case!(
    yaml_errorhandler_on_a_jobref_in_a_node_job_not_supported_yet,
    Yaml,
    "- name: n\n  nodefilters:\n    filter: 'tags: web'\n  sequence:\n    commands:\n    - exec: a\n    - jobref: {name: child}\n      errorhandler: {exec: b}\n"
);

case!(
    yaml_jobref_without_a_job,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - jobref:\n        group: ops\n"
);

case!(
    yaml_nested_errorhandler_is_refused,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - exec: a\n      errorhandler:\n        exec: b\n        errorhandler:\n          exec: c\n"
);

case!(
    yaml_keepgoing_on_success_outside_a_handler,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - exec: a\n      keepgoingOnSuccess: true\n"
);

case!(
    yaml_unknown_plugin_type_not_supported_yet,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - type: log-data-step\n      nodeStep: false\n      configuration:\n        logLevel: NORMAL\n"
);

// What Rundeck writes for unset features asks for nothing, and is accepted.
case!(
    yaml_empty_unbuilt_keys_are_accepted,
    Yaml,
    "- name: n\n  plugins:\n    ExecutionLifecycle: {}\n  schedules: []\n  loglimitAction: null\n  notification: {}\n  options:\n  - name: v\n    hidden: false\n    multivalued: false\n    values: 'b, a,b'\n  sequence:\n    pluginConfig: {}\n    commands:\n    - exec: echo ${option.v}\n"
);

case!(
    yaml_yaml11_and_text_flags,
    Yaml,
    "- name: n\n  executionEnabled: 'no'\n  sequence:\n    keepgoing: 'true'\n    commands:\n    - exec: ls\n"
);

// Rundeck writes the limit as text; 0 is no limit.
case!(
    yaml_multiple_executions_with_a_limit,
    Yaml,
    "- name: n\n  multipleExecutions: true\n  maxMultipleExecutions: '3'\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    xml_multiple_executions_with_a_limit,
    Xml,
    "<joblist>\n  <job>\n    <maxMultipleExecutions>2</maxMultipleExecutions>\n    <multipleExecutions>true</multipleExecutions>\n    <name>n</name>\n    <sequence><command><exec>ls</exec></command></sequence>\n  </job>\n</joblist>\n"
);

case!(
    yaml_max_multiple_executions_zero_is_no_limit,
    Yaml,
    "- name: n\n  multipleExecutions: 'true'\n  maxMultipleExecutions: 0\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_max_multiple_executions_not_a_number,
    Yaml,
    "- name: n\n  multipleExecutions: true\n  maxMultipleExecutions: lots\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_timeout_as_rundeck_writes_it,
    Yaml,
    "- name: n\n  timeout: 6h 30m\n  sequence:\n    commands:\n    - exec: ls\n- name: m\n  timeout: 120\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    xml_timeout_from_an_option,
    Xml,
    "<joblist>\n  <job>\n    <context><options><option name='limit' value='1h'/></options></context>\n    <name>n</name>\n    <sequence><command><exec>ls</exec></command></sequence>\n    <timeout>${option.limit}</timeout>\n  </job>\n</joblist>\n"
);

// Rundeck would read `1.5h` as 5 hours; Outpost refuses it, with its line.
case!(
    yaml_timeout_half_read_by_rundeck_is_refused,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - exec: ls\n  timeout: 1.5h\n"
);

case!(
    yaml_timeout_naming_an_undefined_option,
    Yaml,
    "- name: n\n  timeout: ${option.nope}\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_log_limit_as_rundeck_writes_it,
    Yaml,
    "- name: n\n  loglimit: 100MB\n  loglimitAction: truncate\n  loglimitStatus: aborted\n  sequence:\n    commands:\n    - exec: ls\n- name: m\n  loglimit: 500/node\n  loglimitAction: null\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_log_limit_custom_status_not_supported_yet,
    Yaml,
    "- name: n\n  loglimit: '1000'\n  loglimitStatus: tolerable\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_log_limit_unreadable,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - exec: ls\n  loglimit: 10 lines\n"
);

case!(
    yaml_log_limit_action_unknown,
    Yaml,
    "- name: n\n  loglimit: '10'\n  loglimitAction: stop\n  sequence:\n    commands:\n    - exec: ls\n"
);

// Both of Rundeck's forms, and the older top-level `retryDelay`.
case!(
    yaml_retry_as_rundeck_writes_it,
    Yaml,
    "- name: n\n  retry: '3'\n  sequence:\n    commands:\n    - exec: ls\n- name: m\n  options:\n  - name: tries\n  retry:\n    retry: ${option.tries}\n    delay: 1h1m1s\n  sequence:\n    commands:\n    - exec: ls\n- name: o\n  retry: 2\n  retryDelay: 30s\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    xml_retry_with_a_delay,
    Xml,
    "<joblist>\n  <job>\n    <name>n</name>\n    <retry delay='10s'>2</retry>\n    <sequence><command><exec>ls</exec></command></sequence>\n  </job>\n</joblist>\n"
);

case!(
    yaml_retry_not_a_number,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - exec: ls\n  retry: often\n"
);

case!(
    yaml_retry_unknown_key,
    Yaml,
    "- name: n\n  retry: {retry: 2, wait: 1s}\n  sequence:\n    commands:\n    - exec: ls\n"
);

// Script steps from a file on the runner and from a URL, with Rundeck's
// interpreter and file keys.
case!(
    yaml_script_file_and_url_steps,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - scriptfile: /opt/scripts/deploy.sh\n      args: -v\n      scriptInterpreter: sudo -u app bash -c\n      interpreterArgsQuoted: true\n      expandTokenInScriptFile: true\n    - scripturl: https://scripts.example.com/check.ps1\n      fileExtension: ps1\n      scriptInterpreter: pwsh -File\n"
);

case!(
    xml_script_file_and_url_steps,
    Xml,
    "<joblist>\n  <job>\n    <name>n</name>\n    <sequence>\n      <command>\n        <scriptargs>-v</scriptargs>\n        <scriptfile>/opt/scripts/deploy.sh</scriptfile>\n        <scriptinterpreter argsquoted='true'>bash -c</scriptinterpreter>\n      </command>\n      <command>\n        <fileExtension>py</fileExtension>\n        <scripturl>http://scripts.example.com/a.py</scripturl>\n      </command>\n    </sequence>\n  </job>\n</joblist>\n"
);

case!(
    yaml_scripturl_not_http,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - scripturl: ftp://example.com/a.sh\n"
);

case!(
    yaml_two_script_sources,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - script: echo hi\n      scriptfile: /a.sh\n"
);

// The plugin steps Rundeck's core ships, as its YAML codec writes them.
case!(
    yaml_core_plugin_steps,
    Yaml,
    "- name: n\n  options:\n  - {name: env, value: qa}\n  sequence:\n    commands:\n    - type: export-var\n      nodeStep: false\n      configuration: {export: target, group: export, value: 'web-${option.env}'}\n    - type: localexec\n      nodeStep: true\n      configuration: {command: 'echo ${export.target}'}\n    - type: flow-control\n      configuration: {halt: 'true', fail: 'false'}\n"
);

case!(
    xml_core_plugin_steps,
    Xml,
    "<joblist><job><name>n</name><sequence>\
     <command><step-plugin type='flow-control'><configuration><entry key='halt' value='true'/><entry key='status' value='succeeded'/></configuration></step-plugin></command>\
     <command><node-step-plugin type='localexec'><configuration><entry key='command' value='uptime'/></configuration></node-step-plugin></command>\
     </sequence></job></joblist>"
);

case!(
    yaml_unknown_plugin_step_type_lists_the_known,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - type: my-company-step\n      configuration: {a: b}\n"
);

case!(
    yaml_integration_plugin_step_not_supported_yet,
    Yaml,
    "- name: n\n  sequence:\n    commands:\n    - type: job-state-conditional\n      nodeStep: false\n      configuration: {jobName: other}\n"
);

// Flow steps run once, between a node job's node runs.
case!(
    yaml_flow_steps_in_a_node_job,
    Yaml,
    "- name: n\n  nodefilters: {filter: 'tags: web'}\n  sequence:\n    commands:\n    - exec: a\n    - type: export-var\n      nodeStep: false\n      configuration: {export: a, value: b}\n    - type: flow-control\n      nodeStep: false\n      configuration: {halt: 'true', fail: 'false'}\n"
);

// Every option attribute Rundeck documents that runs or is kept.
case!(
    yaml_option_rules_and_hints,
    Yaml,
    "- name: n\n  options:\n  - name: version\n    regex: '\\d+\\.\\d+'\n    value: '2.1'\n  - name: hosts\n    multivalued: true\n    delimiter: ','\n    values: [web1, web2, db1]\n    enforced: true\n    multivalueAllSelected: true\n    sortValues: true\n  - name: when\n    isDate: true\n    dateFormat: YYYY-MM-DD\n    hidden: true\n    value: '2026-01-01'\n  sequence:\n    commands:\n    - exec: echo ${option.version} ${option.hosts} ${option.when}\n"
);

case!(
    xml_option_rules_and_hints,
    Xml,
    "<joblist><job><context><options preserveOrder='true'>\
     <option name='version' regex='[0-9]+' value='3'/>\
     <option delimiter=' ' multivalued='true' name='tags' values='a,b' enforcedvalues='true'/>\
     </options></context><name>n</name><sequence><command><exec>ls</exec></command></sequence></job></joblist>"
);

case!(
    yaml_option_default_breaks_its_regex,
    Yaml,
    "- name: n\n  options:\n  - name: version\n    regex: '[0-9]+'\n    value: latest\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_option_regex_this_engine_cannot_run,
    Yaml,
    "- name: n\n  options:\n  - name: v\n    regex: '(?!x).*'\n  sequence:\n    commands:\n    - exec: ls\n"
);

case!(
    yaml_option_multivalued_without_delimiter,
    Yaml,
    "- name: n\n  options:\n  - name: v\n    multivalued: true\n  sequence:\n    commands:\n    - exec: ls\n"
);

#[test]
fn a_jobs_running_limit_is_rundecks() {
    let limit = |yaml: &str| {
        let text = format!("- name: n\n{yaml}  sequence:\n    commands:\n    - exec: ls\n");
        parse_jobs(&text, Format::Yaml).unwrap()[0].running_limit()
    };
    assert_eq!(limit(""), Some(1), "absent is one at a time, as in Rundeck");
    assert_eq!(limit("  multipleExecutions: false\n"), Some(1));
    assert_eq!(limit("  multipleExecutions: true\n"), None);
    assert_eq!(
        limit("  multipleExecutions: true\n  maxMultipleExecutions: '4'\n"),
        Some(4)
    );
    // Rundeck reads the limit only when multiple executions are on.
    assert_eq!(limit("  maxMultipleExecutions: '4'\n"), Some(1));
}

#[test]
fn formats_are_told_apart() {
    assert_eq!(Format::sniff("  <joblist/>"), Format::Xml);
    assert_eq!(Format::sniff("\u{feff}[ {"), Format::Json);
    assert_eq!(Format::sniff("- name: x"), Format::Yaml);
    assert_eq!(
        Format::from_media_type("application/xml; charset=utf-8"),
        Some(Format::Xml)
    );
    assert_eq!(Format::from_media_type("text/xml"), Some(Format::Xml));
    assert_eq!(
        Format::from_media_type("application/x-yaml"),
        Some(Format::Yaml)
    );
    assert_eq!(
        Format::from_media_type("application/json"),
        Some(Format::Json)
    );
    assert_eq!(Format::from_media_type("text/plain"), None);
    assert_eq!(Format::from_name("YML"), Some(Format::Yaml));
}

/// Values that hold the usual delimiter still export and read back whole.
#[test]
fn option_values_with_commas_survive_xml() {
    let yaml = "- name: n\n  options:\n  - name: v\n    values: ['a,b', 'c']\n    enforced: true\n    value: 'a,b'\n  sequence:\n    commands:\n    - exec: echo ${option.v}\n";
    let jobs = parse_jobs(yaml, Format::Yaml).unwrap();
    round_trips(&jobs);
    assert!(export(&jobs, Format::Xml).contains("valuesListDelimiter='|'"));
}
