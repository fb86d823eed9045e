//! The test proxy: CONNECT to a TLS simulator that only resolves through the host map, plain
//! absolute-form forwarding, proxy authentication, unknown hosts and the connection cap.

use std::time::Duration;

use lockstep_testkit::ado::{AdoSimOptions, AdoSimulator};
use lockstep_testkit::proxy::{ProxyConfig, TestProxy};
use lockstep_testkit::tls::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAT: &str = "my-pat";

async fn tls_sim(ca: &TestCa) -> AdoSimulator {
    let tls = ca
        .server_config(&["dev.azure.test", "127.0.0.1"])
        .expect("server cert");
    let sim = AdoSimulator::start_with(
        AdoSimOptions::default()
            .tls(tls)
            .public_url("https://dev.azure.test"),
    )
    .await
    .expect("sim");
    sim.add_token("contoso", PAT);
    sim.add_project("contoso", "Shop");
    sim
}

fn client_via(proxy: reqwest::Proxy, ca: Option<&TestCa>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .proxy(proxy)
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        b = b
            .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).expect("PEM")]);
    }
    b.build().expect("client")
}

#[tokio::test]
async fn connect_tunnels_to_a_tls_server_known_only_through_the_host_map() {
    let ca = TestCa::new().expect("CA");
    let sim = tls_sim(&ca).await;
    assert_eq!(sim.org_url("contoso"), "https://dev.azure.test/contoso");
    let proxy = TestProxy::start(ProxyConfig::default().map_host("dev.azure.test", sim.addr()))
        .await
        .expect("proxy");
    let client = client_via(
        reqwest::Proxy::https(proxy.url()).expect("proxy url"),
        Some(&ca),
    );
    let url = format!(
        "{}/Shop/_apis/build/builds?api-version=7.1",
        sim.org_url("contoso")
    );
    for _ in 0..2 {
        let r = client
            .get(&url)
            .basic_auth("", Some(PAT))
            .send()
            .await
            .expect("through the proxy");
        assert_eq!(r.status().as_u16(), 200);
    }
    // One tunnel, reused for both requests (keep-alive inside TLS).
    assert_eq!(proxy.tunnels("dev.azure.test"), 1);
    assert_eq!(proxy.requests()[0].port, 443);
    assert_eq!(sim.count_endpoint("builds.list"), 2);
}

#[tokio::test]
async fn absolute_form_requests_are_forwarded_to_http_targets() {
    let sim =
        AdoSimulator::start_with(AdoSimOptions::default().public_url("http://dev.azure.test"))
            .await
            .expect("sim");
    sim.add_token("contoso", PAT);
    sim.add_project("contoso", "Shop");
    let proxy = TestProxy::start(ProxyConfig::default().map_host("dev.azure.test", sim.addr()))
        .await
        .expect("proxy");
    let client = client_via(reqwest::Proxy::http(proxy.url()).expect("proxy url"), None);
    for _ in 0..3 {
        let r = client
            .get("http://dev.azure.test/contoso/Shop/_apis/build/builds?api-version=7.1")
            .basic_auth("", Some(PAT))
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .send()
            .await
            .expect("forwarded");
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(proxy.forwarded("dev.azure.test"), 3);
    assert_eq!(proxy.tunnels("dev.azure.test"), 0);
    let first = &proxy.requests()[0];
    assert_eq!(first.method, "GET");
    assert_eq!(
        first.path,
        "/contoso/Shop/_apis/build/builds?api-version=7.1"
    );
    assert_eq!(sim.count_endpoint("builds.list"), 3);
    assert_eq!(proxy.counts().get("dev.azure.test"), Some(&3));

    // Unknown names get 502 from the proxy itself.
    let r = client
        .get("http://elsewhere.test/x")
        .send()
        .await
        .expect("answered by the proxy");
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(proxy.requests_to("elsewhere.test"), 1);
}

#[tokio::test]
async fn proxy_authorization_is_checked_when_configured() {
    let ca = TestCa::new().expect("CA");
    let sim = tls_sim(&ca).await;
    let proxy = TestProxy::start(
        ProxyConfig::default()
            .map_host("dev.azure.test", sim.addr())
            .basic_auth("corp", "pa55"),
    )
    .await
    .expect("proxy");
    let url = "https://dev.azure.test/contoso/Shop/_apis/build/builds?api-version=7.1";

    let anonymous = client_via(reqwest::Proxy::https(proxy.url()).expect("url"), Some(&ca));
    assert!(anonymous
        .get(url)
        .basic_auth("", Some(PAT))
        .send()
        .await
        .is_err());
    let wrong = client_via(
        reqwest::Proxy::https(proxy.url())
            .expect("url")
            .basic_auth("corp", "nope"),
        Some(&ca),
    );
    assert!(wrong
        .get(url)
        .basic_auth("", Some(PAT))
        .send()
        .await
        .is_err());
    assert_eq!(
        proxy.requests().iter().filter(|r| r.status == 407).count(),
        2
    );

    let authed = client_via(
        reqwest::Proxy::https(proxy.url_with_credentials("corp", "pa55")).expect("url"),
        Some(&ca),
    );
    let r = authed
        .get(url)
        .basic_auth("", Some(PAT))
        .send()
        .await
        .expect("authorized tunnel");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(proxy.tunnels("dev.azure.test"), 1);

    // The 407 carries the challenge.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    raw.write_all(b"CONNECT dev.azure.test:443 HTTP/1.1\r\nHost: dev.azure.test:443\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 407 "), "{answer}");
    assert!(
        answer.contains("Proxy-Authenticate: Basic realm="),
        "{answer}"
    );
}

#[tokio::test]
async fn the_connection_cap_turns_extra_clients_away() {
    let sim = AdoSimulator::start().await.expect("sim");
    let proxy = TestProxy::start(
        ProxyConfig::default()
            .map_host("dev.azure.test", sim.addr())
            .max_connections(1),
    )
    .await
    .expect("proxy");
    // Hold the only slot with an open tunnel.
    let mut held = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    held.write_all(b"CONNECT dev.azure.test:443 HTTP/1.1\r\nHost: dev.azure.test:443\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = held.read(&mut buf).await.expect("read");
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap_or_default()
        .starts_with("HTTP/1.1 200 "));

    let mut extra = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    let mut answer = String::new();
    extra.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");

    drop(held);
    // The slot frees once the tunnel closes.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut next = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connect");
        next.write_all(b"CONNECT dev.azure.test:443 HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let n = next.read(&mut buf).await.unwrap_or(0);
        if std::str::from_utf8(&buf[..n])
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200 ")
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "the slot was never released");
    assert_eq!(proxy.tunnels("dev.azure.test"), 2);
}
