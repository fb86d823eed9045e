//! The fake Entra ID over HTTP: grant checks, Entra's error shape, certificate and federated
//! assertions, expiry, counters, IMDS, faults, TLS, and the simulator accepting its tokens.

use std::time::Duration;

use lockstep_testkit::ado::{AdoSimOptions, AdoSimulator};
use lockstep_testkit::entra::{
    self, EntraConfig, EntraError, EntraFake, GrantKind, AZURE_DEVOPS_RESOURCE, AZURE_DEVOPS_SCOPE,
    JWT_BEARER,
};
use lockstep_testkit::tls::TestCa;
use serde_json::{json, Value};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "6e2a5d3c-0d1f-4b7e-9a51-2f4c3b1a0e11";
const SECRET: &str = "s3cret~value";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn post_form(fake: &EntraFake, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(fake.token_url(tenant))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

fn form_body(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

fn secret_form<'a>(client_id: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", AZURE_DEVOPS_SCOPE),
        ("client_secret", secret),
    ]
}

fn assertion_form<'a>(client_id: &'a str, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", AZURE_DEVOPS_SCOPE),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ]
}

/// Asserts Entra's error shape and returns the AADSTS code.
#[track_caller]
fn assert_entra_error(body: &Value, error: &str, code: u32) {
    assert_eq!(body["error"], error, "{body:#}");
    assert_eq!(body["error_codes"], json!([code]), "{body:#}");
    let description = body["error_description"]
        .as_str()
        .expect("error_description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    let trace = body["trace_id"].as_str().expect("trace_id");
    let correlation = body["correlation_id"].as_str().expect("correlation_id");
    assert_eq!(trace.len(), 36);
    assert_eq!(correlation.len(), 36);
    assert!(description.contains(&format!(
        "\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: "
    )));
    let ts = body["timestamp"].as_str().expect("timestamp");
    // "2026-11-29 23:40:00Z"
    assert_eq!(ts.len(), 20, "{ts}");
    assert_eq!(&ts[10..11], " ");
    assert!(ts.ends_with('Z'));
}

async fn ado_status(sim: &AdoSimulator, org: &str, token: &str) -> u16 {
    http()
        .get(format!(
            "{}/Shop/_apis/build/builds?api-version=7.1",
            sim.org_url(org)
        ))
        .bearer_auth(token)
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .expect("ADO request")
        .status()
        .as_u16()
}

async fn sim_trusting(fake: &EntraFake) -> AdoSimulator {
    let sim = AdoSimulator::start().await.expect("simulator");
    sim.add_project("contoso", "Shop");
    sim.add_project("fabrikam", "Shop");
    sim.trust_entra(fake);
    sim
}

#[tokio::test]
async fn client_secret_grant_issues_a_token_the_simulator_accepts_for_member_orgs_only() {
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    fake.add_client_secret(TENANT, APP, SECRET);
    let sim = sim_trusting(&fake).await;
    sim.add_entra_identity("contoso", APP);

    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 200, "{body:#}");
    let mut keys: Vec<_> = body.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "ext_expires_in", "token_type"]
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");

    assert_eq!(ado_status(&sim, "contoso", token).await, 200);
    // Not a user of fabrikam; a made-up token; a PAT-less Basic request.
    assert_eq!(ado_status(&sim, "fabrikam", token).await, 401);
    assert_eq!(ado_status(&sim, "contoso", "not-a-token").await, 401);
    sim.remove_entra_identity("contoso", APP);
    assert_eq!(ado_status(&sim, "contoso", token).await, 401);

    assert_eq!(fake.count(APP, GrantKind::ClientSecret), 1);
    assert_eq!(fake.count(APP, GrantKind::ClientCertificate), 0);
    assert_eq!(fake.tokens_issued(APP), 1);
    assert_eq!(fake.token_requests(APP), 1);
}

#[tokio::test]
async fn an_untrusted_simulator_refuses_entra_tokens() {
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    let sim = AdoSimulator::start().await.expect("simulator");
    sim.add_project("contoso", "Shop");
    sim.add_entra_identity("contoso", APP);
    let token = fake.issue_token(TENANT, APP, GrantKind::ClientSecret);
    assert_eq!(ado_status(&sim, "contoso", &token).await, 401);
    sim.trust_entra(&fake);
    assert_eq!(ado_status(&sim, "contoso", &token).await, 200);
}

#[tokio::test]
async fn the_token_endpoint_checks_grant_client_scope_and_secret() {
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    fake.add_client_secret(TENANT, APP, SECRET);

    let mut form = secret_form(APP, SECRET);
    form[0].1 = "password";
    let (status, body) = post_form(&fake, TENANT, &form).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "unsupported_grant_type", 70003);

    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)[1..]).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 900144);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("'grant_type'"));

    let mut form = secret_form(APP, SECRET);
    form.remove(2);
    let (status, body) = post_form(&fake, TENANT, &form).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 900144);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("'scope'"));

    let mut form = secret_form(APP, SECRET);
    form[2].1 = AZURE_DEVOPS_RESOURCE;
    let (status, body) = post_form(&fake, TENANT, &form).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_scope", 1002012);

    let mut form = secret_form(APP, SECRET);
    form[2].1 = "https://management.azure.com/.default";
    let (status, body) = post_form(&fake, TENANT, &form).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_resource", 500011);

    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, "wrong")).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000215);

    let mut form = secret_form(APP, SECRET);
    form.remove(3);
    let (status, body) = post_form(&fake, TENANT, &form).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000218);

    // Unknown application, and a known one asked in the wrong tenant: AADSTS700016.
    let other = "00000000-0000-0000-0000-00000000beef";
    let (status, body) = post_form(&fake, TENANT, &secret_form(other, SECRET)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "unauthorized_client", 700016);
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.starts_with(&format!(
        "AADSTS700016: Application with identifier '{other}' was not found in the directory '{TENANT}'"
    )), "{description}");
    let (status, body) =
        post_form(&fake, "contoso.onmicrosoft.com", &secret_form(APP, SECRET)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "unauthorized_client", 700016);

    // No token was issued for any of these; every request was counted.
    assert_eq!(fake.tokens_issued(APP), 0);
    assert_eq!(fake.count(APP, GrantKind::ClientSecret), 7);
    assert!(fake.requests().iter().all(|r| r.status != 200));
    assert_eq!(fake.registry().issued(), 0);
}

#[tokio::test]
async fn a_configured_error_answers_every_request_for_that_client_until_healed() {
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    fake.add_client_secret(TENANT, APP, SECRET);
    fake.fail_client(APP, EntraError::ApplicationNotFound);
    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "unauthorized_client", 700016);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains(APP));
    assert_eq!(fake.requests()[0].error_code, Some(700016));

    fake.fail_client(
        APP,
        EntraError::Custom {
            status: 403,
            error: "access_denied".into(),
            code: 7000112,
            message: "Application is disabled.".into(),
        },
    );
    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 403);
    assert_entra_error(&body, "access_denied", 7000112);

    fake.heal_client(APP);
    let (status, _) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn certificate_assertions_are_verified_against_the_registered_certificate() {
    let ca = TestCa::new().expect("CA");
    let cert = ca.client_certificate("lockstep-sp").expect("cert");
    let stranger = ca.client_certificate("someone-else").expect("cert");
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    fake.add_client_certificate(TENANT, APP, cert.der());
    let url = fake.token_url(TENANT);

    let good = entra::certificate_assertion(&cert, &url, APP).expect("assertion");
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &good)).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(fake.count(APP, GrantKind::ClientCertificate), 1);

    // Claims changed after signing: the signature no longer matches.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = entra::jwt(
        &json!({}),
        &json!({"aud": url, "iss": APP, "sub": APP, "exp": 4_102_444_800i64}),
        b"",
    )
    .split('.')
    .nth(1)
    .map(str::to_string)
    .expect("claims");
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &forged)).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 700027);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("signature validation"));

    // Signed with a certificate the application does not have.
    let unknown = entra::certificate_assertion(&stranger, &url, APP).expect("assertion");
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &unknown)).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 700027);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("not registered"));

    // iss/sub naming another application.
    let other = entra::certificate_assertion(&cert, &url, "11111111-2222-3333-4444-555555555555")
        .expect("assertion");
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &other)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 700021);

    // Audience of another authority.
    let wrong_aud = entra::certificate_assertion(
        &cert,
        "https://login.microsoftonline.com/x/oauth2/v2.0/token",
        APP,
    )
    .expect("assertion");
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &wrong_aud)).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 700212);

    // Expired (beyond the 5-minute skew), correctly signed.
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": cert.x5t_s256()});
    let claims = json!({"aud": url, "iss": APP, "sub": APP, "exp": jiff::Timestamp::now().as_second() - 900});
    let unsigned = entra::jwt(&header, &claims, b"");
    let input = unsigned.trim_end_matches('.');
    let signature = cert.sign_rs256(input.as_bytes()).expect("sign");
    let expired = format!("{input}.{}", base64_url(&signature));
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &expired)).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 700024);

    // Not a JWT at all.
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, "garbage")).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 50027);

    assert_eq!(fake.tokens_issued(APP), 1);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn federated_assertions_must_match_a_federated_credential() {
    let issuer = "https://oidc.testkit.local/cluster-1";
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    fake.add_federated_credential(
        TENANT,
        APP,
        issuer,
        "system:serviceaccount:lockstep-system:lockstep",
    );
    let sim = sim_trusting(&fake).await;
    sim.add_entra_identity("contoso", APP);

    let sa = entra::service_account_token(
        issuer,
        "lockstep-system",
        "lockstep",
        Duration::from_secs(3600),
    );
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &sa)).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(fake.count(APP, GrantKind::FederatedToken), 1);
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(ado_status(&sim, "contoso", token).await, 200);

    let wrong_sa =
        entra::service_account_token(issuer, "default", "default", Duration::from_secs(3600));
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &wrong_sa)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 70021);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("system:serviceaccount:default:default"));

    let expired = entra::jwt(
        &json!({"alg": "RS256"}),
        &json!({"aud": ["api://AzureADTokenExchange"], "iss": issuer,
                "sub": "system:serviceaccount:lockstep-system:lockstep",
                "exp": jiff::Timestamp::now().as_second() - 3600}),
        b"sig",
    );
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &expired)).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 700024);

    let mut form = assertion_form(APP, &sa);
    form.retain(|(k, _)| *k != "client_assertion_type");
    let (status, body) = post_form(&fake, TENANT, &form).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 900144);

    assert_eq!(fake.count(APP, GrantKind::FederatedToken), 4);
    assert_eq!(fake.tokens_issued(APP), 1);
}

#[tokio::test]
async fn short_lived_tokens_expire_in_the_simulator() {
    let fake = EntraFake::start(EntraConfig::default().token_lifetime(Duration::from_secs(1)))
        .await
        .expect("fake");
    fake.add_client_secret(TENANT, APP, SECRET);
    let sim = sim_trusting(&fake).await;
    sim.add_entra_identity("contoso", APP);

    let (_, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(body["expires_in"], 1);
    let token = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(ado_status(&sim, "contoso", &token).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ado_status(&sim, "contoso", &token).await, 401);
    // Without the Suppress header the simulator answers an expired token like any bad credential.
    let r = http()
        .get(format!(
            "{}/Shop/_apis/build/builds?api-version=7.1",
            sim.org_url("contoso")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 203);

    fake.set_token_lifetime(Duration::from_secs(600));
    let (_, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(ado_status(&sim, "contoso", &token).await, 200);
    fake.expire_tokens();
    assert_eq!(ado_status(&sim, "contoso", &token).await, 401);
    assert_eq!(fake.tokens_issued(APP), 2);
}

async fn imds_get(fake: &EntraFake, query: &str, metadata: bool) -> (u16, Value) {
    let mut req = http().get(format!("{}?{query}", fake.imds_endpoint()));
    if metadata {
        req = req.header("Metadata", "true");
    }
    let r = req.send().await.expect("IMDS request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

#[tokio::test]
async fn imds_answers_managed_identity_tokens_in_its_documented_shape() {
    const MI: &str = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    const MI2: &str = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    let sim = sim_trusting(&fake).await;
    sim.add_entra_identity("contoso", MI);
    let q = format!("api-version=2018-02-01&resource={AZURE_DEVOPS_RESOURCE}&client_id={MI}");

    let (status, body) = imds_get(&fake, &q, true).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );

    fake.add_managed_identity(TENANT, MI);
    let (status, body) = imds_get(&fake, &q, false).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        "Required metadata header not specified"
    );

    let (status, body) = imds_get(&fake, &q, true).await;
    assert_eq!(status, 200, "{body:#}");
    for key in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
        let v = body[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} must be a string: {body:#}"));
        assert!(v.parse::<i64>().is_ok(), "{key}={v}");
    }
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["resource"], AZURE_DEVOPS_RESOURCE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], MI);
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(ado_status(&sim, "contoso", token).await, 200);
    assert_eq!(fake.count(MI, GrantKind::ManagedIdentity), 1);

    // The only identity is used without client_id; with two, IMDS asks which.
    let (status, _) = imds_get(
        &fake,
        &format!("api-version=2018-02-01&resource={AZURE_DEVOPS_RESOURCE}"),
        true,
    )
    .await;
    assert_eq!(status, 200);
    fake.add_managed_identity(TENANT, MI2);
    let (status, body) = imds_get(
        &fake,
        &format!("api-version=2018-02-01&resource={AZURE_DEVOPS_RESOURCE}"),
        true,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Multiple user assigned identities"));
    fake.set_system_assigned_identity(TENANT, MI2);
    let (status, body) = imds_get(
        &fake,
        &format!("api-version=2018-02-01&resource={AZURE_DEVOPS_RESOURCE}"),
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["client_id"], MI2);

    let (status, body) = imds_get(
        &fake,
        &format!("api-version=2018-02-01&client_id={MI}"),
        true,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        "Required audience parameter not specified"
    );
    let (status, body) = imds_get(
        &fake,
        &format!("resource={AZURE_DEVOPS_RESOURCE}&client_id={MI}"),
        true,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    let (status, body) = imds_get(
        &fake,
        &format!("api-version=2018-02-01&resource=https://vault.azure.net&client_id={MI}"),
        true,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");

    fake.fail_client(MI, EntraError::ApplicationNotFound);
    let (status, body) = imds_get(&fake, &q, true).await;
    assert_eq!(status, 400);
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("AADSTS700016"));
    assert_eq!(fake.tokens_issued(MI), 2);
}

#[tokio::test]
async fn faults_5xx_garbage_and_delay() {
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    fake.add_client_secret(TENANT, APP, SECRET);

    fake.fail_next(2, 503);
    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 503);
    assert_entra_error(&body, "temporarily_unavailable", 90033);
    let (status, body) = imds_get(&fake, "api-version=2018-02-01", true).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "temporarily_unavailable");
    let (status, _) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 200);

    fake.garbage_next(1);
    let r = http()
        .post(fake.token_url(TENANT))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&secret_form(APP, SECRET)))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(r.json::<Value>().await.is_err(), "garbage is not JSON");

    fake.delay(Duration::from_millis(800));
    let slow = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let err = slow
        .post(fake.token_url(TENANT))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&secret_form(APP, SECRET)))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err}");
    fake.clear_faults();
    let (status, _) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn https_fake_and_simulator_with_a_test_ca() {
    let ca = TestCa::new().expect("CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    ca.write_ca_pem(&ca_file).expect("write CA");
    let tls = ca
        .server_config(&["login.microsoftonline.test", "dev.azure.test", "127.0.0.1"])
        .expect("server cert");
    let fake = EntraFake::start(EntraConfig::default().tls(tls.clone()))
        .await
        .expect("fake");
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    assert!(
        fake.imds_endpoint().starts_with("http://127.0.0.1:"),
        "IMDS stays plain HTTP"
    );
    fake.add_client_secret(TENANT, APP, SECRET);
    let sim = AdoSimulator::start_with(AdoSimOptions::default().tls(tls))
        .await
        .expect("sim");
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    sim.add_project("contoso", "Shop");
    sim.trust_entra(&fake);
    sim.add_entra_identity("contoso", APP);

    let pem = std::fs::read(&ca_file).expect("read CA");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let body: Value = client
        .post(fake.token_url(TENANT))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&secret_form(APP, SECRET)))
        .send()
        .await
        .expect("token over TLS")
        .json()
        .await
        .expect("JSON");
    let token = body["access_token"].as_str().expect("token");
    let status = client
        .get(format!(
            "{}/contoso/Shop/_apis/build/builds?api-version=7.1",
            sim.url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("ADO over TLS")
        .status();
    assert_eq!(status.as_u16(), 200);

    // A client without the test CA refuses the certificate.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([])
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(untrusting.get(sim.url()).send().await.is_err());
}

#[tokio::test]
async fn control_api_drives_the_fake_with_json() {
    let fake = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake");
    let c = http();
    let r = c
        .post(format!("{}/_entra/apps", fake.url()))
        .json(&json!({"tenantId": TENANT, "clientId": APP, "secret": SECRET}))
        .send()
        .await
        .expect("control");
    assert_eq!(r.status().as_u16(), 201);
    let r = c
        .put(format!("{}/_entra/token-lifetime", fake.url()))
        .json(&json!({"seconds": 42}))
        .send()
        .await
        .expect("control");
    assert_eq!(r.status().as_u16(), 204);
    let (status, body) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!((status, body["expires_in"].clone()), (200, json!(42)));
    c.post(format!("{}/_entra/errors", fake.url()))
        .json(&json!({"clientId": APP, "error": "applicationNotFound"}))
        .send()
        .await
        .expect("control");
    let (status, _) = post_form(&fake, TENANT, &secret_form(APP, SECRET)).await;
    assert_eq!(status, 400);
    let log: Value = c
        .get(format!("{}/_entra/requests", fake.url()))
        .send()
        .await
        .expect("control")
        .json()
        .await
        .expect("JSON");
    assert_eq!(log["count"], 2);
    assert_eq!(log["counts"][APP]["clientSecret"], 2);
    assert_eq!(log["value"][1]["errorCode"], 700016);
}

#[tokio::test]
async fn assertions_may_name_an_alias_of_the_authority() {
    let ca = TestCa::new().expect("CA");
    let cert = ca.client_certificate("lockstep-sp").expect("cert");
    let fake = EntraFake::start(
        EntraConfig::default().also_known_as("https://login.microsoftonline.test/"),
    )
    .await
    .expect("fake");
    fake.add_client_certificate(TENANT, APP, cert.der());
    let alias = format!("https://login.microsoftonline.test/{TENANT}/oauth2/v2.0/token");
    let assertion = entra::certificate_assertion(&cert, &alias, APP).expect("assertion");
    let (status, body) = post_form(&fake, TENANT, &assertion_form(APP, &assertion)).await;
    assert_eq!(status, 200, "{body:#}");
    // The v1 endpoint of the real authority is accepted as an audience too.
    let v1 =
        entra::certificate_assertion(&cert, &format!("{}/{TENANT}/oauth2/token", fake.url()), APP)
            .expect("assertion");
    let (status, _) = post_form(&fake, TENANT, &assertion_form(APP, &v1)).await;
    assert_eq!(status, 200);
    assert_eq!(fake.count(APP, GrantKind::ClientCertificate), 2);
}
