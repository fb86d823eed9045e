//! TokenReview and SubjectAccessReview as kube-apiserver answers them, through kube-rs's typed API (what
//! an in-cluster server checking bearer tokens uses) and through the real kubectl.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, PostParams};
use kube::discovery::Discovery;
use lockstep_testkit::kube::{EmulatorConfig, Grant, KubeEmulator, UserInfo};
use serde_json::json;

fn token_review(token: &str, audiences: &[&str]) -> TokenReview {
    serde_json::from_value(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences}}),
    )
    .expect("token review")
}

fn sar(user: &str, groups: &[&str], verb: &str, ns: &str) -> SubjectAccessReview {
    serde_json::from_value(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "namespace": ns, "verb": verb, "group": "lockstep.dev", "resource": "pipelinegates", "name": "g"}}}))
    .expect("subject access review")
}

fn api_code<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn token_reviews_authenticate_registered_tokens_only() {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    emu.auth().add_token_for(
        "tok-alice",
        UserInfo {
            username: "system:serviceaccount:web:reader".into(),
            uid: "u-1".into(),
            groups: vec!["system:serviceaccounts".into()],
        },
    );
    let reviews: Api<TokenReview> = Api::all(emu.client().await);

    let ok = reviews
        .create(&PostParams::default(), &token_review("tok-alice", &[]))
        .await
        .expect("review");
    let status = ok.status.expect("status");
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:web:reader")
    );
    assert_eq!(user.uid.as_deref(), Some("u-1"));
    assert_eq!(
        user.groups,
        Some(vec![
            "system:serviceaccounts".to_string(),
            "system:authenticated".to_string()
        ])
    );
    assert_eq!(
        status.audiences,
        Some(vec![
            "https://kubernetes.default.svc.cluster.local".to_string()
        ])
    );
    assert_eq!(
        ok.spec.token.as_deref(),
        Some("tok-alice"),
        "the request is echoed"
    );

    let with_aud = reviews
        .create(
            &PostParams::default(),
            &token_review("tok-alice", &["lockstep"]),
        )
        .await
        .expect("review");
    assert_eq!(
        with_aud.status.expect("status").audiences,
        Some(vec!["lockstep".to_string()])
    );

    // An unknown token is not an HTTP error: authenticated is absent (false), user empty, an error said.
    let bad = reviews
        .create(&PostParams::default(), &token_review("nope", &[]))
        .await
        .expect("review");
    let status = bad.status.expect("status");
    assert_ne!(status.authenticated, Some(true));
    assert_eq!(status.user.and_then(|u| u.username), None);
    assert!(status.error.is_some());

    let (code, message) = api_code(
        reviews
            .create(&PostParams::default(), &token_review("", &[]))
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (400, "token is required for TokenReview in authentication")
    );
    // Create only: nothing to get or list.
    assert_eq!(api_code(reviews.list(&Default::default()).await).0, 405);
    // Every review asked counts, the rejected one too.
    assert_eq!(emu.auth().token_reviews(), 4);
}

#[tokio::test]
async fn subject_access_reviews_follow_grants_like_rbac() {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    emu.auth()
        .grant(
            Grant::user(
                "alice",
                &["get", "list"],
                "lockstep.dev",
                &["pipelinegates"],
            )
            .in_namespace("a"),
        )
        .expect("grant");
    emu.auth()
        .grant(Grant::group("viewers", &["get"], "lockstep.dev", &["*"]))
        .expect("grant");
    let reviews: Api<SubjectAccessReview> = Api::all(emu.client().await);
    let ask = |s: SubjectAccessReview| {
        let reviews = reviews.clone();
        async move {
            reviews
                .create(&PostParams::default(), &s)
                .await
                .expect("review")
                .status
                .expect("status")
        }
    };

    let allowed = ask(sar("alice", &[], "get", "a")).await;
    assert!(allowed.allowed);
    assert_eq!(
        allowed.reason.as_deref(),
        Some("RBAC: allowed by RoleBinding \"emulator-grant-1/a\" of Role \"emulator-grant-1\" to User \"alice\"")
    );
    // Another namespace is not allowed, and RBAC does not deny: no `denied`, no reason.
    let other_ns = ask(sar("alice", &[], "get", "b")).await;
    assert!(!other_ns.allowed);
    assert_eq!((other_ns.denied, other_ns.reason), (None, None));
    assert!(!ask(sar("alice", &[], "delete", "a")).await.allowed);
    let by_group = ask(sar("bob", &["viewers"], "get", "b")).await;
    assert!(by_group.allowed);
    assert!(by_group
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("ClusterRoleBinding") && r.contains("Group \"viewers\"")));

    let none: SubjectAccessReview = serde_json::from_value(json!({"apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview", "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}))
    .expect("sar");
    let (code, message) = api_code(reviews.create(&PostParams::default(), &none).await);
    assert_eq!(code, 422);
    assert_eq!(message, "SubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified");
    let neither: SubjectAccessReview =
        serde_json::from_value(json!({"apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview", "spec": {"user": "alice"}}))
        .expect("sar");
    let (code, message) = api_code(reviews.create(&PostParams::default(), &neither).await);
    assert_eq!(code, 422);
    assert!(message.contains("spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"), "{message}");
    assert_eq!(emu.auth().subject_access_reviews(), 6);

    // Both are in discovery, create-only.
    let discovery = Discovery::new(emu.client().await)
        .run()
        .await
        .expect("discovery");
    for (group, kind) in [
        ("authentication.k8s.io", "TokenReview"),
        ("authorization.k8s.io", "SubjectAccessReview"),
    ] {
        let g = discovery
            .get(group)
            .unwrap_or_else(|| panic!("{group} in discovery"));
        let (_, caps) = g
            .recommended_resources()
            .into_iter()
            .find(|(r, _)| r.kind == kind)
            .unwrap_or_else(|| panic!("{kind} in discovery"));
        assert_eq!(caps.operations, vec!["create".to_string()]);
    }
}

#[tokio::test]
async fn kubectl_creates_reviews_and_reads_the_status() {
    const KUBECTL: &str = "/usr/bin/kubectl";
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed; CI installs it and runs this test");
        return;
    }
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    emu.auth().add_token("tok-kubectl", "carol", &["devs"]);
    emu.auth()
        .grant(
            Grant::group("devs", &["get"], "lockstep.dev", &["pipelinegates"]).in_namespace("web"),
        )
        .expect("grant");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let run = |file: &str, yaml: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).expect("write yaml");
        let out = Command::new(KUBECTL)
            .args(["create", "-f"])
            .arg(&path)
            // kubectl validates kinds without a PATCH operation (the reviews) client-side with OpenAPI v2,
            // which the emulator does not serve (it serves v3, which kubectl uses for everything else).
            .args(["-o", "json", "--validate=false", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl create -f {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON output")
    };
    let tr = run(
        "tokenreview.yaml",
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: tok-kubectl\n",
    );
    assert_eq!(tr["status"]["authenticated"], true);
    assert_eq!(tr["status"]["user"]["username"], "carol");
    assert_eq!(
        tr["status"]["user"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    let sar = run(
        "sar.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: carol\n  groups: [devs]\n  resourceAttributes:\n    namespace: web\n    verb: get\n    group: lockstep.dev\n    resource: pipelinegates\n",
    );
    assert_eq!(sar["status"]["allowed"], true, "{sar}");
    assert_eq!(emu.auth().token_reviews(), 1);
    assert_eq!(emu.auth().subject_access_reviews(), 1);
}
