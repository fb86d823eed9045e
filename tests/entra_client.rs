//! The Entra token client and the Bearer path of the Azure DevOps client against a local HTTP server:
//! what goes on the wire for each source, how answers are classified, and that secrets stay out of errors.

use std::sync::Arc;
use std::time::Duration;

use lockstep::ado::{AdoAuth, AdoClient, AdoError, ClientConfig};
use lockstep::entra::{
    parse_authority, CertificateCredential, EntraClient, EntraClientConfig, EntraIdentity,
    EntraTokens, AZURE_DEVOPS_SCOPE,
};
use lockstep::proxy::{Outbound, ProxyEnv};
use lockstep::secret::SecretString;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "sp-s3cret-value";

fn client(server: &MockServer) -> EntraClient {
    EntraClient::new(EntraClientConfig {
        request_timeout: Duration::from_millis(800),
        imds_endpoint: format!("{}/metadata/identity/oauth2/token", server.uri())
            .parse()
            .unwrap(),
        outbound: Outbound::default(),
    })
    .unwrap()
}

fn form(req: &Request) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

fn token_ok(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token
    }))
}

fn authority(server: &MockServer) -> url::Url {
    parse_authority(&server.uri()).unwrap()
}

#[tokio::test]
async fn a_client_secret_is_posted_as_client_credentials_for_the_azure_devops_scope() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(token_ok("entra-token-1"))
        .expect(1)
        .mount(&server)
        .await;
    let identity = EntraIdentity::ClientSecret {
        tenant_id: "tenant-1".into(),
        client_id: "client-1".into(),
        secret: SecretString::new(SECRET),
        authority: authority(&server),
    };
    let issued = client(&server).request_token(&identity).await.unwrap();
    assert_eq!(issued.token.expose(), "entra-token-1");
    assert_eq!(issued.expires_in, Duration::from_secs(3599));
    let req = &server.received_requests().await.unwrap()[0];
    let f = form(req);
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(f["client_id"], "client-1");
    assert_eq!(f["scope"], AZURE_DEVOPS_SCOPE);
    assert_eq!(f["client_secret"], SECRET);
    assert!(!f.contains_key("client_assertion"));
}

#[tokio::test]
async fn the_federated_token_file_is_read_again_for_every_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(token_ok("t"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "sa-token-one\n").unwrap();
    let identity = EntraIdentity::WorkloadIdentity {
        tenant_id: "tenant-1".into(),
        client_id: "client-1".into(),
        token_file: file.clone(),
        authority: authority(&server),
    };
    let c = client(&server);
    c.request_token(&identity).await.unwrap();
    // The kubelet rotates the projected token in place.
    std::fs::write(&file, "sa-token-two").unwrap();
    c.request_token(&identity).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let assertions: Vec<String> = reqs
        .iter()
        .map(|r| form(r)["client_assertion"].clone())
        .collect();
    assert_eq!(assertions, ["sa-token-one", "sa-token-two"]);
    let f = form(&reqs[0]);
    assert_eq!(
        f["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(f["scope"], AZURE_DEVOPS_SCOPE);
    assert!(!f.contains_key("client_secret"));
}

#[tokio::test]
async fn a_certificate_assertion_is_audienced_to_the_token_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(token_ok("t"))
        .mount(&server)
        .await;
    let pem = include_str!("../src/entra/testdata/client-cert.pem");
    let cert = Arc::new(CertificateCredential::from_pem(pem.as_bytes()).unwrap());
    let identity = EntraIdentity::ClientCertificate {
        tenant_id: "tenant-1".into(),
        client_id: "client-1".into(),
        certificate: cert.clone(),
        authority: authority(&server),
    };
    client(&server).request_token(&identity).await.unwrap();
    let f = form(&server.received_requests().await.unwrap()[0]);
    let jwt = &f["client_assertion"];
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["aud"],
        format!("{}/tenant-1/oauth2/v2.0/token", server.uri())
    );
    assert_eq!(claims["iss"], "client-1");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["x5t#S256"], cert.thumbprint_s256());
}

#[tokio::test]
async fn imds_is_asked_with_the_metadata_header_and_the_resource() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/metadata/identity/oauth2/token"))
        .and(header("Metadata", "true"))
        .and(query_param(
            "resource",
            "499b84ac-1321-427f-aa17-267ca6975798",
        ))
        .and(query_param("client_id", "mi-client"))
        .and(query_param("api-version", "2018-02-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "mi-token", "expires_in": "86399", "expires_on": "1900000000",
            "resource": "499b84ac-1321-427f-aa17-267ca6975798", "token_type": "Bearer"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let identity = EntraIdentity::ManagedIdentity {
        client_id: Some("mi-client".into()),
    };
    let issued = client(&server).request_token(&identity).await.unwrap();
    assert_eq!(issued.token.expose(), "mi-token");
    assert_eq!(issued.expires_in, Duration::from_secs(86399));
}

#[tokio::test]
async fn aadsts_errors_name_the_identity_and_never_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "unauthorized_client",
            "error_description": format!("AADSTS700016: Application with identifier 'client-9' was not found in the directory 'Contoso'. {SECRET}\r\nTrace ID: x\r\nCorrelation ID: y"),
            "error_codes": [700016],
        })))
        .mount(&server)
        .await;
    let identity = EntraIdentity::ClientSecret {
        tenant_id: "tenant-1".into(),
        client_id: "client-9".into(),
        secret: SecretString::new(SECRET),
        authority: authority(&server),
    };
    let err = client(&server).request_token(&identity).await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.aadsts_code(), Some("AADSTS700016"));
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("client id client-9"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("Trace ID"), "{shown}");
}

#[tokio::test]
async fn timeouts_and_server_errors_are_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/slow/oauth2/v2.0/token"))
        .respond_with(token_ok("t").set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/down/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    for tenant in ["slow", "down"] {
        let identity = EntraIdentity::ClientSecret {
            tenant_id: tenant.into(),
            client_id: "c".into(),
            secret: SecretString::new(SECRET),
            authority: authority(&server),
        };
        let err = client(&server).request_token(&identity).await.unwrap_err();
        assert!(err.is_transient(), "{tenant}: {err}");
        assert!(!err.to_string().contains(SECRET));
    }
}

#[tokio::test]
async fn the_cache_asks_once_for_many_callers_over_http() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_ok("shared").set_delay(Duration::from_millis(100)))
        .expect(1)
        .mount(&server)
        .await;
    let tokens = Arc::new(EntraTokens::new(client(&server)));
    let identity = EntraIdentity::ClientSecret {
        tenant_id: "t".into(),
        client_id: "c".into(),
        secret: SecretString::new(SECRET),
        authority: authority(&server),
    };
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (tokens, identity) = (tokens.clone(), identity.clone());
            tokio::spawn(async move { tokens.token(&identity).await.unwrap().expose().to_string() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "shared");
    }
    assert_eq!(tokens.stats().requests, 1);
}

#[tokio::test]
async fn azure_devops_gets_the_entra_token_as_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/builds"))
        .and(header("authorization", "Bearer entra-token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"count":0,"value":[]}"#.as_bytes(),
            "application/json; charset=utf-8",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let ado = AdoClient::new(ClientConfig::default()).unwrap();
    let auth = AdoAuth::Bearer {
        token: SecretString::new("entra-token-1"),
        identity: "workload identity (client id c, tenant t)".into(),
    };
    let org = format!("{}/contoso", server.uri());
    let builds = ado
        .list_builds(&org, "Shop", 1, "main", 5, &auth)
        .await
        .unwrap();
    assert!(builds.is_empty());
}

#[tokio::test]
async fn a_rejected_bearer_token_is_unauthorized_without_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string("entra-token-1 is not valid"))
        .mount(&server)
        .await;
    let ado = AdoClient::new(ClientConfig::default()).unwrap();
    let auth = AdoAuth::Bearer {
        token: SecretString::new("entra-token-1"),
        identity: "workload identity (client id c, tenant t)".into(),
    };
    let org = format!("{}/contoso", server.uri());
    let err = ado
        .list_builds(&org, "Shop", 1, "main", 5, &auth)
        .await
        .unwrap_err();
    assert!(matches!(err, AdoError::EntraTokenRejected { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("entra-token-1"), "{text}");
    assert!(
        text.contains("client id c") && text.contains("Build (read)"),
        "{text}"
    );
}

#[tokio::test]
async fn an_entra_token_refused_with_a_windows_auth_challenge_points_at_azure_devops_server() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .append_header("WWW-Authenticate", "Negotiate")
                .append_header("WWW-Authenticate", "NTLM"),
        )
        .mount(&server)
        .await;
    let ado = AdoClient::new(ClientConfig::default()).unwrap();
    let auth = AdoAuth::Bearer {
        token: SecretString::new("entra-token-1"),
        identity: "workload identity (client id c, tenant t)".into(),
    };
    let org = format!("{}/DefaultCollection", server.uri());
    let err = ado
        .list_builds(&org, "Shop", 1, "main", 5, &auth)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Azure DevOps Server") && text.contains("secretRef"),
        "{text}"
    );
}

#[tokio::test]
async fn token_requests_go_through_the_proxy_unless_no_proxy_covers_the_authority() {
    // wiremock answers an absolute-form request like any other, which is all a plain-HTTP forward proxy
    // sees: the "proxy" here is a second server that records what reached it.
    let authority_server = MockServer::start().await;
    let proxy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_ok("via-proxy"))
        .mount(&proxy)
        .await;
    Mock::given(method("POST"))
        .respond_with(token_ok("direct"))
        .mount(&authority_server)
        .await;
    let identity = EntraIdentity::ClientSecret {
        tenant_id: "t".into(),
        client_id: "c".into(),
        secret: SecretString::new(SECRET),
        authority: authority(&authority_server),
    };
    let with = |no_proxy: &'static str| {
        let proxy_uri = proxy.uri();
        let env = ProxyEnv::from_lookup(move |k| match k {
            "HTTP_PROXY" => Some(proxy_uri.clone()),
            "NO_PROXY" => Some(no_proxy.to_string()),
            _ => None,
        })
        .unwrap();
        EntraClient::new(EntraClientConfig {
            outbound: Outbound {
                proxy: env,
                ca_bundle: None,
            },
            ..EntraClientConfig::default()
        })
        .unwrap()
    };
    let proxied = with("example.invalid")
        .request_token(&identity)
        .await
        .unwrap();
    assert_eq!(proxied.token.expose(), "via-proxy");
    let reqs = proxy.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let direct = with("127.0.0.0/8").request_token(&identity).await.unwrap();
    assert_eq!(direct.token.expose(), "direct");
    assert_eq!(proxy.received_requests().await.unwrap().len(), 1);
}

/// The token client against the test kit's fake Entra ID, which verifies what a real one would: the
/// certificate assertion's RS256 signature and x5t#S256, the federated token's issuer and subject, the
/// scope, IMDS's Metadata header.
mod against_the_fake {
    use super::*;
    use lockstep_testkit::entra::{
        service_account_token, EntraConfig, EntraError as FakeError, EntraFake, GrantKind,
    };
    use lockstep_testkit::tls::TestCa;

    const TENANT: &str = "tenant-fake";

    async fn fake() -> (EntraFake, EntraClient) {
        let fake = EntraFake::start(EntraConfig::default()).await.unwrap();
        let client = EntraClient::new(EntraClientConfig {
            imds_endpoint: fake.imds_endpoint().parse().unwrap(),
            ..EntraClientConfig::default()
        })
        .unwrap();
        (fake, client)
    }

    #[tokio::test]
    async fn every_source_gets_a_token_the_fake_accepts() {
        let (fake, client) = fake().await;
        let authority = parse_authority(&fake.url()).unwrap();
        let ca = TestCa::new().unwrap();
        let cert = ca.client_certificate("lockstep").unwrap();
        fake.add_client_certificate(TENANT, "cert-app", cert.der().as_ref());
        fake.add_client_secret(TENANT, "secret-app", SECRET);
        fake.add_federated_credential(
            TENANT,
            "wi-app",
            "https://issuer.test",
            "system:serviceaccount:ns:sa",
        );
        fake.add_managed_identity(TENANT, "mi-app");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(
            &file,
            service_account_token("https://issuer.test", "ns", "sa", Duration::from_secs(600)),
        )
        .unwrap();

        let identities = [
            EntraIdentity::ClientCertificate {
                tenant_id: TENANT.into(),
                client_id: "cert-app".into(),
                certificate: Arc::new(
                    CertificateCredential::from_pem(cert.bundle_pem().as_bytes()).unwrap(),
                ),
                authority: authority.clone(),
            },
            EntraIdentity::ClientSecret {
                tenant_id: TENANT.into(),
                client_id: "secret-app".into(),
                secret: SecretString::new(SECRET),
                authority: authority.clone(),
            },
            EntraIdentity::WorkloadIdentity {
                tenant_id: TENANT.into(),
                client_id: "wi-app".into(),
                token_file: file.clone(),
                authority: authority.clone(),
            },
            EntraIdentity::ManagedIdentity {
                client_id: Some("mi-app".into()),
            },
        ];
        for identity in &identities {
            let issued = client
                .request_token(identity)
                .await
                .unwrap_or_else(|e| panic!("{identity:?}: {e}"));
            assert!(
                fake.registry().validate(issued.token.expose()).is_some(),
                "{identity:?}"
            );
        }
        assert_eq!(fake.count("cert-app", GrantKind::ClientCertificate), 1);
        assert_eq!(fake.count("wi-app", GrantKind::FederatedToken), 1);
        assert_eq!(fake.count("mi-app", GrantKind::ManagedIdentity), 1);

        // A federated token for another service account is not accepted: AADSTS70021, not transient.
        std::fs::write(
            &file,
            service_account_token(
                "https://issuer.test",
                "ns",
                "other",
                Duration::from_secs(600),
            ),
        )
        .unwrap();
        let err = client.request_token(&identities[2]).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert_eq!(err.aadsts_code(), Some("AADSTS70021"), "{err}");
        assert!(err.to_string().contains("federated credential"), "{err}");
    }

    #[tokio::test]
    async fn the_fakes_failures_are_classified() {
        let (fake, client) = fake().await;
        let identity = EntraIdentity::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: "app".into(),
            secret: SecretString::new(SECRET),
            authority: parse_authority(&fake.url()).unwrap(),
        };
        fake.add_client_secret(TENANT, "app", SECRET);
        fake.fail_client("app", FakeError::ApplicationNotFound);
        let err = client.request_token(&identity).await.unwrap_err();
        assert_eq!(err.aadsts_code(), Some("AADSTS700016"), "{err}");
        assert!(err.to_string().contains("client id app"), "{err}");
        fake.heal_client("app");
        fake.fail_next(1, 503);
        assert!(client
            .request_token(&identity)
            .await
            .unwrap_err()
            .is_transient());
        fake.garbage_next(1);
        let garbage = client.request_token(&identity).await.unwrap_err();
        assert!(!garbage.is_transient(), "{garbage}");
        assert!(client.request_token(&identity).await.is_ok());
    }
}
