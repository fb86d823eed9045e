//! The container image, run the way the Helm chart runs it, against the test kit: `lockstep run` in the
//! image with a read-only root filesystem, every capability dropped, `no-new-privileges`, uid/gid 65532
//! (charts/lockstep/templates/deployment.yaml's securityContext), the webhook credentials as a read-only
//! file mount plus the username from the environment, and host networking so it reaches the emulator and
//! the simulator on loopback. A PipelineGate must go Ready.
//!
//! Runs when `LOCKSTEP_IMAGE` names an image podman can run (`scripts/build-image.sh` builds it, offline,
//! from the Dockerfile's `runtime` stage: the image users get). Without one, or without podman, the test is
//! skipped with the reason printed -- except under `CI=true`, where it fails: CI must test the image.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{condition, Harness, ORG, PROJECT};
use lockstep_testkit::ado::RunResult;
use serde_json::Value;

const PAT: &str = "image-pat-5e1d0c";
const DEFINITION: i64 = 42;
const SHA: &str = "3333333333333333333333333333333333333333";
/// Where the chart mounts the webhook credentials.
const AUTH_DIR: &str = "/etc/lockstep/webhook-auth";

/// `podman` with the repository's containers.conf unless the caller chose one (CONTAINERS_CONF): the
/// settings measured on the CI machines (runc, cgroupfs, ulimits), as scripts/build-image.sh uses them.
fn podman() -> std::process::Command {
    let mut cmd = std::process::Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env(
            "CONTAINERS_CONF",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containers.conf"),
        );
    }
    cmd
}

/// The image to test, or `None` after printing why the test is skipped.
fn image_under_test() -> Option<String> {
    let image = std::env::var("LOCKSTEP_IMAGE")
        .ok()
        .filter(|s| !s.is_empty());
    let podman = podman()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing = match (&image, podman) {
        (Some(_), true) => return image,
        (None, _) => "LOCKSTEP_IMAGE is not set (build one with scripts/build-image.sh)",
        (Some(_), false) => "podman is not installed (apt-get install podman buildah skopeo runc)",
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the image test must run, but {missing}");
    }
    eprintln!("skipped: {missing}");
    None
}

/// Removes the container when the test ends, however it ends.
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        podman()
            .args(["logs", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_else(|e| format!("(podman logs failed: {e})"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory the container sees read-only: the kubeconfig and the webhook credential file, readable by
/// uid 65532 (the temporary directory itself is private to the test's user).
fn share(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_the_chart_runs_it_and_opens_a_gate() {
    let Some(image) = image_under_test() else {
        return;
    };
    let harness = Harness::start(PAT, &[]).await;
    harness
        .sim
        .add_definition(ORG, PROJECT, DEFINITION, "base-image");
    let run = harness.sim.queue_run(ORG, PROJECT, DEFINITION, "main", SHA);
    harness.sim.start_run(run);
    harness.sim.complete_run(run, RunResult::Succeeded);
    harness.namespace_with_pat("orders", PAT).await;

    let shared = harness.dir.path().join("mounted");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::copy(&harness.kubeconfig, shared.join("kubeconfig")).expect("copy kubeconfig");
    std::fs::write(shared.join("password"), "image-test-webhook-password").expect("password");
    share(&shared);

    let name = format!("lockstep-image-test-{}", std::process::id());
    let container = Container { name: name.clone() };
    let mount = format!("{}:/config:ro", shared.display());
    let password_flag = format!("--webhook-password-file={AUTH_DIR}/password");
    let password_mount = format!("{}/password:{AUTH_DIR}/password:ro", shared.display());
    let run = tokio::process::Command::from(podman())
        .args([
            "run",
            "--detach",
            "--name",
            &name,
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--user=65532:65532",
            "--network=host",
            "--volume",
            &mount,
            "--volume",
            &password_mount,
            "--env=KUBECONFIG=/config/kubeconfig",
            "--env=LOCKSTEP_WEBHOOK_USERNAME=azure-devops",
            "--env=POD_NAMESPACE=lockstep-system",
            &image,
            // The chart's arguments, on ports free on a shared host.
            "run",
            "--metrics-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
            "--log-format=json",
            &password_flag,
        ])
        .output()
        .await
        .expect("podman runs");
    assert!(
        run.status.success(),
        "podman run failed ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );

    // Created before or after lockstep starts, the gate reads as in progress until lockstep evaluated it
    // (the CRD's status default), then Ready.
    harness
        .apply(&format!(
            "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata: {{name: base, namespace: orders}}
spec:
  azureDevOps:
    organizationUrl: {url}
    project: {PROJECT}
    credentials:
      secretRef: {{name: ado-pat, key: token}}
  pipeline: {{definitionId: {DEFINITION}, branch: main}}
",
            url = harness.sim.org_url(ORG)
        ))
        .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let gate = loop {
        let gate: Value = serde_json::from_str(
            &harness
                .kubectl(&["-n", "orders", "get", "pipelinegate", "base", "-o", "json"])
                .await,
        )
        .expect("gate JSON");
        if condition(&gate, "Ready").is_some_and(|c| c["status"] == "True") {
            break gate;
        }
        assert!(
            Instant::now() < deadline,
            "the gate did not open within 60 s; gate:\n{gate:#}\ncontainer logs:\n{}",
            container.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(gate["status"]["observedGeneration"], 1, "{gate:#}");
    let ready = condition(&gate, "Ready").expect("Ready");
    assert_eq!(ready["reason"], "Succeeded", "{gate:#}");

    // The container really runs as the chart's user, on a read-only root filesystem.
    let inspect = podman()
        .args([
            "inspect",
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.State.Running}}",
            &name,
        ])
        .output()
        .expect("podman inspect");
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "65532:65532 true true",
        "container logs:\n{}",
        container.logs()
    );
    let logs = container.logs();
    assert!(
        !logs.contains("image-test-webhook-password"),
        "the webhook password appeared in the logs"
    );
}
