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

/// The apiserver's `duration.HumanDuration`, which CRD `date` columns are printed with.
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
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
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
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
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(timestamp: &str) -> Value {
    match timestamp.parse::<jiff::Timestamp>() {
        Ok(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        Err(_) => json!("<invalid>"),
    }
}

/// A cell as the apiextensions table convertor fills it: strings printed, dates as ages, typed numbers.
fn cell(col: &PrinterColumn, obj: &Value) -> Value {
    let Ok(steps) = parse(&col.json_path) else {
        return Value::Null;
    };
    let found = eval(&steps, obj);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    match (col.type_.as_str(), first) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => json!(s),
        ("string", other) => json!(other.to_string()),
        ("date", Value::String(s)) => age(s),
        ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => json!(n),
        ("number", Value::Number(n)) => json!(n),
        ("boolean", Value::Bool(b)) => json!(b),
        _ => Value::Null,
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
    // Built-in printers show ages as preformatted strings; the CRD printer shows the raw timestamp.
    if rt.kind == "CustomResourceDefinition" {
        return vec![col("Created At", "date", ".metadata.creationTimestamp")];
    }
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
    cols.push(col("Age", "string", ".metadata.creationTimestamp"));
    cols
}

fn builtin_cell(col: &PrinterColumn, obj: &Value) -> Value {
    let raw = cell(
        &PrinterColumn {
            type_: "string".into(),
            ..col.clone()
        },
        obj,
    );
    match (col.name.as_str(), raw.as_str()) {
        ("Age", Some(ts)) => age(ts),
        _ => raw,
    }
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
            cells.extend(cols.iter().map(|c| if rt.custom { cell(c, o) } else { builtin_cell(c, o) }));
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
    fn human_durations_match_the_apiserver() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (49 * 3600, "2d1h"),
            (8 * 86400, "8d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

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
