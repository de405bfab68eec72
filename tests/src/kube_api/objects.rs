//! What every resource shares: `Status` errors, query parameters, label and
//! field selectors, names, times and `Table` replies, as the apiserver
//! shapes them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// A failed request, answered as the apiserver does: a `Status` object
/// whose `reason` and `code` clients branch on (the Python client raises
/// `ApiException(status=code)`, kubectl prints `Error from server
/// (<reason>): <message>`).
#[derive(Debug)]
pub(super) struct KubeError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl KubeError {
    /// `kind` is the resource (`pods`), as the apiserver names it here.
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::not_found_in("", kind, name)
    }

    /// `group` is "" for the core API.
    pub fn not_found_in(group: &str, kind: &str, name: &str) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut details = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        KubeError {
            code: 404,
            reason: "NotFound",
            message: format!("{qualified} \"{name}\" not found"),
            details: Some(details),
        }
    }

    /// A path the apiserver does not serve.
    pub fn no_route() -> Self {
        KubeError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    /// `group` is "" for the core API.
    pub fn already_exists(group: &str, kind: &str, name: &str) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut details = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        KubeError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{qualified} \"{name}\" already exists"),
            details: Some(details),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        KubeError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// A validation failure (422): `kind` is the object's kind (`Pod`),
    /// `field` the JSON path that is wrong.
    pub fn invalid(kind: &str, name: &str, field: &str, cause: Cause) -> Self {
        let (reason, text) = match &cause {
            Cause::Required => ("FieldValueRequired", "Required value".to_string()),
            Cause::Invalid(v, why) => ("FieldValueInvalid", format!("Invalid value: {v}: {why}")),
            Cause::Unsupported(v, allowed) => (
                "FieldValueNotSupported",
                format!("Unsupported value: {v}: supported values: {allowed}"),
            ),
            Cause::Duplicate(v) => ("FieldValueDuplicate", format!("Duplicate value: {v}")),
        };
        KubeError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {field}: {text}"),
            details: Some(json!({
                "name": name,
                "kind": kind,
                "causes": [{"reason": reason, "message": text, "field": field}],
            })),
        }
    }

    pub fn unauthorized() -> Self {
        KubeError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        KubeError {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

pub(super) enum Cause {
    Required,
    /// The value as the apiserver quotes it, and why it is wrong.
    Invalid(String, String),
    /// The value, and the supported ones as the apiserver lists them.
    Unsupported(String, String),
    Duplicate(String),
}

impl IntoResponse for KubeError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.status())).into_response()
    }
}

pub(super) type Reply = Result<Response, KubeError>;

pub(super) fn ok(v: Value) -> Reply {
    Ok(Json(v).into_response())
}

pub(super) fn created(v: Value) -> Reply {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// The `Status` a delete that completed at once answers with.
pub(super) fn deleted_status(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

/// A query string, parsed by hand because exec repeats `command` once per
/// argv element, which a map-shaped extractor would collapse.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Params(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean as Go's `strconv.ParseBool` reads it: the Python client
    /// sends Python's `True`/`False`, kubectl and kube-rs send `true`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(truthy)
    }

    pub fn number(&self, key: &str) -> Result<Option<i64>, KubeError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| KubeError::bad_request(format!("invalid {key} {v:?}: not a number"))),
        }
    }
}

pub(super) fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "t")
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A label selector, equality- and set-based, as `kubectl -l` and the
/// Python client's `label_selector` write them: `a=b,c!=d,e in (f,g),!h`.
#[derive(Debug)]
pub(super) struct Selector(Vec<Requirement>);

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, KubeError> {
        let bad = |term: &str| {
            KubeError::bad_request(format!(
                "unable to parse requirement: invalid label selector {term:?}"
            ))
        };
        let mut reqs = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, set)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), parse_set(set).ok_or_else(|| bad(term))?)
            } else if let Some((k, set)) = term.split_once(" in ") {
                Requirement::In(k.trim().into(), parse_set(set).ok_or_else(|| bad(term))?)
            } else {
                Requirement::Exists(term.to_string())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad(term));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// `labels` is `metadata.labels` (an object, or absent).
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|l| set.iter().any(|s| s == l)),
            Requirement::NotIn(k, set) => !get(k).is_some_and(|l| set.iter().any(|s| s == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Commas outside parentheses: `a in (b,c),d` is two terms.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// A field selector over the few fields each resource supports (the
/// apiserver refuses the others, so a client relying on one learns it here).
pub(super) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str, supported: &[&str]) -> Result<FieldSelector, KubeError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(KubeError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(KubeError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, field: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|(f, equal, v)| (field(f) == *v) == *equal)
    }
}

/// The selectors of a list or delete-collection request.
pub(super) fn selectors(
    params: &Params,
    fields: &[&str],
) -> Result<(Selector, FieldSelector), KubeError> {
    if params.flag("watch") {
        return Err(KubeError::bad_request(
            "watch is not supported by this fake apiserver: poll with get or list",
        ));
    }
    Ok((
        Selector::parse(params.get("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(params.get("fieldSelector").unwrap_or(""), fields)?,
    ))
}

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// RFC 3339 with whole seconds, as `metav1.Time` marshals.
pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Five characters from the alphabet the apiserver draws `generateName`
/// and Job pod suffixes from (`k8s.io/apimachinery/pkg/util/rand`): no
/// vowels, no 0/1/3, so no words and no look-alikes.
pub(super) fn name_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(uuid::Uuid::now_v7().as_u128());
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Why `name` is not a DNS-1123 subdomain (object names), if it is not.
pub(super) fn subdomain_error(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| label_error(part).is_none());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string()
    })
}

/// Why `name` is not a DNS-1123 label (container names), if it is not.
pub(super) fn label_error(name: &str) -> Option<String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".to_string()
    })
}

/// Fills in the object metadata the server owns on create, refusing what a
/// client may not set. Returns the object's name.
pub(super) fn admit_metadata(
    kind: &str,
    namespace: &str,
    body: &mut Value,
    uid: &str,
    created: DateTime<Utc>,
) -> Result<String, KubeError> {
    if !body.is_object() {
        return Err(KubeError::bad_request(format!(
            "the body of the request was not a {kind} object"
        )));
    }
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    let meta = &mut body["metadata"];
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
        if !ns.is_empty() && ns != namespace {
            return Err(KubeError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(KubeError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", name_suffix()),
            _ => {
                return Err(KubeError::invalid(
                    kind,
                    "",
                    "metadata.name",
                    Cause::Required,
                ))
            }
        },
    };
    if let Some(why) = subdomain_error(&name) {
        return Err(KubeError::invalid(
            kind,
            &name,
            "metadata.name",
            Cause::Invalid(format!("{name:?}"), why),
        ));
    }
    let meta = meta.as_object_mut().unwrap();
    for owned in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(owned);
    }
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(timestamp(created)));
    if let Some(obj) = body.as_object_mut() {
        obj.remove("status");
    }
    Ok(name)
}

/// A column of a `Table`: name, type, format, priority (1 = `-o wide`
/// only), description.
pub(super) type Column = (&'static str, &'static str, &'static str, u8, &'static str);

/// A `meta.k8s.io/v1` `Table`, what kubectl 1.20 asks for (`Accept: …;as=Table`)
/// and prints as is. `include` is the `includeObject` parameter: `None`,
/// `Object`, or by default `Metadata` (a `PartialObjectMetadata` per row).
pub(super) fn table(
    columns: &[Column],
    rows: Vec<(Vec<Value>, Value)>,
    include: Option<&str>,
    resource_version: u64,
) -> Value {
    let columns: Vec<Value> = columns
        .iter()
        .map(|(name, ty, format, priority, description)| {
            json!({
                "name": name,
                "type": ty,
                "format": format,
                "description": description,
                "priority": priority,
            })
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(cells, object)| {
            let mut row = json!({ "cells": cells });
            match include {
                Some("None") => {}
                Some("Object") => row["object"] = object,
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// Whether the client asked for a `Table` (kubectl's human output does).
pub(super) fn wants_table(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("as=Table")))
}

/// An object kind that list requests return, as a list or a `Table`.
pub(super) trait Listed {
    const LIST_KIND: &'static str;
    const API_VERSION: &'static str;
    const COLUMNS: &'static [Column];
    /// The fields a `fieldSelector` may name.
    const FIELDS: &'static [&'static str];
    fn namespace(&self) -> &str;
    fn object(&self) -> &Value;
    fn field(&self, field: &str) -> String;
    fn row(&self) -> Vec<Value>;
    fn render(&self) -> Value;
}

/// The reply to a list request (`GET …/pods`, `GET /api/v1/pods`) over
/// `all`, in `ns` or every namespace.
pub(super) fn list_reply<'a, T: Listed + 'a>(
    all: impl Iterator<Item = &'a T>,
    ns: Option<&str>,
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    resource_version: u64,
) -> Reply {
    let params = Params::parse(query);
    let (labels, fields) = selectors(&params, T::FIELDS)?;
    let items: Vec<&T> = all
        .filter(|o| ns.is_none_or(|ns| o.namespace() == ns))
        .filter(|o| labels.matches(&o.object()["metadata"]["labels"]))
        .filter(|o| fields.matches(|f| o.field(f)))
        .collect();
    if wants_table(headers) {
        let rows = items.iter().map(|o| (o.row(), o.render())).collect();
        return ok(table(
            T::COLUMNS,
            rows,
            params.get("includeObject"),
            resource_version,
        ));
    }
    let items = items.iter().map(|o| o.render()).collect();
    ok(list(T::LIST_KIND, T::API_VERSION, items, resource_version))
}

/// A list object (`PodList`, `JobList`).
pub(super) fn list(
    kind: &str,
    api_version: &str,
    items: Vec<Value>,
    resource_version: u64,
) -> Value {
    json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version.to_string()},
        "items": items,
    })
}

/// How kubectl prints an age (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`).
pub(super) fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return format!("{}y{}d", hours / 24 / 365, (hours / 24) % 365);
    }
    format!("{}y", hours / 24 / 365)
}

/// The string at `path` (`["metadata", "name"]`), or "".
pub(super) fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

/// `metadata.labels`, made an object if absent, for the server to add to.
pub(super) fn labels_mut(meta: &mut Value) -> &mut Map<String, Value> {
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"].as_object_mut().unwrap()
}
