//! Gates fail closed: a PipelineGate lockstep has not evaluated (no status of its own: lockstep not running,
//! crash-looping, or the gate outside `--namespace`) and one whose status describes an older generation
//! must hold the deployment in every recipe this project ships:
//!
//! - Flux `wait: true` / `healthChecks`: kstatus, ported below from kubernetes-sigs/cli-utils
//!   `pkg/kstatus/status` (`status.go` `Compute` and `checkReadyCondition`, `generic.go`
//!   `checkGenericProperties` and `checkGeneration`, `core.go` `GetLegacyConditionsFn`);
//! - Flux `healthCheckExprs`: the expressions of `examples/flux/gate-kustomization-cel.yaml` in a CEL
//!   interpreter, in the order fluxcd/pkg `runtime/cel/status_evaluator.go` `Evaluate` uses;
//! - the Argo CD Lua health check, in Lua 5.1;
//! - `kubectl wait --for=condition=Ready` (the real kubectl) and `examples/wait-for-gate.sh`, the
//!   fail-fast recipe of `examples/kubectl-wait.md`.
//!
//! kstatus reads an object with no conditions as Current; the CRDs therefore default `status` to
//! Ready=Unknown / Reconciling=True (`lockstep::crd::not_evaluated_status`, see docs/fail-closed.md). The
//! gates below are served by the test kit's emulator from the committed CRDs, with no lockstep running.

#[path = "common/argocd_lua.rs"]
mod argocd_lua;
mod common;

use std::path::Path;

use common::Harness;
use serde_json::{json, Value};

/// kstatus, as kubernetes-sigs/cli-utils `pkg/kstatus/status` computes it (commit 5895ad6, 2025-10-21).
/// Flux's kustomize-controller uses fluxcd/cli-utils, a fork with the same generic rules.
mod kstatus {
    use serde_json::Value;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Status {
        InProgress,
        Failed,
        Current,
        Terminating,
    }

    /// `status.go` `Compute`, for a kind without legacy rules (`core.go` `GetLegacyConditionsFn` knows only
    /// built-in kinds such as Deployment and Pod, never a custom resource).
    pub fn compute(u: &Value) -> (Status, String) {
        if let Some(result) = check_generic_properties(u) {
            return result;
        }
        if let Some(result) = check_ready_condition(u) {
            return result;
        }
        // "we assume that the absence of any known conditions means the resource is current"
        (Status::Current, "Resource is current".into())
    }

    fn conditions(u: &Value) -> Vec<&Value> {
        u.pointer("/status/conditions")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().collect())
            .unwrap_or_default()
    }

    fn field<'a>(c: &'a Value, name: &str) -> &'a str {
        c.get(name).and_then(Value::as_str).unwrap_or_default()
    }

    /// `generic.go` `checkGenericProperties`.
    fn check_generic_properties(u: &Value) -> Option<(Status, String)> {
        if u.pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
        {
            return Some((
                Status::Terminating,
                "Resource scheduled for deletion".into(),
            ));
        }
        if let Some(result) = check_generation(u) {
            return Some(result);
        }
        // The first Reconciling=True or Stalled=True in list order decides.
        for c in conditions(u) {
            if field(c, "type") == "Reconciling" && field(c, "status") == "True" {
                return Some((Status::InProgress, field(c, "message").into()));
            }
            if field(c, "type") == "Stalled" && field(c, "status") == "True" {
                return Some((Status::Failed, field(c, "message").into()));
            }
        }
        None
    }

    /// `generic.go` `checkGeneration`: only when both fields exist.
    fn check_generation(u: &Value) -> Option<(Status, String)> {
        let generation = u.pointer("/metadata/generation")?.as_i64()?;
        let observed = u.pointer("/status/observedGeneration")?.as_i64()?;
        (observed != generation).then(|| {
            let kind = u.get("kind").and_then(Value::as_str).unwrap_or_default();
            (
                Status::InProgress,
                format!("{kind} generation is {generation}, but latest observed generation is {observed}"),
            )
        })
    }

    /// `status.go` `checkReadyCondition`.
    fn check_ready_condition(u: &Value) -> Option<(Status, String)> {
        for c in conditions(u) {
            if field(c, "type") != "Ready" {
                continue;
            }
            match field(c, "status") {
                "True" => return Some((Status::Current, "Resource is Ready".into())),
                "False" | "Unknown" => {
                    return Some((Status::InProgress, field(c, "message").into()))
                }
                _ => {}
            }
        }
        None
    }
}

/// Flux's CEL health checks: fluxcd/pkg `runtime/cel/status_evaluator.go` `Evaluate` (commit e2cfd1a).
mod flux_cel {
    use super::kstatus::Status;
    use serde_json::Value;

    pub struct Exprs {
        pub current: String,
        pub in_progress: Option<String>,
        pub failed: Option<String>,
    }

    /// A generation mismatch is in progress before any expression runs; then inProgress, failed, current,
    /// the first true one wins; none true is in progress. An expression that fails to evaluate is an error
    /// (Flux retries until the Kustomization's timeout).
    pub fn evaluate(exprs: &Exprs, u: &Value) -> Result<Status, String> {
        if let Some(observed) = u
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
        {
            if let Some(generation) = u.pointer("/metadata/generation").and_then(Value::as_i64) {
                if observed != generation {
                    return Ok(Status::InProgress);
                }
            }
        }
        for (expr, status) in [
            (exprs.in_progress.as_deref(), Status::InProgress),
            (exprs.failed.as_deref(), Status::Failed),
            (Some(exprs.current.as_str()), Status::Current),
        ] {
            let Some(expr) = expr else { continue };
            if eval_bool(expr, u)? {
                return Ok(status);
            }
        }
        Ok(Status::InProgress)
    }

    /// Flux evaluates the expression with the object's top-level fields as variables.
    fn eval_bool(expr: &str, u: &Value) -> Result<bool, String> {
        let program = cel::Program::compile(expr).map_err(|e| format!("{expr}: {e}"))?;
        let mut ctx = cel::Context::default();
        for (k, v) in u.as_object().into_iter().flatten() {
            ctx.add_variable(k.as_str(), v.clone())
                .map_err(|e| format!("{k}: {e}"))?;
        }
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("{expr} is not a boolean: {other:?}")),
            Err(e) => Err(format!("{expr}: {e}")),
        }
    }
}

use kstatus::Status;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The PipelineGate health check expressions of the shipped Flux recipe.
fn flux_recipe() -> flux_cel::Exprs {
    let path = root().join("examples/flux/gate-kustomization-cel.yaml");
    let text = std::fs::read_to_string(&path).expect("read the Flux CEL recipe");
    let kustomization: Value = serde_saphyr::from_str(&text).expect("the recipe is YAML");
    let check = kustomization["spec"]["healthCheckExprs"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["kind"] == "PipelineGate"))
        .expect("a PipelineGate health check");
    let expr = |name: &str| check[name].as_str().map(str::to_owned);
    flux_cel::Exprs {
        current: expr("current").expect("current is required"),
        in_progress: expr("inProgress"),
        failed: expr("failed"),
    }
}

fn argocd_verdict(obj: &Value) -> String {
    let path = root().join("examples/argocd/health-pipelinegate.lua");
    let script = std::fs::read_to_string(path).expect("read the Lua check");
    argocd_lua::run_health_check(&script, obj).0
}

fn condition(type_: &str, status: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "R", "message": format!("{type_}={status}"),
           "lastTransitionTime": "2026-11-22T10:00:00Z"})
}

fn gate(generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
        "metadata": {"name": "g", "namespace": "orders", "generation": generation},
        "spec": {},
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

/// The port against the upstream rules, case by case: what kstatus says about every combination of
/// "no status", a stale observedGeneration and Ready / Reconciling / Stalled.
#[test]
fn kstatus_port_follows_the_upstream_generic_rules() {
    use Status::*;
    let conds =
        |cs: &[(&str, &str)]| -> Value { cs.iter().map(|(t, s)| condition(t, s)).collect() };
    let with = |generation: i64, observed: Option<i64>, cs: &[(&str, &str)]| {
        let mut status = json!({"conditions": conds(cs)});
        if let Some(o) = observed {
            status["observedGeneration"] = json!(o);
        }
        gate(generation, Some(status))
    };
    let cases: Vec<(&str, Value, Status)> = vec![
        // The reason this test exists: no status at all reads as Current.
        ("no status", gate(1, None), Current),
        ("empty status", gate(1, Some(json!({}))), Current),
        (
            "no conditions, generation observed",
            with(1, Some(1), &[]),
            Current,
        ),
        (
            "no conditions, stale generation",
            with(2, Some(1), &[]),
            InProgress,
        ),
        (
            "Ready=True",
            with(1, Some(1), &[("Ready", "True")]),
            Current,
        ),
        (
            "Ready=False",
            with(1, Some(1), &[("Ready", "False")]),
            InProgress,
        ),
        (
            "Ready=Unknown",
            with(1, Some(1), &[("Ready", "Unknown")]),
            InProgress,
        ),
        (
            "Ready=True, stale generation",
            with(3, Some(2), &[("Ready", "True")]),
            InProgress,
        ),
        (
            "Ready=True, no observedGeneration",
            with(3, None, &[("Ready", "True")]),
            Current,
        ),
        (
            "Reconciling=True",
            with(1, Some(1), &[("Reconciling", "True")]),
            InProgress,
        ),
        (
            "Reconciling=False",
            with(1, Some(1), &[("Reconciling", "False")]),
            Current,
        ),
        (
            "Stalled=True",
            with(1, Some(1), &[("Stalled", "True")]),
            Failed,
        ),
        (
            "Stalled=False",
            with(1, Some(1), &[("Stalled", "False")]),
            Current,
        ),
        (
            "lockstep's open gate",
            with(
                1,
                Some(1),
                &[
                    ("Ready", "True"),
                    ("Reconciling", "False"),
                    ("Stalled", "False"),
                ],
            ),
            Current,
        ),
        (
            "lockstep's waiting gate",
            with(
                1,
                Some(1),
                &[
                    ("Ready", "False"),
                    ("Reconciling", "True"),
                    ("Stalled", "False"),
                ],
            ),
            InProgress,
        ),
        (
            "lockstep's blocked gate",
            with(
                1,
                Some(1),
                &[
                    ("Ready", "False"),
                    ("Reconciling", "False"),
                    ("Stalled", "True"),
                ],
            ),
            Failed,
        ),
        // Reconciling and Stalled are read before Ready, whatever Ready says.
        (
            "Ready=True, Reconciling=True",
            with(1, Some(1), &[("Ready", "True"), ("Reconciling", "True")]),
            InProgress,
        ),
        (
            "Ready=True, Stalled=True",
            with(1, Some(1), &[("Ready", "True"), ("Stalled", "True")]),
            Failed,
        ),
        // Both true: the first in list order decides.
        (
            "Reconciling then Stalled",
            with(1, Some(1), &[("Reconciling", "True"), ("Stalled", "True")]),
            InProgress,
        ),
        (
            "Stalled then Reconciling",
            with(1, Some(1), &[("Stalled", "True"), ("Reconciling", "True")]),
            Failed,
        ),
        // The generation check comes first: a stale Stalled is in progress, not failed.
        (
            "Stalled=True, stale generation",
            with(2, Some(1), &[("Stalled", "True")]),
            InProgress,
        ),
        (
            "the CRD's default status",
            gate(1, Some(lockstep::crd::not_evaluated_status())),
            InProgress,
        ),
    ];
    for (name, obj, expected) in cases {
        assert_eq!(kstatus::compute(&obj).0, expected, "{name}: {obj:#}");
    }
    let mut deleting = with(1, Some(1), &[("Ready", "True")]);
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:00Z");
    assert_eq!(kstatus::compute(&deleting).0, Terminating);
    let stale = with(3, Some(2), &[]);
    assert_eq!(
        kstatus::compute(&stale).1,
        "PipelineGate generation is 3, but latest observed generation is 2"
    );
}

/// The shipped recipes agree with lockstep's own verdicts: open is Current / Healthy, waiting is in
/// progress, blocked is failed / Degraded. Without this, "holds the deployment" below could be a recipe
/// that never lets anything through.
#[test]
fn recipes_pass_an_open_gate_and_stop_a_blocked_one() {
    let flux = flux_recipe();
    let status = |ready: &str, reconciling: &str, stalled: &str| {
        gate(
            2,
            Some(json!({"observedGeneration": 2, "conditions": [
                condition("Ready", ready), condition("Reconciling", reconciling), condition("Stalled", stalled)
            ]})),
        )
    };
    let open = status("True", "False", "False");
    assert_eq!(kstatus::compute(&open).0, Status::Current);
    assert_eq!(flux_cel::evaluate(&flux, &open), Ok(Status::Current));
    assert_eq!(argocd_verdict(&open), "Healthy");
    let waiting = status("False", "True", "False");
    assert_eq!(kstatus::compute(&waiting).0, Status::InProgress);
    assert_eq!(flux_cel::evaluate(&flux, &waiting), Ok(Status::InProgress));
    assert_eq!(argocd_verdict(&waiting), "Progressing");
    let blocked = status("False", "False", "True");
    assert_eq!(kstatus::compute(&blocked).0, Status::Failed);
    assert_eq!(flux_cel::evaluate(&flux, &blocked), Ok(Status::Failed));
    assert_eq!(argocd_verdict(&blocked), "Degraded");
    // An open verdict on generation 2 whose observedGeneration per condition is missing still needs the
    // status-level observedGeneration to match: the CEL current expression checks it itself too.
    let mut unobserved = open.clone();
    unobserved["status"]
        .as_object_mut()
        .expect("status")
        .remove("observedGeneration");
    assert_eq!(
        flux_cel::evaluate(&flux, &unobserved),
        Ok(Status::InProgress)
    );
}

/// What each recipe says about `obj`; every one must hold the deployment.
async fn assert_held(h: &Harness, obj: &Value, what: &str) {
    let (kstatus, message) = kstatus::compute(obj);
    assert_eq!(
        kstatus,
        Status::InProgress,
        "kstatus on {what} ({message}): {obj:#}"
    );
    let cel = flux_cel::evaluate(&flux_recipe(), obj);
    assert_eq!(cel, Ok(Status::InProgress), "Flux CEL on {what}: {obj:#}");
    assert_eq!(
        argocd_verdict(obj),
        "Progressing",
        "Argo CD on {what}: {obj:#}"
    );
    let (ok, _, err) = h
        .kubectl_raw(
            &[
                "-n",
                "orders",
                "wait",
                "--for=condition=Ready",
                "pipelinegate/g",
                "--timeout=2s",
            ],
            None,
        )
        .await;
    assert!(
        !ok,
        "kubectl wait --for=condition=Ready passed on {what}: {obj:#}"
    );
    assert!(err.contains("timed out"), "kubectl wait on {what}: {err}");
    assert_eq!(
        wait_for_gate_script(h, 2).await,
        2,
        "examples/wait-for-gate.sh on {what}"
    );
}

/// Runs `examples/wait-for-gate.sh orders g TIMEOUT` and returns its exit code.
async fn wait_for_gate_script(h: &Harness, timeout_s: u32) -> i32 {
    let status = tokio::process::Command::new("bash")
        .arg(root().join("examples/wait-for-gate.sh"))
        .args(["orders", "g", &timeout_s.to_string()])
        .env("KUBECONFIG", &h.kubeconfig)
        .env("POLL_SECONDS", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("bash runs");
    status.code().expect("exit code")
}

async fn get_gate(h: &Harness) -> Value {
    let text = h
        .kubectl(&["-n", "orders", "get", "pipelinegate", "g", "-o", "json"])
        .await;
    serde_json::from_str(&text).expect("kubectl JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unevaluated_and_stale_gates_hold_the_deployment_in_every_recipe() {
    let h = Harness::start("fail-closed-pat", &[]).await;
    h.namespace_with_pat("orders", "fail-closed-pat").await;
    // Created with a status of its own, which the status subresource drops on create.
    h.apply(&format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata: {{name: g, namespace: orders}}
spec:
  azureDevOps:
    organizationUrl: {}
    project: Shop
    credentials: {{secretRef: {{name: ado-pat, key: token}}}}
  pipeline: {{definitionId: 7, branch: main}}
",
        h.sim.org_url("contoso")
    ))
    .await;

    // No lockstep: the gate reads back with the CRD's default status.
    let unevaluated = get_gate(&h).await;
    assert_eq!(
        unevaluated["status"],
        lockstep::crd::not_evaluated_status(),
        "the API serves the CRD's default status: {unevaluated:#}"
    );
    assert_held(&h, &unevaluated, "a gate lockstep never evaluated").await;

    // The same object without the default (a cluster with CRDs from before it) is what fails open under
    // kstatus: the reason for the default.
    let mut bare = unevaluated.clone();
    bare.as_object_mut().expect("object").remove("status");
    assert_eq!(kstatus::compute(&bare).0, Status::Current);

    // lockstep opened the gate for generation 1 (the status shape it writes)...
    let fixture =
        std::fs::read_to_string(root().join("tests/fixtures/gate-status/ready-succeeded.json"))
            .expect("fixture");
    let fixture: Value = serde_json::from_str(&fixture).expect("fixture JSON");
    let patch = json!({"status": fixture["status"]}).to_string();
    h.kubectl(&[
        "-n",
        "orders",
        "patch",
        "pipelinegate",
        "g",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .await;
    let open = get_gate(&h).await;
    assert_eq!(open["metadata"]["generation"], 1);
    assert_eq!(kstatus::compute(&open).0, Status::Current, "{open:#}");
    assert_eq!(
        flux_cel::evaluate(&flux_recipe(), &open),
        Ok(Status::Current)
    );
    assert_eq!(argocd_verdict(&open), "Healthy");
    assert_eq!(wait_for_gate_script(&h, 10).await, 0, "the open gate");

    // ... then the spec changed while lockstep was away: Ready=True describes generation 1 of 2.
    h.kubectl(&[
        "-n",
        "orders",
        "patch",
        "pipelinegate",
        "g",
        "--type=merge",
        "-p",
        r#"{"spec":{"pipeline":{"definitionId":8,"branch":"main"}}}"#,
    ])
    .await;
    let stale = get_gate(&h).await;
    assert_eq!(stale["metadata"]["generation"], 2, "{stale:#}");
    assert_eq!(stale["status"]["observedGeneration"], 1, "{stale:#}");
    assert_held(&h, &stale, "a gate whose status is for an older generation").await;

    // Why the recipe is a script: waiting for Reconciling=False with kubectl's jsonpath returns at once on
    // the stale verdict (kubectl checks observedGeneration only for --for=condition).
    let (ok, _, _) = h
        .kubectl_raw(
            &[
                "-n",
                "orders",
                "wait",
                "pipelinegate/g",
                "--timeout=2s",
                "--for=jsonpath={.status.conditions[?(@.type==\"Reconciling\")].status}=False",
            ],
            None,
        )
        .await;
    assert!(ok, "kubectl wait --for=jsonpath no longer passes on a stale verdict: update examples/kubectl-wait.md");
}
