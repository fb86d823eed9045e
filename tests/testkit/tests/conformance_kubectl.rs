//! Conformance of the Kubernetes API emulator against the real kubectl, with the kubeconfig the emulator
//! writes and the commands users run: apply CRDs and a gate, get (server-side columns), get -o yaml,
//! describe, patch --subresource=status, wait --for=condition=Ready, delete, and an invalid object.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(emu: &KubeEmulator) -> Option<Kubectl> {
        if !Path::new(KUBECTL).exists() {
            eprintln!("SKIPPED: {KUBECTL} is not installed; CI installs it (apt-get install kubectl) and runs these tests");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
        let cache = dir.path().join("cache");
        Some(Kubectl {
            kubeconfig,
            cache,
            _dir: dir,
        })
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(KUBECTL);
        cmd.args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self._dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and insists on exit code 0; returns stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({:?}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status.code()
        );
        stdout
    }
}

const GATE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: orders
---
apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata:
  name: orders-base
  namespace: orders
spec:
  azureDevOps:
    organizationUrl: https://dev.azure.com/contoso
    project: Shop
    credentials:
      secretRef: {name: ado-pat, key: token}
  pipeline:
    definitionId: 183
    branch: develop
"#;

const READY_STATUS: &str = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Succeeded","message":"Run 20261122.4 of \"base-image\" succeeded","lastTransitionTime":"2026-11-22T10:00:00Z","observedGeneration":1}],"latestRun":{"id":5,"buildNumber":"20261122.4","commit":"abc1234"}}}"#;

fn repo_crds() -> String {
    format!("{}/../../crds", env!("CARGO_MANIFEST_DIR"))
}

/// An emulator without CRDs: kubectl registers them.
async fn bare() -> KubeEmulator {
    KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_crds_and_a_gate_then_gets_describes_patches_waits_and_deletes() {
    let emu = bare().await;
    let Some(k) = Kubectl::new(&emu) else { return };

    let applied = k.ok(&["apply", "-f", &repo_crds()], None);
    assert!(
        applied.contains(
            "customresourcedefinition.apiextensions.k8s.io/pipelinegates.lockstep.dev created"
        ),
        "{applied}"
    );
    let crds = k.ok(&["get", "crds"], None);
    assert!(
        crds.contains("pipelinegates.lockstep.dev") && crds.contains("servicetraces.lockstep.dev"),
        "{crds}"
    );

    let created = k.ok(&["apply", "-f", "-"], Some(GATE));
    assert!(
        created.contains("namespace/orders created")
            && created.contains("pipelinegate.lockstep.dev/orders-base created"),
        "{created}"
    );
    // Re-applying unchanged is a no-op.
    let again = k.ok(&["apply", "-f", "-"], Some(GATE));
    assert!(
        again.contains("pipelinegate.lockstep.dev/orders-base unchanged"),
        "{again}"
    );

    let table = k.ok(&["get", "pipelinegates", "-n", "orders"], None);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "REASON", "RUN", "COMMIT", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("orders-base")),
        "{table}"
    );

    let yaml = k.ok(
        &["get", "pgate", "orders-base", "-n", "orders", "-o", "yaml"],
        None,
    );
    assert!(
        yaml.contains("kind: PipelineGate")
            && yaml.contains("definitionId: 183")
            && yaml.contains("generation: 1")
            && yaml.contains("uid: "),
        "{yaml}"
    );
    // Schema defaults are visible.
    assert!(yaml.contains("suspend: false"), "{yaml}");

    let described = k.ok(&["describe", "pgate", "orders-base", "-n", "orders"], None);
    assert!(
        described.contains("Name:         orders-base")
            && described.contains("Definition Id:  183")
            && described.contains("Events:"),
        "{described}"
    );

    // wait blocks until the status patch below makes the gate Ready.
    let waiter = {
        let kubeconfig = k.kubeconfig.clone();
        let cache = k.cache.clone();
        std::thread::spawn(move || {
            Command::new(KUBECTL)
                .args([
                    "wait",
                    "--for=condition=Ready",
                    "--timeout=20s",
                    "pgate/orders-base",
                    "-n",
                    "orders",
                    "--cache-dir",
                ])
                .arg(cache)
                .env("KUBECONFIG", kubeconfig)
                .output()
                .expect("kubectl wait runs")
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let patched = k.ok(
        &[
            "patch",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "--subresource=status",
            "--type=merge",
            "-p",
            READY_STATUS,
        ],
        None,
    );
    assert!(
        patched.contains("pipelinegate.lockstep.dev/orders-base patched"),
        "{patched}"
    );
    let waited = waiter.join().expect("wait thread");
    assert!(
        waited.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("condition met"));
    // Once Ready, wait returns at once.
    k.ok(
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=20s",
            "pgate/orders-base",
            "-n",
            "orders",
        ],
        None,
    );

    let table = k.ok(&["get", "pgate", "-n", "orders"], None);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        &["orders-base", "True", "Succeeded", "20261122.4", "abc1234"],
        "{table}"
    );

    // The main endpoint ignores status; the spec patch moves generation.
    k.ok(
        &[
            "patch",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true},"status":{"lastError":"ignored"}}"#,
        ],
        None,
    );
    let generation = k.ok(
        &[
            "get",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "-o",
            "jsonpath={.metadata.generation} {.status.lastError}",
        ],
        None,
    );
    assert_eq!(generation.trim(), "2");

    let log = emu.requests();
    assert!(
        log.iter().any(|r| r.method == "PATCH"
            && r.path.ends_with("/pipelinegates/orders-base/status")
            && r.status == 200),
        "{log:?}"
    );
    assert!(
        log.iter().all(|r| r
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("kubectl"))),
        "{log:?}"
    );

    let deleted = k.ok(&["delete", "pgate", "orders-base", "-n", "orders"], None);
    assert!(
        deleted.contains("pipelinegate.lockstep.dev \"orders-base\" deleted"),
        "{deleted}"
    );
    let gone = k.run(&["get", "pgate", "orders-base", "-n", "orders"], None);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr)
        .contains("pipelinegates.lockstep.dev \"orders-base\" not found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_the_apiservers_message_for_invalid_objects() {
    let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(repo_crds()))
        .await
        .expect("emulator starts");
    let Some(k) = Kubectl::new(&emu) else { return };
    let invalid = GATE
        .replace("definitionId: 183", "definitionId: 0")
        .replace("project: Shop", "project: \"\"");
    let out = k.run(&["apply", "-f", "-"], Some(&invalid));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is invalid"), "{stderr}");
    assert!(stderr.contains("spec.pipeline.definitionId: Invalid value: 0: spec.pipeline.definitionId in body should be greater than or equal to 1"), "{stderr}");
    assert!(stderr.contains("spec.azureDevOps.project: Invalid value: \"\": spec.azureDevOps.project in body should be at least 1 chars long"), "{stderr}");

    // Unknown fields are rejected under kubectl's default strict validation.
    let unknown = GATE.replace("    branch: develop", "    branch: develop\n    bogus: 1");
    let out = k.run(&["apply", "-f", "-"], Some(&unknown));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown field \"spec.pipeline.bogus\""),
        "{stderr}"
    );
    // ...and pruned when validation is off.
    k.ok(&["apply", "--validate=false", "-f", "-"], Some(&unknown));
    let pipeline = k.ok(
        &[
            "get",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "-o",
            "jsonpath={.spec.pipeline}",
        ],
        None,
    );
    assert_eq!(pipeline, r#"{"branch":"develop","definitionId":183}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_server_side_apply_reports_conflicts() {
    let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(repo_crds()))
        .await
        .expect("emulator starts");
    let Some(k) = Kubectl::new(&emu) else { return };
    k.ok(&["apply", "--server-side", "-f", "-"], Some(GATE));
    let changed = GATE.replace("branch: develop", "branch: main");
    let out = k.run(
        &[
            "apply",
            "--server-side",
            "--field-manager=someone-else",
            "-f",
            "-",
        ],
        Some(&changed),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl\" using lockstep.dev/v1alpha1: .spec.pipeline.branch"), "{stderr}");
    k.ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=someone-else",
            "-f",
            "-",
        ],
        Some(&changed),
    );
    let branch = k.ok(
        &[
            "get",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "-o",
            "jsonpath={.spec.pipeline.branch}",
        ],
        None,
    );
    assert_eq!(branch, "main");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_watch_prints_rows_as_objects_change() {
    let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(repo_crds()))
        .await
        .expect("emulator starts");
    let Some(k) = Kubectl::new(&emu) else { return };
    k.ok(&["apply", "-f", "-"], Some(GATE));
    let watcher = {
        let kubeconfig = k.kubeconfig.clone();
        let cache = k.cache.clone();
        std::thread::spawn(move || {
            // `kubectl get -w` runs until stopped; the watch's own timeout ends it.
            Command::new(KUBECTL)
                .args([
                    "get",
                    "pgate",
                    "-n",
                    "orders",
                    "-w",
                    "--request-timeout=4s",
                    "--cache-dir",
                ])
                .arg(cache)
                .env("KUBECONFIG", kubeconfig)
                .output()
                .expect("kubectl get -w runs")
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    k.ok(
        &[
            "patch",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "--subresource=status",
            "--type=merge",
            "-p",
            READY_STATUS,
        ],
        None,
    );
    let out = watcher.join().expect("watch thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == ["NAME", "READY", "REASON", "RUN", "COMMIT", "AGE"]),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lines.iter().any(|l| l.starts_with("orders-base")
            && l.contains("True")
            && l.contains("20261122.4")),
        "the change is printed: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_describe_lists_events_published_through_events_k8s_io() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(repo_crds()))
        .await
        .expect("emulator starts");
    let Some(k) = Kubectl::new(&emu) else { return };
    k.ok(&["apply", "-f", "-"], Some(GATE));
    let uid = k.ok(
        &[
            "get",
            "pgate",
            "orders-base",
            "-n",
            "orders",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    let reference = ObjectReference {
        api_version: Some("lockstep.dev/v1alpha1".into()),
        kind: Some("PipelineGate".into()),
        name: Some("orders-base".into()),
        namespace: Some("orders".into()),
        uid: Some(uid),
        ..Default::default()
    };
    let recorder = Recorder::new(
        emu.client().await,
        Reporter {
            controller: "lockstep".into(),
            instance: Some("lockstep-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "GateOpened".into(),
        note: Some("Run 20261122.4 of \"base-image\" succeeded".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.expect("publish");
    let described = k.ok(&["describe", "pgate", "orders-base", "-n", "orders"], None);
    let events_section = described.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events_section.contains("Normal")
            && events_section.contains("GateOpened")
            && events_section.contains("Run 20261122.4 of \"base-image\" succeeded"),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_namespace_secret_and_configmap_like_the_examples() {
    let emu = bare().await;
    let Some(k) = Kubectl::new(&emu) else { return };
    assert!(k
        .ok(&["create", "namespace", "orders"], None)
        .contains("namespace/orders created"));
    let out = k.ok(
        &[
            "-n",
            "orders",
            "create",
            "secret",
            "generic",
            "ado-pat",
            "--from-literal=token=my-pat",
        ],
        None,
    );
    assert!(out.contains("secret/ado-pat created"), "{out}");
    let token = k.ok(
        &[
            "-n",
            "orders",
            "get",
            "secret",
            "ado-pat",
            "-o",
            "jsonpath={.data.token} {.type}",
        ],
        None,
    );
    assert_eq!(token, "bXktcGF0 Opaque");
    k.ok(
        &[
            "-n",
            "orders",
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
        None,
    );
    assert_eq!(
        k.ok(
            &[
                "-n",
                "orders",
                "get",
                "configmap",
                "settings",
                "-o",
                "jsonpath={.data.mode}"
            ],
            None
        ),
        "fast"
    );
    let dup = k.run(&["create", "namespace", "orders"], None);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("namespaces \"orders\" already exists"));
    let listed = k.ok(&["get", "namespaces"], None);
    let names: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, vec!["default", "kube-system", "orders"], "{listed}");
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: default
  labels: {app: orders}
spec:
  replicas: 2
  selector:
    matchLabels: {app: orders}
  template:
    metadata:
      labels: {app: orders}
    spec:
      containers:
      - name: app
        image: contoso.azurecr.io/orders:20261122.4
        env:
        - {name: MODE, value: fast}
      - name: sidecar
        image: envoy:1
"#;

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reapplies_a_deployment_with_a_strategic_merge_patch() {
    let emu = bare().await;
    let Some(k) = Kubectl::new(&emu) else { return };
    assert!(k
        .ok(&["apply", "-f", "-"], Some(DEPLOYMENT))
        .contains("deployment.apps/orders created"));
    let changed = DEPLOYMENT
        .replace("orders:20261122.4", "orders:20261122.5")
        .replace("      - name: sidecar\n        image: envoy:1\n", "");
    assert!(k
        .ok(&["apply", "-f", "-"], Some(&changed))
        .contains("deployment.apps/orders configured"));
    let images = k.ok(
        &[
            "get",
            "deployment",
            "orders",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image} {.metadata.generation}",
        ],
        None,
    );
    assert_eq!(images, "contoso.azurecr.io/orders:20261122.5 2");
    let env = k.ok(
        &[
            "get",
            "deployment",
            "orders",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}",
        ],
        None,
    );
    assert_eq!(env, "fast");
}
