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

/// The PAT under `secret_ref` in `namespace`, or a message that says which Secret or key is wrong and
/// how to fix it. Only a failed API request is an `Error`: a missing or empty token is the user's to fix.
///
/// The Secret comes from `tokens` while a read of it is fresh there, so objects sharing a Secret cost one
/// API read per TTL rather than one per reconcile.
pub async fn read_token(
    client: &kube::Client,
    tokens: &TokenCache,
    namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<Result<SecretString, String>, Error> {
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
    let Some(secret) = secret else {
        return Ok(Err(format!(
            "Secret {namespace}/{} was not found: create it with the personal access token under key \"{}\"",
            secret_ref.name, secret_ref.key
        )));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
    Ok(match value {
        Some(token) if !token.is_empty() => Ok(SecretString::new(token)),
        Some(_) => Err(format!(
            "key \"{}\" of Secret {namespace}/{} is empty: put the personal access token there",
            secret_ref.key, secret_ref.name
        )),
        None => Err(format!(
            "Secret {namespace}/{} has no key \"{}\": put the personal access token under that key",
            secret_ref.name, secret_ref.key
        )),
    })
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
