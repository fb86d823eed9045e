//! The harness the end-to-end tests share: the Kubernetes API emulator and the Azure DevOps simulator
//! in-process, a kubeconfig for them, the real kubectl to drive them, and the real `lockstep` binary as a
//! subprocess.
//!
//! Each test binary that declares `mod common;` compiles its own copy and uses only part of it, so the
//! unused rest would be dead code there; hence the allow below.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use lockstep_testkit::ado::AdoSimulator;
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use tokio::process::{Child, Command};

/// The organization and project every e2e test's simulator serves.
pub const ORG: &str = "contoso";
pub const PROJECT: &str = "Shop";

/// Flux's Kustomization CRD, trimmed from upstream in `tests/testkit/crds/` (with its status subresource
/// and the spec fields it requires), as `(file name, YAML)` for [`Harness::start`].
pub const FLUX_KUSTOMIZATION_CRD: (&str, &str) = (
    "kustomizations.kustomize.toolkit.fluxcd.io.yaml",
    include_str!("../testkit/crds/kustomizations.kustomize.toolkit.fluxcd.io.yaml"),
);
/// Argo CD's Application CRD, trimmed from upstream in `tests/testkit/crds/` (no status subresource, as
/// upstream: see [`Harness::patch_status`]).
pub const ARGO_APPLICATION_CRD: (&str, &str) = (
    "applications.argoproj.io.yaml",
    include_str!("../testkit/crds/applications.argoproj.io.yaml"),
);

/// Emulator, simulator (knowing `pat` for [`ORG`] and the project [`PROJECT`]), a scratch directory for
/// logs and files, and the kubeconfig that points kubectl and lockstep at the emulator.
pub struct Harness {
    pub emu: KubeEmulator,
    pub sim: AdoSimulator,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Harness {
    /// Serves lockstep's CRDs plus `extra_crds` (file name, YAML), e.g. stand-ins for Flux or Argo CD.
    pub async fn start(pat: &str, extra_crds: &[(&str, &str)]) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut config = EmulatorConfig::default().crds_dir(crds);
        if !extra_crds.is_empty() {
            let extra_dir = dir.path().join("extra-crds");
            std::fs::create_dir(&extra_dir).expect("mkdir");
            for (file, yaml) in extra_crds {
                std::fs::write(extra_dir.join(file), yaml).expect("write CRD");
            }
            config = config.crds_dir(extra_dir);
        }
        let emu = KubeEmulator::start(config).await.expect("emulator starts");
        let sim = AdoSimulator::start().await.expect("simulator starts");
        sim.add_token(ORG, pat);
        sim.add_project(ORG, PROJECT);
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Harness {
            emu,
            sim,
            dir,
            kubeconfig,
        }
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub async fn kubectl_raw(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            pipe.write_all(input.as_bytes()).await.expect("stdin");
            // kubectl reads until end of input.
            drop(pipe);
        }
        let out = child.wait_with_output().await.expect("kubectl finishes");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and returns its stdout; fails the test when kubectl fails.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl_raw(args, None).await;
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// `kubectl apply` with kubectl's normal (strict) validation against the emulator's OpenAPI.
    pub async fn try_apply(&self, yaml: &str) -> Result<(), String> {
        let (ok, _, err) = self.kubectl_raw(&["apply", "-f", "-"], Some(yaml)).await;
        if ok {
            Ok(())
        } else {
            Err(err)
        }
    }

    pub async fn apply(&self, yaml: &str) {
        if let Err(err) = self.try_apply(yaml).await {
            panic!("kubectl apply failed: {err}\n{yaml}");
        }
    }

    /// A namespace and the Secret `ado-pat` (key `token`) in it. Applied as YAML: kubectl's typed
    /// `create` subcommands speak protobuf, which the emulator (like many test servers) does not.
    pub async fn namespace_with_pat(&self, ns: &str, pat: &str) {
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pat);
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ado-pat, namespace: {ns}}}\ndata: {{token: {token}}}\n"
        ))
        .await;
    }

    /// Merge-patches the status of `kind/name` in `ns` the way its controller writes it: through the
    /// status subresource, except for Argo CD Applications, whose CRD has none upstream (the application
    /// controller updates `.status` through the main endpoint).
    pub async fn patch_status(&self, ns: &str, kind: &str, name: &str, status: serde_json::Value) {
        let patch = serde_json::json!({ "status": status }).to_string();
        let mut args = vec!["-n", ns, "patch", kind, name, "--type=merge", "-p", &patch];
        if !matches!(kind, "application" | "applications" | "app") {
            args.push("--subresource=status");
        }
        self.kubectl(&args).await;
    }

    /// A Flux Kustomization `flux-system/name` (Namespace `flux-system` must exist) that reports
    /// `revision` of branch `main` as applied and is Ready.
    pub async fn kustomization_at(&self, name: &str, revision: &str) {
        self.apply(&format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: flux-system}}\nspec: {{interval: 5m, path: ./, prune: true, sourceRef: {{kind: GitRepository, name: {name}}}}}\n"
        ))
        .await;
        self.patch_status(
            "flux-system",
            "kustomization",
            name,
            serde_json::json!({
                "observedGeneration": 1,
                "lastAppliedRevision": format!("main@sha1:{revision}"),
                "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                                "message": "Applied revision", "lastTransitionTime": "2026-11-22T10:00:00Z"}]
            }),
        )
        .await;
    }

    /// `lockstep run` against the emulator with `extra` flags, logging JSON to `log`.
    pub fn spawn_lockstep(&self, log: &Path, extra: &[&str]) -> Child {
        let file = std::fs::File::create(log).expect("log file");
        lockstep_command(&self.kubeconfig)
            .args(["--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info,lockstep=debug")
            // Leader election would take its identity from it; the tests' processes must differ by pid.
            .env_remove("POD_NAME")
            .stderr(file)
            .spawn()
            .expect("lockstep starts")
    }
}

/// `lockstep run` against the cluster in `kubeconfig`, on ephemeral ports (tests run concurrently),
/// killed when the child is dropped. Add flags, and stderr for the logs.
pub fn lockstep_command(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.args([
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--webhook-addr",
        "127.0.0.1:0",
    ])
    .env("KUBECONFIG", kubeconfig)
    .stdout(Stdio::null())
    .kill_on_drop(true);
    cmd
}

/// The condition of `type_` in an object's status, if any.
pub fn condition<'a>(obj: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}
