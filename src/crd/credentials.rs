//! The Microsoft Entra ID credential sources of `spec.azureDevOps.credentials`, beside `secretRef`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

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

/// The CEL rule on `credentials`: exactly one source. Kept here so the struct and the docs agree.
pub const EXACTLY_ONE_SOURCE_RULE: &str = "(has(self.secretRef) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + (has(self.servicePrincipal) ? 1 : 0) + (has(self.managedIdentity) ? 1 : 0) == 1";
