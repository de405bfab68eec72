//! The XML writer: jobs as Rundeck's XML codec writes them.

use outpost_schemas::job::{
    Command, Job, JobOption, JobRef, NodeDispatch, Notifications, Notify, RunnerSelector, Schedule,
};

use crate::contract::wire_word as word;

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
    if job.loglimit.is_some() || job.loglimit_action.is_some() || job.loglimit_status.is_some() {
        let mut attrs: Vec<(&str, String)> = Vec::new();
        if let Some(l) = &job.loglimit {
            attrs.push(("limit", l.clone()));
        }
        if let Some(a) = &job.loglimit_action {
            attrs.push(("limitAction", word(a)));
        }
        if let Some(st) = &job.loglimit_status {
            attrs.push(("status", word(st)));
        }
        w.empty("logging", &attrs);
    }
    if let Some(max) = job.max_multiple_executions {
        w.leaf("maxMultipleExecutions", &max.to_string());
    }
    if job.multiple_executions {
        w.leaf("multipleExecutions", "true");
    }
    w.leaf("name", &job.name);
    if let Some(n) = &job.notification {
        write_notification(w, n);
    }
    if let Some(t) = &job.notify_avg_duration_threshold {
        w.leaf("notifyAvgDurationThreshold", t);
    }
    if let Some(n) = &job.nodefilters {
        w.open("nodefilters", &[]);
        w.leaf("filter", &n.filter);
        w.close("nodefilters");
    }
    if let Some(r) = &job.retry {
        let attrs: Vec<(&str, String)> = r.delay.iter().map(|d| ("delay", d.clone())).collect();
        w.start_tag_text("retry", &attrs, &r.retry);
    }
    if let Some(r) = &job.runner_selector {
        write_selector(w, r);
    }
    if let Some(sc) = &job.schedule {
        write_schedule(w, sc);
    }
    if !job.schedule_enabled {
        w.leaf("scheduleEnabled", "false");
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
    if !job.sequence.plugin_config.is_empty() {
        write_log_filters(w, "pluginConfig", &job.sequence.plugin_config.log_filter);
    }
    w.close("sequence");
    if let Some(t) = &job.time_zone {
        w.leaf("timeZone", t);
    }
    if let Some(t) = &job.timeout {
        w.leaf("timeout", t);
    }
    if let Some(u) = job.uuid {
        w.leaf("uuid", &u.to_string());
    }
    w.close("job");
}

/// As Rundeck's XML codec writes it: `<month month [day]>`, `<time>`,
/// `<weekday>` unless a day of the month is set, `<year>`.
fn write_schedule(w: &mut Writer, s: &Schedule) {
    w.open("schedule", &[]);
    let mut month = vec![("month", s.month.clone())];
    if s.day_of_month != "?" {
        month.insert(0, ("day", s.day_of_month.clone()));
    }
    w.empty("month", &month);
    w.empty(
        "time",
        &[
            ("hour", s.hour.clone()),
            ("minute", s.minute.clone()),
            ("seconds", s.seconds.clone()),
        ],
    );
    if s.day_of_month == "?" {
        w.empty("weekday", &[("day", s.day_of_week.clone())]);
    }
    w.empty("year", &[("year", s.year.clone())]);
    w.close("schedule");
}

/// Triggers in name order, each with its `<email>`, `<plugin>` and
/// `<webhook>` elements (the attribute form, which Rundeck reads too).
fn write_notification(w: &mut Writer, n: &Notifications) {
    w.open("notification", &[]);
    for (trigger, list) in &n.triggers {
        w.open(trigger, &[]);
        let (emails, hooks, plugins) = Notifications::by_kind(list);
        for e in emails {
            if let Notify::Email {
                recipients,
                subject,
                attach_log,
                attach_log_in_file,
                attach_log_inline,
            } = e
            {
                let mut attrs: Vec<(&str, String)> = Vec::new();
                if *attach_log {
                    attrs.push(("attachLog", "true".into()));
                    attrs.push(("attachLogInFile", attach_log_in_file.to_string()));
                    attrs.push(("attachLogInline", attach_log_inline.to_string()));
                }
                attrs.push(("recipients", recipients.clone()));
                if let Some(s) = subject {
                    attrs.push(("subject", s.clone()));
                }
                w.empty("email", &attrs);
            }
        }
        let mut plugins: Vec<&Notify> = plugins;
        plugins.sort_by_key(|p| match p {
            Notify::Plugin { plugin_type, .. } => plugin_type.clone(),
            _ => String::new(),
        });
        for p in plugins {
            if let Notify::Plugin {
                plugin_type,
                configuration,
            } = p
            {
                if configuration.is_empty() {
                    w.empty("plugin", &[("type", plugin_type.clone())]);
                    continue;
                }
                w.open("plugin", &[("type", plugin_type.clone())]);
                w.open("configuration", &[]);
                for (k, v) in configuration {
                    w.empty("entry", &[("key", k.clone()), ("value", v.clone())]);
                }
                w.close("configuration");
                w.close("plugin");
            }
        }
        for h in hooks {
            if let Notify::Webhook {
                urls,
                format,
                http_method,
            } = h
            {
                let mut attrs: Vec<(&str, String)> = Vec::new();
                if let Some(f) = format {
                    attrs.push(("format", f.clone()));
                }
                if let Some(m) = http_method {
                    attrs.push(("httpMethod", m.clone()));
                }
                attrs.push(("urls", urls.clone()));
                w.empty("webhook", &attrs);
            }
        }
        w.close(trigger);
    }
    w.close("notification");
}

fn write_option(w: &mut Writer, o: &JobOption) {
    let mut attrs: Vec<(&str, String)> = Vec::new();
    let on = |b: bool| b.then(|| "true".to_string());
    for (name, value) in [
        ("dateFormat", o.date_format.clone()),
        ("delimiter", o.delimiter.clone()),
        ("enforcedvalues", on(o.enforced)),
        ("hidden", on(o.hidden)),
        ("isDate", on(o.is_date)),
        ("multivalueAllSelected", on(o.multivalue_all_selected)),
        ("multivalued", on(o.multivalued)),
        ("name", Some(o.name.clone())),
        ("regex", o.regex.clone()),
        ("required", on(o.required)),
        ("secure", on(o.secure)),
        ("sortValues", on(o.sort_values)),
        ("storagePath", o.storage_path.clone()),
        ("valueExposed", on(o.value_exposed)),
        ("valuesUrl", o.values_url.clone()),
    ] {
        if let Some(v) = value {
            attrs.push((name, v));
        }
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
    write_step(w, c);
    w.close("command");
}

/// A step's elements, in name order: shared by a command and its handler.
fn write_step(w: &mut Writer, c: &Command) {
    if let Some(d) = &c.description {
        w.leaf("description", d);
    }
    if let Some(h) = &c.errorhandler {
        let attrs = if h.keepgoing_on_success {
            vec![("keepgoingOnSuccess", "true".to_string())]
        } else {
            vec![]
        };
        w.open("errorhandler", &attrs);
        write_step(w, h);
        w.close("errorhandler");
    }
    if let Some(e) = &c.exec {
        w.leaf("exec", e);
    }
    if c.expand_token_in_script_file {
        w.leaf("expandTokenInScriptFile", "true");
    }
    if let Some(x) = &c.file_extension {
        w.leaf("fileExtension", x);
    }
    if let Some(r) = &c.jobref {
        write_jobref(w, r);
    }
    if c.node_step == Some(true) {
        write_plugin_step(w, "node-step-plugin", c);
    }
    if !c.plugins.is_empty() {
        write_log_filters(w, "plugins", &c.plugins.log_filter);
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
    if let Some(f) = &c.scriptfile {
        w.leaf("scriptfile", f);
    }
    if let Some(i) = &c.script_interpreter {
        let attrs = if c.interpreter_args_quoted {
            vec![("argsquoted", "true".to_string())]
        } else {
            vec![]
        };
        w.start_tag_text("scriptinterpreter", &attrs, i);
    }
    if let Some(u) = &c.scripturl {
        w.leaf("scripturl", u);
    }
    if c.step_type.is_some() && c.node_step != Some(true) {
        write_plugin_step(w, "step-plugin", c);
    }
}

/// A plugin step as Rundeck writes it: `<node-step-plugin>` or
/// `<step-plugin>` with its type, and its configuration as entries.
fn write_plugin_step(w: &mut Writer, element: &str, c: &Command) {
    let t = c.step_type.clone().unwrap_or_default();
    if c.configuration.is_empty() {
        w.empty(element, &[("type", t)]);
        return;
    }
    w.open(element, &[("type", t)]);
    w.open("configuration", &[]);
    for (k, v) in &c.configuration {
        w.empty("entry", &[("key", k.clone()), ("value", v.clone())]);
    }
    w.close("configuration");
    w.close(element);
}

fn write_jobref(w: &mut Writer, r: &JobRef) {
    let mut attrs: Vec<(&str, String)> = Vec::new();
    if let Some(g) = &r.group {
        attrs.push(("group", g.clone()));
    }
    if let Some(n) = &r.name {
        attrs.push(("name", n.clone()));
    }
    if r.node_step {
        attrs.push(("nodeStep", "true".into()));
    }
    w.open("jobref", &attrs);
    if let Some(a) = &r.args {
        w.empty("arg", &[("line", a.clone())]);
    }
    if let Some(d) = r.nodefilters.as_ref().and_then(|n| n.dispatch.as_ref()) {
        w.open("dispatch", &[]);
        if let Some(k) = d.keepgoing {
            w.leaf("keepgoing", &k.to_string());
        }
        if let Some(a) = &d.rank_attribute {
            w.leaf("rankAttribute", a);
        }
        if let Some(o) = &d.rank_order {
            w.leaf("rankOrder", &word(o));
        }
        if d.node_intersect {
            w.leaf("nodeIntersect", "true");
        }
        if let Some(t) = d.threadcount {
            w.leaf("threadcount", &t.to_string());
        }
        w.close("dispatch");
    }
    for (key, on) in [
        ("childNodes", r.child_nodes),
        ("failOnDisable", r.fail_on_disable),
        ("ignoreNotifications", r.ignore_notifications),
        ("importOptions", r.import_options),
    ] {
        if on {
            w.leaf(key, "true");
        }
    }
    if let Some(n) = r.filter_override() {
        w.open("nodefilters", &[]);
        w.leaf("filter", &n.filter);
        w.close("nodefilters");
    }
    if let Some(p) = &r.project {
        w.leaf("project", p);
    }
    if r.use_name {
        w.leaf("useName", "true");
    }
    if let Some(u) = r.uuid {
        w.leaf("uuid", &u.to_string());
    }
    w.close("jobref");
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

    /// One line of text, with attributes.
    fn start_tag_text(&mut self, name: &str, attrs: &[(&str, String)], text: &str) {
        self.start_tag(name, attrs);
        self.out.push('>');
        self.out.push_str(&escape(text, false));
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

/// `<plugins>` (a step's) or `<pluginConfig>` (the workflow's): each
/// `<LogFilter type>` with one `<config>` child element per key.
fn write_log_filters(w: &mut Writer, element: &str, filters: &[outpost_schemas::job::LogFilter]) {
    w.open(element, &[]);
    for f in filters {
        w.open("LogFilter", &[("type", f.filter_type.clone())]);
        if !f.config.is_empty() {
            w.open("config", &[]);
            for (k, v) in &f.config {
                w.leaf(k, v);
            }
            w.close("config");
        }
        w.close("LogFilter");
    }
    w.close(element);
}
