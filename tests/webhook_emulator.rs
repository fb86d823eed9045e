//! The webhook receiver end to end against the Kubernetes API emulator: objects live in the emulator, the
//! hint index is fed by real watches (`feed_from_watchers`), deliveries go over HTTP to `serve()`, and
//! every assertion about "nothing changed" compares the objects' resourceVersions in the emulator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use lockstep::crd::{PipelineGate, ServiceTrace, REQUESTED_AT_ANNOTATION};
use lockstep::secret::SecretString;
use lockstep::telemetry::WebhookMetrics;
use lockstep::webhook::{
    feed_from_watchers, parse_event, serve, HintIndex, HintTarget, WebhookAuth, WebhookConfig,
    WebhookServer, WebhookState, HOOK_PATH,
};
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use serde_json::{json, Value};

const USER: &str = "ado";
const PASSWORD: &str = "hunter2-emulator-password";
const TOKEN: &str = "tok-3f1c9a";
const DEADLINE: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/azure-devops/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture json")
}

fn gate(ns: &str, name: &str, org_url: &str, definition_id: i64, branch: &str) -> PipelineGate {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "azureDevOps": {"organizationUrl": org_url, "project": "Shop",
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": definition_id, "branch": branch},
            "interval": "10m"
        }
    }))
    .expect("gate")
}

fn trace(ns: &str, name: &str, manifest_repo: &str) -> ServiceTrace {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dependabot.visualstudio.com", "project": "Core",
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "build": {"definitionId": 900, "branch": "main"},
            "manifest": {"repository": manifest_repo, "branch": "main"},
            "deployed": {"fluxKustomization": {"name": "apps", "namespace": "flux-system"}}
        }
    }))
    .expect("trace")
}

struct Env {
    emu: KubeEmulator,
    client: Client,
    index: Arc<HintIndex>,
    server: Option<WebhookServer>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    url: String,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Env {
        Self::start_with(WebhookConfig::default()).await
    }

    async fn start_with(config: WebhookConfig) -> Env {
        let crds = format!("{}/crds", env!("CARGO_MANIFEST_DIR"));
        let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(crds))
            .await
            .expect("emulator starts");
        let client = emu.client().await;
        for ns in ["shop", "web", "core"] {
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .expect("namespace");
        }
        let gates = [
            gate("shop", "base", "https://dev.azure.com/contoso", 42, "main"),
            gate(
                "shop",
                "base-develop",
                "https://dev.azure.com/contoso",
                42,
                "develop",
            ),
            gate(
                "web",
                "other-pipeline",
                "https://dev.azure.com/contoso",
                43,
                "main",
            ),
            gate(
                "web",
                "legacy",
                "https://abrig.visualstudio.com",
                7,
                "master",
            ),
        ];
        for g in &gates {
            Api::<PipelineGate>::namespaced(client.clone(), &g.namespace().unwrap())
                .create(&PostParams::default(), g)
                .await
                .expect("gate created");
        }
        for t in [
            trace("core", "sample", "dependabot-sample"),
            trace("core", "unrelated", "tingle-manifests"),
        ] {
            Api::<ServiceTrace>::namespaced(client.clone(), "core")
                .create(&PostParams::default(), &t)
                .await
                .expect("trace created");
        }

        let index = Arc::new(HintIndex::new());
        tokio::spawn(feed_from_watchers(
            Api::all(client.clone()),
            Api::all(client.clone()),
            watcher::Config::default(),
            index.clone(),
        ));
        wait_for("the index to sync", || {
            index.is_synced() && index.gate_count() == 4 && index.trace_count() == 2
        })
        .await;

        let auth = WebhookAuth::new(
            Some((USER.into(), SecretString::new(PASSWORD))),
            Some((None, SecretString::new(TOKEN))),
        )
        .expect("auth");
        let state = WebhookState::with_config(
            client.clone(),
            index.clone(),
            auth,
            WebhookMetrics::new(),
            config,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve("127.0.0.1:0".parse().unwrap(), state, async {
            let _ = stopped.await;
        })
        .await
        .expect("webhook server starts");
        let url = format!("http://{}{HOOK_PATH}", server.local_addr());
        Env {
            emu,
            client,
            index,
            server: Some(server),
            stop: Some(stop),
            url,
            http: reqwest::Client::new(),
        }
    }

    /// resourceVersion of every PipelineGate and ServiceTrace, by namespace/name.
    async fn versions(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for g in Api::<PipelineGate>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            out.insert(
                format!("gate {}/{}", g.namespace().unwrap(), g.name_any()),
                g.resource_version().unwrap(),
            );
        }
        for t in Api::<ServiceTrace>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            out.insert(
                format!("trace {}/{}", t.namespace().unwrap(), t.name_any()),
                t.resource_version().unwrap(),
            );
        }
        out
    }

    async fn changed_since(&self, before: &BTreeMap<String, String>) -> Vec<String> {
        self.versions()
            .await
            .into_iter()
            .filter(|(k, v)| before.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect()
    }

    async fn gate_annotation(&self, ns: &str, name: &str) -> Option<String> {
        let g = Api::<PipelineGate>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .unwrap();
        g.annotations().get(REQUESTED_AT_ANNOTATION).cloned()
    }

    /// POST as Azure DevOps' Web Hooks consumer does, with both configured credentials.
    async fn deliver(&self, body: &Value) -> (u16, Value) {
        self.post(
            Some((USER, PASSWORD)),
            Some(TOKEN),
            Some("application/json; charset=utf-8"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    async fn post(
        &self,
        basic: Option<(&str, &str)>,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self.http.post(&self.url).body(body);
        if let Some((u, p)) = basic {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(t) = token {
            req = req.header("X-Lockstep-Token", t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("delivery");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(DEADLINE, server.wait())
                .await
                .expect("server stops")
                .expect("clean stop");
        }
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The failed run of pipeline 42 on refs/heads/main in organization contoso, with a fresh event id.
fn run_failed(event_id: &str) -> Value {
    let mut v = fixture("hook-run-state-changed-completed-failed.json");
    v["id"] = json!(event_id);
    v
}

/// The same run, moved to pipeline `definition_id` (ids, URLs and links alike).
fn run_failed_of(definition_id: i64, event_id: &str) -> Value {
    let text = serde_json::to_string(&run_failed(event_id))
        .unwrap()
        .replace("Pipelines/42", &format!("Pipelines/{definition_id}"))
        .replace("pipelines/42", &format!("pipelines/{definition_id}"))
        .replace("definitionId=42", &format!("definitionId={definition_id}"));
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["resource"]["pipeline"]["id"] = json!(definition_id);
    v["resource"]["run"]["pipeline"]["id"] = json!(definition_id);
    let targets = parse_event(&serde_json::to_vec(&v).unwrap())
        .unwrap()
        .targets;
    let ids: Vec<i64> = targets
        .iter()
        .filter_map(|t| match t {
            HintTarget::Pipeline { definition_id, .. } => Some(*definition_id),
            HintTarget::Repository { .. } => None,
        })
        .collect();
    assert_eq!(
        ids,
        vec![definition_id],
        "every mention of pipeline 42 was replaced"
    );
    v
}

#[tokio::test]
async fn valid_events_annotate_exactly_the_objects_that_follow_them() {
    let env = Env::start().await;

    // run-state-changed for contoso/42 on main: only shop/base (shop/base-develop follows develop).
    let before = env.versions().await;
    let started = Instant::now();
    let (status, reply) = env.deliver(&run_failed("e2e-run-1")).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 202, "{reply}");
    assert_eq!(env.changed_since(&before).await, vec!["gate shop/base"]);
    let stamp = env
        .gate_annotation("shop", "base")
        .await
        .expect("annotated");
    assert!(stamp.parse::<jiff::Timestamp>().is_ok(), "{stamp}");
    eprintln!("run-state-changed answered in {elapsed:?} (informational)");

    // build.complete 1.0 from a dev.azure.com URL reaches a gate configured with the visualstudio.com form.
    let before = env.versions().await;
    let (status, reply) = env.deliver(&fixture("hook-build-complete-v1.json")).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(env.changed_since(&before).await, vec!["gate web/legacy"]);

    // build.complete 2.0 rewritten to contoso/42 on develop, with a legacy-host baseUrl.
    let mut v2 = fixture("hook-build-complete-v2.json");
    v2["resource"]["definition"]["id"] = json!(42);
    v2["resource"]["sourceBranch"] = json!("refs/heads/develop");
    for c in ["collection", "account", "project"] {
        v2["resourceContainers"][c]["baseUrl"] = json!("https://contoso.visualstudio.com/");
    }
    let before = env.versions().await;
    let (status, reply) = env.deliver(&v2).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        env.changed_since(&before).await,
        vec!["gate shop/base-develop"]
    );

    // 2019 stage event without a branch: every gate on the definition is hinted (over-notify, never under).
    let mut stage = fixture("hook-stage-state-changed-running.json");
    stage["resource"]["pipeline"]["id"] = json!(42);
    stage["resource"]["pipeline"]["url"] =
        json!("https://dev.azure.com/contoso/p/_apis/pipelines/42?revision=2");
    stage["resource"]["stage"]["_links"]["pipeline.web"]["href"] =
        json!("https://dev.azure.com/contoso/p/_build/definition?definitionId=42");
    stage["resource"]["stage"]["_links"]["web"]["href"] =
        json!("https://dev.azure.com/contoso/p/_build/results?buildId=480");
    let before = env.versions().await;
    let (status, reply) = env.deliver(&stage).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        env.changed_since(&before).await,
        vec!["gate shop/base", "gate shop/base-develop"]
    );

    // git.push to dependabot-sample main: the trace whose manifest repository that is.
    let before = env.versions().await;
    let (status, reply) = env.deliver(&fixture("hook-git-push.json")).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(env.changed_since(&before).await, vec!["trace core/sample"]);

    env.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_their_status_and_change_no_object() {
    let env = Env::start().await;
    let before = env.versions().await;
    let body = serde_json::to_vec(&run_failed("e2e-bad")).unwrap();
    let mut truncated = body.clone();
    truncated.truncate(body.len() * 2 / 3);
    let mut three_mib = br#"{"eventType":"build.complete","padding":""#.to_vec();
    three_mib.resize(3 * 1024 * 1024, b'x');
    three_mib.extend_from_slice(br#""}"#);
    let json = Some("application/json");
    let good = Some((USER, PASSWORD));

    struct Case<'a> {
        what: &'a str,
        basic: Option<(&'a str, &'a str)>,
        token: Option<&'a str>,
        content_type: Option<&'a str>,
        body: Vec<u8>,
        status: u16,
    }
    let cases = vec![
        Case { what: "wrong password", basic: Some((USER, "wrong")), token: Some(TOKEN), content_type: json, body: body.clone(), status: 401 },
        Case { what: "wrong token", basic: good, token: Some("wrong"), content_type: json, body: body.clone(), status: 401 },
        Case { what: "no auth", basic: None, token: None, content_type: json, body: body.clone(), status: 401 },
        Case { what: "basic only, token missing", basic: good, token: None, content_type: json, body: body.clone(), status: 401 },
        Case { what: "malformed JSON", basic: good, token: Some(TOKEN), content_type: json, body: b"{\"eventType\":,}".to_vec(), status: 400 },
        Case { what: "truncated JSON", basic: good, token: Some(TOKEN), content_type: json, body: truncated, status: 400 },
        Case { what: "3 MiB body", basic: good, token: Some(TOKEN), content_type: json, body: three_mib, status: 413 },
        Case { what: "wrong content type", basic: good, token: Some(TOKEN), content_type: Some("application/x-www-form-urlencoded"), body: body.clone(), status: 415 },
        Case {
            what: "unknown event",
            basic: good,
            token: Some(TOKEN),
            content_type: json,
            body: br#"{"id":"u-1","eventType":"ms.vss-code.git-pullrequest-comment-event","resource":{}}"#.to_vec(),
            status: 200,
        },
        Case {
            what: "test delivery",
            basic: good,
            token: Some(TOKEN),
            content_type: json,
            body: serde_json::to_vec(&{
                let mut v = run_failed("e2e-test");
                v["subscriptionId"] = json!("00000000-0000-0000-0000-000000000000");
                v
            })
            .unwrap(),
            status: 200,
        },
        Case {
            what: "pipeline no gate follows",
            basic: good,
            token: Some(TOKEN),
            content_type: json,
            body: serde_json::to_vec(&run_failed_of(4243, "e2e-nobody")).unwrap(),
            status: 200,
        },
    ];
    for case in cases {
        let (status, reply) = env
            .post(case.basic, case.token, case.content_type, case.body)
            .await;
        assert_eq!(status, case.status, "{}: {reply}", case.what);
        assert!(
            !reply.to_string().contains(PASSWORD) && !reply.to_string().contains(TOKEN),
            "{}",
            case.what
        );
        assert_eq!(
            env.changed_since(&before).await,
            Vec::<String>::new(),
            "{} changed an object",
            case.what
        );
    }

    // A duplicate delivery: the first is processed, the second changes nothing.
    let (status, _) = env.deliver(&run_failed("e2e-dup")).await;
    assert_eq!(status, 202);
    let after_first = env.versions().await;
    let (status, reply) = env.deliver(&run_failed("e2e-dup")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outcome"], "duplicate");
    assert_eq!(env.changed_since(&after_first).await, Vec::<String>::new());

    env.stop().await;
}

#[tokio::test]
async fn kubernetes_outage_answers_503_and_the_retry_lands() {
    // kube's client retries 503/429 itself (honouring Retry-After); the receiver's deadline bounds that.
    let env = Env::start_with(WebhookConfig {
        patch_timeout: Duration::from_secs(2),
        ..WebhookConfig::default()
    })
    .await;
    let faults = env.emu.faults();
    let before = env.versions().await;

    // An API error that is not retried.
    faults.fail_next_matching(1, 500, Some("PATCH"), Some("pipelinegates"));
    let (status, reply) = env.deliver(&run_failed("e2e-outage")).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(env.changed_since(&before).await, Vec::<String>::new());

    // An API server that keeps answering 503: the client retries until the receiver's deadline.
    faults.fail_next_matching(1000, 503, Some("PATCH"), Some("pipelinegates"));
    let started = Instant::now();
    let (status, reply) = env.deliver(&run_failed("e2e-outage")).await;
    assert_eq!(status, 503, "{reply}");
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(env.changed_since(&before).await, Vec::<String>::new());

    // Azure DevOps retries the same event id; this time the API answers.
    faults.clear();
    let (status, reply) = env.deliver(&run_failed("e2e-outage")).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(env.changed_since(&before).await, vec!["gate shop/base"]);
    env.stop().await;
}

#[tokio::test]
async fn index_follows_creates_and_deletes_through_the_watch() {
    let env = Env::start().await;
    let api = Api::<PipelineGate>::namespaced(env.client.clone(), "web");
    api.create(
        &PostParams::default(),
        &gate("web", "late", "https://dev.azure.com/contoso", 77, "main"),
    )
    .await
    .expect("created");
    let contoso =
        lockstep::pipeline_key::OrgKey::from_url("https://dev.azure.com/contoso").unwrap();
    wait_for("the new gate in the index", || {
        !env.index.gates_for(&contoso, 77, None).is_empty()
    })
    .await;

    let mut event = run_failed_of(77, "e2e-late");
    let before = env.versions().await;
    let (status, reply) = env.deliver(&event).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(env.changed_since(&before).await, vec!["gate web/late"]);

    api.delete("late", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("the deleted gate to leave the index", || {
        env.index.gates_for(&contoso, 77, None).is_empty()
    })
    .await;
    event["id"] = json!("e2e-late-2");
    let before = env.versions().await;
    let (status, reply) = env.deliver(&event).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(env.changed_since(&before).await, Vec::<String>::new());
    env.stop().await;
}

#[tokio::test]
async fn many_objects_on_one_pipeline_are_patched_concurrently() {
    let env = Env::start().await;
    let api = Api::<PipelineGate>::namespaced(env.client.clone(), "shop");
    for i in 0..40 {
        api.create(
            &PostParams::default(),
            &gate(
                "shop",
                &format!("fan-{i:02}"),
                "https://dev.azure.com/contoso",
                42,
                "main",
            ),
        )
        .await
        .expect("created");
    }
    let contoso =
        lockstep::pipeline_key::OrgKey::from_url("https://dev.azure.com/contoso").unwrap();
    wait_for("40 more gates in the index", || {
        env.index
            .gates_for(&contoso, 42, Some("refs/heads/main"))
            .len()
            == 41
    })
    .await;
    let before = env.versions().await;
    let started = Instant::now();
    let (status, reply) = env.deliver(&run_failed("e2e-fan")).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["pipelineGates"], 41);
    assert_eq!(env.changed_since(&before).await.len(), 41);
    eprintln!("41 gates annotated in {elapsed:?} (informational)");
    env.stop().await;
}
