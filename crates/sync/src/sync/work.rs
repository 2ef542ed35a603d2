//! Local working state of a mirror, never served: the git clone of its
//! index (fetched under the upstreams' limits) and the lock that keeps two
//! passes of one mirror apart, across processes.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use gix::ObjectId;
use tracing::info;
use wharf_upstream::{redact, redact_in};

use wharf_index::{CrateName, IndexPath};

use super::{Mirror, Origin, Source, SyncError};
use crate::git::{GitError, GitFile, GitHttp, GitIndex};

/// Where mirror `name` keeps local working state that is never served (its
/// git clone and pass lock): `{work_dir}/{name}/.sync`, where `work_dir` is
/// the configured one (by default `data_dir`, next to the cursors of a tree
/// on disk).
pub fn work_dir(work_dir: &Path, name: &str) -> PathBuf {
    work_dir.join(name).join(".sync")
}

/// A git index and where its clone lives.
pub(super) struct GitRemote {
    pub(super) url: String,
    pub(super) dir: PathBuf,
    /// Its requests' agent, timeout and limits.
    pub(super) http: GitHttp,
    pub(super) clone: tokio::sync::Mutex<Option<Arc<GitIndex>>>,
}

impl Mirror {
    /// Clones the git index on first use, then fetches it; returns the clone
    /// and the tree upstream's `HEAD` points at.
    pub(super) async fn fetch_git(
        &self,
        remote: &GitRemote,
    ) -> Result<(Arc<GitIndex>, ObjectId), SyncError> {
        let git_error = |e: GitError| SyncError::Git {
            url: redact(&remote.url),
            message: redact_in(&describe_git(&*e), &remote.url),
        };
        // The fetch holds one of the upstreams' concurrency slots while it
        // runs; each of its requests takes its turn under the request rate.
        let _slot = self
            .upstreams
            .own_slot()
            .await
            .map_err(|e| git_error(e.to_string().into()))?;
        let mut clone = remote.clone.lock().await;
        let index = match clone.as_ref() {
            Some(index) => Arc::clone(index),
            None => {
                let (url, dir) = (remote.url.clone(), remote.dir.clone());
                let http = remote.http.clone();
                let index = blocking(move || GitIndex::open_or_clone(&url, &dir, http))
                    .await
                    .map_err(git_error)?;
                Arc::clone(clone.insert(Arc::new(index)))
            }
        };
        let started = Instant::now();
        let tree = {
            let index = Arc::clone(&index);
            blocking(move || index.fetch()).await.map_err(git_error)?
        };
        info!(registry = %self.name, git.url = %redact(&remote.url), tree = %tree, duration_ms = started.elapsed().as_millis() as u64, "git index fetched");
        Ok((index, tree))
    }

    /// Takes the mirror's lock file, so two processes never sync one tree
    /// at once. The lock goes with the returned file.
    pub(super) fn lock_file(&self) -> Result<std::fs::File, SyncError> {
        let path = self.work_dir.join("lock");
        let open = || {
            // The work dir (cursors, the git clone, the lock) is never served:
            // private, whatever the umask.
            wharf_storage::create_private_dir(&self.work_dir)?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        };
        let file =
            open().map_err(|e| SyncError::Setup(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(SyncError::Busy(self.name.clone(), path)),
            Err(std::fs::TryLockError::Error(e)) => Err(SyncError::Setup(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }

    /// The git clone, which `fetch_git` opened earlier in the pass.
    pub(super) async fn git_clone(&self) -> Arc<GitIndex> {
        let remote = self
            .git
            .as_ref()
            .expect("git sources come from a git remote");
        let clone = remote.clone.lock().await;
        Arc::clone(
            clone
                .as_ref()
                .expect("the pass fetched the git index first"),
        )
    }
}

/// Where each of `crates` takes its upstream file from: the files that come
/// from the git index are read here, all in one trip to the blocking pool (a
/// trip costs more than reading a small file from the pack).
pub(super) async fn read_git(
    index: Option<Arc<GitIndex>>,
    crates: Vec<(String, Source)>,
) -> Vec<(String, Origin)> {
    let files: Vec<Option<GitFile>> = crates
        .iter()
        .map(|(name, source)| match *source {
            Source::Sparse => None,
            Source::Blob(id) => Some(GitFile::Blob(id)),
            Source::Tree(tree) => CrateName::new(name).ok().map(|krate| {
                GitFile::AtPath(tree, IndexPath::for_name(&krate).as_str().to_owned())
            }),
        })
        .collect();
    let wanted: Vec<GitFile> = files.iter().flatten().cloned().collect();
    let mut read = match index {
        _ if wanted.is_empty() => Vec::new(),
        None => (0..wanted.len())
            .map(|_| Err("the pass has no git index to read from".to_owned()))
            .collect(),
        Some(index) => {
            let count = wanted.len();
            match tokio::task::spawn_blocking(move || index.read_files(&wanted)).await {
                Ok(read) => read
                    .into_iter()
                    .map(|r| r.map_err(|e| describe_git(&*e)))
                    .collect(),
                Err(e) => (0..count)
                    .map(|_| Err(format!("git task failed: {e}")))
                    .collect(),
            }
        }
    }
    .into_iter();
    crates
        .into_iter()
        .zip(files)
        .map(|((name, source), file)| {
            let origin = match (source, file) {
                (Source::Sparse, _) => Origin::Sparse,
                // Not a crate's name: no file of the index is one (and the
                // name is refused before its file is looked at).
                (_, None) => Origin::Git(Ok(None)),
                (_, Some(_)) => Origin::Git(read.next().unwrap_or(Ok(None))),
            };
            (name, origin)
        })
        .collect()
}

/// A gix error with its causes, each once (gix's own message is often just
/// the outermost step, such as "Transport handshake failed").
fn describe_git(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Runs blocking git work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("git task failed: {e}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::TestMirror;

    #[tokio::test]
    async fn one_pass_holds_the_lock_and_the_next_may_take_it_after() {
        let t = TestMirror::start(Vec::new(), "include = [\"x\"]").await;
        let held = t.mirror.lock_file().unwrap();
        match t.mirror.lock_file() {
            Err(SyncError::Busy(name, path)) => {
                assert_eq!(name, "m");
                assert_eq!(path, t.dir.path().join("m/.sync/lock"));
            }
            other => panic!("a second lock while one is held: {other:?}"),
        }
        drop(held);
        t.mirror.lock_file().expect("free again once the pass ends");
    }

    #[test]
    fn local_state_is_under_the_work_dir() {
        assert_eq!(
            work_dir(Path::new("/var/lib/w"), "m"),
            Path::new("/var/lib/w/m/.sync")
        );
    }
}
