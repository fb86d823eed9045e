//! Errors that fail a reconcile (the Kubernetes side). Azure DevOps errors never do: they become status.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read Secret {namespace}/{name}: {source}; check that lockstep may get Secrets in that namespace")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("could not write the status of {kind} {namespace}/{name}: {source}; lockstep retries with backoff")]
    WriteStatus {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("could not read {target}: {source}; lockstep retries with backoff")]
    ReadDeployed {
        target: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{kind} {name} has no namespace; it is a namespaced resource, so this is an API server bug"
    )]
    MissingNamespace { kind: &'static str, name: String },
}

impl Error {
    /// A stable, low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadSecret { .. } => "read_secret",
            Self::WriteStatus { .. } => "write_status",
            Self::MissingNamespace { .. } => "missing_namespace",
            Self::ReadDeployed { .. } => "read_deployed",
        }
    }
}
