//! End to end, issue 14: the real `lockstep run` with Microsoft Entra ID credentials (workload identity,
//! service principal with a secret and with a certificate, managed identity) against the test kit's fake
//! Entra ID (token endpoint and IMDS), the Azure DevOps simulator trusting its tokens, and the Kubernetes
//! API emulator; and `lockstep run` behind an HTTP proxy with `NO_PROXY` covering the emulator.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{condition, lockstep_command, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{AdoSimOptions, AdoSimulator, RunResult};
use lockstep_testkit::entra::{service_account_token, EntraConfig, EntraError, EntraFake};
use lockstep_testkit::proxy::{ProxyConfig, TestProxy};
use lockstep_testkit::tls::TestCa;
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-pat-unused-1b2c";
const TENANT: &str = "7d3c1a52-0000-4000-8000-00000000000a";
const WI_CLIENT: &str = "0a1b2c3d-0000-4000-8000-0000000000a1";
const SP_CLIENT: &str = "0a1b2c3d-0000-4000-8000-0000000000b2";
const CERT_CLIENT: &str = "0a1b2c3d-0000-4000-8000-0000000000c3";
const MI_CLIENT: &str = "0a1b2c3d-0000-4000-8000-0000000000d4";
const SP_SECRET: &str = "sp-client-s3cret-Zq9";
const ISSUER: &str = "https://oidc.e2e.test/issuer";
const DEFINITION: i64 = 77;
const BRANCH: &str = "main";
const SHA: &str = "3333333333333333333333333333333333333333";

struct Env {
    harness: Harness,
    entra: EntraFake,
    token_file: PathBuf,
}

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

impl Env {
    async fn start(token_lifetime: Duration) -> Env {
        let harness = Harness::start(PAT, &[]).await;
        let entra = EntraFake::start(EntraConfig::default().token_lifetime(token_lifetime))
            .await
            .expect("fake Entra starts");
        harness.sim.trust_entra(&entra);
        for client in [WI_CLIENT, SP_CLIENT, CERT_CLIENT, MI_CLIENT] {
            harness.sim.add_entra_identity(ORG, client);
        }
        entra.add_federated_credential(
            TENANT,
            WI_CLIENT,
            ISSUER,
            "system:serviceaccount:lockstep-system:lockstep",
        );
        entra.add_client_secret(TENANT, SP_CLIENT, SP_SECRET);
        entra.add_managed_identity(TENANT, MI_CLIENT);
        // What the kubelet projects and the workload identity webhook points AZURE_FEDERATED_TOKEN_FILE at.
        let token_file = harness.dir.path().join("azure-identity-token");
        std::fs::write(
            &token_file,
            service_account_token(
                ISSUER,
                "lockstep-system",
                "lockstep",
                Duration::from_secs(3600),
            ),
        )
        .unwrap();
        harness
            .sim
            .add_definition(ORG, PROJECT, DEFINITION, "base-image");
        let id = harness.sim.queue_run(ORG, PROJECT, DEFINITION, BRANCH, SHA);
        harness.sim.start_run(id);
        harness.sim.complete_run(id, RunResult::Succeeded);
        Env {
            harness,
            entra,
            token_file,
        }
    }

    /// `lockstep run` with the environment the workload identity webhook injects, IMDS at the fake.
    fn lockstep(&self, log: &Path, rust_log: &str) -> Child {
        let file = std::fs::File::create(log).expect("log file");
        lockstep_command(&self.kubeconfig)
            .args(["--log-format", "json", "--fast-interval", "2s"])
            .env("RUST_LOG", rust_log)
            .env("AZURE_CLIENT_ID", WI_CLIENT)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_FEDERATED_TOKEN_FILE", &self.token_file)
            .env("AZURE_AUTHORITY_HOST", self.entra.url())
            .env("LOCKSTEP_IMDS_ENDPOINT", self.entra.imds_endpoint())
            .env_remove("POD_NAME")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stderr(file)
            .spawn()
            .expect("lockstep starts")
    }

    async fn namespace(&self, ns: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ))
        .await;
    }

    async fn gate_json(&self, ns: &str, name: &str) -> Value {
        serde_json::from_str(
            &self
                .kubectl(&["-n", ns, "get", "pipelinegate", name, "-o", "json"])
                .await,
        )
        .unwrap()
    }

    async fn wait_gate(
        &self,
        ns: &str,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let gate = self.gate_json(ns, name).await;
            if check(&gate) {
                return gate;
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name} not {what} within {within:?}: {gate:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn gate_yaml(ns: &str, name: &str, org_url: &str, credentials: &str, extra: &str) -> String {
    format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata:
  name: {name}
  namespace: {ns}
spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials:
      {credentials}
  pipeline:
    definitionId: {DEFINITION}
    branch: {BRANCH}
{extra}"
    )
}

fn is_ready(gate: &Value) -> bool {
    condition(gate, "Ready").is_some_and(|c| c["status"] == "True")
}

fn b64(s: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s)
}

#[tokio::test]
async fn gates_using_each_entra_source_go_ready() {
    let env = Env::start(Duration::from_secs(3599)).await;
    let ca = TestCa::new().unwrap();
    let cert = ca.client_certificate("lockstep-e2e").unwrap();
    env.entra
        .add_client_certificate(TENANT, CERT_CLIENT, cert.der().as_ref());
    env.namespace("entra").await;
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ado-sp, namespace: entra}}\ndata: {{clientSecret: {}, cert.pem: {}}}\n",
        b64(SP_SECRET),
        b64(&cert.bundle_pem())
    ))
    .await;
    let org = env.sim.org_url(ORG);
    let sources = [
        ("wi", "workloadIdentity: {}".to_string()),
        (
            "sp",
            format!("servicePrincipal: {{tenantId: {TENANT}, clientId: {SP_CLIENT}, clientSecretRef: {{name: ado-sp, key: clientSecret}}}}"),
        ),
        (
            "cert",
            format!("servicePrincipal: {{tenantId: {TENANT}, clientId: {CERT_CLIENT}, clientCertificateRef: {{name: ado-sp, key: cert.pem}}}}"),
        ),
        ("mi", format!("managedIdentity: {{clientId: {MI_CLIENT}}}")),
    ];
    for (name, credentials) in &sources {
        env.apply(&gate_yaml("entra", name, &org, credentials, ""))
            .await;
    }
    let log = env.dir.path().join("lockstep.log");
    let _lockstep = env.lockstep(&log, "info,lockstep=debug");
    for (name, _) in &sources {
        env.wait_gate("entra", name, Duration::from_secs(60), "Ready", is_ready)
            .await;
    }
    for client in [WI_CLIENT, SP_CLIENT, CERT_CLIENT, MI_CLIENT] {
        assert_eq!(env.entra.tokens_issued(client), 1, "{client}");
    }
}

#[tokio::test]
async fn an_invalid_combination_is_rejected_at_apply() {
    let env = Env::start(Duration::from_secs(3599)).await;
    env.namespace("bad").await;
    let org = env.sim.org_url(ORG);
    let two = gate_yaml(
        "bad",
        "two",
        &org,
        "{secretRef: {name: p, key: t}, workloadIdentity: {}}",
        "",
    )
    .replace("credentials:\n      {", "credentials: {");
    let err = env.try_apply(&two).await.unwrap_err();
    assert!(
        err.contains("set exactly one of secretRef"),
        "kubectl said: {err}"
    );
    let sp_both = gate_yaml(
        "bad",
        "both",
        &org,
        &format!("servicePrincipal: {{tenantId: {TENANT}, clientId: c, clientSecretRef: {{name: a, key: b}}, clientCertificateRef: {{name: a, key: c}}}}"),
        "",
    );
    let err = env.try_apply(&sp_both).await.unwrap_err();
    assert!(
        err.contains("exactly one of clientSecretRef"),
        "kubectl said: {err}"
    );
}

#[tokio::test]
async fn a_thousand_gates_on_one_workload_identity_share_one_token_per_lifetime() {
    // 60 s tokens, refreshed after 30 s (half the lifetime): 1 000 gates polling every 5 s cause one
    // token request per 30 s, never one per gate.
    const REFRESH: f64 = 30.0;
    let env = Env::start(Duration::from_secs(60)).await;
    env.namespace("scale").await;
    let org = env.sim.org_url(ORG);
    let gates: Vec<String> = (0..1000)
        .map(|i| {
            gate_yaml(
                "scale",
                &format!("g{i:04}"),
                &org,
                "workloadIdentity: {}",
                "  interval: 5s\n",
            )
        })
        .collect();
    env.apply(&gates.join("---\n")).await;
    let log = env.dir.path().join("lockstep.log");
    let started = Instant::now();
    let _lockstep = env.lockstep(&log, "info");
    let all_ready = || async {
        let list: Value = serde_json::from_str(
            &env.kubectl(&["-n", "scale", "get", "pipelinegates", "-o", "json"])
                .await,
        )
        .unwrap();
        list["items"]
            .as_array()
            .is_some_and(|items| items.len() == 1000 && items.iter().all(is_ready))
    };
    let deadline = started + Duration::from_secs(300);
    while !all_ready().await {
        assert!(
            Instant::now() < deadline,
            "1000 gates not Ready within 300 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ready_after = started.elapsed().as_secs_f64();
    let at_ready = env.entra.token_requests(WI_CLIENT);
    println!("1000 gates Ready after {ready_after:.1}s with {at_ready} token request(s)");
    assert!(
        at_ready as f64 <= (ready_after / REFRESH).floor() + 1.0,
        "{at_ready} token requests in {ready_after:.1}s"
    );
    // Keep polling past at least one more refresh.
    let until = Duration::from_secs_f64(ready_after + REFRESH + 5.0);
    tokio::time::sleep(until.saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed().as_secs_f64();
    let total = env.entra.token_requests(WI_CLIENT);
    println!(
        "token requests for 1000 gates on one workload identity over {elapsed:.0}s (refresh every {REFRESH}s): {total}"
    );
    assert!(
        total as f64 <= (elapsed / REFRESH).floor() + 1.0,
        "{total} token requests in {elapsed:.0}s"
    );
    assert!(total > at_ready, "the token was never refreshed");
    assert_eq!(unauthorized(&env.sim), 0, "an expired token was sent");
    assert!(all_ready().await, "a gate lost Ready");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_before_use() {
    // 6 s tokens: lockstep must replace each after 3 s (half its lifetime), before the simulator, which
    // refuses expired tokens, ever sees one.
    let env = Env::start(Duration::from_secs(6)).await;
    env.namespace("refresh").await;
    let org = env.sim.org_url(ORG);
    env.apply(&gate_yaml(
        "refresh",
        "g",
        &org,
        "workloadIdentity: {}",
        "  interval: 1s\n",
    ))
    .await;
    let log = env.dir.path().join("lockstep.log");
    let _lockstep = env.lockstep(&log, "info,lockstep=debug");
    env.wait_gate("refresh", "g", Duration::from_secs(60), "Ready", is_ready)
        .await;
    let before = env.entra.tokens_issued(WI_CLIENT);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let gate = env.gate_json("refresh", "g").await;
        assert!(is_ready(&gate), "gate lost Ready: {gate:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refreshed = env.entra.tokens_issued(WI_CLIENT) - before;
    println!("6 s tokens over 20 s of 1 s polling: {refreshed} refreshes, 0 expired tokens sent");
    assert!(
        (4..=8).contains(&refreshed),
        "{refreshed} refreshes in 20 s of 6 s tokens"
    );
    assert_eq!(
        unauthorized(&env.sim),
        0,
        "a request went out with an expired token"
    );

    // A token revoked before its expiry: refused once, replaced, the gate stays Ready. The long-lived
    // token that replaces the last 6 s one (within 3 s) must have been in use for a while first: a token
    // refused right after it was issued means the identity itself is refused.
    env.entra.set_token_lifetime(Duration::from_secs(3599));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = env.entra.tokens_issued(WI_CLIENT);
    env.entra.expire_tokens();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let gate = env.gate_json("refresh", "g").await;
        assert!(
            is_ready(&gate),
            "gate lost Ready after a revocation: {gate:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        env.entra.tokens_issued(WI_CLIENT) > before,
        "the revoked token was not replaced"
    );
}

/// Requests the simulator refused as unauthenticated.
fn unauthorized(sim: &AdoSimulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.status == 401 || r.status == 203)
        .count()
}

#[tokio::test]
async fn aadsts700016_stalls_the_gates_naming_the_client_id_and_nothing_secret_leaks() {
    let env = Env::start(Duration::from_secs(3599)).await;
    env.namespace("denied").await;
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ado-sp, namespace: denied}}\ndata: {{clientSecret: {}}}\n",
        b64(SP_SECRET)
    ))
    .await;
    env.entra
        .fail_client(SP_CLIENT, EntraError::ApplicationNotFound);
    let org = env.sim.org_url(ORG);
    for name in ["a", "b"] {
        env.apply(&gate_yaml(
            "denied",
            name,
            &org,
            &format!("servicePrincipal: {{tenantId: {TENANT}, clientId: {SP_CLIENT}, clientSecretRef: {{name: ado-sp, key: clientSecret}}}}"),
            "",
        ))
        .await;
    }
    // A working workload identity gate beside them, so its tokens are in play while the log is at trace.
    env.apply(&gate_yaml("denied", "wi", &org, "workloadIdentity: {}", ""))
        .await;
    let log = env.dir.path().join("lockstep.log");
    let _lockstep = env.lockstep(&log, "trace");
    for name in ["a", "b"] {
        let gate = env
            .wait_gate("denied", name, Duration::from_secs(60), "Stalled", |g| {
                condition(g, "Stalled").is_some_and(|c| c["status"] == "True")
            })
            .await;
        let stalled = condition(&gate, "Stalled").unwrap();
        assert_eq!(stalled["reason"], "AuthenticationFailed", "{gate:#}");
        let message = stalled["message"].as_str().unwrap();
        assert!(
            message.contains(SP_CLIENT) && message.contains("AADSTS700016"),
            "{message}"
        );
    }
    env.wait_gate("denied", "wi", Duration::from_secs(60), "Ready", is_ready)
        .await;
    // Both gates share one failed request per hold, not one each per reconcile.
    assert!(env.entra.token_requests(SP_CLIENT) <= 3);

    let events = env
        .kubectl(&["-n", "denied", "get", "events", "-o", "json"])
        .await;
    let statuses = env
        .kubectl(&["-n", "denied", "get", "pipelinegates", "-o", "json"])
        .await;
    let logs = std::fs::read_to_string(&log).unwrap();
    let sa_token = std::fs::read_to_string(&env.token_file).unwrap();
    for (what, text) in [("log", &logs), ("events", &events), ("status", &statuses)] {
        assert!(!text.contains(SP_SECRET), "client secret in {what}");
        assert!(!text.contains(sa_token.trim()), "federated token in {what}");
        // Every token the fake issues (and the service-account token) is a JWT: "eyJ" + base64url.
        assert!(!text.contains("eyJ"), "a JWT in {what}");
    }
    assert!(
        logs.lines().count() > 100,
        "trace logging did not happen: {} lines",
        logs.lines().count()
    );
}

#[tokio::test]
async fn lockstep_run_reaches_azure_devops_through_the_proxy_and_kubernetes_directly() {
    let harness = Harness::start(PAT, &[]).await;
    // Azure DevOps over HTTPS under a name only the proxy resolves, its certificate from a private CA.
    let ca = TestCa::new().unwrap();
    let sim = AdoSimulator::start_with(
        AdoSimOptions::default()
            .tls(ca.server_config(&["dev.azure.test"]).unwrap())
            .public_url("https://dev.azure.test"),
    )
    .await
    .unwrap();
    sim.add_token(ORG, PAT);
    sim.add_project(ORG, PROJECT);
    sim.add_definition(ORG, PROJECT, DEFINITION, "base-image");
    let id = sim.queue_run(ORG, PROJECT, DEFINITION, BRANCH, SHA);
    sim.start_run(id);
    sim.complete_run(id, RunResult::Succeeded);
    let proxy = TestProxy::start(ProxyConfig::default().map_host("dev.azure.test", sim.addr()))
        .await
        .unwrap();
    let ca_file = harness.dir.path().join("ca.pem");
    ca.write_ca_pem(&ca_file).unwrap();
    harness.namespace_with_pat("proxied", PAT).await;
    harness
        .apply(&gate_yaml(
            "proxied",
            "g",
            &sim.org_url(ORG),
            "secretRef: {name: ado-pat, key: token}",
            "",
        ))
        .await;
    let log = harness.dir.path().join("lockstep.log");
    let file = std::fs::File::create(&log).unwrap();
    let _lockstep = lockstep_command(&harness.kubeconfig)
        .args([
            "--log-format",
            "json",
            "--ca-file",
            ca_file.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info,lockstep=debug")
        .env("HTTPS_PROXY", proxy.url())
        .env("HTTP_PROXY", proxy.url())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .env_remove("no_proxy")
        .env_remove("POD_NAME")
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gate: Value = serde_json::from_str(
            &harness
                .kubectl(&["-n", "proxied", "get", "pipelinegate", "g", "-o", "json"])
                .await,
        )
        .unwrap();
        if is_ready(&gate) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gate not Ready through the proxy: {gate:#}\nproxy saw {:?}\nlog:\n{}",
            proxy.requests(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let counts = proxy.counts();
    println!("proxy requests per host: {counts:?}");
    assert!(
        proxy.tunnels("dev.azure.test") >= 1,
        "Azure DevOps was not reached through the proxy: {counts:?}"
    );
    assert!(
        counts.keys().all(|h| h == "dev.azure.test"),
        "something else went through the proxy (the Kubernetes API must not): {counts:?}"
    );
}

/// `lockstep check` with `vars` (and nothing else credential-like from the test's environment).
async fn check_with(env: &Env, vars: &[(&str, String)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.arg("check")
        .args(["--organization-url", &env.sim.org_url(ORG)])
        .args(["--project", PROJECT, "--branch", BRANCH])
        .args(["--definition-id", &DEFINITION.to_string()])
        .kill_on_drop(true);
    for v in [
        "AZURE_DEVOPS_EXT_PAT",
        "SYSTEM_ACCESSTOKEN",
        "AZURE_DEVOPS_ACCESS_TOKEN",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "idToken",
        "servicePrincipalId",
        "tenantId",
        "TF_BUILD",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("lockstep check finished")
        .expect("lockstep check ran")
}

#[tokio::test]
async fn lockstep_check_takes_entra_credentials_from_the_environment() {
    let env = Env::start(Duration::from_secs(3599)).await;
    let ca = TestCa::new().unwrap();
    let cert = ca.client_certificate("check").unwrap();
    env.entra
        .add_client_certificate(TENANT, CERT_CLIENT, cert.der().as_ref());
    let cert_file = env.dir.path().join("sp.pem");
    std::fs::write(&cert_file, cert.bundle_pem()).unwrap();
    // What an AzureCLI task with addSpnToEnvironment exports for a workload identity federation
    // service connection: the OIDC token Azure DevOps issued, here federated with SP_CLIENT.
    env.entra.add_federated_credential(
        TENANT,
        SP_CLIENT,
        "https://vstoken.dev.azure.test/org",
        "sc://contoso/Shop/lockstep",
    );
    let id_token = {
        let now = jiff::Timestamp::now().as_second();
        lockstep_testkit::entra::jwt(
            &serde_json::json!({"alg": "RS256"}),
            &serde_json::json!({"iss": "https://vstoken.dev.azure.test/org", "sub": "sc://contoso/Shop/lockstep",
                                "aud": "api://AzureADTokenExchange", "iat": now, "nbf": now, "exp": now + 600}),
            b"sig",
        )
    };
    let authority = ("AZURE_AUTHORITY_HOST", env.entra.url());
    let ids = |client: &str| {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_string()),
            ("AZURE_CLIENT_ID", client.to_string()),
            authority.clone(),
        ]
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("client secret", {
            let mut v = ids(SP_CLIENT);
            v.push(("AZURE_CLIENT_SECRET", SP_SECRET.to_string()));
            v
        }),
        ("certificate", {
            let mut v = ids(CERT_CLIENT);
            v.push((
                "AZURE_CLIENT_CERTIFICATE_PATH",
                cert_file.display().to_string(),
            ));
            v
        }),
        ("federated token file", {
            let mut v = ids(WI_CLIENT);
            v.push((
                "AZURE_FEDERATED_TOKEN_FILE",
                env.token_file.display().to_string(),
            ));
            v
        }),
        (
            "AzureCLI addSpnToEnvironment",
            vec![
                ("servicePrincipalId", SP_CLIENT.to_string()),
                ("tenantId", TENANT.to_string()),
                ("idToken", id_token),
                authority.clone(),
            ],
        ),
        (
            "access token",
            vec![(
                "AZURE_DEVOPS_ACCESS_TOKEN",
                env.entra.issue_token(
                    TENANT,
                    WI_CLIENT,
                    lockstep_testkit::entra::GrantKind::FederatedToken,
                ),
            )],
        ),
    ];
    for (what, vars) in &cases {
        let out = check_with(&env, vars).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{what}: {stdout}\n{stderr}");
        assert!(
            !format!("{stdout}{stderr}").contains("eyJ"),
            "{what}: a token was printed"
        );
        assert!(
            !stderr.contains(SP_SECRET),
            "{what}: the secret was printed"
        );
    }

    env.entra
        .fail_client(SP_CLIENT, EntraError::ApplicationNotFound);
    let mut vars = ids(SP_CLIENT);
    vars.push(("AZURE_CLIENT_SECRET", SP_SECRET.to_string()));
    let out = check_with(&env, &vars).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("AADSTS700016") && stderr.contains(SP_CLIENT),
        "{stderr}"
    );
    assert!(!stderr.contains(SP_SECRET));
}
