//! `x-kubernetes-validations` rules, evaluated with kube-cel (the CEL engine kube-core uses).

use std::sync::OnceLock;

use serde_json::Value;

use super::resources::ResourceType;
use super::schema::show;
use super::status::Cause;

fn validator() -> &'static kube_cel::Validator {
    static V: OnceLock<kube_cel::Validator> = OnceLock::new();
    V.get_or_init(kube_cel::Validator::new)
}

/// The compiled rules of a CRD version's schema, or `None` when it has none (see
/// [`ResourceType::cel_rules`]).
pub(crate) fn compile(schema: &Value) -> Option<std::sync::Arc<kube_cel::CompiledSchema>> {
    has_rules(schema).then(|| std::sync::Arc::new(kube_cel::compile_schema(schema)))
}

/// Causes for every failing rule, worded like the apiserver (`spec: Invalid value: "object": <message>`).
pub(crate) fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    // Compiled at registration (`compile`); a schema without rules has nothing to evaluate.
    let Some(compiled) = rt.cel_rules.as_deref() else {
        return Vec::new();
    };
    let ctx = kube_cel::RootContext {
        api_version: rt.api_version(),
        api_group: rt.group.clone(),
        kind: rt.kind.clone(),
    };
    match validator().validate_compiled_with_context(compiled, obj, old, Some(&ctx)) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                let field = e.field_path.trim_start_matches('.').to_string();
                let value = lookup(obj, &field)
                    .map(show)
                    .unwrap_or_else(|| "\"object\"".into());
                Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {value}: {}", e.message),
                    field: if field.is_empty() {
                        "<nil>".into()
                    } else {
                        field
                    },
                }
            })
            .collect(),
    }
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_rules),
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

/// The value at a dotted path with `[i]` indexes, as kube-cel reports paths.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    if path.is_empty() {
        return Some(cur);
    }
    for seg in path.split('.') {
        let (name, rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx.trim_matches('"'))?,
            };
        }
    }
    Some(cur)
}
