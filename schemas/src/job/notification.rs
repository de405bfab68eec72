//! Rundeck's `notification`: parsed, checked and stored here, exported as
//! Rundeck exports it; notifications are sent once that is built (until
//! then a job says `active: false` and its import warns).
//!
//! Read as Rundeck's `ScheduledExecution.fromMap` reads it: each trigger
//! holds one entry (a map) or a list of them; an entry holds an `email`, a
//! webhook (`urls`, with `format` and `httpMethod` beside it) and `plugin`
//! (a map or a list).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// When a notification is sent, by Rundeck's trigger names.
pub const TRIGGERS: &[&str] = &[
    "onstart",
    "onsuccess",
    "onfailure",
    "onavgduration",
    "onretryablefailure",
];

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
pub enum Notify {
    Email {
        /// Comma-separated addresses.
        recipients: String,
        subject: Option<String>,
        attach_log: bool,
        attach_log_in_file: bool,
        attach_log_inline: bool,
    },
    Webhook {
        /// Comma-separated URLs.
        urls: String,
        /// `xml` (Rundeck's default) or `json`.
        format: Option<String>,
        /// `post` (Rundeck's default) or `get`.
        http_method: Option<String>,
    },
    Plugin {
        plugin_type: String,
        configuration: BTreeMap<String, String>,
    },
}

/// Every trigger's notifications, in trigger order.
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
pub struct Notifications {
    pub triggers: BTreeMap<String, Vec<Notify>>,
}

impl Notifications {
    pub fn is_empty(&self) -> bool {
        self.triggers.values().all(Vec::is_empty)
    }
}

fn text(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("{what} must be text")),
    }
}

fn flag(v: Option<&Value>, what: &str) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            _ => Err(format!("{what} `{s}` is not a flag: use true or false")),
        },
        Some(_) => Err(format!("{what} must be true or false")),
    }
}

fn email(v: &Value, at: &str) -> Result<Notify, String> {
    let Value::Object(m) = v else {
        return Err(format!("{at}.email must be a map with `recipients`"));
    };
    for k in m.keys() {
        if ![
            "recipients",
            "subject",
            "attachLog",
            "attachLogInFile",
            "attachLogInline",
        ]
        .contains(&k.as_str())
        {
            return Err(format!(
                "unknown field `{k}` in {at}.email, expected one of `recipients`, `subject`, `attachLog`, `attachLogInFile`, `attachLogInline`"
            ));
        }
    }
    let recipients = match m.get("recipients") {
        Some(r) => text(r, &format!("{at}.email.recipients"))?,
        None => String::new(),
    };
    if recipients.is_empty() {
        return Err(format!("{at}.email has no `recipients`"));
    }
    let subject = match m.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(text(s, &format!("{at}.email.subject"))?).filter(|s| !s.is_empty()),
    };
    let attach_log = flag(m.get("attachLog"), &format!("{at}.email.attachLog"))?;
    let mut in_file = flag(
        m.get("attachLogInFile"),
        &format!("{at}.email.attachLogInFile"),
    )?;
    let inline = flag(
        m.get("attachLogInline"),
        &format!("{at}.email.attachLogInline"),
    )?;
    // Rundeck reads both only with attachLog, and would attach nothing.
    if !attach_log && (in_file || inline) {
        let which = if in_file {
            "attachLogInFile"
        } else {
            "attachLogInline"
        };
        return Err(format!(
            "{at}.email has `{which}` without `attachLog: true`; Rundeck attaches no log then: set `attachLog: true` too"
        ));
    }
    // Rundeck: attachLog alone attaches the log as a file.
    if attach_log && !inline {
        in_file = true;
    }
    Ok(Notify::Email {
        recipients: recipients
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
        subject,
        attach_log,
        attach_log_in_file: in_file,
        attach_log_inline: inline,
    })
}

fn plugins(v: &Value, at: &str) -> Result<Vec<Notify>, String> {
    let list = match v {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![v.clone()],
        _ => return Err(format!("{at}.plugin must be a map or a list of maps")),
    };
    list.iter()
        .map(|p| {
            let Value::Object(m) = p else {
                return Err(format!("{at}.plugin must be a map with `type`"));
            };
            if let Some(k) = m
                .keys()
                .find(|k| !["type", "configuration"].contains(&k.as_str()))
            {
                return Err(format!("unknown field `{k}` in {at}.plugin"));
            }
            let plugin_type = m
                .get("type")
                .map(|t| text(t, &format!("{at}.plugin.type")))
                .transpose()?
                .unwrap_or_default();
            if plugin_type.is_empty() {
                return Err(format!("{at}.plugin has no `type`"));
            }
            let mut configuration = BTreeMap::new();
            match m.get("configuration") {
                None | Some(Value::Null) => {}
                Some(Value::Object(c)) => {
                    for (k, v) in c {
                        let v = match v {
                            Value::Null => String::new(),
                            other => text(other, &format!("{at}.plugin.configuration.{k}"))?,
                        };
                        configuration.insert(k.clone(), v);
                    }
                }
                Some(_) => return Err(format!("{at}.plugin.configuration must be a map")),
            }
            Ok(Notify::Plugin {
                plugin_type,
                configuration,
            })
        })
        .collect()
}

fn entry(v: &Value, at: &str, out: &mut Vec<Notify>) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(format!("{at} must hold `email`, `urls` or `plugin`"));
    };
    for k in m.keys() {
        if !["email", "urls", "format", "httpMethod", "plugin"].contains(&k.as_str()) {
            return Err(format!(
                "unknown field `{k}` in {at}, expected one of `email`, `urls`, `format`, `httpMethod`, `plugin`"
            ));
        }
    }
    if let Some(e) = m.get("email").filter(|e| !e.is_null()) {
        out.push(email(e, at)?);
    }
    let word = |key: &str| -> Result<Option<String>, String> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(text(v, &format!("{at}.{key}"))?).filter(|s| !s.is_empty())),
        }
    };
    match word("urls")? {
        Some(urls) => {
            let format = word("format")?.map(|f| f.to_ascii_lowercase());
            if let Some(f) = format.as_deref().filter(|f| !["xml", "json"].contains(f)) {
                return Err(format!("{at}.format `{f}`: use xml or json"));
            }
            let http_method = word("httpMethod")?.map(|h| h.to_ascii_lowercase());
            if let Some(h) = http_method
                .as_deref()
                .filter(|h| !["get", "post"].contains(h))
            {
                return Err(format!("{at}.httpMethod `{h}`: use get or post"));
            }
            out.push(Notify::Webhook {
                urls,
                format,
                http_method,
            });
        }
        None if word("format")?.is_some() || word("httpMethod")?.is_some() => {
            return Err(format!(
                "{at} has `format` or `httpMethod` but no webhook `urls`"
            ));
        }
        None => {}
    }
    if let Some(p) = m.get("plugin").filter(|p| !p.is_null()) {
        out.extend(plugins(p, at)?);
    }
    Ok(())
}

impl TryFrom<Value> for Notifications {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        let Value::Object(map) = v else {
            return Err(
                "notification must be a map of triggers (`onsuccess`, `onfailure`, …)".into(),
            );
        };
        let mut triggers = BTreeMap::new();
        for (trigger, value) in map {
            if !TRIGGERS.contains(&trigger.as_str()) {
                return Err(format!(
                    "unknown notification trigger `{trigger}`, expected one of {}",
                    TRIGGERS
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let at = format!("notification.{trigger}");
            let mut list = Vec::new();
            match &value {
                Value::Null => {}
                Value::Array(entries) => {
                    for e in entries {
                        entry(e, &at, &mut list)?;
                    }
                }
                other => entry(other, &at, &mut list)?,
            }
            if !list.is_empty() {
                // In the order Rundeck writes them back: emails, webhooks,
                // then plugins by type.
                let (emails, hooks, mut plugins) = Notifications::by_kind(&list);
                plugins.sort_by_key(|p| match p {
                    Notify::Plugin { plugin_type, .. } => plugin_type.clone(),
                    _ => String::new(),
                });
                let canonical: Vec<Notify> = emails
                    .into_iter()
                    .chain(hooks)
                    .chain(plugins)
                    .cloned()
                    .collect();
                triggers.insert(trigger, canonical);
            }
        }
        Ok(Notifications { triggers })
    }
}

impl<'de> Deserialize<'de> for Notifications {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Notifications::try_from(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn email_value(n: &Notify) -> Value {
    let Notify::Email {
        recipients,
        subject,
        attach_log,
        attach_log_in_file,
        attach_log_inline,
    } = n
    else {
        unreachable!("an email");
    };
    let mut m = Map::new();
    m.insert("recipients".into(), json!(recipients));
    if let Some(s) = subject {
        m.insert("subject".into(), json!(s));
    }
    if *attach_log {
        m.insert("attachLog".into(), json!(true));
        m.insert("attachLogInFile".into(), json!(attach_log_in_file));
        m.insert("attachLogInline".into(), json!(attach_log_inline));
    }
    Value::Object(m)
}

fn plugin_value(n: &Notify) -> Value {
    let Notify::Plugin {
        plugin_type,
        configuration,
    } = n
    else {
        unreachable!("a plugin");
    };
    json!({"type": plugin_type, "configuration": configuration})
}

fn webhook_into(n: &Notify, m: &mut Map<String, Value>) {
    let Notify::Webhook {
        urls,
        format,
        http_method,
    } = n
    else {
        unreachable!("a webhook");
    };
    m.insert("urls".into(), json!(urls));
    if let Some(f) = format {
        m.insert("format".into(), json!(f));
    }
    if let Some(h) = http_method {
        m.insert("httpMethod".into(), json!(h));
    }
}

impl Notifications {
    /// Each trigger's notifications by kind: emails, webhooks, plugins.
    pub fn by_kind(list: &[Notify]) -> (Vec<&Notify>, Vec<&Notify>, Vec<&Notify>) {
        let mut kinds = (Vec::new(), Vec::new(), Vec::new());
        for n in list {
            match n {
                Notify::Email { .. } => kinds.0.push(n),
                Notify::Webhook { .. } => kinds.1.push(n),
                Notify::Plugin { .. } => kinds.2.push(n),
            }
        }
        kinds
    }
}

impl Serialize for Notifications {
    /// As Rundeck's YAML codec writes it: one map per trigger, unless some
    /// trigger has two of a kind; then every trigger is a list.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let lists = self.triggers.values().any(|l| {
            let (e, w, p) = Notifications::by_kind(l);
            e.len() > 1 || w.len() > 1 || p.len() > 1
        });
        let mut out = Map::new();
        for (trigger, list) in &self.triggers {
            let (emails, hooks, plugins) = Notifications::by_kind(list);
            let value = if lists {
                let mut entries: Vec<Value> = Vec::new();
                entries.extend(emails.iter().map(|e| json!({"email": email_value(e)})));
                for h in &hooks {
                    let mut m = Map::new();
                    webhook_into(h, &mut m);
                    entries.push(Value::Object(m));
                }
                if !plugins.is_empty() {
                    let mut ps: Vec<Value> = plugins.iter().map(|p| plugin_value(p)).collect();
                    ps.sort_by_key(|p| p["type"].as_str().unwrap_or_default().to_string());
                    entries.push(json!({"plugin": ps}));
                }
                Value::Array(entries)
            } else {
                let mut m = Map::new();
                if let Some(e) = emails.first() {
                    m.insert("email".into(), email_value(e));
                }
                if let Some(h) = hooks.first() {
                    webhook_into(h, &mut m);
                }
                if let Some(p) = plugins.first() {
                    m.insert("plugin".into(), plugin_value(p));
                }
                Value::Object(m)
            };
            out.insert(trigger.clone(), value);
        }
        Value::Object(out).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<Notifications, String> {
        Notifications::try_from(serde_yaml_ng::from_str::<Value>(yaml).unwrap())
    }

    #[test]
    fn both_of_rundecks_shapes_read_and_write_back() {
        let single = read(
            "onsuccess:\n  email: {recipients: 'a@x.com, b@x.com', subject: OK, attachLog: 'true'}\n  urls: http://h/cb\n  format: JSON\n  httpMethod: post\n  plugin: {type: slack, configuration: {channel: ops}}\n",
        )
        .unwrap();
        assert_eq!(single.triggers["onsuccess"].len(), 3);
        let back = serde_json::to_value(&single).unwrap();
        assert_eq!(back["onsuccess"]["email"]["recipients"], "a@x.com,b@x.com");
        assert_eq!(back["onsuccess"]["email"]["attachLogInFile"], true);
        assert_eq!(back["onsuccess"]["format"], "json");
        assert_eq!(back["onsuccess"]["plugin"]["type"], "slack");
        assert_eq!(
            read(&serde_yaml_ng::to_string(&single).unwrap()).unwrap(),
            single
        );

        let listed = read(
            "onfailure:\n- email: {recipients: tom@x.com}\n- email: {recipients: mgr@x.com}\n- {urls: 'http://h/a', format: xml, httpMethod: get}\n- plugin: [{type: p2}, {type: p1, configuration: {k: v}}]\nonstart: {email: {recipients: a@x.com}}\n",
        )
        .unwrap();
        let back = serde_json::to_value(&listed).unwrap();
        assert!(
            back["onstart"].is_array(),
            "two of a kind anywhere: lists everywhere"
        );
        assert_eq!(
            back["onfailure"][3]["plugin"][0]["type"], "p1",
            "plugins sorted"
        );
        assert_eq!(
            read(&serde_yaml_ng::to_string(&listed).unwrap()).unwrap(),
            listed
        );
    }

    #[test]
    fn bad_notifications_are_refused_saying_where() {
        for (yaml, want) in [
            (
                "onsucess: {email: {recipients: a}}",
                "unknown notification trigger `onsucess`",
            ),
            (
                "onsuccess: {email: {subject: x}}",
                "notification.onsuccess.email has no `recipients`",
            ),
            (
                "onsuccess: {recipients: a@x.com}",
                "unknown field `recipients` in notification.onsuccess",
            ),
            (
                "onsuccess: {format: json}",
                "has `format` or `httpMethod` but no webhook `urls`",
            ),
            (
                "onsuccess: {urls: 'http://h', httpMethod: put}",
                "httpMethod `put`: use get or post",
            ),
            (
                "onsuccess: {plugin: {configuration: {}}}",
                "plugin has no `type`",
            ),
        ] {
            let e = read(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
