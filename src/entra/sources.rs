//! From a credential source (a CRD field, or `lockstep check`'s environment) to an [`EntraIdentity`].
//! Problems are returned as messages for the user (they end up in a Stalled condition or on stderr):
//! which field or variable is missing and how to supply it.

use std::sync::Arc;

use super::{AzureEnv, CertificateCredential, EntraIdentity};
use crate::crd::{ManagedIdentitySource, ServicePrincipalSource, WorkloadIdentitySource};
use crate::secret::SecretString;

/// `workloadIdentity`: the spec's ids, else the pod's `AZURE_CLIENT_ID` / `AZURE_TENANT_ID`, and the
/// federated token file the webhook mounts.
pub fn workload_identity(
    spec: &WorkloadIdentitySource,
    env: &AzureEnv,
) -> Result<EntraIdentity, String> {
    let pick = |field: &Option<String>, default: &Option<String>| {
        field
            .as_deref()
            .or(default.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let client_id = pick(&spec.client_id, &env.client_id).ok_or(
        "workloadIdentity has no client id: set workloadIdentity.clientId, or enable the chart's workloadIdentity (the webhook then sets AZURE_CLIENT_ID from the service account's azure.workload.identity/client-id annotation)",
    )?;
    let tenant_id = pick(&spec.tenant_id, &env.tenant_id).ok_or(
        "workloadIdentity has no tenant id: set workloadIdentity.tenantId, or enable the chart's workloadIdentity (the webhook then sets AZURE_TENANT_ID)",
    )?;
    let token_file = env.federated_token_file.clone().ok_or(
        "lockstep has no federated token (AZURE_FEDERATED_TOKEN_FILE is not set): enable the chart's workloadIdentity so the pod carries the label azure.workload.identity/use: \"true\" and the webhook mounts the token",
    )?;
    Ok(EntraIdentity::WorkloadIdentity {
        tenant_id,
        client_id,
        token_file,
        authority: env.authority()?,
    })
}

/// `managedIdentity`.
pub fn managed_identity(spec: &ManagedIdentitySource) -> EntraIdentity {
    EntraIdentity::ManagedIdentity {
        client_id: spec
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }
}

/// What a `servicePrincipal`'s Secret key held.
pub enum ServicePrincipalMaterial {
    ClientSecret(SecretString),
    /// A PEM with the certificate and its private key.
    CertificatePem(SecretString),
}

/// `servicePrincipal`, once the referenced Secret key has been read. `secret_name` names the Secret in
/// messages (`namespace/name`).
pub fn service_principal(
    spec: &ServicePrincipalSource,
    material: ServicePrincipalMaterial,
    env: &AzureEnv,
    secret_name: &str,
) -> Result<EntraIdentity, String> {
    let tenant_id = spec.tenant_id.trim().to_string();
    let client_id = spec.client_id.trim().to_string();
    let authority = env.authority()?;
    match material {
        ServicePrincipalMaterial::ClientSecret(secret) => Ok(EntraIdentity::ClientSecret {
            tenant_id,
            client_id,
            secret,
            authority,
        }),
        ServicePrincipalMaterial::CertificatePem(pem) => {
            let certificate =
                CertificateCredential::from_pem(pem.expose().as_bytes()).map_err(|e| {
                    format!("the client certificate in Secret {secret_name} cannot be used: {e}")
                })?;
            Ok(EntraIdentity::ClientCertificate {
                tenant_id,
                client_id,
                certificate: Arc::new(certificate),
                authority,
            })
        }
    }
}

/// A credential `lockstep check` found in its environment.
#[derive(Debug)]
pub enum EnvCredential {
    /// Sent as Basic: `AZURE_DEVOPS_EXT_PAT` or `SYSTEM_ACCESSTOKEN`.
    Pat {
        variable: &'static str,
        token: SecretString,
    },
    /// An Entra access token someone already obtained (`az account get-access-token --resource
    /// 499b84ac-1321-427f-aa17-267ca6975798` in an AzureCLI task), sent as Bearer.
    AccessToken {
        variable: &'static str,
        token: SecretString,
    },
    /// An identity to request a token for.
    Identity(EntraIdentity),
}

/// Variables holding a token to use as is, in order of precedence.
pub const CHECK_TOKEN_VARIABLES: [&str; 3] = [
    "AZURE_DEVOPS_EXT_PAT",
    "AZURE_DEVOPS_ACCESS_TOKEN",
    "SYSTEM_ACCESSTOKEN",
];

/// `lockstep check`'s credential: a token variable if one is set, else an Entra identity described the
/// way the Azure SDKs' environment and workload identity credentials read it, else the service principal
/// an Azure Pipelines `AzureCLI` task exports with `addSpnToEnvironment: true` (`servicePrincipalId`,
/// `tenantId` and, for a workload identity federation service connection, `idToken`).
/// `Ok(None)`: nothing configured.
pub fn check_credential(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<EnvCredential>, String> {
    let get = |k: &str| {
        lookup(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    for variable in CHECK_TOKEN_VARIABLES {
        if let Some(token) = get(variable) {
            let token = SecretString::new(token);
            return Ok(Some(if variable == "AZURE_DEVOPS_ACCESS_TOKEN" {
                EnvCredential::AccessToken { variable, token }
            } else {
                EnvCredential::Pat { variable, token }
            }));
        }
    }
    let env = AzureEnv::from_lookup(&lookup);
    let ids = |what: &str| -> Result<(String, String), String> {
        match (env.tenant_id.clone(), env.client_id.clone()) {
            (Some(t), Some(c)) => Ok((t, c)),
            _ => Err(format!(
                "{what} is set but AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set: set them to the directory (tenant) and client (application) ids"
            )),
        }
    };
    if let Some(secret) = get("AZURE_CLIENT_SECRET") {
        let (tenant_id, client_id) = ids("AZURE_CLIENT_SECRET")?;
        return Ok(Some(EnvCredential::Identity(EntraIdentity::ClientSecret {
            tenant_id,
            client_id,
            secret: SecretString::new(secret),
            authority: env.authority()?,
        })));
    }
    if let Some(path) = get("AZURE_CLIENT_CERTIFICATE_PATH") {
        let (tenant_id, client_id) = ids("AZURE_CLIENT_CERTIFICATE_PATH")?;
        let pem = std::fs::read(&path)
            .map_err(|e| format!("AZURE_CLIENT_CERTIFICATE_PATH {path} cannot be read: {e}"))?;
        let certificate = CertificateCredential::from_pem(&pem)
            .map_err(|e| format!("AZURE_CLIENT_CERTIFICATE_PATH {path} cannot be used: {e}"))?;
        return Ok(Some(EnvCredential::Identity(
            EntraIdentity::ClientCertificate {
                tenant_id,
                client_id,
                certificate: Arc::new(certificate),
                authority: env.authority()?,
            },
        )));
    }
    if env.federated_token_file.is_some() {
        ids("AZURE_FEDERATED_TOKEN_FILE")?;
        return workload_identity(&WorkloadIdentitySource::default(), &env)
            .map(|i| Some(EnvCredential::Identity(i)));
    }
    if let (Some(id_token), Some(client_id), Some(tenant_id)) =
        (get("idToken"), get("servicePrincipalId"), get("tenantId"))
    {
        return Ok(Some(EnvCredential::Identity(
            EntraIdentity::ClientAssertion {
                tenant_id,
                client_id,
                assertion: SecretString::new(id_token),
                authority: env.authority()?,
            },
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn workload_identity_fields_override_the_webhook_environment() {
        let env = AzureEnv::from_lookup(lookup(&[
            ("AZURE_CLIENT_ID", "env-client"),
            ("AZURE_TENANT_ID", "env-tenant"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
        ]));
        let from_env = workload_identity(&WorkloadIdentitySource::default(), &env).unwrap();
        assert!(from_env.describe().contains("env-client"));
        let spec = WorkloadIdentitySource {
            client_id: Some("spec-client".into()),
            tenant_id: None,
        };
        let id = workload_identity(&spec, &env).unwrap();
        let EntraIdentity::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file,
            ..
        } = id
        else {
            panic!("{id:?}")
        };
        assert_eq!(
            (client_id.as_str(), tenant_id.as_str(), token_file.to_str()),
            ("spec-client", "env-tenant", Some("/t"))
        );
    }

    #[test]
    fn workload_identity_without_the_webhook_says_what_to_enable() {
        let err = workload_identity(&WorkloadIdentitySource::default(), &AzureEnv::default())
            .unwrap_err();
        assert!(err.contains("workloadIdentity.clientId"), "{err}");
        let env = AzureEnv::from_lookup(lookup(&[
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
        ]));
        let err = workload_identity(&WorkloadIdentitySource::default(), &env).unwrap_err();
        assert!(err.contains("azure.workload.identity/use"), "{err}");
    }

    #[test]
    fn service_principals_with_a_bad_certificate_name_the_secret() {
        let spec = ServicePrincipalSource {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret_ref: None,
            client_certificate_ref: None,
        };
        let err = service_principal(
            &spec,
            ServicePrincipalMaterial::CertificatePem(SecretString::new("nope")),
            &AzureEnv::default(),
            "ns/sp-cert",
        )
        .unwrap_err();
        assert!(
            err.contains("ns/sp-cert") && err.contains("no certificate"),
            "{err}"
        );
        let ok = service_principal(
            &spec,
            ServicePrincipalMaterial::CertificatePem(SecretString::new(
                crate::entra::assertion::tests::TEST_PEM,
            )),
            &AzureEnv::default(),
            "ns/sp-cert",
        )
        .unwrap();
        assert!(ok.describe().contains("certificate"));
    }

    #[test]
    fn check_prefers_tokens_then_identities() {
        let pat = check_credential(lookup(&[
            ("SYSTEM_ACCESSTOKEN", "x"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]))
        .unwrap();
        assert!(matches!(
            pat,
            Some(EnvCredential::Pat {
                variable: "SYSTEM_ACCESSTOKEN",
                ..
            })
        ));
        let bearer = check_credential(lookup(&[("AZURE_DEVOPS_ACCESS_TOKEN", "eyJ")])).unwrap();
        assert!(matches!(bearer, Some(EnvCredential::AccessToken { .. })));
        let sp = check_credential(lookup(&[
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
        ]))
        .unwrap();
        assert!(matches!(
            sp,
            Some(EnvCredential::Identity(EntraIdentity::ClientSecret { .. }))
        ));
        let wi = check_credential(lookup(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
        ]))
        .unwrap();
        assert!(matches!(
            wi,
            Some(EnvCredential::Identity(
                EntraIdentity::WorkloadIdentity { .. }
            ))
        ));
        let azcli = check_credential(lookup(&[
            ("idToken", "eyJ.oidc"),
            ("servicePrincipalId", "c"),
            ("tenantId", "t"),
        ]))
        .unwrap();
        assert!(matches!(
            azcli,
            Some(EnvCredential::Identity(
                EntraIdentity::ClientAssertion { .. }
            ))
        ));
        assert!(check_credential(lookup(&[])).unwrap().is_none());
        let half = check_credential(lookup(&[
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_CLIENT_ID", "c"),
        ]))
        .unwrap_err();
        assert!(half.contains("AZURE_TENANT_ID"), "{half}");
        assert!(!half.contains("\"s\""));
        let missing_cert = check_credential(lookup(&[
            ("AZURE_CLIENT_CERTIFICATE_PATH", "/nonexistent.pem"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
        ]))
        .unwrap_err();
        assert!(missing_cert.contains("/nonexistent.pem"), "{missing_cert}");
    }
}
