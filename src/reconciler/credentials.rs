//! The personal access token both reconcilers read from the Secret their object names, and the reverse
//! look-up a Secret watch needs: which objects reference a Secret that changed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};

use super::token_cache::TokenCache;
use super::Error;
use crate::crd::SecretKeyRef;
use crate::secret::SecretString;

/// Why no PAT came out of a Secret. Every variant but [`CredentialError::Api`] is the user's to fix and
/// becomes the object's `AuthenticationFailed` status; `Api` fails the reconcile (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("Secret {namespace}/{name} was not found: create it with the personal access token under key \"{key}\"")]
    SecretNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} has no key \"{key}\": put the personal access token under that key")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "key \"{key}\" of Secret {namespace}/{name} is empty: put the personal access token there"
    )]
    EmptyKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(transparent)]
    Api(#[from] Error),
}

/// The PAT under `secret_ref` in `namespace`.
///
/// The Secret comes from `tokens` while a read of it is fresh there, so objects sharing a Secret cost one
/// API read per TTL rather than one per reconcile.
pub async fn read_token(
    client: &kube::Client,
    tokens: &TokenCache,
    namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<SecretString, CredentialError> {
    let secret = match tokens.get(namespace, &secret_ref.name) {
        Some(cached) => cached,
        None => {
            let ticket = tokens.ticket();
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let read = secrets
                .get_opt(&secret_ref.name)
                .await
                .map_err(|source| Error::ReadSecret {
                    namespace: namespace.to_string(),
                    name: secret_ref.name.clone(),
                    source,
                })?
                .map(Arc::new);
            tokens.store(ticket, namespace, &secret_ref.name, read.clone());
            read
        }
    };
    let (namespace, name, key) = (
        namespace.to_string(),
        secret_ref.name.clone(),
        secret_ref.key.clone(),
    );
    let Some(secret) = secret else {
        return Err(CredentialError::SecretNotFound {
            namespace,
            name,
            key,
        });
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
    match value {
        Some(token) if !token.is_empty() => Ok(SecretString::new(token)),
        Some(_) => Err(CredentialError::EmptyKey {
            namespace,
            name,
            key,
        }),
        None => Err(CredentialError::MissingKey {
            namespace,
            name,
            key,
        }),
    }
}

/// Objects in `store` in the Secret's namespace whose `secret_ref` names it: a rotated PAT re-reconciles
/// exactly those.
pub fn objects_using_secret<K>(
    store: &Store<K>,
    secret: &Secret,
    secret_ref: impl Fn(&K) -> &SecretKeyRef,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (Some(ns), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns) && secret_ref(o).name == name)
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}
