//! Rundeck job XML (`job-v20`): a `<joblist>` of `<job>`s.
//!
//! Read as Rundeck's own codec reads it: every attribute and child element
//! becomes a key of the job's map (so either spelling works), with the
//! renames the codec makes (`<context><options>` to `options`,
//! `<scriptargs>` to `args`, the job's `<dispatch>` into `nodefilters`,
//! `<logging>` to `loglimit`…). That map is the YAML format's shape, so the
//! same definitions check it; each key remembers where it was read, so an
//! error names its line and element.

use std::collections::HashMap;

use outpost_schemas::job::{Command, Job, JobOption, NodeDispatch, RunnerSelector};
use roxmltree::{Document, Node};
use serde_json::{Map, Value};

use super::{tidy_message, JobFileError};
use crate::contract::wire_word as word;

pub fn parse_jobs(text: &str) -> Result<Vec<Job>, JobFileError> {
    let doc = Document::parse(text).map_err(|e| JobFileError {
        path: String::new(),
        line: Some(e.pos().row as usize),
        column: Some(e.pos().col as usize),
        element: None,
        message: format!("not well-formed XML: {e}"),
    })?;
    let mut reader = Reader {
        doc: &doc,
        places: HashMap::new(),
    };
    let root = doc.root_element();
    if root.tag_name().name() != "joblist" {
        return Err(reader.error_at(
            root,
            root.tag_name().name(),
            format!(
                "the document's root is <{}>; Rundeck job XML is a <joblist> of <job> elements",
                root.tag_name().name()
            ),
        ));
    }
    let mut jobs = Vec::new();
    for (i, (node, element)) in children(root, "joblist").into_iter().enumerate() {
        if node.tag_name().name() != "job" {
            return Err(reader.error_at(
                node,
                &element,
                format!(
                    "unexpected <{}>; a <joblist> holds <job> elements",
                    node.tag_name().name()
                ),
            ));
        }
        let path = format!("[{i}]");
        reader.note(&path, node, &element);
        jobs.push(reader.job(node, &path, &element)?);
    }
    if jobs.is_empty() {
        return Err(reader.error_at(root, "joblist", "no <job> element".into()));
    }
    serde_path_to_error::deserialize(Value::Array(jobs)).map_err(|err| {
        let path = err.path().to_string();
        let message = tidy_message(&path, err.into_inner().to_string());
        let place = reader.place(&path);
        let pos = place.map(|p| doc.text_pos_at(p.offset));
        JobFileError {
            line: pos.map(|p| p.row as usize),
            column: pos.map(|p| p.col as usize),
            element: place.map(|p| p.element.clone()),
            path,
            message,
        }
    })
}

/// Where a key of the map was read.
struct Place {
    /// Byte offset in the text.
    offset: usize,
    element: String,
}

struct Reader<'a, 'input> {
    doc: &'a Document<'input>,
    /// By field path as serde reports it (`[0].sequence.commands[1].exec`).
    places: HashMap<String, Place>,
}

/// A node's element children, each with its element path (an index when
/// the name repeats among its siblings).
fn children<'a, 'input>(node: Node<'a, 'input>, element: &str) -> Vec<(Node<'a, 'input>, String)> {
    let kids: Vec<Node> = node.children().filter(Node::is_element).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    kids.iter()
        .map(|k| {
            let name = k.tag_name().name();
            let total = kids.iter().filter(|o| o.tag_name().name() == name).count();
            let n = seen.entry(name).or_default();
            *n += 1;
            let path = if total > 1 {
                format!("{element}/{name}[{n}]")
            } else {
                format!("{element}/{name}")
            };
            (*k, path)
        })
        .collect()
}

/// The element's text, CDATA included, white space kept (as Rundeck's
/// codec keeps it).
fn text(node: Node) -> String {
    node.children()
        .filter(Node::is_text)
        .filter_map(|c| c.text())
        .collect()
}

/// Puts `value` under `key`; a key given twice becomes a list, as Rundeck's
/// codec makes it (and the model then refuses it where one value belongs).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get_mut(key) {
        None => {
            map.insert(key.to_string(), value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

impl Reader<'_, '_> {
    // Places keep byte offsets: turning one into a line scans the text
    // from its start, so that is done only for the error's place.
    fn note(&mut self, path: &str, node: Node, element: &str) {
        self.places.insert(
            path.to_string(),
            Place {
                offset: node.range().start,
                element: element.to_string(),
            },
        );
    }

    fn note_attribute(&mut self, path: &str, attr: &roxmltree::Attribute, element: &str) {
        self.places.insert(
            path.to_string(),
            Place {
                offset: attr.range().start,
                element: format!("{element} @{}", attr.name()),
            },
        );
    }

    /// Every attribute of `node` as a key of `map`, each noted.
    fn attributes(&mut self, node: Node, path: &str, element: &str, map: &mut Map<String, Value>) {
        for attr in node.attributes() {
            self.note_attribute(&format!("{path}.{}", attr.name()), &attr, element);
            put(map, attr.name(), Value::String(attr.value().to_string()));
        }
    }

    /// The place of `path`, or of the nearest field above it.
    fn place(&self, path: &str) -> Option<&Place> {
        let mut p = path;
        loop {
            if let Some(place) = self.places.get(p) {
                return Some(place);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    fn error_at(&self, node: Node, element: &str, message: String) -> JobFileError {
        let pos = self.doc.text_pos_at(node.range().start);
        JobFileError {
            path: String::new(),
            line: Some(pos.row as usize),
            column: Some(pos.col as usize),
            element: Some(element.to_string()),
            message,
        }
    }

    /// Any element, read as Rundeck's codec reads one: text if it has
    /// neither attributes nor child elements, else a map of both.
    fn generic(&mut self, node: Node, path: &str, element: &str) -> Value {
        self.note(path, node, element);
        let kids = children(node, element);
        if node.attributes().len() == 0 && kids.is_empty() {
            return Value::String(text(node));
        }
        let mut map = Map::new();
        self.attributes(node, path, element, &mut map);
        self.put_children(&mut map, &kids, path);
        let t = text(node);
        if !t.trim().is_empty() {
            map.insert("<text>".into(), Value::String(t));
        }
        Value::Object(map)
    }

    fn put_children(&mut self, map: &mut Map<String, Value>, kids: &[(Node, String)], path: &str) {
        let mut index: HashMap<String, usize> = HashMap::new();
        for (kid, element) in kids {
            let name = kid.tag_name().name();
            let repeats = kids
                .iter()
                .filter(|(k, _)| k.tag_name().name() == name)
                .count()
                > 1;
            let p = if repeats {
                let i = index.entry(name.to_string()).or_default();
                *i += 1;
                format!("{path}.{name}[{}]", *i - 1)
            } else {
                format!("{path}.{name}")
            };
            let value = self.generic(*kid, &p, element);
            put(map, name, value);
        }
    }

    fn job(&mut self, node: Node, path: &str, element: &str) -> Result<Value, JobFileError> {
        let mut map = Map::new();
        let mut dispatch = None;
        for (kid, el) in children(node, element) {
            let name = kid.tag_name().name();
            let p = format!("{path}.{name}");
            match name {
                "context" => {
                    for (c, cel) in children(kid, &el) {
                        let cname = c.tag_name().name();
                        let cp = format!("{path}.{cname}");
                        let value = match cname {
                            "options" => self.options(c, &cp, &cel)?,
                            _ => self.generic(c, &cp, &cel),
                        };
                        put(&mut map, cname, value);
                    }
                }
                "dispatch" => {
                    let dp = format!("{path}.nodefilters.dispatch");
                    self.note(&format!("{path}.nodefilters"), kid, &el);
                    dispatch = Some(self.generic(kid, &dp, &el));
                }
                "sequence" => {
                    let value = self.sequence(kid, &p, &el)?;
                    put(&mut map, "sequence", value);
                }
                "logging" => {
                    for attr in kid.attributes() {
                        let key = match attr.name() {
                            "limit" => "loglimit",
                            "limitAction" => "loglimitAction",
                            "status" => "loglimitStatus",
                            other => other,
                        };
                        self.note_attribute(&format!("{path}.{key}"), &attr, &el);
                        put(&mut map, key, Value::String(attr.value().to_string()));
                    }
                }
                "retry" => {
                    self.note(&p, kid, &el);
                    put(&mut map, "retry", Value::String(text(kid)));
                    if let Some(delay) = kid.attribute_node("delay") {
                        self.note_attribute(&format!("{path}.retryDelay"), &delay, &el);
                        put(
                            &mut map,
                            "retryDelay",
                            Value::String(delay.value().to_string()),
                        );
                    }
                }
                _ => {
                    let value = self.generic(kid, &p, &el);
                    put(&mut map, name, value);
                }
            }
        }
        if let Some(d) = dispatch {
            let filters = map
                .entry("nodefilters")
                .or_insert_with(|| Value::Object(Map::new()));
            match filters {
                Value::Object(f) => {
                    f.insert("dispatch".into(), d);
                }
                _ => {
                    return Err(self.error_at(
                        node,
                        element,
                        "<nodefilters> must hold a <filter> element for <dispatch> to go with"
                            .into(),
                    ))
                }
            }
        }
        Ok(Value::Object(map))
    }

    /// `<options preserveOrder='true'>`: in document order; otherwise
    /// Rundeck sorts them by name.
    fn options(&mut self, node: Node, path: &str, element: &str) -> Result<Value, JobFileError> {
        self.note(path, node, element);
        let mut options = Vec::new();
        for (i, (kid, el)) in children(node, element).into_iter().enumerate() {
            if kid.tag_name().name() != "option" {
                return Err(self.error_at(
                    kid,
                    &el,
                    format!(
                        "unexpected <{}>; <options> holds <option> elements",
                        kid.tag_name().name()
                    ),
                ));
            }
            let mut value = self.generic(kid, &format!("{path}[{i}]"), &el);
            if let Value::Object(map) = &mut value {
                if let Some(v) = map.remove("enforcedvalues") {
                    map.insert("enforced".into(), v);
                    if let Some(place) = self.places.remove(&format!("{path}[{i}].enforcedvalues"))
                    {
                        self.places.insert(format!("{path}[{i}].enforced"), place);
                    }
                }
            }
            options.push(value);
        }
        let ordered = node
            .attribute("preserveOrder")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if !ordered {
            // Positions were noted by document index; sorting would move
            // errors onto other options, so sort only what is valid to sort.
            if options
                .iter()
                .all(|o| o.get("name").is_some_and(Value::is_string))
            {
                let mut indexed: Vec<(usize, Value)> = options.into_iter().enumerate().collect();
                indexed.sort_by(|a, b| a.1["name"].as_str().cmp(&b.1["name"].as_str()));
                let moved: Vec<(String, String)> = indexed
                    .iter()
                    .enumerate()
                    .map(|(to, (from, _))| (format!("{path}[{from}]"), format!("{path}[{to}]")))
                    .collect();
                self.renumber(&moved);
                options = indexed.into_iter().map(|(_, v)| v).collect();
            }
        }
        Ok(Value::Array(options))
    }

    /// Moves the noted places of list items to their new indexes.
    fn renumber(&mut self, moved: &[(String, String)]) {
        let mut renamed = HashMap::new();
        for (key, place) in self.places.drain() {
            let new = moved
                .iter()
                .find(|(from, _)| {
                    key == *from
                        || key.starts_with(&format!("{from}."))
                        || key.starts_with(&format!("{from}["))
                })
                .map(|(from, to)| format!("{to}{}", &key[from.len()..]))
                .unwrap_or(key);
            renamed.insert(new, place);
        }
        self.places = renamed;
    }

    fn sequence(&mut self, node: Node, path: &str, element: &str) -> Result<Value, JobFileError> {
        self.note(path, node, element);
        let mut map = Map::new();
        self.attributes(node, path, element, &mut map);
        let mut commands = Vec::new();
        let commands_path = format!("{path}.commands");
        self.note(&commands_path, node, element);
        for (kid, el) in children(node, element) {
            let name = kid.tag_name().name();
            if name == "command" {
                let p = format!("{commands_path}[{}]", commands.len());
                commands.push(self.command(kid, &p, &el));
            } else {
                let value = self.generic(kid, &format!("{path}.{name}"), &el);
                put(&mut map, name, value);
            }
        }
        map.insert("commands".into(), Value::Array(commands));
        Ok(Value::Object(map))
    }

    fn command(&mut self, node: Node, path: &str, element: &str) -> Value {
        self.note(path, node, element);
        let mut map = Map::new();
        self.attributes(node, path, element, &mut map);
        for (kid, el) in children(node, element) {
            let name = kid.tag_name().name();
            let key = match name {
                "scriptargs" => "args",
                "scriptinterpreter" => "scriptInterpreter",
                "step-plugin" | "node-step-plugin" => {
                    self.plugin_step(kid, path, &el, &mut map);
                    continue;
                }
                other => other,
            };
            let p = format!("{path}.{key}");
            if key == "scriptInterpreter" {
                self.note(&p, kid, &el);
                put(&mut map, key, Value::String(text(kid)));
                if let Some(quoted) = kid.attribute_node("argsquoted") {
                    self.note_attribute(&format!("{path}.interpreterArgsQuoted"), &quoted, &el);
                    put(
                        &mut map,
                        "interpreterArgsQuoted",
                        Value::String(quoted.value().to_string()),
                    );
                }
                continue;
            }
            let value = self.generic(kid, &p, &el);
            put(&mut map, key, value);
        }
        Value::Object(map)
    }

    /// `<step-plugin type='t'><configuration><entry key='k' value='v'/>…`
    fn plugin_step(&mut self, node: Node, path: &str, element: &str, map: &mut Map<String, Value>) {
        let node_step = node.tag_name().name() == "node-step-plugin";
        self.attributes(node, path, element, map);
        self.note(&format!("{path}.nodeStep"), node, element);
        put(map, "nodeStep", Value::Bool(node_step));
        for (kid, el) in children(node, element) {
            let name = kid.tag_name().name();
            let p = format!("{path}.{name}");
            if name != "configuration" {
                let value = self.generic(kid, &p, &el);
                put(map, name, value);
                continue;
            }
            self.note(&p, kid, &el);
            let mut config = Map::new();
            for (entry, eel) in children(kid, &el) {
                let key = entry.attribute("key").unwrap_or_default().to_string();
                self.note(&format!("{p}.{key}"), entry, &eel);
                let value = entry
                    .attribute("value")
                    .map(str::to_string)
                    .unwrap_or_else(|| text(entry));
                put(&mut config, &key, Value::String(value));
            }
            put(map, "configuration", Value::Object(config));
        }
    }
}

/// Writes jobs as Rundeck's XML codec does: elements and attributes in
/// name order, attributes in single quotes, multi-line text as CDATA.
pub fn to_xml(jobs: &[Job]) -> String {
    let mut w = Writer::default();
    w.open("joblist", &[]);
    for job in jobs {
        write_job(&mut w, job);
    }
    w.close("joblist");
    w.out
}

fn write_job(w: &mut Writer, job: &Job) {
    w.open("job", &[]);
    if !job.options.is_empty() {
        w.open("context", &[]);
        w.open("options", &[("preserveOrder", "true".into())]);
        for o in &job.options {
            write_option(w, o);
        }
        w.close("options");
        w.close("context");
    }
    w.leaf("description", &job.description);
    if let Some(n) = &job.nodefilters {
        write_dispatch(w, &n.dispatch);
    }
    w.leaf("executionEnabled", &job.execution_enabled.to_string());
    if let Some(g) = &job.group {
        w.leaf("group", g);
    }
    if let Some(u) = job.uuid {
        w.leaf("id", &u.to_string());
    }
    w.leaf("loglevel", &word(&job.loglevel));
    w.leaf("name", &job.name);
    if let Some(n) = &job.nodefilters {
        w.open("nodefilters", &[]);
        w.leaf("filter", &n.filter);
        w.close("nodefilters");
    }
    if let Some(r) = &job.runner_selector {
        write_selector(w, r);
    }
    w.open(
        "sequence",
        &[
            ("keepgoing", job.sequence.keepgoing.to_string()),
            ("strategy", word(&job.sequence.strategy)),
        ],
    );
    for c in &job.sequence.commands {
        write_command(w, c);
    }
    w.close("sequence");
    if let Some(u) = job.uuid {
        w.leaf("uuid", &u.to_string());
    }
    w.close("job");
}

fn write_option(w: &mut Writer, o: &JobOption) {
    let mut attrs: Vec<(&str, String)> = Vec::new();
    if o.enforced {
        attrs.push(("enforcedvalues", "true".into()));
    }
    attrs.push(("name", o.name.clone()));
    if o.required {
        attrs.push(("required", "true".into()));
    }
    if o.secure {
        attrs.push(("secure", "true".into()));
    }
    if let Some(v) = &o.value {
        attrs.push(("value", v.clone()));
    }
    if !o.values.is_empty() {
        // A delimiter that no value contains, so the list splits back whole.
        let delimiter = [",", "|", ";", "~", "^"]
            .into_iter()
            .find(|d| !o.values.iter().any(|v| v.contains(d)))
            .unwrap_or(",");
        attrs.push(("values", o.values.join(delimiter)));
        attrs.push(("valuesListDelimiter", delimiter.into()));
    }
    let has_children = o.description.is_some() || o.label.is_some();
    if !has_children {
        w.empty("option", &attrs);
        return;
    }
    w.open("option", &attrs);
    if let Some(d) = &o.description {
        w.leaf("description", d);
    }
    if let Some(l) = &o.label {
        w.leaf("label", l);
    }
    w.close("option");
}

fn write_dispatch(w: &mut Writer, d: &NodeDispatch) {
    w.open("dispatch", &[]);
    w.leaf("excludePrecedence", &d.exclude_precedence.to_string());
    w.leaf("keepgoing", &d.keepgoing.to_string());
    if let Some(a) = &d.rank_attribute {
        w.leaf("rankAttribute", a);
    }
    w.leaf("rankOrder", &word(&d.rank_order));
    w.leaf(
        "successOnEmptyNodeFilter",
        &d.success_on_empty_node_filter.to_string(),
    );
    w.leaf("threadcount", &d.threadcount.to_string());
    w.close("dispatch");
}

fn write_selector(w: &mut Writer, r: &RunnerSelector) {
    w.open("runnerSelector", &[]);
    w.leaf("filter", &r.filter);
    w.leaf("runnerFilterMode", &word(&r.mode));
    w.leaf("runnerFilterType", &word(&r.filter_type));
    w.close("runnerSelector");
}

fn write_command(w: &mut Writer, c: &Command) {
    w.open("command", &[]);
    if let Some(d) = &c.description {
        w.leaf("description", d);
    }
    if let Some(e) = &c.exec {
        w.leaf("exec", e);
    }
    if let Some(r) = &c.runner_selector {
        write_selector(w, r);
    }
    if let Some(s) = &c.script {
        w.cdata("script", s);
    }
    if let Some(a) = &c.args {
        w.leaf("scriptargs", a);
    }
    if let Some(i) = &c.script_interpreter {
        w.leaf("scriptinterpreter", i);
    }
    w.close("command");
}

#[derive(Default)]
struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("='");
            self.out.push_str(&escape(v, true));
            self.out.push('\'');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.start_tag(name, attrs);
        self.out.push_str(" />\n");
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// Text, as CDATA when it spans lines.
    fn leaf(&mut self, name: &str, text: &str) {
        if text.contains('\n') {
            return self.cdata(name, text);
        }
        self.start_tag(name, &[]);
        self.out.push('>');
        self.out.push_str(&escape(text, false));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn cdata(&mut self, name: &str, text: &str) {
        self.start_tag(name, &[]);
        self.out.push_str("><![CDATA[");
        self.out.push_str(&text.replace("]]>", "]]]]><![CDATA[>"));
        self.out.push_str("]]></");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }
}

fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if attribute => out.push_str("&apos;"),
            // A parser turns raw white space in an attribute into spaces.
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}
