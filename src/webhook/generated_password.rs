//! `--webhook-password-secret NAME`: the chart renders the Secret NAME without a password (every render is
//! identical, so GitOps tools see no drift), and lockstep fills one in on its first start.
//!
//! At start: read the Secret in lockstep's own namespace; a non-empty `password` key is used as it is.
//! Otherwise generate one (32 random bytes from the OS RNG, 43 URL-safe base64 characters) and add it with
//! a merge patch that carries the Secret's `resourceVersion`: the API server refuses it with 409 when
//! another replica wrote first, and the loser re-reads and uses the winner's password, so every replica
//! ends up with the same one. Later rotations arrive through the mounted file
//! ([`super::auth::WebhookAuth::reload`]).
//!
//! The password never leaves this module except as a [`SecretString`]: it is not logged, and error texts
//! (which may quote the API server) are scrubbed of it.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::secret::SecretString;

/// The key the chart mounts as the password file.
pub const PASSWORD_KEY: &str = "password";
/// Field manager of the patch that adds the password.
const FIELD_MANAGER: &str = "lockstep-webhook-password";
/// Read-then-patch rounds before giving up; each lost round means another replica wrote, so the next read
/// normally finds its password.
const MAX_ATTEMPTS: usize = 5;
/// Random bytes in a generated password (256 bits).
const PASSWORD_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum PasswordSecretError {
    #[error("the webhook Secret {namespace}/{name} does not exist: the Helm chart creates it; create it (kubectl -n {namespace} create secret generic {name}) or drop --webhook-password-secret")]
    Missing { namespace: String, name: String },
    #[error("could not read or update the webhook Secret {namespace}/{name}: {reason}; check that lockstep may get and patch it (the chart's Role <release>-webhook-auth)")]
    Api {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("the webhook Secret {namespace}/{name} kept changing while lockstep added a password ({attempts} attempts); it retries on its next start")]
    Contended {
        namespace: String,
        name: String,
        attempts: usize,
    },
    #[error("the operating system's random number generator failed ({0}); lockstep cannot generate a webhook password")]
    Random(String),
}

/// The webhook password in Secret `namespace/name`, generated and stored when missing.
pub async fn ensure_password(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<SecretString, PasswordSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_error = |e: kube::Error, scrub: Option<&SecretString>| PasswordSecretError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason: scrubbed(&e.to_string(), scrub),
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let secret = match api.get_opt(name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err(PasswordSecretError::Missing {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(api_error(e, None)),
        };
        if let Some(existing) = stored_password(&secret) {
            if attempt > 1 {
                tracing::info!(
                    secret = name,
                    namespace,
                    "another replica generated the webhook password first; using it"
                );
            }
            return Ok(existing);
        }
        let password = generate()?;
        let resource_version = secret.metadata.resource_version.clone().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(password.expose());
        // The resourceVersion makes the patch conditional: a concurrent writer turns it into a 409.
        let patch = json!({
            "metadata": {"resourceVersion": resource_version},
            "data": {PASSWORD_KEY: encoded},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(
                    secret = name,
                    namespace,
                    "generated the webhook password and stored it in the Secret"
                );
                return Ok(password);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(
                    secret = name,
                    namespace,
                    attempt,
                    "the webhook Secret changed meanwhile; reading it again"
                );
            }
            Err(e) => return Err(api_error(e, Some(&password))),
        }
    }
    Err(PasswordSecretError::Contended {
        namespace: namespace.to_string(),
        name: name.to_string(),
        attempts: MAX_ATTEMPTS,
    })
}

/// The non-empty `password` key, trimmed like the mounted file is.
fn stored_password(secret: &Secret) -> Option<SecretString> {
    let bytes = secret.data.as_ref()?.get(PASSWORD_KEY)?;
    let text = String::from_utf8_lossy(&bytes.0);
    let password = SecretString::new(text.trim());
    (!password.is_empty()).then_some(password)
}

fn generate() -> Result<SecretString, PasswordSecretError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| PasswordSecretError::Random(e.to_string()))?;
    Ok(SecretString::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// Removes the password (plain and base64) from text that came from the API server.
fn scrubbed(text: &str, password: Option<&SecretString>) -> String {
    let Some(password) = password else {
        return text.to_string();
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(password.expose());
    text.replace(password.expose(), "<redacted>")
        .replace(&encoded, "<redacted>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::PostParams;
    use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};

    async fn cluster(with_password: Option<&str>) -> (KubeEmulator, kube::Client) {
        let emu = KubeEmulator::start(EmulatorConfig::default())
            .await
            .unwrap();
        let client = emu.client().await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "ops"}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let mut data = json!({"username": base64::engine::general_purpose::STANDARD.encode("ado")});
        if let Some(p) = with_password {
            data[PASSWORD_KEY] = json!(base64::engine::general_purpose::STANDARD.encode(p));
        }
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "hook-auth", "namespace": "ops"}, "data": data
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), "ops")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        (emu, client)
    }

    async fn stored(client: &kube::Client) -> Option<String> {
        let secret = Api::<Secret>::namespaced(client.clone(), "ops")
            .get("hook-auth")
            .await
            .unwrap();
        stored_password(&secret).map(|p| p.expose().to_string())
    }

    #[tokio::test]
    async fn a_missing_password_is_generated_stored_and_kept() {
        let (_emu, client) = cluster(None).await;
        let first = ensure_password(&client, "ops", "hook-auth").await.unwrap();
        assert!(first.expose().len() >= 32, "{} chars", first.expose().len());
        assert_eq!(stored(&client).await.as_deref(), Some(first.expose()));
        // The other keys stay; a second start reuses the password.
        let secret = Api::<Secret>::namespaced(client.clone(), "ops")
            .get("hook-auth")
            .await
            .unwrap();
        assert!(secret.data.unwrap().contains_key("username"));
        let again = ensure_password(&client, "ops", "hook-auth").await.unwrap();
        assert_eq!(again, first);
        assert_ne!(generate().unwrap(), generate().unwrap());
    }

    #[tokio::test]
    async fn an_existing_password_is_used_without_writing() {
        let (emu, client) = cluster(Some("chosen-by-a-human\n")).await;
        emu.clear_requests();
        let got = ensure_password(&client, "ops", "hook-auth").await.unwrap();
        assert_eq!(got.expose(), "chosen-by-a-human");
        assert!(emu.requests().iter().all(|r| r.method == "GET"));
    }

    /// Replicas starting together: every one ends up with the one stored password.
    #[tokio::test]
    async fn racing_replicas_agree_on_one_password() {
        let (_emu, client) = cluster(None).await;
        let results =
            futures::future::join_all((0..4).map(|_| ensure_password(&client, "ops", "hook-auth")))
                .await;
        let stored = stored(&client).await.unwrap();
        for r in results {
            assert_eq!(r.unwrap().expose(), stored);
        }
    }

    /// A 409 on the guarded patch (another writer) makes lockstep read the Secret again before writing.
    #[tokio::test]
    async fn a_conflict_rereads_before_writing_again() {
        let (emu, client) = cluster(None).await;
        emu.clear_requests();
        emu.faults()
            .fail_next_matching(1, 409, Some("PATCH"), Some("hook-auth"));
        let got = ensure_password(&client, "ops", "hook-auth").await.unwrap();
        assert_eq!(Some(got.expose().to_string()), stored(&client).await);
        let methods: Vec<String> = emu
            .requests()
            .iter()
            .filter(|r| r.path.contains("hook-auth"))
            .map(|r| format!("{} {}", r.method, r.status))
            .collect();
        assert_eq!(
            methods,
            ["GET 200", "PATCH 409", "GET 200", "PATCH 200", "GET 200"]
        );
    }

    #[tokio::test]
    async fn a_missing_secret_says_what_to_do() {
        let (_emu, client) = cluster(None).await;
        let err = ensure_password(&client, "ops", "nope").await.unwrap_err();
        assert!(
            err.to_string().contains("create secret generic nope"),
            "{err}"
        );
    }

    #[test]
    fn errors_never_carry_the_password() {
        let p = SecretString::new("p4ss-w0rd");
        let encoded = base64::engine::general_purpose::STANDARD.encode("p4ss-w0rd");
        let text = format!("echo p4ss-w0rd and {encoded}");
        let clean = scrubbed(&text, Some(&p));
        assert!(
            !clean.contains("p4ss") && !clean.contains(&encoded),
            "{clean}"
        );
    }
}
