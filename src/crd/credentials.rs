//! The Microsoft Entra ID credential sources of `spec.azureDevOps.credentials`, beside `secretRef`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the same namespace as the referencing object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Workload identity: the pod's projected service-account token is exchanged for an Entra token of the
/// application or user-assigned managed identity federated with lockstep's service account. Needs the
/// chart's `workloadIdentity.enabled` (pod label `azure.workload.identity/use: "true"`, service-account
/// annotation `azure.workload.identity/client-id`). Azure DevOps Services only: Azure DevOps Server
/// (on-premises) does not accept Entra tokens.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySource {
    /// Client (application) id of the identity. Default: `AZURE_CLIENT_ID` of the lockstep pod, which the
    /// workload identity webhook sets from the service account's annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
    /// Directory (tenant) id. Default: `AZURE_TENANT_ID` of the lockstep pod, set by the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tenant_id: Option<String>,
}

/// An Entra application (service principal) with a client secret or a certificate, each in a Secret in
/// the object's namespace. Azure DevOps Services only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.clientSecretRef) ? 1 : 0) + (has(self.clientCertificateRef) ? 1 : 0) == 1",
    "message": "servicePrincipal needs exactly one of clientSecretRef (a client secret) or clientCertificateRef (a PEM with certificate and private key)"
}]))]
pub struct ServicePrincipalSource {
    /// Directory (tenant) id.
    #[schemars(length(min = 1))]
    pub tenant_id: String,
    /// Client (application) id.
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// Key of a Secret holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Key of a Secret holding a PEM with the certificate and its RSA private key (unencrypted), the
    /// format `az ad sp create-for-rbac --create-cert` writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<SecretKeyRef>,
}

/// The managed identity of the node lockstep runs on, through the instance metadata endpoint (IMDS).
/// Azure DevOps Services only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentitySource {
    /// Client id of a user-assigned managed identity; empty for the system-assigned one (on AKS the
    /// kubelet identity is user-assigned: give its client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
}

/// Credential sources; exactly one must be set (checked at `kubectl apply`). The Entra sources
/// (`workloadIdentity`, `servicePrincipal`, `managedIdentity`) work with Azure DevOps Services only:
/// Azure DevOps Server (on-premises) does not accept Microsoft Entra tokens, use `secretRef` there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.secretRef) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + (has(self.servicePrincipal) ? 1 : 0) + (has(self.managedIdentity) ? 1 : 0) == 1",
    "message": "set exactly one of secretRef (personal access token), workloadIdentity, servicePrincipal, managedIdentity"
}]))]
pub struct Credentials {
    /// A personal access token (scopes: Build read, Code read) in a Secret in the object's namespace,
    /// sent as HTTP Basic. The only source Azure DevOps Server accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Microsoft Entra workload identity (AKS): no secret anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<Box<WorkloadIdentitySource>>,
    /// A Microsoft Entra application with a client secret or certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal: Option<Box<ServicePrincipalSource>>,
    /// The node's Azure managed identity (IMDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_identity: Option<Box<ManagedIdentitySource>>,
}
// The three Entra sources are boxed: every cached object carries this struct, most of them with a
// `secretRef` only, and inline the unused sources were half of a PipelineGate's spec. (A `//` comment: a
// doc comment here would end up in the CRD.)

/// The one source a valid [`Credentials`] holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CredentialSource<'a> {
    PersonalAccessToken(&'a SecretKeyRef),
    WorkloadIdentity(&'a WorkloadIdentitySource),
    ServicePrincipal(&'a ServicePrincipalSource),
    ManagedIdentity(&'a ManagedIdentitySource),
}

impl Credentials {
    /// A PAT source, the form every example and test uses.
    pub fn pat(name: &str, key: &str) -> Self {
        Self {
            secret_ref: Some(SecretKeyRef {
                name: name.to_string(),
                key: key.to_string(),
            }),
            ..Self::default()
        }
    }

    /// The source, or why there is not exactly one (the CEL rule makes this rare: an object stored
    /// before the rule existed, or an API server without CEL).
    pub fn source(&self) -> Result<CredentialSource<'_>, String> {
        let mut found = Vec::new();
        if let Some(r) = &self.secret_ref {
            found.push(CredentialSource::PersonalAccessToken(r));
        }
        if let Some(w) = &self.workload_identity {
            found.push(CredentialSource::WorkloadIdentity(w.as_ref()));
        }
        if let Some(s) = &self.service_principal {
            found.push(CredentialSource::ServicePrincipal(s.as_ref()));
        }
        if let Some(m) = &self.managed_identity {
            found.push(CredentialSource::ManagedIdentity(m.as_ref()));
        }
        match found.as_slice() {
            [one] => Ok(*one),
            _ => Err("spec.azureDevOps.credentials must set exactly one of secretRef (personal access token), workloadIdentity, servicePrincipal, managedIdentity".to_string()),
        }
    }

    /// Names of the Secrets (in the object's namespace) this source reads: a change to one of them
    /// re-reconciles the object.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        if let Some(r) = &self.secret_ref {
            names.push(r.name.as_str());
        }
        if let Some(sp) = &self.service_principal {
            for r in [&sp.client_secret_ref, &sp.client_certificate_ref]
                .into_iter()
                .flatten()
            {
                names.push(r.name.as_str());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_source() {
        let pat = Credentials::pat("p", "t");
        assert!(matches!(
            pat.source(),
            Ok(CredentialSource::PersonalAccessToken(_))
        ));
        assert_eq!(pat.secret_names(), ["p"]);
        let none = Credentials::default();
        assert!(none.source().unwrap_err().contains("exactly one"));
        let two = Credentials {
            managed_identity: Some(Box::default()),
            ..Credentials::pat("p", "t")
        };
        assert!(two.source().is_err());
        let sp: Credentials = serde_json::from_value(serde_json::json!({
            "servicePrincipal": {"tenantId": "t", "clientId": "c",
                                 "clientCertificateRef": {"name": "sp", "key": "cert.pem"}}
        }))
        .unwrap();
        assert!(matches!(
            sp.source(),
            Ok(CredentialSource::ServicePrincipal(_))
        ));
        assert_eq!(sp.secret_names(), ["sp"]);
        let mi: Credentials =
            serde_json::from_value(serde_json::json!({"managedIdentity": {}})).unwrap();
        assert!(
            matches!(mi.source(), Ok(CredentialSource::ManagedIdentity(m)) if m.client_id.is_none())
        );
        assert!(mi.secret_names().is_empty());
        // Serialized back without the unset sources.
        assert_eq!(
            serde_json::to_value(&mi).unwrap(),
            serde_json::json!({"managedIdentity": {}})
        );
    }
}
