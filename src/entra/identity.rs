//! Who a token is for: the identities, their cache keys and names, and the workload identity environment.

use std::path::PathBuf;
use std::sync::Arc;

use url::Url;

use super::assertion::{sha256_hex, CertificateCredential};
use crate::secret::SecretString;

/// Azure DevOps' resource id: tokens are requested for `<it>/.default`.
pub const AZURE_DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
/// The OAuth scope of an Azure DevOps token.
pub const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";
/// The public cloud's authority host; `AZURE_AUTHORITY_HOST` overrides it (sovereign clouds, tests).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// One identity lockstep can get an Azure DevOps token for. The same identity (same tenant, client and
/// secret material) yields the same [`IdentityKey`], so every object using it shares one token.
#[derive(Clone, Debug)]
pub enum EntraIdentity {
    /// The projected service-account token in `token_file`, exchanged as a client assertion.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
        authority: Url,
    },
    /// An application's client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretString,
        authority: Url,
    },
    /// An application's certificate, proven by a signed assertion.
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        certificate: Arc<CertificateCredential>,
        authority: Url,
    },
    /// A federated token handed over directly (the `idToken` an Azure Pipelines `AzureCLI` task exports
    /// for a workload identity federation service connection), exchanged as a client assertion.
    ClientAssertion {
        tenant_id: String,
        client_id: String,
        assertion: SecretString,
        authority: Url,
    },
    /// The managed identity of the node (system-assigned) or a user-assigned one by client id.
    ManagedIdentity { client_id: Option<String> },
}

/// Identifies an identity in the token cache. It holds no secret: secret material enters only as a
/// SHA-256 digest, so a rotated client secret or certificate is a new key (and a new token).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey(String);

impl EntraIdentity {
    pub fn key(&self) -> IdentityKey {
        IdentityKey(match self {
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
                authority,
            } => format!(
                "wi|{authority}|{tenant_id}|{client_id}|{}",
                token_file.display()
            ),
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority,
            } => format!(
                "secret|{authority}|{tenant_id}|{client_id}|{}",
                sha256_hex(secret.expose().as_bytes())
            ),
            Self::ClientCertificate {
                tenant_id,
                client_id,
                certificate,
                authority,
            } => format!(
                "cert|{authority}|{tenant_id}|{client_id}|{}",
                certificate.fingerprint()
            ),
            Self::ClientAssertion {
                tenant_id,
                client_id,
                assertion,
                authority,
            } => format!(
                "assertion|{authority}|{tenant_id}|{client_id}|{}",
                sha256_hex(assertion.expose().as_bytes())
            ),
            Self::ManagedIdentity { client_id } => {
                format!("mi|{}", client_id.as_deref().unwrap_or(""))
            }
        })
    }

    /// How the identity is named in messages: the kind and the client and tenant ids, nothing secret.
    pub fn describe(&self) -> String {
        match self {
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                ..
            } => format!("workload identity (client id {client_id}, tenant {tenant_id})"),
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => format!(
                "service principal (client id {client_id}, tenant {tenant_id}, client secret)"
            ),
            Self::ClientCertificate {
                tenant_id,
                client_id,
                ..
            } => format!(
                "service principal (client id {client_id}, tenant {tenant_id}, certificate)"
            ),
            Self::ClientAssertion {
                tenant_id,
                client_id,
                ..
            } => format!(
                "service principal (client id {client_id}, tenant {tenant_id}, federated token)"
            ),
            Self::ManagedIdentity {
                client_id: Some(id),
            } => format!("managed identity (client id {id})"),
            Self::ManagedIdentity { client_id: None } => {
                "system-assigned managed identity".to_string()
            }
        }
    }

    /// The secret a message about this identity must never contain (see [`EntraError`]).
    pub(crate) fn secret(&self) -> Option<&str> {
        match self {
            Self::ClientSecret { secret, .. } => Some(secret.expose()),
            Self::ClientAssertion { assertion, .. } => Some(assertion.expose()),
            _ => None,
        }
    }
}

/// The defaults the Azure Workload Identity webhook injects into a labelled pod (and the Azure SDKs read),
/// plus the client secret / certificate variables the SDKs' environment credential reads. Read once at
/// start-up; the CRD's fields override them per object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AzureEnv {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub authority_host: Option<String>,
}

impl AzureEnv {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            client_id: get("AZURE_CLIENT_ID"),
            tenant_id: get("AZURE_TENANT_ID"),
            federated_token_file: get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            authority_host: get("AZURE_AUTHORITY_HOST"),
        }
    }

    /// The authority host as a URL with a trailing slash; plain `http` only for loopback addresses (a
    /// local test endpoint), since client secrets and assertions are posted to it.
    pub fn authority(&self) -> Result<Url, String> {
        parse_authority(
            self.authority_host
                .as_deref()
                .unwrap_or(DEFAULT_AUTHORITY_HOST),
        )
    }
}

/// See [`AzureEnv::authority`].
pub fn parse_authority(raw: &str) -> Result<Url, String> {
    let with_slash = if raw.ends_with('/') {
        raw.to_string()
    } else {
        format!("{raw}/")
    };
    let url = Url::parse(&with_slash).map_err(|_| {
        format!("authority host \"{raw}\" is not a URL such as https://login.microsoftonline.com")
    })?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "authority host \"{raw}\" must be an https URL such as https://login.microsoftonline.com"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_identity(secret: &str) -> EntraIdentity {
        EntraIdentity::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: SecretString::new(secret),
            authority: parse_authority(DEFAULT_AUTHORITY_HOST).unwrap(),
        }
    }

    #[test]
    fn keys_hold_no_secret_and_change_with_it() {
        let a = secret_identity("s3cret-value");
        let key = a.key();
        assert!(!format!("{key:?}").contains("s3cret"));
        assert_eq!(key, secret_identity("s3cret-value").key());
        assert_ne!(key, secret_identity("rotated").key());
        assert!(!a.describe().contains("s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn managed_identities_differ_by_client_id() {
        let system = EntraIdentity::ManagedIdentity { client_id: None };
        let user = EntraIdentity::ManagedIdentity {
            client_id: Some("u".into()),
        };
        assert_ne!(system.key(), user.key());
        assert_eq!(system.describe(), "system-assigned managed identity");
        assert!(user.describe().contains("client id u"));
    }

    #[test]
    fn the_workload_identity_environment_is_read_and_blank_is_unset() {
        let env = AzureEnv::from_lookup(|k| match k {
            "AZURE_CLIENT_ID" => Some("cid".into()),
            "AZURE_TENANT_ID" => Some(" ".into()),
            "AZURE_FEDERATED_TOKEN_FILE" => {
                Some("/var/run/secrets/azure/tokens/azure-identity-token".into())
            }
            "AZURE_AUTHORITY_HOST" => Some("https://login.microsoftonline.us".into()),
            _ => None,
        });
        assert_eq!(env.client_id.as_deref(), Some("cid"));
        assert_eq!(env.tenant_id, None);
        assert_eq!(
            env.authority().unwrap().as_str(),
            "https://login.microsoftonline.us/"
        );
        assert_eq!(
            AzureEnv::default().authority().unwrap().as_str(),
            DEFAULT_AUTHORITY_HOST
        );
    }

    #[test]
    fn plain_http_authorities_only_on_loopback() {
        assert!(parse_authority("http://127.0.0.1:8080").is_ok());
        assert!(parse_authority("http://localhost:1/").is_ok());
        assert!(parse_authority("http://[::1]:1/").is_ok());
        let err = parse_authority("http://login.example").unwrap_err();
        assert!(err.contains("must be an https URL"), "{err}");
        assert!(parse_authority("not a url").is_err());
    }
}
