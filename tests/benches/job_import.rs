//! `just bench`: a 200-job Rundeck XML file, read into jobs and imported
//! through the API, beside the floor of merely parsing the XML document.
//!
//! - read: `formats::parse_jobs` (XML → Rundeck's map → checked jobs);
//! - baseline: `roxmltree::Document::parse` of the same text;
//! - import: `POST /api/v1/project/{p}/jobs/import` on the real stack, until
//!   its answer (every job stored, each with its name-index create).

use std::time::{Duration, Instant};

use outpost_services::formats::{self, Format};
use outpost_tests::bench::{ms, report};
use outpost_tests::*;

const JOBS: usize = 200;
const READS: usize = 50;
const IMPORTS: usize = 10;

/// Jobs as Rundeck exports them: options, node dispatch, and three steps.
fn xml_file(jobs: usize) -> String {
    let mut s = String::from("<joblist>\n");
    for i in 0..jobs {
        s.push_str(&format!(
            r#"  <job>
    <context>
      <options preserveOrder='true'>
        <option enforcedvalues='true' name='env' required='true' value='qa' values='qa,staging,prod' valuesListDelimiter=','>
          <description>Where to deploy</description>
        </option>
        <option name='count' value='{i}' />
      </options>
    </context>
    <defaultTab>nodes</defaultTab>
    <description>Job number {i}</description>
    <dispatch>
      <excludePrecedence>true</excludePrecedence>
      <keepgoing>false</keepgoing>
      <rankOrder>ascending</rankOrder>
      <successOnEmptyNodeFilter>false</successOnEmptyNodeFilter>
      <threadcount>2</threadcount>
    </dispatch>
    <executionEnabled>true</executionEnabled>
    <group>bench/group{g}</group>
    <loglevel>INFO</loglevel>
    <name>job-{i}</name>
    <nodeFilterEditable>false</nodeFilterEditable>
    <nodefilters>
      <filter>tags: web !name: web{i}</filter>
    </nodefilters>
    <nodesSelectedByDefault>true</nodesSelectedByDefault>
    <scheduleEnabled>true</scheduleEnabled>
    <sequence keepgoing='false' strategy='node-first'>
      <command>
        <description>restart</description>
        <exec>systemctl restart app-{i}</exec>
      </command>
      <command>
        <script><![CDATA[#!/bin/sh
echo "deploying ${{1}} to $RD_OPTION_ENV"
]]></script>
        <scriptargs>${{option.count}}</scriptargs>
      </command>
      <command>
        <exec>echo done ${{option.env}}</exec>
      </command>
    </sequence>
  </job>
"#,
            g = i % 10
        ));
    }
    s.push_str("</joblist>\n");
    s
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let text = xml_file(JOBS);
    println!("a {JOBS}-job XML file: {} KiB", text.len() / 1024);
    assert_eq!(formats::parse_jobs(&text, Format::Xml).unwrap().len(), JOBS);

    let mut reads = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..READS {
        let t = Instant::now();
        let doc = roxmltree::Document::parse(&text).unwrap();
        floor.push(t.elapsed());
        drop(doc);
        let t = Instant::now();
        let jobs = formats::parse_jobs(&text, Format::Xml).unwrap();
        reads.push(t.elapsed());
        drop(jobs);
    }
    let (read, _) = report(&format!("read {JOBS} jobs from XML"), reads);
    let (parse, _) = report("baseline: parse the XML document alone", floor);
    println!(
        "reading is {:.1}x the bare XML parse",
        read.as_secs_f64() / parse.as_secs_f64()
    );

    let stack = Stack::start().await;
    let mut imports = Vec::new();
    for round in 0..IMPORTS {
        // A fresh project each time: every job is created, not updated.
        let project = format!("bench{round}");
        let (status, body) = stack
            .post_json("/projects", &serde_json::json!({ "name": project }))
            .await;
        assert_eq!(status, 201, "{body}");
        let t = Instant::now();
        let r = stack
            .http
            .post(stack.url(&format!("/project/{project}/jobs/import")))
            .header("content-type", "application/xml")
            .body(text.replace("<group>bench/", &format!("<group>{project}/")))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: outpost_services::contract::ImportResult = r.json().await.unwrap();
        imports.push(t.elapsed());
        assert_eq!(status, 200);
        assert_eq!(body.succeeded.len(), JOBS);
    }
    let (p50, p99) = report(&format!("import {JOBS} jobs through the API"), imports);
    println!(
        "import of a {JOBS}-job XML file: p50 {}, worst {} (target: under 1 s: {})",
        ms(p50),
        ms(p99),
        if p99 < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}
