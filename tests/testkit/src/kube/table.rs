//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`: server-side printing from
//! additionalPrinterColumns, with the simple JSONPath the apiserver allows there.

use serde_json::{json, Value};

use super::resources::{PrinterColumn, ResourceType};

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.a.b=="v")]` (also `!=`).
    Filter(Vec<String>, String, bool),
}

/// Parses `.status.conditions[?(@.type=="Ready")].status`-style paths. Err: where it stopped making sense.
fn parse(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let mut depth = 0;
                let start = i;
                while i < chars.len() {
                    match chars[i] {
                        '[' | '(' => depth += 1,
                        ']' | ')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                let inner: String = chars[start + 1..i - 1].iter().collect();
                steps.push(
                    parse_bracket(&inner).ok_or_else(|| {
                        format!("unsupported JSONPath element [{inner}] in {path}")
                    })?,
                );
            }
            c if i == 0 && c.is_alphabetic() => {
                // Paths without a leading dot.
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
            c => return Err(format!("unexpected {c:?} in JSONPath {path}")),
        }
    }
    Ok(steps)
}

fn parse_bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(Step::Index(i));
    }
    if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Some(Step::Field(q.to_string()));
    }
    let expr = inner.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (lhs, rhs, eq) = if let Some((l, r)) = expr.split_once("!=") {
        (l, r, false)
    } else {
        let (l, r) = expr.split_once("==")?;
        (l, r, true)
    };
    let fields: Vec<String> = lhs
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(str::to_string)
        .collect();
    let value = rhs.trim().trim_matches('"').trim_matches('\'').to_string();
    Some(Step::Filter(fields, value, eq))
}

fn eval<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(f) => next.extend(v.get(f)),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(fields, want, eq) => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut f = Some(item);
                        for name in fields {
                            f = f.and_then(|x| x.get(name));
                        }
                        let got = match f {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(other) => Some(other.to_string()),
                            None => None,
                        };
                        if got.as_deref().is_some_and(|g| g == want) == *eq {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn cell(col: &PrinterColumn, obj: &Value) -> Value {
    let Ok(steps) = parse(&col.json_path) else {
        return Value::Null;
    };
    let found = eval(&steps, obj);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    match (col.type_.as_str(), first) {
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Null) => Value::Null,
        ("string", other) => json!(other.to_string()),
        (_, v) => (*v).clone(),
    }
}

fn name_column() -> Value {
    json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", "priority": 0})
}

fn columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    if !rt.printer_columns.is_empty() {
        return rt.printer_columns.clone();
    }
    let col = |name: &str, type_: &str, path: &str| PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        json_path: path.into(),
        priority: 0,
    };
    let mut cols = match rt.kind.as_str() {
        "Namespace" => vec![col("Status", "string", ".status.phase")],
        "Secret" => vec![col("Type", "string", ".type")],
        "Lease" => vec![col("Holder", "string", ".spec.holderIdentity")],
        "Event" => vec![
            col("Type", "string", ".type"),
            col("Reason", "string", ".reason"),
        ],
        _ => Vec::new(),
    };
    cols.push(col("Age", "date", ".metadata.creationTimestamp"));
    cols
}

/// A `meta.k8s.io/v1` Table of `objects` (already in the resource's view).
pub(crate) fn table(
    rt: &ResourceType,
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
) -> Value {
    let cols = columns(rt);
    let mut defs = vec![name_column()];
    defs.extend(cols.iter().map(|c| {
        let mut d = json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority});
        if d["description"] == "" {
            d["description"] = json!(format!("Custom resource definition column (in JSONPath format): {}", c.json_path));
        }
        d
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(cols.iter().map(|c| cell(c, o)));
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let obj = json!({"status": {"conditions": [{"type": "Stalled", "status": "False"}, {"type": "Ready", "status": "True", "reason": "Succeeded"}], "latestRun": {"buildNumber": "20261122.4"}}, "spec": {"n": 3}});
        let col = |path: &str, t: &str| PrinterColumn {
            name: "x".into(),
            type_: t.into(),
            format: String::new(),
            description: String::new(),
            json_path: path.into(),
            priority: 0,
        };
        assert_eq!(
            cell(
                &col(".status.conditions[?(@.type==\"Ready\")].status", "string"),
                &obj
            ),
            json!("True")
        );
        assert_eq!(
            cell(
                &col(".status.conditions[?(@.type=='Ready')].reason", "string"),
                &obj
            ),
            json!("Succeeded")
        );
        assert_eq!(
            cell(&col(".status.conditions[0].type", "string"), &obj),
            json!("Stalled")
        );
        assert_eq!(
            cell(&col(".status.conditions[*].type", "string"), &obj),
            json!("Stalled")
        );
        assert_eq!(
            cell(&col(".status.latestRun.buildNumber", "string"), &obj),
            json!("20261122.4")
        );
        assert_eq!(cell(&col(".spec.n", "integer"), &obj), json!(3));
        assert_eq!(cell(&col(".spec.n", "string"), &obj), json!("3"));
        assert_eq!(cell(&col(".status.missing", "string"), &obj), Value::Null);
    }
}
