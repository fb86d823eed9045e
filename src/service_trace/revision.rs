//! What the cluster says it runs, parsed from the three places a ServiceTrace can read it:
//!
//! - a Flux Kustomization's `status.lastAppliedRevision`. Flux 2.x writes `<ref>@<algo>:<hash>`
//!   (`main@sha1:<sha>`, `refs/heads/main@sha1:<sha>`, or `sha1:<sha>` when the source has no named ref);
//!   Flux before 2.0 wrote `<branch>/<sha>`; some tools write a bare sha.
//! - an Argo CD Application's `status.sync.revision`: a bare commit sha for Git sources.
//! - a workload's container image: `registry/app:20261122.4` carries the CI `buildNumber` as its tag.
//!
//! Commit hashes are normalised to lower case so that comparisons with Azure DevOps object ids (always
//! lower-case hex) are plain string comparisons.

use std::fmt;

/// A deployed Git revision: the commit, and the ref the GitOps agent named with it, when it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRevision {
    /// `main`, `refs/heads/main`, `v1.2.0`... exactly as the agent wrote it.
    pub reference: Option<String>,
    /// Lower-case hex commit id (40 characters for SHA-1 repositories, 64 for SHA-256 ones).
    pub commit: String,
}

impl fmt::Display for GitRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.commit)
    }
}

/// What the cluster runs, in the form its source reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployedRevision {
    /// A manifest commit (Flux Kustomization, Argo CD Application).
    Commit(GitRevision),
    /// A container image tag (workload), compared with the CI build number.
    ImageTag(String),
}

impl DeployedRevision {
    /// The full value for `status.deployedRevision`.
    pub fn value(&self) -> &str {
        match self {
            Self::Commit(rev) => &rev.commit,
            Self::ImageTag(tag) => tag,
        }
    }

    /// The short form for the `Deployed` printer column: 7 hex digits of a commit, or the whole tag.
    pub fn short(&self) -> String {
        match self {
            Self::Commit(rev) => crate::crd::short_sha(&rev.commit),
            Self::ImageTag(tag) => tag.clone(),
        }
    }
}

/// Why a revision string could not be read as a Git commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    #[error("the revision is empty: the GitOps agent has not applied anything yet")]
    Empty,
    #[error("revision '{value}' is not a Git commit (expected `<branch>@sha1:<sha>`, `<branch>/<sha>`, `sha1:<sha>` or a bare sha): point the trace at an object that deploys from the manifest Git repository")]
    NotACommit { value: String },
    #[error("revision '{value}' uses digest algorithm '{algorithm}', which is not a Git object id (sha1 or sha256 of a Git repository): the source is probably an OCI artifact or a Helm chart, not the manifest repository")]
    UnsupportedAlgorithm { value: String, algorithm: String },
}

/// Parse a Flux Kustomization `status.lastAppliedRevision` (or `lastAttemptedRevision`).
pub fn parse_flux_revision(value: &str) -> Result<GitRevision, RevisionError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(RevisionError::Empty);
    }
    // Flux 2.x: `<ref>@<algo>:<hash>`; the ref may contain `/` (refs/heads/feature/x) but never `@:`.
    if let Some((reference, digest)) = value.rsplit_once('@') {
        let commit = parse_digest(value, digest)?;
        let reference = (!reference.is_empty()).then(|| reference.to_string());
        return Ok(GitRevision { reference, commit });
    }
    // Flux 2.x without a named ref: `sha1:<hash>`.
    if value.contains(':') {
        let commit = parse_digest(value, value)?;
        return Ok(GitRevision {
            reference: None,
            commit,
        });
    }
    // Flux < 2.0: `<branch>/<sha>`; the branch may itself contain `/`, the sha never does.
    if let Some((reference, sha)) = value.rsplit_once('/') {
        if is_commit_hex(sha) && !reference.is_empty() {
            return Ok(GitRevision {
                reference: Some(reference.to_string()),
                commit: sha.to_ascii_lowercase(),
            });
        }
        return Err(RevisionError::NotACommit {
            value: value.to_string(),
        });
    }
    parse_bare_sha(value)
}

/// Parse an Argo CD Application `status.sync.revision`. For Git sources Argo CD records the resolved
/// commit sha; Helm-repository sources record a chart version, which is refused.
pub fn parse_argo_revision(value: &str) -> Result<GitRevision, RevisionError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(RevisionError::Empty);
    }
    parse_bare_sha(value)
}

/// The tag of a container image reference, or `None` when the image has no tag (digest-only or bare
/// name: there is no build number to compare).
///
/// A `:` only starts a tag after the last `/`; before it, it is a registry port (`host:5000/app`).
/// A `@sha256:…` digest suffix is dropped first (`app:1.2@sha256:…` keeps tag `1.2`).
pub fn parse_image_tag(image: &str) -> Option<String> {
    let image = image.trim();
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let last_component = without_digest
        .rsplit_once('/')
        .map_or(without_digest, |(_, last)| last);
    let (_, tag) = last_component.split_once(':')?;
    (!tag.is_empty()).then(|| tag.to_string())
}

/// Whether two commit ids name the same commit. Either may be abbreviated (at least 7 hex digits, as
/// `git log --oneline` prints them); comparison ignores case.
pub fn same_commit(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= 7 && long.starts_with(&short)
}

fn parse_digest(whole: &str, digest: &str) -> Result<String, RevisionError> {
    let Some((algorithm, hash)) = digest.split_once(':') else {
        return Err(RevisionError::NotACommit {
            value: whole.to_string(),
        });
    };
    let expected_len = match algorithm.to_ascii_lowercase().as_str() {
        "sha1" => 40,
        "sha256" => 64,
        _ => {
            return Err(RevisionError::UnsupportedAlgorithm {
                value: whole.to_string(),
                algorithm: algorithm.to_string(),
            })
        }
    };
    if hash.len() == expected_len && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(RevisionError::NotACommit {
            value: whole.to_string(),
        })
    }
}

fn parse_bare_sha(value: &str) -> Result<GitRevision, RevisionError> {
    if is_commit_hex(value) {
        Ok(GitRevision {
            reference: None,
            commit: value.to_ascii_lowercase(),
        })
    } else {
        Err(RevisionError::NotACommit {
            value: value.to_string(),
        })
    }
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hex digits. Abbreviations are not accepted from agents,
/// which always record full ids; accepting them would let a version such as `1234567` pass as a commit.
fn is_commit_hex(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
    const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn rev(reference: Option<&str>, commit: &str) -> GitRevision {
        GitRevision {
            reference: reference.map(str::to_string),
            commit: commit.to_string(),
        }
    }

    #[test]
    fn flux_branch_at_sha1() {
        assert_eq!(
            parse_flux_revision(&format!("main@sha1:{SHA}")),
            Ok(rev(Some("main"), SHA))
        );
    }

    #[test]
    fn flux_full_ref_at_sha1() {
        assert_eq!(
            parse_flux_revision(&format!("refs/heads/main@sha1:{SHA}")),
            Ok(rev(Some("refs/heads/main"), SHA))
        );
    }

    #[test]
    fn flux_branch_with_slashes_at_sha1() {
        assert_eq!(
            parse_flux_revision(&format!("feature/orders/v2@sha1:{SHA}")),
            Ok(rev(Some("feature/orders/v2"), SHA))
        );
    }

    #[test]
    fn flux_tag_at_sha1() {
        assert_eq!(
            parse_flux_revision(&format!("v1.4.0@sha1:{SHA}")),
            Ok(rev(Some("v1.4.0"), SHA))
        );
    }

    #[test]
    fn flux_sha1_without_ref() {
        assert_eq!(
            parse_flux_revision(&format!("sha1:{SHA}")),
            Ok(rev(None, SHA))
        );
    }

    #[test]
    fn flux_empty_ref_before_at_is_no_ref() {
        assert_eq!(
            parse_flux_revision(&format!("@sha1:{SHA}")),
            Ok(rev(None, SHA))
        );
    }

    #[test]
    fn flux_sha256_git_repository() {
        assert_eq!(
            parse_flux_revision(&format!("main@sha256:{SHA256}")),
            Ok(rev(Some("main"), SHA256))
        );
    }

    #[test]
    fn flux_legacy_branch_slash_sha() {
        assert_eq!(
            parse_flux_revision(&format!("main/{SHA}")),
            Ok(rev(Some("main"), SHA))
        );
    }

    #[test]
    fn flux_legacy_branch_with_slashes() {
        assert_eq!(
            parse_flux_revision(&format!("release/2026.11/{SHA}")),
            Ok(rev(Some("release/2026.11"), SHA))
        );
    }

    #[test]
    fn flux_bare_sha() {
        assert_eq!(parse_flux_revision(SHA), Ok(rev(None, SHA)));
    }

    #[test]
    fn flux_upper_case_hex_is_normalised() {
        let upper = SHA.to_ascii_uppercase();
        assert_eq!(
            parse_flux_revision(&format!("main@sha1:{upper}")),
            Ok(rev(Some("main"), SHA))
        );
        assert_eq!(parse_flux_revision(&upper), Ok(rev(None, SHA)));
    }

    #[test]
    fn flux_surrounding_whitespace_is_ignored() {
        assert_eq!(
            parse_flux_revision(&format!("  main@sha1:{SHA}\n")),
            Ok(rev(Some("main"), SHA))
        );
    }

    #[test]
    fn flux_empty_is_not_yet_applied() {
        assert_eq!(parse_flux_revision(""), Err(RevisionError::Empty));
        assert_eq!(parse_flux_revision("   "), Err(RevisionError::Empty));
    }

    #[test]
    fn flux_oci_digest_is_refused_with_the_algorithm() {
        let value = format!("latest@md5:{}", &SHA[..32]);
        assert_eq!(
            parse_flux_revision(&value),
            Err(RevisionError::UnsupportedAlgorithm {
                value: value.clone(),
                algorithm: "md5".into()
            })
        );
    }

    #[test]
    fn flux_wrong_hash_length_is_refused() {
        let value = format!("main@sha1:{}", &SHA[..39]);
        assert_eq!(
            parse_flux_revision(&value),
            Err(RevisionError::NotACommit { value })
        );
        let value = format!("main@sha256:{SHA}");
        assert_eq!(
            parse_flux_revision(&value),
            Err(RevisionError::NotACommit { value })
        );
    }

    #[test]
    fn flux_non_hex_hash_is_refused() {
        let value = format!("main@sha1:{}z", &SHA[..39]);
        assert_eq!(
            parse_flux_revision(&value),
            Err(RevisionError::NotACommit { value })
        );
    }

    #[test]
    fn flux_digest_without_algorithm_is_refused() {
        let value = format!("main@{SHA}");
        assert_eq!(
            parse_flux_revision(&value),
            Err(RevisionError::NotACommit { value })
        );
    }

    #[test]
    fn flux_legacy_form_needs_a_full_sha() {
        assert_eq!(
            parse_flux_revision("main/abc1234"),
            Err(RevisionError::NotACommit {
                value: "main/abc1234".into()
            })
        );
        let value = format!("/{SHA}");
        assert_eq!(
            parse_flux_revision(&value),
            Err(RevisionError::NotACommit { value })
        );
    }

    #[test]
    fn flux_chart_version_is_refused() {
        assert_eq!(
            parse_flux_revision("1.2.3"),
            Err(RevisionError::NotACommit {
                value: "1.2.3".into()
            })
        );
    }

    #[test]
    fn argo_bare_sha() {
        assert_eq!(parse_argo_revision(SHA), Ok(rev(None, SHA)));
        assert_eq!(
            parse_argo_revision(&SHA.to_ascii_uppercase()),
            Ok(rev(None, SHA))
        );
    }

    #[test]
    fn argo_helm_chart_version_is_refused() {
        assert_eq!(
            parse_argo_revision("6.7.1"),
            Err(RevisionError::NotACommit {
                value: "6.7.1".into()
            })
        );
    }

    #[test]
    fn argo_abbreviated_sha_is_refused() {
        assert_eq!(
            parse_argo_revision("9f8e7d6"),
            Err(RevisionError::NotACommit {
                value: "9f8e7d6".into()
            })
        );
    }

    #[test]
    fn argo_empty_is_not_yet_synced() {
        assert_eq!(parse_argo_revision(""), Err(RevisionError::Empty));
    }

    #[test]
    fn image_tag_with_registry_and_path() {
        assert_eq!(
            parse_image_tag("contoso.azurecr.io/shop/orders:20261122.4"),
            Some("20261122.4".into())
        );
    }

    #[test]
    fn image_tag_without_registry() {
        assert_eq!(
            parse_image_tag("orders:20261122.4"),
            Some("20261122.4".into())
        );
    }

    #[test]
    fn image_tag_with_digest_keeps_the_tag() {
        assert_eq!(
            parse_image_tag(&format!("registry/app:20261122.4@sha256:{SHA256}")),
            Some("20261122.4".into())
        );
    }

    #[test]
    fn image_digest_only_has_no_tag() {
        assert_eq!(
            parse_image_tag(&format!("registry/app@sha256:{SHA256}")),
            None
        );
    }

    #[test]
    fn image_registry_port_is_not_a_tag() {
        assert_eq!(parse_image_tag("host:5000/app:1.0"), Some("1.0".into()));
        assert_eq!(parse_image_tag("host:5000/app"), None);
        assert_eq!(
            parse_image_tag(&format!("host:5000/team/app@sha256:{SHA256}")),
            None
        );
    }

    #[test]
    fn image_without_tag_has_none() {
        assert_eq!(parse_image_tag("registry/app"), None);
        assert_eq!(parse_image_tag("app"), None);
        assert_eq!(parse_image_tag("app:"), None);
        assert_eq!(parse_image_tag(""), None);
    }

    #[test]
    fn same_commit_matches_full_and_abbreviated_ids() {
        assert!(same_commit(SHA, SHA));
        assert!(same_commit(SHA, &SHA[..7]));
        assert!(same_commit(&SHA[..7], SHA));
        assert!(same_commit(&SHA.to_ascii_uppercase(), SHA));
    }

    #[test]
    fn same_commit_rejects_different_or_too_short_ids() {
        assert!(!same_commit(
            SHA,
            "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
        ));
        assert!(!same_commit(SHA, &SHA[..6]));
        assert!(!same_commit("", SHA));
        assert!(!same_commit(SHA, &SHA[1..]));
    }

    #[test]
    fn deployed_revision_short_forms() {
        assert_eq!(DeployedRevision::Commit(rev(None, SHA)).short(), "9f8e7d6");
        assert_eq!(DeployedRevision::Commit(rev(None, SHA)).value(), SHA);
        assert_eq!(
            DeployedRevision::ImageTag("20261122.4".into()).short(),
            "20261122.4"
        );
    }
}
