//! TokenReview and SubjectAccessReview as kube-apiserver answers them: create-only, nothing stored, the
//! request echoed back with a `status` (201 Created).
//! - TokenReview: `pkg/registry/authentication/tokenreview/storage.go` (token required; the request
//!   authenticator's answer, so groups carry `system:authenticated`; unknown tokens are not an HTTP error
//!   but `authenticated` absent (false, omitempty) with `user: {}` and an `error`).
//! - SubjectAccessReview: `pkg/registry/authorization/subjectaccessreview/rest.go` and
//!   `pkg/apis/authorization/validation/validation.go` (exactly one of resourceAttributes and
//!   nonResourceAttributes; user or groups required; 422 otherwise). RBAC never denies, it only does not
//!   allow: `allowed: false` with no `denied` and no reason.

use serde_json::{json, Value};

use super::auth::Attributes;
use super::resources::ResourceType;
use super::server::{lock, Shared};
use super::status::{ApiError, Cause};

/// The audience kube-apiserver reports for tokens when the review names none (its default
/// `--api-audiences`, the service account issuer of kubeadm and kind clusters).
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

fn check_kind(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or(&rt.kind);
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| rt.api_version());
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or the kind ({kind}) does not match {}",
            rt.api_version(),
            rt.kind
        )));
    }
    Ok(())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn echo(rt: &ResourceType, body: &Value) -> Value {
    let mut meta = body.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
        m.entry("creationTimestamp").or_insert(Value::Null);
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta,
           "spec": body.get("spec").cloned().unwrap_or(json!({}))})
}

pub(crate) fn review(shared: &Shared, rt: &ResourceType, body: Value) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    check_kind(rt, &body)?;
    {
        // Every review asked counts, also one rejected as invalid.
        let mut auth = lock(&shared.auth);
        match rt.kind.as_str() {
            "TokenReview" => auth.token_reviews += 1,
            _ => auth.access_reviews += 1,
        }
    }
    match rt.kind.as_str() {
        "TokenReview" => Ok(token_review(shared, rt, &body)?),
        _ => subject_access_review(shared, rt, &body),
    }
}

fn token_review(shared: &Shared, rt: &ResourceType, body: &Value) -> Result<Value, ApiError> {
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let requested = strings(body.pointer("/spec/audiences"));
    let auth = lock(&shared.auth);
    let mut out = echo(rt, body);
    out["status"] = match auth.user_of(token) {
        Some(u) => {
            let mut groups = u.groups.clone();
            if !groups.iter().any(|g| g == "system:authenticated") {
                groups.push("system:authenticated".into());
            }
            let mut user = json!({"username": u.username, "groups": groups});
            if !u.uid.is_empty() {
                user["uid"] = json!(u.uid);
            }
            let audiences = if requested.is_empty() {
                vec![API_AUDIENCE.to_string()]
            } else {
                requested
            };
            json!({"authenticated": true, "user": user, "audiences": audiences})
        }
        None => json!({"user": {}, "error": "invalid bearer token"}),
    };
    Ok(out)
}

fn subject_access_review(
    shared: &Shared,
    rt: &ResourceType,
    body: &Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let user = spec
        .get("user")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let groups = strings(spec.get("groups"));
    let mut causes = Vec::new();
    if resource.is_some() && non_resource.is_some() {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {}: cannot be specified in combination with resourceAttributes",
                super::schema::show(non_resource.unwrap_or(&Value::Null))
            ),
            field: "spec.nonResourceAttributes".into(),
        });
    }
    if resource.is_none() && non_resource.is_none() {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            field: "spec.resourceAttributes".into(),
        });
    }
    if user.is_empty() && groups.is_empty() {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: \"\": at least one of user or group must be specified".into(),
            field: "spec.user".into(),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&rt.kind, &rt.group, "", causes));
    }
    let field = |k: &str| {
        resource
            .and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let auth = lock(&shared.auth);
    let decision = match resource {
        Some(_) => auth.decide(&Attributes {
            user: user.clone(),
            groups: groups.clone(),
            verb: field("verb"),
            group: field("group"),
            resource: field("resource"),
            subresource: field("subresource"),
            namespace: field("namespace"),
            name: field("name"),
        }),
        // Grants cover resources only; non-resource URLs are allowed to system:masters alone.
        None => groups
            .iter()
            .any(|g| g == "system:masters")
            .then(String::new),
    };
    let mut out = echo(rt, body);
    out["status"] = match decision {
        Some(reason) if !reason.is_empty() => json!({"allowed": true, "reason": reason}),
        Some(_) => json!({"allowed": true}),
        None => json!({"allowed": false}),
    };
    Ok(out)
}
