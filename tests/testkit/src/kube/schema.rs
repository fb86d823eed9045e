//! Structural-schema handling of custom resources, in the apiserver's order: drop non-nullable nulls,
//! prune unknown fields, apply defaults, validate (OpenAPI keywords, list types, CEL rules).
//! Messages use the apiserver's wording so clients print what they would print against a cluster.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::resources::ResourceType;
use super::status::Cause;

/// The `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "Ignore" => Ok(Self::Ignore),
            "Warn" | "" => Ok(Self::Warn),
            "Strict" => Ok(Self::Strict),
            other => Err(format!(
                "fieldValidation parameter unsupported: {other}; use Ignore, Warn or Strict"
            )),
        }
    }
}

#[derive(Debug)]
pub(crate) enum AdmitError {
    Invalid(Vec<Cause>),
    /// Unknown fields under `fieldValidation=Strict` (400 BadRequest).
    Strict(String),
}

/// Prunes, defaults and validates `obj` against the custom resource's schema. Ok: warnings.
pub(crate) fn admit(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    fv: FieldValidation,
    drop_status: bool,
) -> Result<Vec<String>, AdmitError> {
    let Some(schema) = rt.schema.as_deref() else {
        return Ok(Vec::new());
    };
    let mut unknown = Vec::new();
    if let Value::Object(m) = obj {
        for (k, v) in m.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema.get("properties").and_then(|p| p.get(k)) {
                Some(s) => {
                    drop_nulls(v, s);
                    prune(v, s, k, &mut unknown);
                }
                None if preserves_unknown(schema) => {}
                None => unknown.push(k.clone()),
            }
        }
        if !preserves_unknown(schema) {
            let props = schema.get("properties").and_then(Value::as_object);
            m.retain(|k, _| {
                matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                    || props.is_some_and(|p| p.contains_key(k))
            });
        }
    }
    default_object(obj, schema);
    if drop_status {
        // The request decoder defaults first, then the status strategy's PrepareForCreate drops
        // `status` (pkg/registry/customresource/strategy.go); reads default it again.
        if let Value::Object(m) = obj {
            m.remove("status");
        }
    }
    let warnings = match fv {
        FieldValidation::Strict if !unknown.is_empty() => {
            let listed: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            return Err(AdmitError::Strict(format!(
                "strict decoding error: {}",
                listed.join(", ")
            )));
        }
        FieldValidation::Warn => unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect(),
        _ => Vec::new(),
    };
    let mut causes = Vec::new();
    if let Value::Object(m) = &*obj {
        for (k, s) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match m.get(k) {
                Some(v) => validate(v, s, k, &mut causes),
                None if required(schema).contains(&k.as_str()) => causes.push(required_cause(k)),
                None => {}
            }
        }
    }
    causes.extend(super::cel::validate(rt, obj, old));
    if causes.is_empty() {
        Ok(warnings)
    } else {
        Err(AdmitError::Invalid(causes))
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

/// The schema for the value of key `k` inside an object with schema `s`.
fn property<'a>(s: &'a Value, k: &str) -> Option<&'a Value> {
    if let Some(p) = s.get("properties").and_then(|p| p.get(k)) {
        return Some(p);
    }
    match s.get("additionalProperties") {
        Some(ap @ Value::Object(_)) => Some(ap),
        _ => None,
    }
}

fn keeps_unknown_keys(s: &Value) -> bool {
    preserves_unknown(s)
        || s.get("additionalProperties")
            .is_some_and(|ap| ap.is_object() || ap == &Value::Bool(true))
}

/// Non-nullable fields set to null are dropped before defaulting and validation, as the apiserver does.
fn drop_nulls(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, child| {
                !(child.is_null() && property(s, k).is_some_and(|cs| !nullable(cs)))
            });
            for (k, child) in m.iter_mut() {
                if let Some(cs) = property(s, k) {
                    drop_nulls(child, cs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for it in items {
                    drop_nulls(it, is);
                }
            }
        }
        _ => {}
    }
}

fn prune(v: &mut Value, s: &Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if !keeps_unknown_keys(s) {
                let props = s.get("properties").and_then(Value::as_object);
                m.retain(|k, _| {
                    let known = props.is_some_and(|p| p.contains_key(k));
                    if !known {
                        unknown.push(format!("{path}.{k}"));
                    }
                    known
                });
            }
            for (k, child) in m.iter_mut() {
                if let Some(cs) = property(s, k) {
                    prune(child, cs, &format!("{path}.{k}"), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune(it, is, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Applies the schema's defaults to a whole custom resource (root properties other than `apiVersion`,
/// `kind` and `metadata`, then recursively), as kube-apiserver does both when decoding a request and when
/// decoding an object read from storage: the CRD storage codec carries an `unstructuredDefaulter`
/// (apiextensions-apiserver `pkg/apiserver/customresource_handler.go`, `crdConversionRESTOptionsGetter`),
/// and the docs' "Defaulting" section says defaults apply "when reading from etcd using the storage
/// version defaults" and are not written back. So a stored object that lacks a defaulted field is served
/// with it (GET, LIST, WATCH, and the live object an update or patch starts from).
pub(crate) fn default_object(obj: &mut Value, schema: &Value) {
    let Value::Object(m) = obj else {
        return;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, ps) in props.into_iter().flatten() {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(d) = ps.get("default") {
            if m.get(k).is_none_or(|v| v.is_null() && !nullable(ps)) {
                m.insert(k.clone(), d.clone());
            }
        }
    }
    for (k, v) in m.iter_mut() {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(cs) = property(schema, k) {
            apply_defaults(v, cs);
        }
    }
}

/// `Default` of apiextensions-apiserver `pkg/apiserver/schema/defaulting/algorithm.go`: a missing
/// property, or a non-nullable one that is null, gets a copy of its default; then recurse into
/// properties, additionalProperties and items (where non-nullable null elements are defaulted too).
fn apply_defaults(v: &mut Value, s: &Value) {
    let non_nullable_null = |x: &Value, xs: &Value| x.is_null() && !nullable(xs);
    match v {
        Value::Object(m) => {
            for (k, ps) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let Some(d) = ps.get("default") {
                    if m.get(k).is_none_or(|x| non_nullable_null(x, ps)) {
                        m.insert(k.clone(), d.clone());
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, child) in m.iter_mut() {
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    apply_defaults(child, ps);
                } else if let Some(ap @ Value::Object(_)) = s.get("additionalProperties") {
                    if let Some(d) = ap.get("default") {
                        if non_nullable_null(child, ap) {
                            *child = d.clone();
                        }
                    }
                    apply_defaults(child, ap);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for it in items {
                    if let Some(d) = is.get("default") {
                        if non_nullable_null(it, is) {
                            *it = d.clone();
                        }
                    }
                    apply_defaults(it, is);
                }
            }
        }
        _ => {}
    }
}

/// How the apiserver prints a value after "Invalid value: ".
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        Value::Null => "\"null\"".into(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
    }
}

fn invalid(path: &str, v: &Value, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {}: {detail}", show(v)),
        field: path.to_string(),
    }
}

fn required_cause(path: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        message: "Required value".into(),
        field: path.to_string(),
    }
}

fn regex_cached(pattern: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = cache.lock().ok()?;
    guard
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

/// The date-time formats the apiserver's OpenAPI validation (go-openapi strfmt) accepts: RFC 3339 with or
/// without fractional seconds, offsets with or without a colon, and local times without an offset.
fn is_date_time(s: &str) -> bool {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$",
        )
        .ok()
    })
    .as_ref()
    .is_some_and(|re| re.is_match(s))
}

fn type_matches(v: &Value, s: &Value) -> bool {
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return matches!(v, Value::String(_)) || v.as_i64().is_some() || v.as_u64().is_some();
    }
    match s.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("integer") => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && v.to_string().ends_with(".0"))
        }
        Some("number") => v.is_number(),
        Some(_) => true,
    }
}

/// Validates one value against its schema, collecting causes with apiserver field paths.
pub(crate) fn validate(v: &Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if !nullable(s) && s.get("type").is_some() && s.get("x-kubernetes-int-or-string").is_none()
        {
            let t = s.get("type").and_then(Value::as_str).unwrap_or_default();
            causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                message: format!(
                    "Invalid value: \"null\": {path} in body must be of type {t}: \"null\""
                ),
                field: path.to_string(),
            });
        }
        return;
    }
    if !type_matches(v, s) {
        let t = s
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("integer or string");
        causes.push(Cause {
            reason: "FieldValueTypeInvalid",
            message: format!(
                "Invalid value: \"{}\": {path} in body must be of type {t}: \"{}\"",
                type_name(v),
                type_name(v)
            ),
            field: path.to_string(),
        });
        return;
    }
    combinators(v, s, path, causes);
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            let supported: Vec<String> = e.iter().map(Value::to_string).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    v,
                    supported.join(", ")
                ),
                field: path.to_string(),
            });
        }
    }
    match v {
        Value::String(st) => {
            let len = st.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if len < min {
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if len > max {
                    causes.push(Cause {
                        reason: "FieldValueTooLong",
                        message: format!("Too long: may not be more than {max} bytes"),
                        field: path.to_string(),
                    });
                }
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                if let Some(re) = regex_cached(p) {
                    if !re.is_match(st) {
                        causes.push(invalid(
                            path,
                            v,
                            format!("{path} in body should match '{p}'"),
                        ));
                    }
                }
            }
            if s.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(st) {
                causes.push(invalid(
                    path,
                    v,
                    format!("{path} in body must be of type date-time: {v}"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            let fmt_bound = |b: f64| {
                if b.fract() == 0.0 {
                    format!("{}", b as i64)
                } else {
                    b.to_string()
                }
            };
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                let exclusive = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (exclusive && x == min) {
                    let rel = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be {rel} {}", fmt_bound(min)),
                    ));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                let exclusive = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (exclusive && x == max) {
                    let rel = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be {rel} {}", fmt_bound(max)),
                    ));
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if n < min {
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if n > max {
                    causes.push(Cause {
                        reason: "FieldValueTooMany",
                        message: format!("Too many: {n}: must have at most {max} items"),
                        field: path.to_string(),
                    });
                }
            }
            match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => {
                    let keys: Vec<&str> = s
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| k.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let mut seen = Vec::new();
                    for (i, it) in items.iter().enumerate() {
                        let k: Vec<Option<&Value>> = keys.iter().map(|key| it.get(*key)).collect();
                        if seen.contains(&k) {
                            let shown: Vec<String> = keys
                                .iter()
                                .zip(&k)
                                .map(|(key, val)| {
                                    format!(
                                        "\"{key}\":{}",
                                        val.map(Value::to_string).unwrap_or("null".into())
                                    )
                                })
                                .collect();
                            causes.push(Cause {
                                reason: "FieldValueDuplicate",
                                message: format!(
                                    "Duplicate value: map[string]interface {{}}{{{}}}",
                                    shown.join(", ")
                                ),
                                field: format!("{path}[{i}]"),
                            });
                        } else {
                            seen.push(k);
                        }
                    }
                }
                Some("set") => {
                    for (i, it) in items.iter().enumerate() {
                        if items[..i].contains(it) {
                            causes.push(Cause {
                                reason: "FieldValueDuplicate",
                                message: format!("Duplicate value: {it}"),
                                field: format!("{path}[{i}]"),
                            });
                        }
                    }
                }
                _ => {}
            }
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter().enumerate() {
                    validate(it, is, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(m) => {
            for req in required(s) {
                if !m.contains_key(req) {
                    causes.push(required_cause(&format!("{path}.{req}")));
                }
            }
            if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
                if (m.len() as u64) < min {
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should have at least {min} properties"),
                    ));
                }
            }
            if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
                if (m.len() as u64) > max {
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should have at most {max} properties"),
                    ));
                }
            }
            for (k, child) in m {
                if let Some(cs) = property(s, k) {
                    validate(child, cs, &format!("{path}.{k}"), causes);
                }
            }
        }
        _ => {}
    }
}

/// Value validations nested in `allOf`, `anyOf`, `oneOf` and `not` (allowed in structural schemas), with
/// kube-openapi's wording.
fn combinators(v: &Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let passes = |sub: &Value| {
        let mut c = Vec::new();
        validate(v, sub, path, &mut c);
        c
    };
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        causes.extend(passes(sub));
    }
    if let Some(subs) = s.get("anyOf").and_then(Value::as_array) {
        if !subs.iter().any(|sub| passes(sub).is_empty()) {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body must validate at least one schema (anyOf)"),
            ));
        }
    }
    if let Some(subs) = s.get("oneOf").and_then(Value::as_array) {
        if subs.iter().filter(|sub| passes(sub).is_empty()).count() != 1 {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(sub) = s.get("not") {
        if passes(sub).is_empty() {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body must not validate the schema (not)"),
            ));
        }
    }
    if let (Some(m), Some(x)) = (s.get("multipleOf").and_then(Value::as_f64), v.as_f64()) {
        if m != 0.0 && (x / m).fract() != 0.0 {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should be a multiple of {m}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["pipeline"], "properties": {
            "pipeline": {"type": "object", "required": ["definitionId", "branch"], "properties": {
                "definitionId": {"type": "integer", "format": "int64", "minimum": 1.0},
                "branch": {"type": "string", "minLength": 1}}},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "port": {"x-kubernetes-int-or-string": true},
            "interval": {"type": "string", "nullable": true, "pattern": "^[0-9]+s$"},
            "suspend": {"type": "boolean", "default": false},
            "when": {"type": "string", "format": "date-time"},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "conds": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object", "properties": {"type": {"type": "string"}}}}
        }}}})
    }

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&spec, &schema()["properties"]["spec"], "spec", &mut causes);
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn messages_match_the_apiserver() {
        assert_eq!(
            check(json!({"pipeline": {"definitionId": 0, "branch": "main"}})),
            vec!["spec.pipeline.definitionId: Invalid value: 0: spec.pipeline.definitionId in body should be greater than or equal to 1"]
        );
        assert_eq!(
            check(json!({"pipeline": {"definitionId": 1}})),
            vec!["spec.pipeline.branch: Required value"]
        );
        assert_eq!(check(json!({"pipeline": {"definitionId": 1, "branch": ""}})), vec!["spec.pipeline.branch: Invalid value: \"\": spec.pipeline.branch in body should be at least 1 chars long"]);
        assert_eq!(
            check(json!({"pipeline": {"definitionId": "x", "branch": "m"}})),
            vec!["spec.pipeline.definitionId: Invalid value: \"string\": spec.pipeline.definitionId in body must be of type integer: \"string\""]
        );
        assert_eq!(
            check(json!({"pipeline": {"definitionId": 1, "branch": "m"}, "mode": "c"})),
            vec!["spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\""]
        );
        assert_eq!(check(json!({"pipeline": {"definitionId": 1, "branch": "m"}, "interval": "5m"})), vec!["spec.interval: Invalid value: \"5m\": spec.interval in body should match '^[0-9]+s$'"]);
        assert_eq!(
            check(json!({"pipeline": {"definitionId": 1, "branch": "m"}, "when": "yesterday"}))
                .len(),
            1
        );
        assert_eq!(
            check(
                json!({"pipeline": {"definitionId": 1, "branch": "m"}, "when": "2026-01-02T03:04:05Z", "interval": null, "port": "http"})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            check(json!({"pipeline": {"definitionId": 1, "branch": "m"}, "port": 1.5})).len(),
            1
        );
        assert_eq!(
            check(
                json!({"pipeline": {"definitionId": 1, "branch": "m"}, "conds": [{"type": "A"}, {"type": "A"}]})
            ),
            vec!["spec.conds[1]: Duplicate value: map[string]interface {}{\"type\":\"A\"}"]
        );
    }

    #[test]
    fn combinators_follow_json_schema() {
        let s = json!({"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}], "properties": {"n": {"type": "integer", "multipleOf": 5, "not": {"enum": [10]}}}});
        let run = |v: Value| {
            let mut c = Vec::new();
            validate(&v, &s, "spec", &mut c);
            c.into_iter().map(|c| c.message).collect::<Vec<_>>()
        };
        assert!(run(json!({"a": 1})).is_empty());
        assert_eq!(run(json!({"a": 1, "b": 2})), vec!["Invalid value: \"object\": spec in body must validate one and only one schema (oneOf)"]);
        assert_eq!(
            run(json!({"a": 1, "n": 7})),
            vec!["Invalid value: 7: spec.n in body should be a multiple of 5"]
        );
        assert_eq!(
            run(json!({"a": 1, "n": 10})),
            vec!["Invalid value: 10: spec.n in body must not validate the schema (not)"]
        );
    }

    #[test]
    fn prune_and_default() {
        let s = schema();
        let mut v = json!({"pipeline": {"definitionId": 1, "branch": "m", "bogus": 1}, "extra": {"anything": {"goes": 1}}, "interval": null});
        let mut unknown = Vec::new();
        drop_nulls(&mut v, &s["properties"]["spec"]);
        prune(&mut v, &s["properties"]["spec"], "spec", &mut unknown);
        apply_defaults(&mut v, &s["properties"]["spec"]);
        assert_eq!(unknown, vec!["spec.pipeline.bogus"]);
        assert_eq!(
            v,
            json!({"pipeline": {"definitionId": 1, "branch": "m"}, "extra": {"anything": {"goes": 1}}, "interval": null, "suspend": false})
        );
    }
}
