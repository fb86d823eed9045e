//! Microsoft Entra ID tokens for Azure DevOps: the three credential sources (workload identity, service
//! principal with a secret or a certificate, managed identity), the token requests, and a cache that
//! holds one token per identity for every object that uses it.
//!
//! Why not `azure_identity`: it fits the TLS stack (reqwest 0.13, no ring), but its certificate credential
//! needs OpenSSL (a second crypto stack), it refuses `http` authority hosts and hard-codes the IMDS
//! address (so the test kit's local endpoints would need TLS plumbing through its own transport), and its
//! errors carry Entra's `AADSTS` answer only as text. The protocol lockstep needs is three form posts and
//! one GET; it is implemented here against the Microsoft identity platform documentation:
//! - client credentials with a secret or a client assertion:
//!   <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>
//! - certificate assertions (`x5t#S256`, RS256):
//!   <https://learn.microsoft.com/entra/identity-platform/certificate-credentials>
//! - workload identity federation (the projected service-account token as the assertion):
//!   <https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html>
//! - IMDS: <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>

mod assertion;
mod cache;
mod client;
mod context;
mod error;
mod identity;
pub mod sources;

pub use assertion::{CertificateCredential, CertificateError};
pub use cache::{EntraTokens, TokenCacheStats};
pub use client::{EntraClient, EntraClientConfig, DEFAULT_IMDS_ENDPOINT};
pub use context::EntraContext;
pub use error::EntraError;
pub use identity::{
    parse_authority, AzureEnv, EntraIdentity, IdentityKey, AZURE_DEVOPS_RESOURCE,
    AZURE_DEVOPS_SCOPE, DEFAULT_AUTHORITY_HOST,
};
