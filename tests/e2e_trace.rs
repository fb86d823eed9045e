//! End to end for ServiceTrace: the real `lockstep` binary against the Kubernetes API emulator (with a
//! Flux Kustomization CRD) and the Azure DevOps simulator, driven with the real kubectl.
//!
//! Waits poll with generous deadlines; nothing asserts speed.

mod common;

use std::time::{Duration, Instant};

use common::{condition, Harness, ARGO_APPLICATION_CRD, FLUX_KUSTOMIZATION_CRD, ORG, PROJECT};
use lockstep_testkit::ado::{HookDelivery, HookEvent, RunResult};
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-trace-pat-5c2e8a";
const NS: &str = "orders";
const SRC: &str = "1234567bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const M1: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const M2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

/// The shared harness plus the trace tests' repositories, pipelines and Flux/Argo CD stand-ins.
struct Env {
    harness: Harness,
}

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

impl Env {
    async fn start() -> Env {
        let harness = Harness::start(PAT, &[FLUX_KUSTOMIZATION_CRD, ARGO_APPLICATION_CRD]).await;
        let sim = &harness.sim;
        sim.add_definition(ORG, PROJECT, 12, "orders-ci");
        sim.add_definition(ORG, PROJECT, 14, "orders-manifests");
        sim.add_repository(ORG, PROJECT, "orders-manifests", &[("main", M1)]);
        harness.namespace_with_pat(NS, PAT).await;
        harness
            .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: argocd}\n")
            .await;
        Env { harness }
    }

    /// The Kustomization `flux-system/orders`, applied and Ready at `revision`.
    async fn kustomization_at(&self, revision: &str) {
        self.harness.kustomization_at("orders", revision).await;
    }

    async fn trace(&self, name: &str, repository: &str) {
        self.trace_deployed(
            name,
            repository,
            "fluxKustomization: {name: orders, namespace: flux-system}",
        )
        .await;
    }

    async fn trace_deployed(&self, name: &str, repository: &str, deployed: &str) {
        self.trace_with(name, repository, deployed, "2s").await;
    }

    async fn trace_with(&self, name: &str, repository: &str, deployed: &str, interval: &str) {
        let manifest = format!("{{repository: {repository}, branch: main, definitionId: 14}}");
        self.apply_trace(name, &manifest, deployed, interval).await;
    }

    async fn apply_trace(&self, name: &str, manifest: &str, deployed: &str, interval: &str) {
        let org_url = self.sim.org_url(ORG);
        self.apply(&format!(
            "apiVersion: lockstep.dev/v1alpha1
kind: ServiceTrace
metadata: {{name: {name}, namespace: {NS}}}
spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials: {{secretRef: {{name: ado-pat, key: token}}}}
  build: {{definitionId: 12, branch: main}}
  manifest: {manifest}
  deployed:
    {deployed}
  interval: {interval}
"
        ))
        .await;
    }

    async fn wait_trace(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let out = self
                .kubectl(&["-n", NS, "get", "servicetrace", name, "-o", "json"])
                .await;
            let trace: Value = serde_json::from_str(&out).expect("json");
            if check(&trace) {
                return trace;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; trace is now:\n{trace:#}\nlockstep log:\n{}",
                std::fs::read_to_string(self.dir.path().join("lockstep.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn lockstep(&self) -> Child {
        self.lockstep_with("1s")
    }

    fn lockstep_with(&self, fast_interval: &str) -> Child {
        self.lockstep_args(&["--fast-interval", fast_interval])
    }

    fn lockstep_args(&self, extra: &[&str]) -> Child {
        self.spawn_lockstep(&self.dir.path().join("lockstep.log"), extra)
    }
}

fn ready_is(trace: &Value, status: &str, reason: &str) -> bool {
    condition(trace, "Ready").is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

fn ready_message(trace: &Value) -> String {
    condition(trace, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test]
async fn trace_follows_a_change_from_build_to_the_kustomization() {
    let env = Env::start().await;
    // An earlier change is fully deployed: build, generation, manifest M1, Kustomization at M1.
    let old = env.sim.queue_run(ORG, PROJECT, 12, "main", M1);
    env.sim.start_run(old);
    env.sim.complete_run(old, RunResult::Succeeded);
    let old_generation = env.sim.queue_run(ORG, PROJECT, 14, "main", M1);
    env.sim.start_run(old_generation);
    env.sim.complete_run(old_generation, RunResult::Succeeded);
    env.kustomization_at(M1).await;
    // A new CI build is running.
    let build = env.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
    env.sim.start_run(build);
    env.trace("orders", "orders-manifests").await;
    let _lockstep = env.lockstep();

    let trace = env
        .wait_trace("orders", WAIT, "Reconciling while the CI build runs", |t| {
            ready_is(t, "False", "BuildInProgress")
        })
        .await;
    assert!(ready_message(&trace).ends_with("is running for commit 1234567"));

    // The build succeeds, manifest generation runs and pushes M2.
    env.sim.complete_run(build, RunResult::Succeeded);
    let generation = env.sim.queue_run(ORG, PROJECT, 14, "main", SRC);
    env.sim.start_run(generation);
    env.sim.complete_run(generation, RunResult::Succeeded);
    env.sim.push(ORG, PROJECT, "orders-manifests", "main", M2);
    let trace = env
        .wait_trace("orders", WAIT, "the new manifest, not yet applied", |t| {
            ready_is(t, "False", "DeployPending")
        })
        .await;
    assert_eq!(
        ready_message(&trace),
        "manifest a1b2c3d not yet applied by Kustomization flux-system/orders; cluster at 9f8e7d6"
    );
    // Its Event is a new one: not a repeat of the BuildInProgress Event that has the same reason.
    let deadline = Instant::now() + WAIT;
    loop {
        let described = env
            .kubectl(&["-n", NS, "describe", "servicetrace", "orders"])
            .await;
        let progressing: Vec<&str> = described
            .lines()
            .filter(|l| l.contains("TraceProgressing"))
            .collect();
        if progressing.iter().any(|l| l.contains("not yet applied")) {
            assert!(
                progressing.iter().any(|l| l.contains("is running")),
                "the build's Event keeps its own message:\n{described}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TraceProgressing Event for the pending deploy:\n{described}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Flux applies M2.
    env.kustomization_at(M2).await;
    let trace = env
        .wait_trace("orders", WAIT, "Ready once Flux applied the head", |t| {
            ready_is(t, "True", "InSync")
        })
        .await;
    let status = &trace["status"];
    let build_number = env.sim.run(build).map(|r| r.build_number).expect("run");
    assert_eq!(status["imageTag"], build_number.as_str());
    assert_eq!(status["manifestCommitId"], M2);
    assert_eq!(status["deployedRevisionShort"], "a1b2c3d");
    let stages = status["stages"].as_array().expect("stages");
    for stage in stages {
        assert_eq!(stage["state"], "Succeeded", "{stage}");
        assert!(stage["commit"].is_string(), "{stage}");
        assert!(stage["updatedTime"].is_string(), "{stage}");
    }
    assert_eq!(stages[0]["run"]["id"], build);
    assert_eq!(stages[1]["run"]["id"], generation);

    // MANIFEST and DEPLOYED are wide columns since the PROGRESS and REASON columns came in.
    let table = env
        .kubectl(&["-n", NS, "get", "strace", "orders", "-o", "wide"])
        .await;
    assert!(
        table.contains(&build_number) && table.contains("a1b2c3d") && table.contains("True"),
        "{table}"
    );
    let described = env
        .kubectl(&["-n", NS, "get", "servicetrace", "orders", "-o", "yaml"])
        .await;
    assert!(!described.contains(PAT));
}

#[tokio::test]
async fn missing_repository_stalls_only_its_own_trace() {
    let env = Env::start().await;
    let build = env.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
    env.sim.start_run(build);
    env.sim.complete_run(build, RunResult::Succeeded);
    let generation = env.sim.queue_run(ORG, PROJECT, 14, "main", SRC);
    env.sim.start_run(generation);
    env.sim.complete_run(generation, RunResult::Succeeded);
    env.kustomization_at(M1).await;
    env.trace("orders", "orders-manifests").await;
    env.trace("broken", "no-such-repo").await;
    let _lockstep = env.lockstep();

    let broken = env
        .wait_trace("broken", WAIT, "Stalled naming the repository", |t| {
            ready_is(t, "False", "ReferenceUnreadable")
        })
        .await;
    let message = ready_message(&broken);
    assert!(
        message.starts_with("manifest repository no-such-repo: "),
        "{message}"
    );
    env.wait_trace("orders", WAIT, "the healthy trace Ready", |t| {
        ready_is(t, "True", "InSync")
    })
    .await;

    // A failed manifest generation stalls the healthy trace, naming the stage.
    let failed = env.sim.queue_run(ORG, PROJECT, 14, "main", SRC);
    env.sim.start_run(failed);
    env.sim.complete_run(failed, RunResult::Failed);
    let trace = env
        .wait_trace("orders", WAIT, "Stalled on the failed generation", |t| {
            ready_is(t, "False", "ManifestGenerationFailed")
        })
        .await;
    assert!(ready_message(&trace).starts_with("manifest generation "));
}

async fn patch_status(env: &Env, ns: &str, kind: &str, name: &str, status: Value) {
    env.harness.patch_status(ns, kind, name, status).await;
}

async fn deployed_change(env: &Env) -> i64 {
    let build = env.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
    env.sim.start_run(build);
    env.sim.complete_run(build, RunResult::Succeeded);
    let generation = env.sim.queue_run(ORG, PROJECT, 14, "main", SRC);
    env.sim.start_run(generation);
    env.sim.complete_run(generation, RunResult::Succeeded);
    env.sim.push(ORG, PROJECT, "orders-manifests", "main", M2);
    build
}

#[tokio::test]
async fn argo_application_variant() {
    let env = Env::start().await;
    deployed_change(&env).await;
    env.apply("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: orders, namespace: argocd}\nspec: {project: default, destination: {name: in-cluster, namespace: orders}}\n").await;
    let synced = |revision: &str| serde_json::json!({"sync": {"status": "Synced", "revision": revision}, "health": {"status": "Healthy"}});
    patch_status(&env, "argocd", "application", "orders", synced(M1)).await;
    env.trace_deployed(
        "orders",
        "orders-manifests",
        "argoApplication: {name: orders, namespace: argocd}",
    )
    .await;
    let _lockstep = env.lockstep();
    let trace = env
        .wait_trace("orders", WAIT, "the Application behind the head", |t| {
            ready_is(t, "False", "DeployPending")
        })
        .await;
    assert_eq!(
        ready_message(&trace),
        "manifest a1b2c3d not yet applied by Application argocd/orders; cluster at 9f8e7d6"
    );
    patch_status(&env, "argocd", "application", "orders", synced(M2)).await;
    env.wait_trace("orders", WAIT, "Ready once Argo CD synced the head", |t| {
        ready_is(t, "True", "InSync")
    })
    .await;
}

#[tokio::test]
async fn workload_image_variant() {
    let env = Env::start().await;
    let build = deployed_change(&env).await;
    let build_number = env.sim.run(build).map(|r| r.build_number).expect("run");
    let deployment = |tag: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: orders, namespace: {NS}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: orders}}}}\n  template:\n    metadata: {{labels: {{app: orders}}}}\n    spec:\n      containers:\n      - {{name: app, image: 'registry.local:5000/orders:{tag}'}}\n"
        )
    };
    env.apply(&deployment("20200101.1")).await;
    env.trace_deployed(
        "orders",
        "orders-manifests",
        "workload: {kind: Deployment, name: orders, container: app}",
    )
    .await;
    let _lockstep = env.lockstep();
    let trace = env
        .wait_trace("orders", WAIT, "the old image", |t| {
            ready_is(t, "False", "DeployPending")
        })
        .await;
    assert_eq!(
        ready_message(&trace),
        format!("image tag {build_number} not yet rolled out to Deployment {NS}/orders; cluster runs 20200101.1")
    );
    env.apply(&deployment(&build_number)).await;
    let generation = env
        .kubectl(&[
            "-n",
            NS,
            "get",
            "deployment",
            "orders",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .await;
    let generation: i64 = generation.trim().parse().unwrap_or(1);
    patch_status(
        &env,
        NS,
        "deployment",
        "orders",
        serde_json::json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1}),
    )
    .await;
    let trace = env
        .wait_trace("orders", WAIT, "Ready once rolled out", |t| {
            ready_is(t, "True", "InSync")
        })
        .await;
    assert_eq!(trace["status"]["deployedRevision"], build_number.as_str());
}

#[tokio::test]
async fn a_flux_sync_flips_the_trace_through_the_watch_not_a_poll() {
    let env = Env::start().await;
    deployed_change(&env).await;
    env.kustomization_at(M1).await;
    // Polling is an hour away: only the Kustomization watch can bring the change in.
    env.trace_with(
        "orders",
        "orders-manifests",
        "fluxKustomization: {name: orders, namespace: flux-system}",
        "1h",
    )
    .await;
    let _lockstep = env.lockstep_with("1h");
    env.wait_trace("orders", WAIT, "the Kustomization behind the head", |t| {
        ready_is(t, "False", "DeployPending")
    })
    .await;
    env.kustomization_at(M2).await;
    env.wait_trace("orders", WAIT, "Ready after the watch event", |t| {
        ready_is(t, "True", "InSync")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_push_hook_advances_the_trace_long_before_the_next_poll() {
    let env = Env::start().await;
    let old = env.sim.queue_run(ORG, PROJECT, 12, "main", M1);
    env.sim.start_run(old);
    env.sim.complete_run(old, RunResult::Succeeded);
    let old_generation = env.sim.queue_run(ORG, PROJECT, 14, "main", M1);
    env.sim.start_run(old_generation);
    env.sim.complete_run(old_generation, RunResult::Succeeded);
    env.kustomization_at(M1).await;
    env.trace_with(
        "orders",
        "orders-manifests",
        "fluxKustomization: {name: orders, namespace: flux-system}",
        "1h",
    )
    .await;
    let hook_token = "trace-hook-token-9d2c";
    let token_file = env.dir.path().join("hook-token");
    std::fs::write(&token_file, format!("{hook_token}\n")).expect("token file");
    let token_path = token_file.to_str().expect("utf-8 path");
    let _lockstep =
        env.lockstep_args(&["--fast-interval", "1h", "--webhook-token-file", token_path]);
    env.wait_trace("orders", WAIT, "Ready at the first change", |t| {
        ready_is(t, "True", "InSync")
    })
    .await;

    // A new change goes through CI and manifest generation; Azure DevOps announces the manifest push.
    let build = env.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
    env.sim.start_run(build);
    env.sim.complete_run(build, RunResult::Succeeded);
    let generation = env.sim.queue_run(ORG, PROJECT, 14, "main", SRC);
    env.sim.start_run(generation);
    env.sim.complete_run(generation, RunResult::Succeeded);
    let push = env.sim.push(ORG, PROJECT, "orders-manifests", "main", M2);
    let log_path = env.dir.path().join("lockstep.log");
    let hook_addr = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "webhook receiver listening")
        .and_then(|l| l["local_addr"].as_str().map(str::to_string))
        .expect("the webhook receiver logs its address");
    let delivery = HookDelivery::to(format!("http://{hook_addr}/hooks/azure-devops"))
        .header("X-Lockstep-Token", hook_token);
    let deadline = Instant::now() + WAIT;
    loop {
        // 503 while the receiver's index is still loading; Azure DevOps retries, and so do we.
        let outcome = env
            .sim
            .deliver_hook(HookEvent::GitPush { push_id: push }, &delivery)
            .await
            .expect("delivery");
        if outcome.status == 202 || outcome.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivery answered {}",
            outcome.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Polling is an hour away: only the hook can bring the new manifest in.
    let trace = env
        .wait_trace(
            "orders",
            WAIT,
            "the pushed manifest, not yet applied",
            |t| ready_is(t, "False", "DeployPending"),
        )
        .await;
    assert_eq!(trace["status"]["manifestCommitId"], M2);
    env.kustomization_at(M2).await;
    let trace = env
        .wait_trace(
            "orders",
            WAIT,
            "Ready once Flux applied the pushed manifest",
            |t| ready_is(t, "True", "InSync"),
        )
        .await;
    let build_number = env.sim.run(build).map(|r| r.build_number).expect("run");
    assert_eq!(trace["status"]["imageTag"], build_number.as_str());
    assert!(!std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains(hook_token));
}

#[tokio::test]
async fn without_a_generation_pipeline_the_manifest_commit_date_decides() {
    let env = Env::start().await;
    // The deployed manifest M1 was committed an hour ago; Flux runs it.
    env.sim.add_repository(ORG, PROJECT, "orders-config", &[]);
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    env.sim
        .push_committed_at(ORG, PROJECT, "orders-config", "main", M1, an_hour_ago);
    env.kustomization_at(M1).await;
    let build = env.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
    env.sim.start_run(build);
    env.apply_trace(
        "orders",
        "{repository: orders-config, branch: main}",
        "fluxKustomization: {name: orders, namespace: flux-system}",
        "2s",
    )
    .await;
    let _lockstep = env.lockstep();
    env.wait_trace("orders", WAIT, "Reconciling while the CI build runs", |t| {
        ready_is(t, "False", "BuildInProgress")
    })
    .await;

    // The build finishes. The cluster runs the manifest head, but that head is older than the build,
    // so it cannot carry the new image: not Ready, and the message says why.
    env.sim.complete_run(build, RunResult::Succeeded);
    let build_number = env.sim.run(build).map(|r| r.build_number).expect("run");
    let trace = env
        .wait_trace("orders", WAIT, "the manifest behind the build", |t| {
            ready_is(t, "False", "ManifestBehindBuild")
        })
        .await;
    let message = ready_message(&trace);
    let committed = format!(
        "{:.0}",
        jiff::Timestamp::from_second(an_hour_ago.as_second()).expect("valid")
    );
    assert!(
        message.starts_with(&format!(
            "manifest 9f8e7d6 (committed {committed}) predates build {build_number} (finished "
        )) && message.ends_with("); waiting for the manifest update"),
        "{message}"
    );
    // It stays so over further polls (each re-reads the builds; the commit's date is read only once).
    let polls = env.sim.count_requests("/_apis/build/builds");
    let deadline = Instant::now() + WAIT;
    while env.sim.count_requests("/_apis/build/builds") < polls + 3 {
        assert!(Instant::now() < deadline, "lockstep stopped polling");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let trace = env.wait_trace("orders", WAIT, "the trace", |_| true).await;
    assert!(
        ready_is(&trace, "False", "ManifestBehindBuild"),
        "{trace:#}"
    );
    // Once per head, not per poll: the head's committer date, the manifest branch's recent commits and
    // the build's source commit (ServiceTrace 2's correlation reads) — 3 on the first poll, none after.
    assert_eq!(env.sim.count_requests("/commits"), 3);

    // The manifest update is pushed after the build finished; Flux has not applied it yet.
    env.sim.push(ORG, PROJECT, "orders-config", "main", M2);
    let trace = env
        .wait_trace(
            "orders",
            WAIT,
            "the pushed manifest, not yet applied",
            |t| ready_is(t, "False", "DeployPending"),
        )
        .await;
    assert_eq!(
        ready_message(&trace),
        "manifest a1b2c3d not yet applied by Kustomization flux-system/orders; cluster at 9f8e7d6"
    );

    // Flux applies it: Ready, every stage filled in, the manifest stage without a pipeline run.
    env.kustomization_at(M2).await;
    let trace = env
        .wait_trace(
            "orders",
            WAIT,
            "Ready once Flux applied the new head",
            |t| ready_is(t, "True", "InSync"),
        )
        .await;
    let status = &trace["status"];
    assert_eq!(status["imageTag"], build_number.as_str());
    assert_eq!(status["manifestCommitId"], M2);
    let stages = status["stages"].as_array().expect("stages");
    for stage in stages {
        assert_eq!(stage["state"], "Succeeded", "{stage}");
        assert!(stage["commit"].is_string(), "{stage}");
    }
    assert_eq!(stages[1]["name"], "manifest");
    assert!(stages[1]["run"].is_null(), "{stage:?}", stage = stages[1]);
    assert!(
        stages[1]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("manifest a1b2c3d committed after build ")),
        "{stage}",
        stage = stages[1]
    );
    // The new head cost two more: its committer date and the branch's recent commits.
    assert_eq!(env.sim.count_requests("/commits"), 5);
}

// ---- ServiceTrace 2: two environments, the whole path, history, stuck steps --------------------------

const HLD: &str = "orders-hld";
/// Source commits of builds 1–3 (in the `Shop` repository), their HLD and manifest commits.
const SRCS: [&str; 3] = [
    "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a41",
    "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a42",
    "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a43",
];
const HLDS: [&str; 3] = [
    "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d41",
    "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d42",
    "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d43",
];
const MANS: [&str; 3] = [
    "a1b2c3d4e5f60718293a4b5c6d7e8f9012345671",
    "a1b2c3d4e5f60718293a4b5c6d7e8f9012345672",
    "a1b2c3d4e5f60718293a4b5c6d7e8f9012345673",
];
const AUTHORS: [&str; 3] = ["Jamal Hartnett", "Norman Paulk", "Chuck Reinhart"];
const TITLES: [&str; 3] = ["Add retries", "Faster checkout", "Fix the cart total"];

/// A two-environment trace: dev is a Flux Kustomization, prod an Argo CD Application; the CI pipeline
/// (12) writes the image tag into the HLD repository, the generation pipeline (14) renders it.
async fn two_environment_trace(env: &Env, name: &str, hld_repo: &str, policy: &str) {
    let org_url = env.sim.org_url(ORG);
    env.apply(&format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: ServiceTrace
metadata: {{name: {name}, namespace: {NS}}}
spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials: {{secretRef: {{name: ado-pat, key: token}}}}
  build: {{definitionId: 12, branch: main}}
  hld: {{repository: {hld_repo}, branch: main}}
  manifest: {{repository: orders-manifests, branch: main, definitionId: 14}}
  environments:
  - name: dev
    fluxKustomization: {{name: orders-dev, namespace: flux-system}}
  - name: prod
    argoApplication: {{name: orders-prod, namespace: argocd}}
  historyLimit: 20
  policy: {policy}
  interval: 2s
"
    ))
    .await;
}

async fn flux_at(env: &Env, name: &str, revision: &str) {
    env.harness.kustomization_at(name, revision).await;
}

async fn argo_at(env: &Env, name: &str, status: Value) {
    env.apply(&format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {{name: {name}, namespace: argocd}}\nspec: {{project: default, destination: {{name: prod-eu, namespace: orders}}}}\n"
    ))
    .await;
    patch_status(env, "argocd", "application", name, status).await;
}

/// What Argo CD writes when the sync of `revision` fails: it compared against the new revision
/// (`sync.revision`), the operation failed, and its result names the revision it tried.
fn argo_failed(revision: &str) -> Value {
    serde_json::json!({"sync": {"status": "OutOfSync", "revision": revision}, "health": {"status": "Healthy"},
                       "operationState": {"phase": "Failed", "message": "one or more objects failed to apply",
                                          "operation": {"sync": {"revision": revision}},
                                          "syncResult": {"revision": revision}}})
}

fn argo_synced(revision: &str) -> Value {
    serde_json::json!({"sync": {"status": "Synced", "revision": revision}, "health": {"status": "Healthy"},
                       "operationState": {"phase": "Succeeded", "message": "successfully synced",
                                          "syncResult": {"revision": revision}}})
}

/// Build `k` (0-based) of the Bedrock-style flow, up to its manifest commit: a merged pull request
/// in `Shop`, the CI build, its image tag merged into the HLD repository, the generation run and
/// the rendered manifest commit. Returns the build id and number.
async fn change(env: &Env, k: usize) -> (i64, String) {
    let sim = &env.sim;
    sim.push(ORG, PROJECT, PROJECT, "main", SRCS[k]);
    let pr = 100 + k as i64;
    sim.describe_commit(
        ORG,
        PROJECT,
        PROJECT,
        SRCS[k],
        AUTHORS[k],
        &format!("Merged PR {pr}: {}", TITLES[k]),
    );
    sim.add_pull_request(
        ORG,
        PROJECT,
        PROJECT,
        pr,
        TITLES[k],
        "feature/x",
        "main",
        Some(SRCS[k]),
    );
    let build = sim.queue_run(ORG, PROJECT, 12, "main", SRCS[k]);
    sim.start_run(build);
    sim.complete_run(build, RunResult::Succeeded);
    let number = sim.run(build).map(|r| r.build_number).expect("run");
    sim.push(ORG, PROJECT, HLD, "main", HLDS[k]);
    let hld_message = format!("Merged PR {}: Updating orders to main-{number}.", 200 + k);
    sim.describe_commit(
        ORG,
        PROJECT,
        HLD,
        HLDS[k],
        "Automated Account",
        &hld_message,
    );
    let generation = sim.queue_run(ORG, PROJECT, 14, "main", HLDS[k]);
    sim.start_run(generation);
    sim.complete_run(generation, RunResult::Succeeded);
    sim.push(ORG, PROJECT, "orders-manifests", "main", MANS[k]);
    sim.describe_commit(
        ORG,
        PROJECT,
        "orders-manifests",
        MANS[k],
        "Automated Account",
        &format!("Updated k8s manifest files post commit: {hld_message}"),
    );
    (build, number)
}

/// `status.stages` as (name, state).
fn stage_states(trace: &Value) -> Vec<(String, String)> {
    trace["status"]["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&s["name"]), text(&s["state"]))
        })
        .collect()
}

fn history_row(trace: &Value, build: i64) -> Option<&Value> {
    trace["status"]["history"]
        .as_array()?
        .iter()
        .find(|h| h["buildId"] == build)
}

fn arrival_state(trace: &Value, build: i64, env_name: &str) -> String {
    history_row(trace, build)
        .and_then(|h| h["environments"][env_name]["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_three_builds_history_and_a_failed_prod_sync() {
    let env = Env::start().await;
    env.sim
        .add_repository(ORG, PROJECT, PROJECT, &[("main", SRC)]);
    env.sim.add_repository(
        ORG,
        PROJECT,
        HLD,
        &[("main", "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c")],
    );
    flux_at(&env, "orders-dev", M1).await;
    argo_at(&env, "orders-prod", argo_synced(M1)).await;
    two_environment_trace(&env, "orders", HLD, "{timeout: 30m}").await;
    let _lockstep = env.lockstep();

    // Build 1 reaches dev, then prod.
    let (b1, n1) = change(&env, 0).await;
    flux_at(&env, "orders-dev", MANS[0]).await;
    let t = env
        .wait_trace("orders", WAIT, "build 1 in dev", |t| {
            arrival_state(t, b1, "dev") == "Arrived"
        })
        .await;
    assert_eq!(t["status"]["summary"], "dev ✓ prod …", "{:#}", t["status"]);
    argo_at(&env, "orders-prod", argo_synced(MANS[0])).await;
    env.wait_trace("orders", WAIT, "build 1 in prod", |t| {
        arrival_state(t, b1, "prod") == "Arrived" && ready_is(t, "True", "InSync")
    })
    .await;

    // Build 2 reaches dev, then its prod sync fails.
    let (b2, n2) = change(&env, 1).await;
    flux_at(&env, "orders-dev", MANS[1]).await;
    env.wait_trace("orders", WAIT, "build 2 in dev", |t| {
        arrival_state(t, b2, "dev") == "Arrived"
    })
    .await;
    argo_at(&env, "orders-prod", argo_failed(MANS[1])).await;
    let t = env
        .wait_trace("orders", WAIT, "build 2 failed in prod", |t| {
            arrival_state(t, b2, "prod") == "Failed" && ready_is(t, "False", "DeployFailed")
        })
        .await;
    let message = ready_message(&t);
    assert!(
        message.contains("Application argocd/orders-prod (prod)")
            && message.contains("failed to apply"),
        "{message}"
    );
    assert_eq!(t["status"]["summary"], "dev ✓ prod ✗");
    // The legacy stages say the same, one deployment entry per environment.
    assert_eq!(
        stage_states(&t),
        [
            ("build", "Succeeded"),
            ("hld", "Succeeded"),
            ("manifest", "Succeeded"),
            ("deployed/dev", "Succeeded"),
            ("deployed/prod", "Failed"),
        ]
        .map(|(n, s)| (n.to_string(), s.to_string()))
    );
    assert_eq!(
        condition(&t, "Stalled").map(|c| c["status"].clone()),
        Some(Value::from("True"))
    );

    // Build 3's manifest is pushed while prod still reports the failed sync of build 2's revision: the
    // failure stays with build 2 (Argo CD's syncResult.revision names it), build 3 is pending in prod.
    let (b3, n3) = change(&env, 2).await;
    let t = env
        .wait_trace(
            "orders",
            WAIT,
            "build 3 seen, prod failure still build 2's",
            |t| {
                history_row(t, b3).is_some_and(|h| h["manifestCommit"] == MANS[2])
                    && t["status"]["latest"]["build"]["id"] == b3
            },
        )
        .await;
    assert_eq!(arrival_state(&t, b2, "prod"), "Failed", "{:#}", t["status"]);
    let prod_now = t["status"]["latest"]["environments"][1]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        prod_now.contains(&format!("it failed applying {}", &MANS[1][..7])),
        "{prod_now}"
    );
    assert_eq!(
        arrival_state(&t, b3, "prod"),
        "Pending",
        "{:#}",
        t["status"]
    );
    flux_at(&env, "orders-dev", MANS[2]).await;
    argo_at(&env, "orders-prod", argo_synced(MANS[2])).await;
    let t = env
        .wait_trace("orders", WAIT, "build 3 in both", |t| {
            arrival_state(t, b3, "dev") == "Arrived"
                && arrival_state(t, b3, "prod") == "Arrived"
                && ready_is(t, "True", "InSync")
        })
        .await;
    let status = &t["status"];
    assert_eq!(status["summary"], "dev ✓ prod ✓");
    assert!(
        stage_states(&t).iter().map(|(n, _)| n.as_str()).eq([
            "build",
            "hld",
            "manifest",
            "deployed/dev",
            "deployed/prod"
        ]),
        "{:?}",
        stage_states(&t)
    );
    assert!(stage_states(&t).iter().all(|(_, s)| s == "Succeeded"));
    // History: newest first, each build with its author, pull request, runs and per-environment arrivals.
    let ids: Vec<i64> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["buildId"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(ids, vec![b3, b2, b1]);
    for (k, (b, n)) in [(b1, &n1), (b2, &n2), (b3, &n3)].into_iter().enumerate() {
        let row = history_row(&t, b).expect("row");
        assert_eq!(row["imageTag"], n.as_str(), "{row:#}");
        assert_eq!(row["commit"], SRCS[k], "{row:#}");
        assert_eq!(row["hldCommit"], HLDS[k], "{row:#}");
        assert_eq!(row["manifestCommit"], MANS[k], "{row:#}");
        // Every build's commit carries its author and pull request (Pull Request Query by commit).
        assert_eq!(row["author"], AUTHORS[k], "{row:#}");
        assert_eq!(row["pullRequest"]["id"], 100 + k as i64, "{row:#}");
        assert_eq!(row["pullRequest"]["title"], TITLES[k], "{row:#}");
        assert_eq!(
            row["manifestRun"]["id"].as_i64().map(|id| id > b),
            Some(true),
            "{row:#}"
        );
        assert!(
            row["environments"]["dev"]["arrivedAt"].is_string(),
            "{row:#}"
        );
        assert!(
            row["environments"]["dev"]["leadTime"].is_string(),
            "{row:#}"
        );
    }
    // The newest build's author and PR come from its commit; every build's per-environment fate.
    let row3 = history_row(&t, b3).expect("row 3");
    assert_eq!(row3["author"], AUTHORS[2]);
    assert_eq!(row3["pullRequest"]["id"], 102);
    assert_eq!(row3["pullRequest"]["title"], TITLES[2]);
    assert!(row3["pullRequest"]["url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/_git/Shop/pullrequest/102")));
    assert_eq!(arrival_state(&t, b1, "prod"), "Arrived");
    assert_eq!(arrival_state(&t, b2, "prod"), "Failed");
    assert!(
        history_row(&t, b2).unwrap()["environments"]["prod"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed to apply"))
    );
    // The path of the newest build, each step tied to it.
    let latest = &status["latest"];
    assert_eq!(latest["build"]["id"], b3);
    assert_eq!(latest["build"]["author"], AUTHORS[2]);
    assert_eq!(latest["hldUpdate"]["commit"], HLDS[2]);
    assert_eq!(latest["hldUpdate"]["linkedBy"], "commitMessage");
    assert_eq!(latest["manifestGeneration"]["linkedBy"], "commitMessage");
    assert_eq!(
        latest["manifestGeneration"]["run"]["id"]
            .as_i64()
            .map(|id| id > b3),
        Some(true)
    );
    assert_eq!(latest["environments"][1]["cluster"], "prod-eu");
    assert!(latest["environments"][1]["leadTime"].is_string());

    // `kubectl get` columns and `kubectl describe` show the same.
    let table = env.kubectl(&["-n", NS, "get", "strace", "orders"]).await;
    assert!(
        table.contains("PROGRESS")
            && table.contains("REASON")
            && table.contains("dev ✓ prod ✓")
            && table.contains("InSync"),
        "{table}"
    );
    let described = env
        .kubectl(&["-n", NS, "describe", "servicetrace", "orders"])
        .await;
    for want in [
        AUTHORS[0],
        AUTHORS[1],
        AUTHORS[2],
        "Faster checkout",
        "Build Id",
        "Arrived At",
        "Failed",
        "BuildArrived",
        n2.as_str(),
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want:?}:\n{described}"
        );
    }
    // "Which builds reached prod since …": the documented jsonpath query.
    let since = history_row(&t, b1).unwrap()["environments"]["prod"]["arrivedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let query = format!("{{range .status.history[?(@.environments.prod.arrivedAt >= \"{since}\")]}}{{.imageTag}}{{\"\\n\"}}{{end}}");
    let reached = env
        .kubectl(&[
            "-n",
            NS,
            "get",
            "strace",
            "orders",
            "-o",
            &format!("jsonpath={query}"),
        ])
        .await;
    let reached: Vec<&str> = reached.lines().collect();
    assert_eq!(
        reached,
        vec![n3.as_str(), n1.as_str()],
        "build 2 never reached prod"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_hld_update_stalls_its_trace_naming_the_step_and_no_other() {
    let env = Env::start().await;
    env.sim
        .add_repository(ORG, PROJECT, PROJECT, &[("main", SRC)]);
    env.sim.add_repository(
        ORG,
        PROJECT,
        HLD,
        &[("main", "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c")],
    );
    env.sim.add_repository(
        ORG,
        PROJECT,
        "stuck-hld",
        &[("main", "3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d")],
    );
    flux_at(&env, "orders-dev", M1).await;
    argo_at(&env, "orders-prod", argo_synced(M1)).await;
    // Both traces follow the same CI pipeline; only `stuck`'s HLD repository never gets the tag.
    two_environment_trace(&env, "orders", HLD, "{timeout: 10m}").await;
    two_environment_trace(&env, "stuck", "stuck-hld", "{timeout: 10m, hldTimeout: 4s}").await;
    let _lockstep = env.lockstep();
    let (b1, n1) = change(&env, 0).await;
    flux_at(&env, "orders-dev", MANS[0]).await;
    argo_at(&env, "orders-prod", argo_synced(MANS[0])).await;

    let stuck = env
        .wait_trace("stuck", WAIT, "Stalled on the HLD update", |t| {
            ready_is(t, "False", "HldUpdateStalled")
        })
        .await;
    assert_eq!(
        ready_message(&stuck),
        format!("image tag {n1} not written to stuck-hld within 4s of the build")
    );
    assert_eq!(stuck["status"]["latest"]["hldUpdate"]["state"], "Stalled");
    assert_eq!(
        stuck["status"]["latest"]["manifestGeneration"]["state"],
        "Waiting"
    );
    let fine = env
        .wait_trace("orders", WAIT, "the other trace Ready", |t| {
            ready_is(t, "True", "InSync") && arrival_state(t, b1, "prod") == "Arrived"
        })
        .await;
    assert_eq!(fine["status"]["summary"], "dev ✓ prod ✓");
    assert!(condition(&fine, "Stalled").is_some_and(|c| c["status"] == "False"));
    let described = env
        .kubectl(&["-n", NS, "describe", "servicetrace", "stuck"])
        .await;
    assert!(
        described.contains("not written to stuck-hld within 4s"),
        "{described}"
    );
}
