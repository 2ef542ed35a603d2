//! What a pass leaves behind: the engine's state between passes
//! (`{R}/.sync/state.json`), the tree's `status.json`, the signed manifest,
//! and the totals of crates and versions served.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::info;
use wharf_storage::BlobKey;
use wharf_upstream::{Validators, redact};

use super::{CrateOutcome, Mirror, Summary, SyncError, VALID};

/// The `status.json` at the root of a mirror's tree.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Status {
    /// When the last pass ended (seconds since the epoch).
    pub(super) last_sync: u64,
    /// When the last pass without failures ended.
    pub(super) last_success: Option<u64>,
    /// Crates and versions served.
    pub(super) crates: usize,
    pub(super) versions: usize,
    /// Failures of the last pass.
    pub(super) failures: usize,
    /// How long the last pass took (absent in trees of older versions).
    #[serde(default)]
    pub(super) duration_ms: Option<u64>,
    /// Where the mirror syncs from, and how far it got.
    pub(super) upstreams: Vec<String>,
    pub(super) index_git: Option<String>,
    pub(super) cursor: Option<String>,
    /// How far the tree is behind upstream (see `lag.rs`).
    #[serde(flatten)]
    pub(super) lag: super::lag::Lag,
    /// The wharf that wrote it.
    pub(super) generator: String,
}

/// What the engine remembers between passes, in `{R}/.sync/state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    /// The selection the tree was last synced with.
    pub(super) selection: String,
    /// The git index tree every published file is synced to.
    pub(super) git_tree: Option<String>,
    /// Crates and versions the tree serves.
    pub(super) crates: usize,
    pub(super) versions: usize,
    /// Crates of a listing mirror whose sync failed: looked at again next
    /// pass, whatever the git index says. This journal lets the git cursor
    /// move past a crate file that upstream lost, without losing the crate.
    #[serde(default)]
    pub(super) retry: BTreeSet<String>,
    /// The items of the feed at its last poll, and its validators.
    #[serde(default)]
    pub(super) feed_seen: BTreeSet<String>,
    #[serde(default)]
    pub(super) feed_validators: Option<Validators>,
    /// False while a pass runs: a pass that finds it false knows the last
    /// one was killed, and counts everything again.
    pub(super) complete: bool,
}

impl Mirror {
    /// Writes the state and `status.json` at the end of a pass.
    pub(super) async fn finish(
        &self,
        state_key: BlobKey,
        state: State,
        mut summary: Summary,
        started: Instant,
        requests_before: u64,
    ) -> Result<Summary, SyncError> {
        self.put_state(&state_key, &state).await?;
        summary.total_crates = state.crates;
        summary.total_versions = state.versions;
        summary.requests = self.upstreams.requests_made() - requests_before;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        self.write_status(&summary, state.git_tree.clone()).await?;
        self.sign(state.git_tree.clone()).await?;
        info!(
            registry = %self.name,
            kind = ?summary.kind,
            crates = summary.crates,
            changed = summary.changed,
            total_crates = summary.total_crates,
            total_versions = summary.total_versions,
            downloaded = summary.downloaded,
            downloaded_bytes = summary.downloaded_bytes,
            requests = summary.requests,
            failures = summary.failures.len(),
            duration_ms = summary.duration_ms,
            "sync pass finished"
        );
        Ok(summary)
    }

    /// Writes the signed manifest of the tree, when the mirror has a key:
    /// every index file in storage with its sha256, then the signature and
    /// the manifest, each replaced atomically.
    async fn sign(&self, cursor: Option<String>) -> Result<(), SyncError> {
        let Some(key) = self.signing_key.clone() else {
            return Ok(());
        };
        let layout = self.layout();
        let index = layout.index_dir().expect(VALID);
        let below = format!("{index}/");
        let mut files = std::collections::BTreeMap::new();
        for file in self.store.list(&index).await? {
            let Some(relative) = file.as_str().strip_prefix(&below) else {
                continue;
            };
            if let Some(bytes) = self.store.get(&file).await? {
                files.insert(relative.to_owned(), crate::manifest::sha256_hex(&bytes));
            }
        }
        let name = self.name.clone();
        let (_, body, signature) =
            tokio::task::spawn_blocking(move || crate::manifest::sign(&name, cursor, files, &key))
                .await
                .map_err(|e| SyncError::Setup(e.to_string()))?
                .map_err(|e| SyncError::Setup(format!("cannot sign the manifest: {e}")))?;
        self.store
            .put(
                &layout.top_file("manifest.json.sig").expect(VALID),
                Bytes::from(signature),
            )
            .await?;
        self.store
            .put(
                &layout.top_file("manifest.json").expect(VALID),
                Bytes::from(body),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn put_if_changed(
        &self,
        key: &BlobKey,
        bytes: Bytes,
    ) -> Result<bool, SyncError> {
        if self.store.get(key).await?.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        self.store.put(key, bytes).await?;
        Ok(true)
    }

    pub(super) async fn put_state(&self, key: &BlobKey, state: &State) -> Result<(), SyncError> {
        let body = serde_json::to_vec(state).expect("state serialises");
        self.store.put(key, Bytes::from(body)).await?;
        Ok(())
    }

    async fn write_status(
        &self,
        summary: &Summary,
        cursor: Option<String>,
    ) -> Result<(), SyncError> {
        let key = self.layout().status_json().expect(VALID);
        let previous: Option<Status> = self
            .store
            .get(&key)
            .await?
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let lag = super::lag::Lag::after_pass(
            previous.as_ref().map(|p| &p.lag),
            summary.upstream_time,
            summary.failures.is_empty(),
            now,
        );
        let status = Status {
            last_sync: now,
            last_success: if summary.failures.is_empty() {
                Some(now)
            } else {
                previous.and_then(|p| p.last_success)
            },
            crates: summary.total_crates,
            versions: summary.total_versions,
            failures: summary.failures.len(),
            duration_ms: Some(summary.duration_ms),
            upstreams: self.upstream_urls.iter().map(|u| redact(u)).collect(),
            index_git: self.git.as_ref().map(|g| redact(&g.url)),
            cursor,
            lag,
            generator: format!("wharf {}", env!("CARGO_PKG_VERSION")),
        };
        let body = serde_json::to_vec_pretty(&status).expect("status serialises");
        self.store.put(&key, Bytes::from(body)).await?;
        Ok(())
    }
}

impl Summary {
    pub(super) fn add(&mut self, outcome: CrateOutcome) {
        self.crates += 1;
        self.changed += usize::from(outcome.changed);
        self.downloaded += outcome.downloaded;
        self.downloaded_bytes += outcome.downloaded_bytes;
        self.failures.extend(outcome.failures);
    }
}

/// How the crates and versions served changed over the files a pass saw.
#[derive(Default)]
pub(super) struct Delta {
    crates_before: usize,
    crates_after: usize,
    versions_before: usize,
    versions_after: usize,
}

impl Delta {
    pub(super) fn add(&mut self, before: usize, after: usize) {
        self.crates_before += usize::from(before > 0);
        self.crates_after += usize::from(after > 0);
        self.versions_before += before;
        self.versions_after += after;
    }

    pub(super) fn merge(&mut self, other: &Delta) {
        self.crates_before += other.crates_before;
        self.crates_after += other.crates_after;
        self.versions_before += other.versions_before;
        self.versions_after += other.versions_after;
    }

    /// The totals, when the pass saw every file the tree serves.
    pub(super) fn totals(&self) -> (usize, usize) {
        (self.crates_after, self.versions_after)
    }

    /// The totals, from the last pass's and this pass's changes.
    pub(super) fn apply(&self, (crates, versions): (usize, usize)) -> (usize, usize) {
        (
            (crates + self.crates_after).saturating_sub(self.crates_before),
            (versions + self.versions_after).saturating_sub(self.versions_before),
        )
    }
}

pub(super) fn count_lines(file: &[u8]) -> usize {
    file.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::TestMirror;

    #[test]
    fn totals_follow_the_files_a_pass_saw() {
        let mut delta = Delta::default();
        delta.add(0, 3); // a new crate with 3 versions
        delta.add(2, 0); // a crate gone
        delta.add(1, 2); // a new version
        assert_eq!(delta.totals(), (2, 5));
        // Last pass served 10 crates and 40 versions.
        assert_eq!(delta.apply((10, 40)), (10, 40 + 5 - 3));
        let mut more = Delta::default();
        more.add(0, 1);
        delta.merge(&more);
        assert_eq!(delta.apply((10, 40)), (11, 43));
        // Never below zero, whatever an old count said.
        let mut gone = Delta::default();
        gone.add(5, 0);
        assert_eq!(gone.apply((0, 0)), (0, 0));
    }

    #[test]
    fn lines_are_counted_without_empty_ones() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"{}\n{}\n"), 2);
        assert_eq!(count_lines(b"{}\n\n{}"), 2);
    }

    #[test]
    fn a_state_written_by_an_older_wharf_reads_with_defaults() {
        let state: State = serde_json::from_str(
            r#"{"selection":"s","git_tree":null,"crates":3,"versions":4,"complete":true}"#,
        )
        .unwrap();
        assert!(state.retry.is_empty() && state.feed_seen.is_empty());
        assert!(state.feed_validators.is_none());
        assert_eq!((state.crates, state.versions), (3, 4));
    }

    #[tokio::test]
    async fn status_keeps_the_last_success_through_a_failed_pass() {
        let t = TestMirror::start(Vec::new(), "include = [\"x\"]").await;
        let ok = Summary {
            total_crates: 2,
            total_versions: 5,
            ..Summary::default()
        };
        t.mirror
            .write_status(&ok, Some("abc".into()))
            .await
            .unwrap();
        let first: Status = serde_json::from_str(&t.read("m/status.json").await.unwrap()).unwrap();
        assert_eq!(first.last_success, Some(first.last_sync));
        assert_eq!((first.crates, first.versions, first.failures), (2, 5, 0));
        assert_eq!(first.cursor.as_deref(), Some("abc"));

        let failed = Summary {
            failures: vec!["x 1.0.0: gone".into()],
            ..ok
        };
        t.mirror.write_status(&failed, None).await.unwrap();
        let second: Status = serde_json::from_str(&t.read("m/status.json").await.unwrap()).unwrap();
        assert_eq!(second.failures, 1);
        assert_eq!(second.last_success, first.last_success);
        assert!(
            second.upstreams[0].starts_with("sparse+http://127.0.0.1:"),
            "{:?}",
            second.upstreams
        );
    }
}
