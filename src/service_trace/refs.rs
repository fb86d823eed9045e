//! The head commit of an HLD or manifest branch, from Azure DevOps Refs - List.
//!
//! Refs - List's `filter` is a prefix match (`filter=heads/main` also returns `refs/heads/main-old` and
//! `refs/heads/maintenance/x`), and an unknown branch is an empty list with HTTP 200, not a 404
//! (ado-api.md §7). So the ref is picked by exact name here, and "not in the list" means the branch does
//! not exist. An annotated tag's `objectId` is the tag object, not a commit: with `peelTags=true` the
//! service adds `peeledObjectId`; without it the caller looks the tag up (Annotated Tags - Get) and
//! finishes with [`peel_annotated_tag`].

use crate::ado::models::{GitAnnotatedTag, GitRef};

/// What Refs - List says about one ref.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefHead {
    /// The ref points at this commit (lower-case hex).
    Commit(String),
    /// A tag whose target is not known yet: `tag_object_id` may be an annotated tag object (look it up
    /// with Annotated Tags - Get, then [`peel_annotated_tag`]) or, for a lightweight tag, the commit itself
    /// (the look-up answers 404; use the id as the commit).
    UnpeeledTag { tag_object_id: String },
    /// No ref with that name: the branch (or tag) does not exist.
    Missing,
}

/// Why a ref could not be resolved to a commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("ref {name} has no objectId in the Refs - List answer: Azure DevOps returned an incomplete ref; retry later")]
    NoObjectId { name: String },
    #[error("tag {tag} points at a {object_type} ({object_id}), not a commit: point the trace at a branch or at a tag of a commit")]
    NotACommit {
        tag: String,
        object_type: String,
        object_id: String,
    },
}

/// The `filter` value for Refs - List: the full ref without its `refs/` prefix (`heads/main`).
pub fn ref_filter(full_ref: &str) -> &str {
    full_ref.strip_prefix("refs/").unwrap_or(full_ref)
}

/// Pick `full_ref` (e.g. `refs/heads/main`) out of a Refs - List answer.
///
/// The exact name wins. Azure Repos treats ref names case-insensitively (it refuses to create `Main` next
/// to `main`), so when there is no exact match a single case-insensitive match is accepted; two or more
/// are ambiguous and count as missing.
pub fn pick_ref(refs: &[GitRef], full_ref: &str) -> Result<RefHead, RefError> {
    let found = refs.iter().find(|r| r.name == full_ref).or_else(|| {
        let mut folded = refs
            .iter()
            .filter(|r| r.name.eq_ignore_ascii_case(full_ref));
        match (folded.next(), folded.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    });
    let Some(found) = found else {
        return Ok(RefHead::Missing);
    };
    if let Some(peeled) = found.peeled_object_id.as_deref().filter(|p| !p.is_empty()) {
        return Ok(RefHead::Commit(peeled.to_ascii_lowercase()));
    }
    let object_id = found
        .object_id
        .as_deref()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| RefError::NoObjectId {
            name: found.name.clone(),
        })?
        .to_ascii_lowercase();
    if found.name.starts_with("refs/tags/") {
        Ok(RefHead::UnpeeledTag {
            tag_object_id: object_id,
        })
    } else {
        Ok(RefHead::Commit(object_id))
    }
}

/// The commit an annotated tag points at.
///
/// A tag of a tag (`objectType: tag`) is refused rather than followed: GitOps agents check out commits,
/// and a chain of tags pointing at a tree or blob is a misconfiguration to report, not to guess around.
pub fn peel_annotated_tag(tag: &GitAnnotatedTag) -> Result<String, RefError> {
    let target = &tag.tagged_object;
    match target.object_type.as_deref() {
        None | Some("commit") => Ok(target.object_id.to_ascii_lowercase()),
        Some(other) => Err(RefError::NotACommit {
            tag: tag
                .name
                .clone()
                .unwrap_or_else(|| tag.object_id.clone().unwrap_or_default()),
            object_type: other.to_string(),
            object_id: target.object_id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ado::models::{GitObjectRef, ListResponse};
    use std::path::PathBuf;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/azure-devops")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }

    fn refs(name: &str) -> Vec<GitRef> {
        fixture::<ListResponse<GitRef>>(name).value
    }

    fn git_ref(name: &str, object_id: &str, peeled: Option<&str>) -> GitRef {
        GitRef {
            name: name.into(),
            object_id: Some(object_id.into()),
            peeled_object_id: peeled.map(str::to_string),
            url: None,
        }
    }

    #[test]
    fn filter_drops_the_refs_prefix() {
        assert_eq!(ref_filter("refs/heads/main"), "heads/main");
        assert_eq!(ref_filter("refs/tags/flux-sync"), "tags/flux-sync");
        assert_eq!(ref_filter("heads/main"), "heads/main");
    }

    #[test]
    fn exact_branch_from_a_filtered_answer() {
        let list = refs("refs-filter-heads-branch.json");
        assert_eq!(
            pick_ref(&list, "refs/heads/branchnametocreate"),
            Ok(RefHead::Commit(
                "e0d501db4f5a08fe212e8ed7a8e8035fbef62416".into()
            ))
        );
    }

    #[test]
    fn branch_from_an_unfiltered_answer() {
        let list = refs("refs-list.json");
        assert_eq!(
            pick_ref(&list, "refs/heads/master"),
            Ok(RefHead::Commit(
                "c06ae011e801fea6e915d5a779f3322e6f5301a1".into()
            ))
        );
        assert_eq!(
            pick_ref(&list, "refs/heads/gh-pages"),
            Ok(RefHead::Commit(
                "e0d501db4f5a08fe212e8ed7a8e8035fbef62416".into()
            ))
        );
    }

    #[test]
    fn prefix_answer_yields_only_the_exact_name() {
        let list = refs("refs-filter-heads-prefix.json");
        assert_eq!(
            pick_ref(&list, "refs/heads/feature/replacer"),
            Ok(RefHead::Commit(
                "917131a709996c5cfe188c3b57e9a6ad90e8b85c".into()
            ))
        );
        // `heads/feature` is a prefix of two branches but is not itself a branch.
        assert_eq!(pick_ref(&list, "refs/heads/feature"), Ok(RefHead::Missing));
    }

    #[test]
    fn main_old_does_not_stand_in_for_main() {
        let list = vec![
            git_ref(
                "refs/heads/main-old",
                "1111111111111111111111111111111111111111",
                None,
            ),
            git_ref(
                "refs/heads/maintenance/x",
                "2222222222222222222222222222222222222222",
                None,
            ),
            git_ref(
                "refs/heads/main",
                "3333333333333333333333333333333333333333",
                None,
            ),
        ];
        assert_eq!(
            pick_ref(&list, "refs/heads/main"),
            Ok(RefHead::Commit(
                "3333333333333333333333333333333333333333".into()
            ))
        );
        assert_eq!(
            pick_ref(&list[..2], "refs/heads/main"),
            Ok(RefHead::Missing)
        );
    }

    #[test]
    fn empty_answer_means_the_branch_is_missing() {
        let list = refs("refs-filter-no-match.json");
        assert!(list.is_empty());
        assert_eq!(
            pick_ref(&list, "refs/heads/unknownbranchname"),
            Ok(RefHead::Missing)
        );
    }

    #[test]
    fn case_insensitive_match_when_unique() {
        let list = vec![git_ref(
            "refs/heads/Main",
            "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
            None,
        )];
        assert_eq!(
            pick_ref(&list, "refs/heads/main"),
            Ok(RefHead::Commit(
                "abcdef0123456789abcdef0123456789abcdef01".into()
            ))
        );
    }

    #[test]
    fn ambiguous_case_insensitive_matches_count_as_missing() {
        let list = vec![
            git_ref(
                "refs/heads/Main",
                "1111111111111111111111111111111111111111",
                None,
            ),
            git_ref(
                "refs/heads/MAIN",
                "2222222222222222222222222222222222222222",
                None,
            ),
        ];
        assert_eq!(pick_ref(&list, "refs/heads/main"), Ok(RefHead::Missing));
    }

    #[test]
    fn exact_match_beats_case_insensitive_ones() {
        let list = vec![
            git_ref(
                "refs/heads/Main",
                "1111111111111111111111111111111111111111",
                None,
            ),
            git_ref(
                "refs/heads/main",
                "2222222222222222222222222222222222222222",
                None,
            ),
        ];
        assert_eq!(
            pick_ref(&list, "refs/heads/main"),
            Ok(RefHead::Commit(
                "2222222222222222222222222222222222222222".into()
            ))
        );
    }

    #[test]
    fn annotated_tag_without_peel_needs_a_look_up() {
        let list = refs("refs-filter-tags-flux-sync.json");
        assert_eq!(
            pick_ref(&list, "refs/tags/flux-sync"),
            Ok(RefHead::UnpeeledTag {
                tag_object_id: "0396d996eda4b2528dbda88dd8ab9c0bb6c27674".into()
            })
        );
    }

    #[test]
    fn annotated_tag_look_up_result_peels_to_the_commit() {
        let tag: GitAnnotatedTag = fixture("git-annotated-tag-flux-sync.json");
        assert_eq!(
            peel_annotated_tag(&tag),
            Ok("ab4c9f1ccb67a82256763e32fba1e70c897bd82a".into())
        );
    }

    #[test]
    fn peeled_object_id_is_the_commit() {
        let mut list = refs("refs-filter-tags-flux-sync.json");
        list[0].peeled_object_id = Some("ab4c9f1ccb67a82256763e32fba1e70c897bd82a".into());
        assert_eq!(
            pick_ref(&list, "refs/tags/flux-sync"),
            Ok(RefHead::Commit(
                "ab4c9f1ccb67a82256763e32fba1e70c897bd82a".into()
            ))
        );
    }

    #[test]
    fn peeled_object_id_from_the_wire() {
        let list: ListResponse<GitRef> = serde_json::from_str(
            r#"{"count":1,"value":[{"name":"refs/tags/v1","objectId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","peeledObjectId":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]}"#,
        )
        .expect("valid refs JSON");
        assert_eq!(
            pick_ref(&list.value, "refs/tags/v1"),
            Ok(RefHead::Commit(
                "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()
            ))
        );
    }

    #[test]
    fn ref_without_object_id_is_an_error() {
        let list = vec![GitRef {
            name: "refs/heads/main".into(),
            object_id: None,
            peeled_object_id: None,
            url: None,
        }];
        assert_eq!(
            pick_ref(&list, "refs/heads/main"),
            Err(RefError::NoObjectId {
                name: "refs/heads/main".into()
            })
        );
    }

    #[test]
    fn tag_of_a_tree_is_refused() {
        let tag = GitAnnotatedTag {
            name: Some("odd".into()),
            object_id: Some("0396d996eda4b2528dbda88dd8ab9c0bb6c27674".into()),
            tagged_object: GitObjectRef {
                object_id: "41b9e31335ee0259c20c5404d5df57e6acd62ac0".into(),
                object_type: Some("tree".into()),
            },
        };
        let err = peel_annotated_tag(&tag).expect_err("a tree is not a commit");
        assert_eq!(
            err,
            RefError::NotACommit {
                tag: "odd".into(),
                object_type: "tree".into(),
                object_id: "41b9e31335ee0259c20c5404d5df57e6acd62ac0".into()
            }
        );
        assert!(err.to_string().contains("not a commit"));
    }
}
