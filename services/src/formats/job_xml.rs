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

use outpost_schemas::job::Job;
use roxmltree::{Document, Node};
use serde_json::{Map, Value};

use super::{tidy_message, JobFileError};

mod write;
pub use write::to_xml;

pub fn parse_jobs(text: &str) -> Result<Vec<Job>, JobFileError> {
    let doc = Document::parse(text).map_err(|e| JobFileError {
        path: String::new(),
        line: Some(e.pos().row as usize),
        column: Some(e.pos().col as usize),
        element: None,
        message: format!("not well-formed XML: {e}"),
    })?;
    let (reader, jobs) = read(&doc);
    serde_path_to_error::deserialize(Value::Array(jobs?)).map_err(|err| {
        let message = err.inner().to_string();
        let path = super::step_path(err.path().to_string(), &message);
        let message = tidy_message(&path, message);
        let mut e = reader.locate(&path);
        e.message = message;
        e
    })
}

/// Where the field at `path` (`[1].sequence.commands[0].jobref`) was read:
/// for faults found after parsing.
pub(crate) fn locate(text: &str, path: &str) -> Option<JobFileError> {
    let doc = Document::parse(text).ok()?;
    let (reader, _) = read(&doc);
    Some(reader.locate(path))
}

/// The `<joblist>` read into the YAML shape, with the place of each key.
fn read<'a, 'input>(
    doc: &'a Document<'input>,
) -> (Reader<'a, 'input>, Result<Vec<Value>, JobFileError>) {
    let mut reader = Reader {
        doc,
        places: HashMap::new(),
    };
    let root = doc.root_element();
    if root.tag_name().name() != "joblist" {
        let err = reader.error_at(
            root,
            root.tag_name().name(),
            format!(
                "the document's root is <{}>; Rundeck job XML is a <joblist> of <job> elements",
                root.tag_name().name()
            ),
        );
        return (reader, Err(err));
    }
    let mut jobs = Vec::new();
    for (i, (node, element)) in children(root, "joblist").into_iter().enumerate() {
        if node.tag_name().name() != "job" {
            let err = reader.error_at(
                node,
                &element,
                format!(
                    "unexpected <{}>; a <joblist> holds <job> elements",
                    node.tag_name().name()
                ),
            );
            return (reader, Err(err));
        }
        let path = format!("[{i}]");
        reader.note(&path, node, &element);
        match reader.job(node, &path, &element) {
            Ok(job) => jobs.push(job),
            Err(err) => return (reader, Err(err)),
        }
    }
    if jobs.is_empty() {
        let err = reader.error_at(root, "joblist", "no <job> element".into());
        return (reader, Err(err));
    }
    (reader, Ok(jobs))
}

/// `<schedule>` as Rundeck's XML codec reshapes it into the YAML form:
/// `<month month day>` is `month` and `dayofmonth.day`, `<year year>` is
/// `year`; `crontab` and `<time>`, `<weekday>` pass through.
fn schedule_from_xml(v: Value) -> Value {
    let Value::Object(mut m) = v else {
        return v;
    };
    if let Some(Value::Object(month)) = m.remove("month") {
        if let Some(day) = month.get("day").filter(|d| d.as_str() != Some("")) {
            m.insert("dayofmonth".into(), serde_json::json!({ "day": day }));
        }
        if let Some(mo) = month.get("month") {
            m.insert("month".into(), mo.clone());
        }
    }
    if let Some(Value::Object(year)) = m.remove("year") {
        if let Some(y) = year.get("year") {
            m.insert("year".into(), y.clone());
        }
    }
    Value::Object(m)
}

fn as_list(v: Option<Value>) -> Vec<Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(one) => vec![one],
    }
}

/// `<notification>` as Rundeck's XML codec reshapes it into the YAML
/// form: per trigger, one entry per `<email>` and per `<webhook>` (with a
/// sibling `<format>` and `<httpMethod>`, the older form, folded in), and
/// one entry holding every `<plugin>`, its `<configuration><entry key
/// value>` as a map. Anything else is left for the model to name.
fn notification_from_xml(v: Value) -> Value {
    let Value::Object(triggers) = v else {
        return v;
    };
    let mut out = Map::new();
    for (trigger, body) in triggers {
        let Value::Object(mut kids) = body else {
            out.insert(trigger, body);
            continue;
        };
        let mut entries: Vec<Value> = Vec::new();
        for e in as_list(kids.remove("email")) {
            entries.push(serde_json::json!({ "email": e }));
        }
        let format = kids.remove("format");
        let method = kids.remove("httpMethod");
        for w in as_list(kids.remove("webhook")) {
            let mut hook = match w {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("urls".into(), other);
                    m
                }
            };
            for (key, value) in [("format", &format), ("httpMethod", &method)] {
                if let Some(v) = value {
                    hook.entry(key).or_insert_with(|| v.clone());
                }
            }
            entries.push(Value::Object(hook));
        }
        let plugins: Vec<Value> = as_list(kids.remove("plugin"))
            .into_iter()
            .map(|p| {
                let Value::Object(mut p) = p else {
                    return p;
                };
                if let Some(Value::Object(mut config)) = p.remove("configuration") {
                    let mut flat = Map::new();
                    for e in as_list(config.remove("entry")) {
                        if let (Some(k), Some(v)) = (e.get("key"), e.get("value")) {
                            flat.insert(k.as_str().unwrap_or_default().to_string(), v.clone());
                        }
                    }
                    p.insert("configuration".into(), Value::Object(flat));
                }
                Value::Object(p)
            })
            .collect();
        if !plugins.is_empty() {
            entries.push(serde_json::json!({ "plugin": plugins }));
        }
        if !kids.is_empty() {
            entries.push(Value::Object(kids));
        }
        out.insert(trigger, Value::Array(entries));
    }
    Value::Object(out)
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

    /// An error at `path`'s place (or its nearest noted parent's), with no
    /// message yet.
    fn locate(&self, path: &str) -> JobFileError {
        let place = self.place(path);
        let pos = place.map(|p| self.doc.text_pos_at(p.offset));
        JobFileError {
            line: pos.map(|p| p.row as usize),
            column: pos.map(|p| p.col as usize),
            element: place.map(|p| p.element.clone()),
            path: path.to_string(),
            message: String::new(),
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
            let t = text(node);
            // `<plugins>` and `</plugins>` on two lines hold nothing, as
            // Rundeck's parser reads them.
            if t.trim().is_empty() && t.contains('\n') {
                return Value::String(String::new());
            }
            return Value::String(t);
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
                    // Attributes or child elements, as anywhere else; a key
                    // `<logging>` does not name stays under it, and is
                    // refused as unknown.
                    let value = self.generic(kid, &p, &el);
                    if let Value::Object(fields) = value {
                        let mut rest = Map::new();
                        for (k, v) in fields {
                            let key = match k.as_str() {
                                "limit" => "loglimit",
                                "limitAction" => "loglimitAction",
                                "status" => "loglimitStatus",
                                _ => {
                                    rest.insert(k, v);
                                    continue;
                                }
                            };
                            self.moved(&format!("{p}.{k}"), &format!("{path}.{key}"));
                            put(&mut map, key, v);
                        }
                        if !rest.is_empty() {
                            put(&mut map, "logging", Value::Object(rest));
                        }
                    } else if value.as_str().is_some_and(|t| !t.trim().is_empty()) {
                        put(&mut map, "logging", value);
                    }
                }
                "schedule" => {
                    let value = self.generic(kid, &p, &el);
                    put(&mut map, "schedule", schedule_from_xml(value));
                }
                "notification" => {
                    let value = self.generic(kid, &p, &el);
                    put(&mut map, "notification", notification_from_xml(value));
                }
                "retry" => {
                    self.only(kid, &el, &["delay"])?;
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
        // Rundeck's codec reads `<nodefilters excludeprecedence='…'>` (its
        // documented example) as the dispatch's `excludePrecedence`.
        let precedence = match map.get_mut("nodefilters") {
            Some(Value::Object(nf)) => nf.remove("excludeprecedence"),
            _ => None,
        };
        if let Some(v) = precedence {
            self.moved(
                &format!("{path}.nodefilters.excludeprecedence"),
                &format!("{path}.nodefilters.dispatch.excludePrecedence"),
            );
            match &mut dispatch {
                Some(Value::Object(d)) => {
                    d.entry("excludePrecedence").or_insert(v);
                }
                // Text in <dispatch> is refused by the model anyway.
                Some(Value::String(t)) if !t.trim().is_empty() => {}
                _ => dispatch = Some(serde_json::json!({ "excludePrecedence": v })),
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
        self.only_attributes(node, element, &["preserveOrder"])?;
        let mut preserve = node.attribute("preserveOrder").map(str::to_string);
        let mut kids = Vec::new();
        for (kid, el) in children(node, element) {
            // The attribute written as a child element, as anywhere else.
            if kid.tag_name().name() == "preserveOrder" {
                self.only(kid, &el, &[])?;
                preserve = Some(text(kid));
            } else {
                kids.push((kid, el));
            }
        }
        let mut options = Vec::new();
        for (i, (kid, el)) in kids.into_iter().enumerate() {
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
        let ordered = preserve.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
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
                commands.push(self.command(kid, &p, &el)?);
            } else {
                let value = self.generic(kid, &format!("{path}.{name}"), &el);
                put(&mut map, name, value);
            }
        }
        map.insert("commands".into(), Value::Array(commands));
        Ok(Value::Object(map))
    }

    fn command(&mut self, node: Node, path: &str, element: &str) -> Result<Value, JobFileError> {
        self.note(path, node, element);
        let mut map = Map::new();
        self.attributes(node, path, element, &mut map);
        for (kid, el) in children(node, element) {
            let name = kid.tag_name().name();
            let key = match name {
                "scriptargs" => "args",
                "scriptinterpreter" => "scriptInterpreter",
                "step-plugin" | "node-step-plugin" => {
                    self.plugin_step(kid, path, &el, &mut map)?;
                    continue;
                }
                "jobref" => {
                    let p = format!("{path}.jobref");
                    let value = self.jobref(kid, &p, &el);
                    put(&mut map, "jobref", value);
                    continue;
                }
                "errorhandler" => {
                    let p = format!("{path}.errorhandler");
                    let value = self.command(kid, &p, &el)?;
                    put(&mut map, "errorhandler", value);
                    continue;
                }
                other => other,
            };
            let p = format!("{path}.{key}");
            if key == "scriptInterpreter" {
                self.only(kid, &el, &["argsquoted"])?;
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
        Ok(Value::Object(map))
    }

    /// `<jobref name='n' group='g'><arg line='…'/><dispatch>…`: the
    /// option string is the `line` attribute of `<arg>`, and `<dispatch>`
    /// sits beside `<nodefilters>`, as Rundeck's codec writes them.
    fn jobref(&mut self, node: Node, path: &str, element: &str) -> Value {
        let mut value = self.generic(node, path, element);
        let Value::Object(map) = &mut value else {
            return value;
        };
        if let Some(Value::Object(mut arg)) = map.remove("arg") {
            if let Some(line) = arg.remove("line") {
                self.moved(&format!("{path}.arg.line"), &format!("{path}.args"));
                map.insert("args".into(), line);
            }
            // Anything else under <arg> is refused as an unknown key.
            if !arg.is_empty() {
                map.insert("arg".into(), Value::Object(arg));
            }
        }
        if let Some(dispatch) = map.remove("dispatch") {
            self.moved(
                &format!("{path}.dispatch"),
                &format!("{path}.nodefilters.dispatch"),
            );
            match map.get_mut("nodefilters") {
                Some(Value::Object(nf)) => {
                    nf.insert("dispatch".into(), dispatch);
                }
                // Without a filter the model refuses the dispatch, as it
                // should: there is nothing to dispatch to.
                _ => {
                    let mut nf = Map::new();
                    nf.insert("dispatch".into(), dispatch);
                    map.insert("nodefilters".into(), Value::Object(nf));
                }
            }
        }
        value
    }

    /// Carries the noted places under `from` over to `to`.
    fn moved(&mut self, from: &str, to: &str) {
        let keys: Vec<String> = self
            .places
            .keys()
            .filter(|k| *k == from || k.starts_with(&format!("{from}.")))
            .cloned()
            .collect();
        for k in keys {
            let place = self.places.remove(&k).expect("listed");
            self.places
                .insert(format!("{to}{}", &k[from.len()..]), place);
        }
    }

    /// `<step-plugin type='t'><configuration><entry key='k' value='v'/>…`
    fn plugin_step(
        &mut self,
        node: Node,
        path: &str,
        element: &str,
        map: &mut Map<String, Value>,
    ) -> Result<(), JobFileError> {
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
                if entry.tag_name().name() != "entry" {
                    return Err(self.error_at(
                        entry,
                        &eel,
                        format!(
                            "unexpected <{}>; <configuration> holds <entry key='…' value='…'/> elements",
                            entry.tag_name().name()
                        ),
                    ));
                }
                self.only(entry, &eel, &["key", "value"])?;
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
        Ok(())
    }

    /// Refuses, with its line, what an element that the codec reads by
    /// hand holds beyond the attributes it takes: nothing is dropped.
    fn only(&self, node: Node, element: &str, attributes: &[&str]) -> Result<(), JobFileError> {
        self.only_attributes(node, element, attributes)?;
        if let Some((kid, el)) = children(node, element).into_iter().next() {
            return Err(self.error_at(
                kid,
                &el,
                format!(
                    "unexpected <{}> inside <{}>",
                    kid.tag_name().name(),
                    node.tag_name().name()
                ),
            ));
        }
        Ok(())
    }

    fn only_attributes(
        &self,
        node: Node,
        element: &str,
        attributes: &[&str],
    ) -> Result<(), JobFileError> {
        if let Some(attr) = node.attributes().find(|a| !attributes.contains(&a.name())) {
            let pos = self.doc.text_pos_at(attr.range().start);
            return Err(JobFileError {
                path: String::new(),
                line: Some(pos.row as usize),
                column: Some(pos.col as usize),
                element: Some(format!("{element} @{}", attr.name())),
                message: format!(
                    "unknown attribute `{}`; <{}> takes {}",
                    attr.name(),
                    node.tag_name().name(),
                    if attributes.is_empty() {
                        "none".to_string()
                    } else {
                        attributes.join(", ")
                    }
                ),
            });
        }
        Ok(())
    }
}
