//! The Argo CD health checks in `examples/argocd/` run inside Argo CD's Lua 5.1 interpreter, where a bug
//! means a deployment that never waits (or never proceeds). These tests run the shipped scripts in real
//! Lua 5.1 (PUC Lua built from source by `mlua`'s `vendored` feature: no system package) against status
//! objects in the shape the controller writes (`tests/fixtures/{gate,trace}-status/*.json`) and check the
//! verdict Argo CD would see; one test runs the real controller and checks the verdict on every status it
//! writes.

#[path = "common/argocd_lua.rs"]
mod argocd_lua;
mod common;

use std::path::Path;

use argocd_lua::run_health_check;

use lockstep::crd::{PipelineGate, ServiceTrace};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(dir: &str, name: &str) -> Value {
    let path = root()
        .join("tests/fixtures")
        .join(dir)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn script(name: &str) -> String {
    let path = root().join("examples/argocd").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn condition_message(obj: &Value, kind: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("fixture has no {kind} condition message"))
        .to_owned()
}

struct Case {
    fixture: &'static str,
    status: &'static str,
    /// The message Argo CD should show.
    message: Expected,
}

/// Either a fixed text or the message of one of the fixture's conditions.
enum Expected {
    Exactly(&'static str),
    ConditionMessage(&'static str),
}

fn check_cases(script_name: &str, fixture_dir: &str, cases: &[Case]) {
    let script = script(script_name);
    for case in cases {
        let obj = fixture(fixture_dir, case.fixture);
        let (status, message) = run_health_check(&script, &obj);
        let expected_message = match case.message {
            Expected::Exactly(m) => m.to_owned(),
            Expected::ConditionMessage(kind) => condition_message(&obj, kind),
        };
        assert_eq!(
            (status.as_str(), message.as_str()),
            (case.status, expected_message.as_str()),
            "{script_name} on {fixture_dir}/{}.json",
            case.fixture
        );
    }
}

#[test]
fn pipeline_gate_health() {
    check_cases(
        "health-pipelinegate.lua",
        "gate-status",
        &[
            Case {
                fixture: "ready-succeeded",
                status: "Healthy",
                message: Expected::ConditionMessage("Ready"),
            },
            Case {
                fixture: "no-status",
                status: "Progressing",
                message: Expected::Exactly("Waiting for lockstep to observe generation 1"),
            },
            Case {
                fixture: "waiting-run-queued",
                status: "Progressing",
                message: Expected::ConditionMessage("Ready"),
            },
            Case {
                fixture: "waiting-run-in-progress",
                status: "Progressing",
                message: Expected::ConditionMessage("Ready"),
            },
            // Ready=True from the previous spec must not let a sync wave pass.
            Case {
                fixture: "stale-generation",
                status: "Progressing",
                message: Expected::Exactly("Waiting for lockstep to observe generation 2"),
            },
            Case {
                fixture: "stalled-run-failed",
                status: "Degraded",
                message: Expected::ConditionMessage("Stalled"),
            },
            Case {
                fixture: "stalled-timed-out",
                status: "Degraded",
                message: Expected::ConditionMessage("Stalled"),
            },
            // Azure DevOps unreachable for staleAfter: not a verdict either way.
            Case {
                fixture: "ready-unknown-api-unavailable",
                status: "Progressing",
                message: Expected::ConditionMessage("Ready"),
            },
        ],
    );
}

#[test]
fn service_trace_health() {
    check_cases(
        "health-servicetrace.lua",
        "trace-status",
        &[
            Case {
                fixture: "ready",
                status: "Healthy",
                message: Expected::ConditionMessage("Ready"),
            },
            Case {
                fixture: "no-status",
                status: "Progressing",
                message: Expected::Exactly("Waiting for lockstep to observe generation 1"),
            },
            Case {
                fixture: "in-progress",
                status: "Progressing",
                message: Expected::ConditionMessage("Ready"),
            },
            Case {
                fixture: "stalled",
                status: "Degraded",
                message: Expected::ConditionMessage("Stalled"),
            },
        ],
    );
}

/// Degraded shows the Stalled condition's message, and Ready's when Stalled has none, so Argo CD never
/// shows an empty reason. (The controller writes one message on all three conditions; these tests make
/// them differ to see which one is used.)
#[test]
fn degraded_message_comes_from_stalled_then_ready() {
    let base = fixture("gate-status", "stalled-run-failed");
    let ready_message = condition_message(&base, "Ready");
    for (stalled_message, expected) in [
        ("the Stalled message", "the Stalled message"),
        ("", ready_message.as_str()),
    ] {
        let mut obj = base.clone();
        for c in obj["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
        {
            if c["type"] == "Stalled" {
                c["message"] = Value::String(stalled_message.to_owned());
            }
        }
        let (status, message) = run_health_check(&script("health-pipelinegate.lua"), &obj);
        assert_eq!((status.as_str(), message.as_str()), ("Degraded", expected));
    }
}

/// Strings with quotes, backslashes, newlines and control characters reach Lua unchanged.
#[test]
fn lua_literal_round_trips_awkward_strings() {
    let awkward = "Run \"x\" \\ failed:\n\ttab\r\u{1}1 ünïcode";
    let obj = serde_json::json!({
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "message": awkward}
        ]}
    });
    let (status, message) = run_health_check(&script("health-pipelinegate.lua"), &obj);
    assert_eq!((status.as_str(), message.as_str()), ("Healthy", awkward));
}

/// argocd-cm.yaml inlines both scripts; an edit to one copy only would ship a different check.
#[test]
fn argocd_cm_inlines_the_scripts_verbatim() {
    let path = root().join("examples/argocd/argocd-cm.yaml");
    let text = std::fs::read_to_string(&path).expect("read argocd-cm.yaml");
    let cm: Value = serde_saphyr::from_str(&text).expect("argocd-cm.yaml is YAML");
    for (key, file) in [
        (
            "resource.customizations.health.lockstep.dev_PipelineGate",
            "health-pipelinegate.lua",
        ),
        (
            "resource.customizations.health.lockstep.dev_ServiceTrace",
            "health-servicetrace.lua",
        ),
    ] {
        let inlined = cm["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("argocd-cm.yaml has no data.{key}"));
        assert_eq!(
            inlined,
            script(file),
            "argocd-cm.yaml data.{key} differs from examples/argocd/{file}"
        );
    }
}

/// The fixtures stand for what the controller writes, so they must parse as the CRD types (every
/// condition with type/status/reason/message/observedGeneration/lastTransitionTime).
#[test]
fn fixtures_have_the_shape_of_the_crd_types() {
    for (dir, parse) in [
        (
            "gate-status",
            (|v| serde_json::from_value::<PipelineGate>(v).map(|_| ())) as fn(Value) -> _,
        ),
        ("trace-status", |v| {
            serde_json::from_value::<ServiceTrace>(v).map(|_| ())
        }),
    ] {
        let entries =
            std::fs::read_dir(root().join("tests/fixtures").join(dir)).expect("fixture dir");
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("file name");
            let value = fixture(dir, name);
            parse(value.clone())
                .unwrap_or_else(|e| panic!("{}: not a valid object: {e}", path.display()));
            if let Some(conditions) = value["status"]["conditions"].as_array() {
                for c in conditions {
                    for field in [
                        "type",
                        "status",
                        "reason",
                        "message",
                        "observedGeneration",
                        "lastTransitionTime",
                    ] {
                        assert!(
                            c.get(field).is_some(),
                            "{}: condition without {field}: {c}",
                            path.display()
                        );
                    }
                }
            }
            count += 1;
        }
        assert!(count > 0, "no fixtures in tests/fixtures/{dir}");
    }
}

/// The same script against statuses the real controller wrote: `lockstep run` against the test kit
/// follows a pipeline through queued, running, failed and succeeded, and Argo CD's verdict is computed
/// from each live object as `kubectl get -o json` returns it. A stopped controller and a spec change
/// leave a stale `observedGeneration`, which must read as Progressing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_read_statuses_the_controller_wrote() {
    use common::{condition, Harness, ORG, PROJECT};
    use lockstep_testkit::ado::RunResult;
    use std::time::{Duration, Instant};

    let script = script("health-pipelinegate.lua");
    const PAT: &str = "lua-e2e-pat-41d0";
    const SHA: &str = "4444444444444444444444444444444444444444";
    let h = Harness::start(PAT, &[]).await;
    h.sim.add_definition(ORG, PROJECT, 183, "base-image");
    h.namespace_with_pat("orders", PAT).await;
    let first = h.sim.queue_run(ORG, PROJECT, 183, "main", SHA);
    h.apply(&format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata: {{name: base, namespace: orders}}
spec:
  azureDevOps:
    organizationUrl: {}
    project: {PROJECT}
    credentials: {{secretRef: {{name: ado-pat, key: token}}}}
  pipeline: {{definitionId: 183, branch: main}}
  interval: 1s
",
        h.sim.org_url(ORG)
    ))
    .await;
    let log = h.dir.path().join("lockstep.log");
    let mut lockstep = h.spawn_lockstep(&log, &["--fast-interval", "1s"]);

    let live = |reason: &'static str| {
        let h = &h;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = h
                    .kubectl(&["-n", "orders", "get", "pipelinegate", "base", "-o", "json"])
                    .await;
                let obj: Value = serde_json::from_str(&text).expect("kubectl JSON");
                if condition(&obj, "Ready").is_some_and(|c| c["reason"] == reason) {
                    return obj;
                }
                assert!(Instant::now() < deadline, "no {reason} in time:\n{obj:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let verdict = |obj: &Value| run_health_check(&script, obj);

    let queued = live("RunQueued").await;
    assert_eq!(
        verdict(&queued),
        ("Progressing".into(), condition_message(&queued, "Ready"))
    );

    h.sim.start_run(first);
    let running = live("RunInProgress").await;
    assert_eq!(
        verdict(&running),
        ("Progressing".into(), condition_message(&running, "Ready"))
    );

    h.sim.complete_run(first, RunResult::Failed);
    let failed = live("RunFailed").await;
    assert_eq!(
        verdict(&failed),
        ("Degraded".into(), condition_message(&failed, "Stalled"))
    );

    let second = h.sim.queue_run(ORG, PROJECT, 183, "main", SHA);
    h.sim.start_run(second);
    h.sim.complete_run(second, RunResult::Succeeded);
    let ready = live("Succeeded").await;
    assert_eq!(
        verdict(&ready),
        ("Healthy".into(), condition_message(&ready, "Ready"))
    );

    // With the controller gone, a spec change is not observed: generation 2, observedGeneration 1.
    lockstep.kill().await.expect("stop lockstep");
    h.kubectl(&[
        "-n",
        "orders",
        "patch",
        "pipelinegate",
        "base",
        "--type=merge",
        "-p",
        r#"{"spec":{"interval":"2s"}}"#,
    ])
    .await;
    let text = h
        .kubectl(&["-n", "orders", "get", "pipelinegate", "base", "-o", "json"])
        .await;
    let stale: Value = serde_json::from_str(&text).expect("kubectl JSON");
    assert_eq!(stale["metadata"]["generation"], 2);
    assert_eq!(stale["status"]["observedGeneration"], 1);
    assert_eq!(
        verdict(&stale),
        (
            "Progressing".into(),
            "Waiting for lockstep to observe generation 2".into()
        )
    );
}
