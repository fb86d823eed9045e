//! The gater recipes in `examples/gaters/` evaluated against responses the real API server produced:
//! each recipe's success (and failure) expression is read from the shipped file and evaluated with that
//! tool's own semantics (ported in `tests/gaters/`), for an open gate, a waiting gate, a failed gate, a
//! gate that does not exist and a request without credentials.

#[path = "gaters/ado_expr.rs"]
mod ado_expr;
#[path = "gaters/expr_lang.rs"]
mod expr_lang;

use base64::Engine as _;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use lockstep::api::{self, ApiCaches, Authenticator};
use lockstep::crd::{PipelineGate, ServiceTrace};
use lockstep::secret::SecretString;
use serde_json::{json, Value};

const TOKEN: &str = "recipe-static-token-81d2";

fn gate(name: &str, ready: &str, reason: &str) -> PipelineGate {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
        "metadata": {"name": name, "namespace": "shop", "generation": 1, "resourceVersion": "1"},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": 42, "branch": "main"}
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": format!("{reason}: run 20261129.3"),
                            "observedGeneration": 1, "lastTransitionTime": "2026-11-29T10:00:00Z"}],
            "latestRun": {"id": 3, "buildNumber": "20261129.3", "status": "completed", "result": "succeeded"},
            "lastCheckedTime": "2026-11-29T10:00:01Z"
        }
    }))
    .unwrap()
}

/// A response as the gater sees it.
struct Answer {
    status: u16,
    body: Value,
}

struct Api {
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Api {
    async fn start() -> Api {
        let mut gates = Writer::<PipelineGate>::default();
        let mut traces = Writer::<ServiceTrace>::default();
        gates.apply_watcher_event(&watcher::Event::Init);
        for g in [
            gate("base-image", "True", "Succeeded"),
            gate("waiting", "False", "RunInProgress"),
            gate("failed", "False", "RunFailed"),
        ] {
            gates.apply_watcher_event(&watcher::Event::InitApply(g));
        }
        gates.apply_watcher_event(&watcher::Event::InitDone);
        traces.apply_watcher_event(&watcher::Event::Init);
        traces.apply_watcher_event(&watcher::Event::InitDone);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let server = api::serve(
            "127.0.0.1:0".parse().unwrap(),
            ApiCaches::from_stores(gates.as_reader(), traces.as_reader()),
            Authenticator::new(Some(SecretString::new(TOKEN)), None),
            shutdown,
        )
        .await
        .unwrap();
        // The stores live as long as the writers; leak them for the test's lifetime.
        std::mem::forget((gates, traces));
        Api {
            base: format!("http://{}/", server.local_addr()),
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    async fn get(&self, path: &str, authorization: Option<String>) -> Answer {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }
}

fn recipe(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/examples/gaters/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn verdict_path(gate: &str) -> String {
    format!("api/v1/namespaces/shop/pipelinegates/{gate}/verdict")
}

#[tokio::test]
async fn azure_devops_invoke_rest_api_check_passes_only_when_open() {
    let check: Value = serde_json::from_str(&recipe("azure-devops-check.json")).unwrap();
    let inputs = &check["settings"]["inputs"];
    let criteria = inputs["successCriteria"].as_str().unwrap();
    assert_eq!(inputs["method"], "GET");
    assert_eq!(
        inputs["waitForCompletion"], "false",
        "ApiResponse mode evaluates successCriteria"
    );
    let suffix = inputs["urlSuffix"].as_str().unwrap();
    assert_eq!(suffix, verdict_path("base-image"));

    let api = Api::start().await;
    // A Generic service connection sends Basic credentials: any user name, the static token as password.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("azure-devops:{TOKEN}"))
    );
    let open = api.get(suffix, Some(basic.clone())).await;
    assert_eq!(open.status, 200);
    assert_eq!(
        ado_expr::evaluate(criteria, &open.body),
        Ok(true),
        "{}",
        open.body
    );
    for closed in ["waiting", "failed"] {
        let a = api.get(&verdict_path(closed), Some(basic.clone())).await;
        assert_eq!(a.status, 200, "a closed gate is an answer, not an error");
        assert_eq!(
            ado_expr::evaluate(criteria, &a.body),
            Ok(false),
            "{closed}: {}",
            a.body
        );
    }
    // The check treats any non-2xx as a failed evaluation; the body would not pass either.
    let missing = api.get(&verdict_path("nope"), Some(basic)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(ado_expr::evaluate(criteria, &missing.body), Ok(false));
    let anonymous = api.get(suffix, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(ado_expr::evaluate(criteria, &anonymous.body), Ok(false));
}

/// What `jsonPath` selects in Argo Rollouts' web provider: `{$.a.b}` (dotted fields from the root are
/// all the recipe uses; k8s.io/client-go/util/jsonpath takes the first result, as `getValue` does).
fn json_path<'a>(path: &str, body: &'a Value) -> Option<&'a Value> {
    let inner = path.strip_prefix('{')?.strip_suffix('}')?;
    let rest = inner.strip_prefix('$').unwrap_or(inner);
    rest.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(body, |v, field| v.get(field))
}

#[tokio::test]
async fn argo_rollouts_web_metric_succeeds_only_when_open() {
    let template: Value =
        serde_saphyr::from_str(&recipe("argo-rollouts-analysistemplate.yaml")).unwrap();
    let metric = &template["spec"]["metrics"][0];
    let condition = metric["successCondition"].as_str().unwrap();
    let path = metric["provider"]["web"]["jsonPath"].as_str().unwrap();
    let url = metric["provider"]["web"]["url"].as_str().unwrap();
    assert!(
        url.ends_with("/api/v1/namespaces/{{args.namespace}}/pipelinegates/{{args.gate}}/verdict")
    );
    assert_eq!(
        metric["provider"]["web"]["headers"][0]["value"],
        "Bearer {{args.api-token}}"
    );

    let api = Api::start().await;
    let bearer = Some(format!("Bearer {TOKEN}"));
    for (gate, want) in [("base-image", true), ("waiting", false), ("failed", false)] {
        let a = api.get(&verdict_path(gate), bearer.clone()).await;
        assert_eq!(a.status, 200);
        let result = json_path(path, &a.body)
            .cloned()
            .expect("jsonPath selects a value");
        // EvaluateResult: with only a successCondition, a measurement that does not succeed fails.
        let ok = expr_lang::evaluate(condition, &json!({ "result": result })).unwrap();
        assert_eq!(ok, want, "{gate}: {}", a.body);
    }
    // Non-2xx is a measurement error in the web provider (counted by consecutiveErrorLimit), never success.
    assert_eq!(api.get(&verdict_path("nope"), bearer).await.status, 404);
    assert_eq!(api.get(&verdict_path("base-image"), None).await.status, 401);
}

#[tokio::test]
async fn kargo_http_step_succeeds_when_open_waits_while_closed_and_fails_without_a_gate() {
    let stage: Value = serde_saphyr::from_str(&recipe("kargo-http-step.yaml")).unwrap();
    assert_eq!(stage["kind"], "Stage");
    let step = &stage["spec"]["promotionTemplate"]["spec"]["steps"][0];
    let config = &step["config"];
    assert_eq!(step["uses"], "http");
    let success = config["successExpression"].as_str().unwrap();
    let failure = config["failureExpression"].as_str().unwrap();
    let url = config["url"].as_str().unwrap();
    let path = &url[url.find("api/v1/").unwrap()..];

    let api = Api::start().await;
    let outcome = |a: &Answer| -> &'static str {
        // Kargo's order: failure first (terminal), then success, else Running.
        let response = json!({"status": a.status, "headers": {}, "body": a.body});
        let env = json!({ "response": response });
        if expr_lang::evaluate(failure, &env).unwrap() {
            "Failed"
        } else if expr_lang::evaluate(success, &env).unwrap() {
            "Succeeded"
        } else {
            "Running"
        }
    };
    let bearer = Some(format!("Bearer {TOKEN}"));
    assert_eq!(path, verdict_path("base-image"));
    assert_eq!(outcome(&api.get(path, bearer.clone()).await), "Succeeded");
    assert_eq!(
        outcome(&api.get(&verdict_path("waiting"), bearer.clone()).await),
        "Running"
    );
    assert_eq!(
        outcome(&api.get(&verdict_path("failed"), bearer.clone()).await),
        "Running"
    );
    assert_eq!(
        outcome(&api.get(&verdict_path("nope"), bearer).await),
        "Failed"
    );
    assert_eq!(
        outcome(&api.get(path, Some("Bearer wrong".into())).await),
        "Failed"
    );
    assert_eq!(outcome(&api.get(path, None).await), "Failed");
}
