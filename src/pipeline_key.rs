//! Identity of what an object follows in Azure DevOps, normalised so that the poll cache and the webhook
//! router agree: `https://dev.azure.com/contoso` and `https://contoso.visualstudio.com` are one organization
//! (service-hook payloads use the organization's primary URL, which may be either form).

use std::fmt;

/// A normalised organization (or Azure DevOps Server collection) identity, lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgKey(String);

impl OrgKey {
    /// Normalise an organization URL. Returns `None` for something that is not an http(s) URL with a host.
    ///
    /// - `https://dev.azure.com/{org}[/...]` → `{org}`
    /// - `https://{org}.visualstudio.com[/...]` → `{org}`
    /// - anything else (Azure DevOps Server) → `{host}/{first path segment}`, e.g. `tfs.corp/defaultcollection`
    pub fn from_url(url: &str) -> Option<Self> {
        let parsed = url::Url::parse(url.trim()).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        let host = parsed.host_str()?.to_ascii_lowercase();
        let first_segment = parsed
            .path_segments()
            .and_then(|mut s| s.find(|p| !p.is_empty()))
            .map(|s| s.to_ascii_lowercase());
        if host == "dev.azure.com" {
            return first_segment.map(OrgKey);
        }
        if let Some(org) = host.strip_suffix(".visualstudio.com") {
            return Some(OrgKey(org.to_string()));
        }
        Some(OrgKey(match first_segment {
            Some(collection) => format!("{host}/{collection}"),
            None => host,
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `main` → `refs/heads/main`; full refs are kept as they are.
pub fn full_branch_ref(branch: &str) -> String {
    let b = branch.trim();
    if b.starts_with("refs/") {
        b.to_string()
    } else {
        format!("refs/heads/{b}")
    }
}

/// One pipeline definition on one branch of one project: the unit of shared polling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineKey {
    pub organization: OrgKey,
    /// Project name or id, lower-cased (ADO project names are case-insensitive).
    pub project: String,
    pub definition_id: i64,
    /// Full ref, `refs/heads/...`.
    pub branch: String,
}

impl PipelineKey {
    pub fn new(
        organization_url: &str,
        project: &str,
        definition_id: i64,
        branch: &str,
    ) -> Option<Self> {
        Some(Self {
            organization: OrgKey::from_url(organization_url)?,
            project: project.trim().to_ascii_lowercase(),
            definition_id,
            branch: full_branch_ref(branch),
        })
    }
}

impl fmt::Display for PipelineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/definition {} on {}",
            self.organization, self.project, self.definition_id, self.branch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_hosted_url_forms_name_one_organization() {
        let a = OrgKey::from_url("https://dev.azure.com/Contoso").unwrap();
        let b = OrgKey::from_url("https://contoso.visualstudio.com/").unwrap();
        let c = OrgKey::from_url("https://dev.azure.com/contoso/Shop/_apis/build").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.as_str(), "contoso");
    }

    #[test]
    fn server_collections_keep_host_and_collection() {
        let k = OrgKey::from_url("https://tfs.corp/DefaultCollection").unwrap();
        assert_eq!(k.as_str(), "tfs.corp/defaultcollection");
        assert_eq!(
            OrgKey::from_url("http://tfs.corp:8080/tfs/")
                .unwrap()
                .as_str(),
            "tfs.corp/tfs"
        );
    }

    #[test]
    fn rejects_non_http_and_bare_dev_azure() {
        assert!(OrgKey::from_url("ftp://dev.azure.com/x").is_none());
        assert!(OrgKey::from_url("not a url").is_none());
        assert!(OrgKey::from_url("https://dev.azure.com/").is_none());
    }

    #[test]
    fn branches_get_refs_heads() {
        assert_eq!(full_branch_ref("develop"), "refs/heads/develop");
        assert_eq!(full_branch_ref("refs/heads/develop"), "refs/heads/develop");
        assert_eq!(full_branch_ref("feature/x"), "refs/heads/feature/x");
    }
}
