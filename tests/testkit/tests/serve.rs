//! `lockstep-testkit serve --tls`: endpoints.json, the CA file, and a token fetched and used through
//! the proxy with the public host names.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_with_tls_exposes_entra_and_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_lockstep-testkit"))
            .args([
                "serve",
                "--tls",
                "--token-lifetime",
                "120",
                "--proxy-auth",
                "corp:pw",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let endpoints = dir.path().join("endpoints.json");
    let mut e = Value::Null;
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&endpoints) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                e = v;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = |k: &str| {
        e[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {e:#}"))
            .to_string()
    };
    assert_eq!(e["viaProxy"]["azureDevOps"], "https://dev.azure.test");
    assert_eq!(
        e["viaProxy"]["entraAuthority"],
        "https://login.microsoftonline.test"
    );
    assert!(s("imdsEndpoint").starts_with("http://127.0.0.1:"));
    let ca = std::fs::read(s("caFile")).expect("CA file");
    let cert = reqwest::Certificate::from_pem(&ca).expect("PEM");

    let direct = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([cert.clone()])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let ok = |r: reqwest::Response| assert!(r.status().is_success(), "{}", r.status());
    ok(direct
        .post(format!("{}/_entra/apps", s("entraAuthority")))
        .json(&json!({"tenantId": "t1", "clientId": "app1", "secret": "s"}))
        .send()
        .await
        .expect("control"));
    ok(direct
        .post(format!("{}/_sim/entra-identities", s("azureDevOps")))
        .json(&json!({"org": "contoso", "clientId": "app1"}))
        .send()
        .await
        .expect("control"));
    ok(direct
        .post(format!("{}/_sim/orgs/contoso/projects", s("azureDevOps")))
        .json(&json!({"name": "Shop"}))
        .send()
        .await
        .expect("control"));

    let proxied = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::https(s("proxy"))
                .expect("proxy")
                .basic_auth("corp", "pw"),
        )
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let token: Value = proxied
        .post("https://login.microsoftonline.test/t1/oauth2/v2.0/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=app1&client_secret=s&scope=499b84ac-1321-427f-aa17-267ca6975798%2F.default")
        .send()
        .await
        .expect("token via proxy")
        .json()
        .await
        .expect("JSON");
    assert_eq!(token["expires_in"], 120);
    let r = proxied
        .get("https://dev.azure.test/contoso/Shop/_apis/build/builds?api-version=7.1")
        .bearer_auth(token["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("ADO via proxy");
    assert_eq!(r.status().as_u16(), 200);
}
