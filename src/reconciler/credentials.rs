//! The credential both reconcilers resolve from an object's `spec.azureDevOps.credentials`: a personal
//! access token read from a Secret, or a Microsoft Entra token from the process-wide cache (one per
//! identity, see [`crate::entra::EntraTokens`]); and the reverse look-up a Secret watch needs: which
//! objects reference a Secret that changed.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};

use super::io::ReconcileIo;
use super::token_cache::TokenCache;
use super::Error;
use crate::ado::{AdoAuth, AdoError};
use crate::crd::{CredentialSource, Credentials, SecretKeyRef};
use crate::entra::sources::{self, ServicePrincipalMaterial};
use crate::entra::{EntraContext, EntraError, EntraIdentity};
use crate::secret::SecretString;

/// Why no credential could be had. [`CredentialError::Api`] fails the reconcile (retried with backoff);
/// a transient Entra error ([`CredentialError::is_transient`]) leaves the last verdict standing; the rest
/// is the user's to fix and becomes the object's `AuthenticationFailed` status.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `what`: the personal access token, the client secret, the PEM certificate and key.
    #[error("Secret {namespace}/{name} was not found: create it with {what} under key \"{key}\"")]
    SecretNotFound {
        namespace: String,
        name: String,
        key: String,
        what: &'static str,
    },
    #[error("Secret {namespace}/{name} has no key \"{key}\": put {what} under that key")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
        what: &'static str,
    },
    #[error("key \"{key}\" of Secret {namespace}/{name} is empty: put {what} there")]
    EmptyKey {
        namespace: String,
        name: String,
        key: String,
        what: &'static str,
    },
    /// The source is incomplete (no client id, no federated token, an unusable certificate).
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Entra(EntraError),
    #[error(transparent)]
    Api(#[from] Error),
}

impl CredentialError {
    /// A token endpoint that is unavailable: retrying will help, the last verdict stands.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Entra(e) if e.is_transient())
    }
}

const PAT: &str = "the personal access token";
const CLIENT_SECRET: &str = "the client secret";
const CLIENT_CERTIFICATE: &str = "the PEM certificate and private key";

/// The credential `credentials` name, for an object in `namespace`: the PAT from its Secret, or a Bearer
/// token for its Entra identity (shared with every other object on that identity).
pub async fn resolve(
    io: &ReconcileIo,
    namespace: &str,
    credentials: &Credentials,
) -> Result<AdoAuth, CredentialError> {
    resolve_with(&io.client, &io.tokens, &io.entra, namespace, credentials).await
}

/// [`resolve`] for callers outside a reconciler (the hook-health check, the hook set-up), which hold the
/// same three parts without a [`ReconcileIo`].
pub async fn resolve_with(
    client: &kube::Client,
    tokens: &TokenCache,
    entra: &EntraContext,
    namespace: &str,
    credentials: &Credentials,
) -> Result<AdoAuth, CredentialError> {
    let source = credentials.source().map_err(CredentialError::Source)?;
    let identity = match source {
        CredentialSource::PersonalAccessToken(secret_ref) => {
            let token = read_key(client, tokens, namespace, secret_ref, PAT).await?;
            return Ok(AdoAuth::Pat(token));
        }
        CredentialSource::WorkloadIdentity(spec) => {
            sources::workload_identity(spec, &entra.env).map_err(CredentialError::Source)?
        }
        CredentialSource::ManagedIdentity(spec) => sources::managed_identity(spec),
        CredentialSource::ServicePrincipal(spec) => {
            let (secret_ref, what, certificate) = match (
                &spec.client_secret_ref,
                &spec.client_certificate_ref,
            ) {
                (Some(r), None) => (r, CLIENT_SECRET, false),
                (None, Some(r)) => (r, CLIENT_CERTIFICATE, true),
                _ => return Err(CredentialError::Source(
                    "servicePrincipal needs exactly one of clientSecretRef or clientCertificateRef"
                        .to_string(),
                )),
            };
            let value = read_key(client, tokens, namespace, secret_ref, what).await?;
            let material = if certificate {
                ServicePrincipalMaterial::CertificatePem(value)
            } else {
                ServicePrincipalMaterial::ClientSecret(value)
            };
            sources::service_principal(
                spec,
                material,
                &entra.env,
                &format!("{namespace}/{}", secret_ref.name),
            )
            .map_err(CredentialError::Source)?
        }
    };
    entra_token(entra, identity).await
}

/// A cached Entra token refused after at least this long in use is replaced and the refusal treated as
/// transient (revoked early, or the identity's access changed meanwhile); refused sooner, the identity
/// itself is refused and the refusal stands.
pub const REFUSED_TOKEN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// For an Azure DevOps refusal of a cached Entra token that had been working: drop the token and return
/// the transient error to report instead (the next read uses a fresh token). `None`: the error stands.
pub async fn replace_refused_token(
    io: &ReconcileIo,
    auth: &AdoAuth,
    err: &AdoError,
) -> Option<AdoError> {
    if !matches!(err, AdoError::EntraTokenRejected { .. }) {
        return None;
    }
    io.entra
        .tokens
        .forget_refused(auth.secret(), REFUSED_TOKEN_MIN_AGE)
        .await
        .then(|| AdoError::Unavailable {
            status: None,
            detail: "Azure DevOps refused the cached Microsoft Entra token before its expiry; a new one is requested".to_string(),
        })
}

async fn entra_token(
    entra: &EntraContext,
    identity: EntraIdentity,
) -> Result<AdoAuth, CredentialError> {
    let token = entra
        .tokens
        .token(&identity)
        .await
        .map_err(CredentialError::Entra)?;
    Ok(AdoAuth::Bearer {
        token,
        identity: identity.describe(),
    })
}

/// The value under `secret_ref` in `namespace` (`what` names it in messages).
///
/// The Secret comes from `tokens` while a read of it is fresh there, so objects sharing a Secret cost one
/// API read per TTL rather than one per reconcile.
pub async fn read_key(
    client: &kube::Client,
    tokens: &TokenCache,
    namespace: &str,
    secret_ref: &SecretKeyRef,
    what: &'static str,
) -> Result<SecretString, CredentialError> {
    let value =
        match tokens.get(namespace, &secret_ref.name, &secret_ref.key) {
            Some(cached) => cached,
            None => {
                let ticket = tokens.ticket();
                let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let secret = secrets.get_opt(&secret_ref.name).await.map_err(|source| {
                    Error::ReadSecret {
                        namespace: namespace.to_string(),
                        name: secret_ref.name.clone(),
                        source,
                    }
                })?;
                // Keep only the credential; the rest of the Secret is dropped here.
                let value = secret.map(|s| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(&secret_ref.key))
                        .map(|b| SecretString::new(String::from_utf8_lossy(&b.0).trim()))
                });
                tokens.store(
                    ticket,
                    namespace,
                    &secret_ref.name,
                    &secret_ref.key,
                    value.clone(),
                );
                value
            }
        };
    let (namespace, name, key) = (
        namespace.to_string(),
        secret_ref.name.clone(),
        secret_ref.key.clone(),
    );
    let Some(value) = value else {
        return Err(CredentialError::SecretNotFound {
            namespace,
            name,
            key,
            what,
        });
    };
    match value {
        Some(token) if !token.is_empty() => Ok(token),
        Some(_) => Err(CredentialError::EmptyKey {
            namespace,
            name,
            key,
            what,
        }),
        None => Err(CredentialError::MissingKey {
            namespace,
            name,
            key,
            what,
        }),
    }
}

/// Objects in `store` in the Secret's namespace whose credentials read it: a rotated PAT or client
/// secret re-reconciles exactly those.
pub fn objects_using_secret<K>(
    store: &Store<K>,
    secret: &ObjectMeta,
    credentials: impl Fn(&K) -> &Credentials,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (Some(ns), Some(name)) = (secret.namespace.as_deref(), secret.name.as_deref()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(ns)
                && credentials(o).secret_names().contains(&name)
        })
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}
