//! Committer dates of commits already read, so a trace that orders its manifest head by commit date
//! (no manifest-generation pipeline) costs Commits - Get Commits once per new head, not once per reconcile.
//!
//! A commit's date never changes, so entries never go stale; the map is only bounded in size. It keeps
//! two generations: lookups promote an entry into the current one, and when the current generation is
//! full it becomes the previous one and the old previous one is dropped. That is an LRU approximation
//! with O(1) operations: an entry used within the last generation always survives.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

use crate::pipeline_key::OrgKey;

/// Total entries kept (both generations). Each trace needs one (its manifest head); a few thousand
/// covers every trace of a large cluster with room for heads that just moved.
pub const DEFAULT_CAPACITY: usize = 4096;

/// One commit of one repository in one organization. Commit ids are content hashes, but a fork in
/// another organization or server can hold the same id, so the repository is part of the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommitKey {
    organization: String,
    repository_id: String,
    commit_id: String,
}

impl CommitKey {
    pub fn new(org_url: &str, repository_id: &str, commit_id: &str) -> Self {
        let organization = OrgKey::from_url(org_url).map_or_else(
            || org_url.trim().trim_end_matches('/').to_ascii_lowercase(),
            |k| k.as_str().to_string(),
        );
        Self {
            organization,
            repository_id: repository_id.to_ascii_lowercase(),
            commit_id: commit_id.to_ascii_lowercase(),
        }
    }
}

#[derive(Default)]
struct Generations {
    current: HashMap<CommitKey, Option<Timestamp>>,
    previous: HashMap<CommitKey, Option<Timestamp>>,
}

/// Bounded, thread-safe map from commit to committer date (`None`: the commit carries no readable date,
/// which is as permanent as a date).
pub struct CommitDates {
    generation_size: usize,
    inner: Mutex<Generations>,
}

impl Default for CommitDates {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl CommitDates {
    /// Keeps at most `capacity` entries (at least 2).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            generation_size: (capacity / 2).max(1),
            inner: Mutex::new(Generations::default()),
        }
    }

    /// The recorded date, if this commit was read before.
    pub fn get(&self, key: &CommitKey) -> Option<Option<Timestamp>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(date) = g.current.get(key) {
            return Some(*date);
        }
        let date = g.previous.remove(key)?;
        Self::put(&mut g, self.generation_size, key.clone(), date);
        Some(date)
    }

    pub fn insert(&self, key: CommitKey, date: Option<Timestamp>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Self::put(&mut g, self.generation_size, key, date);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.current.len() + g.previous.len()
    }

    fn put(g: &mut Generations, generation_size: usize, key: CommitKey, date: Option<Timestamp>) {
        if !g.current.contains_key(&key) && g.current.len() >= generation_size {
            g.previous = std::mem::take(&mut g.current);
        }
        g.previous.remove(&key);
        g.current.insert(key, date);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> CommitKey {
        CommitKey::new(
            "https://dev.azure.com/contoso",
            "repo-guid",
            &format!("{n:040x}"),
        )
    }

    fn date(secs: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(secs).expect("valid"))
    }

    #[test]
    fn remembers_dates_and_missing_dates() {
        let dates = CommitDates::default();
        assert_eq!(dates.get(&key(1)), None);
        dates.insert(key(1), date(100));
        dates.insert(key(2), None);
        assert_eq!(dates.get(&key(1)), Some(date(100)));
        assert_eq!(dates.get(&key(2)), Some(None));
        assert_eq!(dates.len(), 2);
    }

    #[test]
    fn keys_ignore_case_and_url_spelling_but_not_the_repository() {
        let a = CommitKey::new("https://dev.azure.com/Contoso/", "REPO", "ABCDEF");
        let b = CommitKey::new("https://contoso.visualstudio.com", "repo", "abcdef");
        assert_eq!(a, b);
        assert_ne!(
            a,
            CommitKey::new("https://dev.azure.com/contoso", "other", "abcdef")
        );
        assert_ne!(
            a,
            CommitKey::new("https://dev.azure.com/fabrikam", "repo", "abcdef")
        );
    }

    #[test]
    fn size_stays_bounded() {
        let dates = CommitDates::with_capacity(10);
        for n in 0..1000 {
            dates.insert(key(n), date(n as i64));
            assert!(dates.len() <= 10, "{} entries after {n}", dates.len());
        }
        assert_eq!(dates.get(&key(999)), Some(date(999)));
        assert_eq!(dates.get(&key(0)), None);
    }

    #[test]
    fn recently_used_entries_survive_a_generation_change() {
        let dates = CommitDates::with_capacity(4);
        dates.insert(key(1), date(1));
        dates.insert(key(2), date(2));
        // Generation change: 1 and 2 move to the previous generation.
        dates.insert(key(3), date(3));
        // Reading 1 promotes it; 2 is not read.
        assert_eq!(dates.get(&key(1)), Some(date(1)));
        // The next generation change drops 2 and keeps the recently used 1.
        dates.insert(key(4), date(4));
        dates.insert(key(5), date(5));
        assert_eq!(dates.get(&key(2)), None);
        assert_eq!(dates.get(&key(1)), Some(date(1)));
        assert!(dates.len() <= 4);
    }
}
