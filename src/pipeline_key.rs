//! Identity of what an object follows in Azure DevOps, normalised so that the poll cache and the webhook
//! router agree: `https://dev.azure.com/contoso` and `https://contoso.visualstudio.com` are one organization
//! (service-hook payloads use the organization's primary URL, which may be either form), while Azure DevOps
//! Server collections differ by scheme, host, port and collection path.

use std::fmt;

/// A normalised organization (or Azure DevOps Server collection) identity, lower-case.
///
/// Hosted organizations are their name, whichever URL form names them. An Azure DevOps Server collection
/// is everything that tells two servers apart: scheme, host, port (the scheme's default when absent) and
/// the whole collection path, so `http://tfs:8080/coll` and `http://tfs:9090/coll` never share a cached
/// answer, a rate-limit hold or a webhook route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgKey(String);

/// Deepest collection path considered when guessing a collection from a resource URL (`/tfs/coll/project`).
const MAX_COLLECTION_DEPTH: usize = 4;

impl OrgKey {
    /// Normalise an organization or collection URL. Returns `None` for something that is not an http(s)
    /// URL with a host.
    ///
    /// - `https://dev.azure.com/{org}[/...]` → `{org}`
    /// - `https://{org}.visualstudio.com[/...]` → `{org}`
    /// - anything else (Azure DevOps Server) → `{scheme}://{host}:{port}/{collection path}`, e.g.
    ///   `http://tfs.corp:8080/tfs/defaultcollection`. The path ends before the first segment starting with
    ///   `_` (`_apis`, `_git`, `_build`): such a URL names something inside the collection.
    pub fn from_url(url: &str) -> Option<Self> {
        let parsed = Self::parse(url)?;
        if let Some(hosted) = Self::hosted(&parsed) {
            return hosted;
        }
        let segments = collection_segments(&parsed);
        Some(Self::server(&parsed, &segments))
    }

    /// The organizations a URL found inside a service-hook resource may belong to. On Azure DevOps Server
    /// such a URL (`http://tfs:8080/tfs/coll/Shop/_apis/build/Builds/1`) does not say where the collection
    /// path ends and the project begins, so every prefix of its path before the first `_` segment is a
    /// candidate, longest first; a hosted URL names exactly one organization.
    pub fn candidates_from_resource_url(url: &str) -> Vec<Self> {
        let Some(parsed) = Self::parse(url) else {
            return Vec::new();
        };
        if let Some(hosted) = Self::hosted(&parsed) {
            return hosted.into_iter().collect();
        }
        // A GUID segment is a project id: the collection path ended before it.
        let segments: Vec<String> = collection_segments(&parsed)
            .into_iter()
            .take_while(|s| !uuid_like(s))
            .collect();
        (1..=segments.len().min(MAX_COLLECTION_DEPTH))
            .rev()
            .map(|depth| Self::server(&parsed, &segments[..depth]))
            .collect()
    }

    fn parse(url: &str) -> Option<url::Url> {
        let parsed = url::Url::parse(url.trim()).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        parsed.host_str()?;
        Some(parsed)
    }

    /// `Some(Some(org))` for a hosted URL, `Some(None)` for a bare `dev.azure.com`, `None` for a server.
    fn hosted(parsed: &url::Url) -> Option<Option<Self>> {
        let host = parsed.host_str()?.to_ascii_lowercase();
        if host == "dev.azure.com" {
            return Some(collection_segments(parsed).into_iter().next().map(OrgKey));
        }
        host.strip_suffix(".visualstudio.com")
            .map(|org| Some(OrgKey(org.to_string())))
    }

    fn server(parsed: &url::Url, segments: &[String]) -> Self {
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = parsed
            .port_or_known_default()
            .map_or_else(String::new, |p| format!(":{p}"));
        let mut key = format!("{}://{host}{port}", parsed.scheme());
        for segment in segments {
            key.push('/');
            key.push_str(segment);
        }
        OrgKey(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `863d0a5b-3c91-4bf3-8ad7-7f33736b7f4c`: how resource URLs name a project by id.
fn uuid_like(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The path's non-empty segments, lower-cased, up to the first one that starts with `_`.
fn collection_segments(parsed: &url::Url) -> Vec<String> {
    parsed
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .take_while(|s| !s.starts_with('_'))
        .map(str::to_ascii_lowercase)
        .collect()
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
        assert_eq!(k.as_str(), "https://tfs.corp:443/defaultcollection");
        assert_eq!(
            OrgKey::from_url("http://tfs.corp:8080/tfs/")
                .unwrap()
                .as_str(),
            "http://tfs.corp:8080/tfs"
        );
    }

    /// Issue 13, defect 3: scheme, host, port and the whole collection path tell collections apart.
    #[test]
    fn server_organizations_differ_by_scheme_host_port_and_path() {
        let key = |u: &str| OrgKey::from_url(u).unwrap();
        let base = key("http://host:8080/coll");
        for other in [
            "http://host:9090/coll",
            "https://host:8080/coll",
            "http://other:8080/coll",
            "http://host:8080/coll2",
            "http://host:8080/tfs/coll",
            "http://host/coll",
        ] {
            assert_ne!(base, key(other), "{other}");
        }
        for same in [
            "http://HOST:8080/Coll/",
            "http://host:8080/coll/_apis/build/builds",
        ] {
            assert_eq!(base, key(same), "{same}");
        }
        // The scheme's default port is the same server as no port.
        assert_eq!(key("http://host/coll"), key("http://host:80/coll"));
        assert_eq!(key("https://host/coll"), key("https://host:443/coll"));
        // Two collections behind one virtual directory.
        assert_ne!(key("http://h:8080/tfs/a"), key("http://h:8080/tfs/b"));
    }

    #[test]
    fn pipelines_on_two_server_ports_are_two_cache_keys() {
        let on = |port: u16| {
            PipelineKey::new(&format!("http://host:{port}/coll"), "Shop", 42, "main").unwrap()
        };
        assert_ne!(on(8080), on(9090));
        assert_eq!(on(8080), on(8080));
    }

    #[test]
    fn resource_urls_name_their_collection_among_the_candidates() {
        let candidates = OrgKey::candidates_from_resource_url(
            "http://h:8080/tfs/Coll/Shop/_apis/build/Builds/7",
        );
        assert_eq!(
            candidates.iter().map(OrgKey::as_str).collect::<Vec<_>>(),
            vec![
                "http://h:8080/tfs/coll/shop",
                "http://h:8080/tfs/coll",
                "http://h:8080/tfs"
            ]
        );
        assert!(candidates.contains(&OrgKey::from_url("http://h:8080/tfs/Coll").unwrap()));
        assert!(!candidates.contains(&OrgKey::from_url("http://h:9090/tfs/Coll").unwrap()));
        assert_eq!(
            OrgKey::candidates_from_resource_url("https://dev.azure.com/Contoso/Shop/_apis/x"),
            vec![OrgKey::from_url("https://contoso.visualstudio.com").unwrap()]
        );
        assert!(OrgKey::candidates_from_resource_url("mailto:x@y").is_empty());
        assert_eq!(
            OrgKey::candidates_from_resource_url(
                "https://ado.corp/Coll/863d0a5b-3c91-4bf3-8ad7-7f33736b7f4c/_apis/build/Builds/1"
            ),
            vec![OrgKey::from_url("https://ado.corp/coll").unwrap()]
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
