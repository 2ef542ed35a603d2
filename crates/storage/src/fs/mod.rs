//! The embedded default store: plain files under a root directory.
//!
//! A write goes to a uniquely named file under `{root}/.tmp/` and is renamed
//! into place (a staged write is held in memory until it is committed or
//! grows past 8 MiB). A rename within one filesystem is atomic, so a reader sees the
//! old file or the whole new one; a process killed mid-write leaves only a
//! file under `.tmp/`, which [`FsStore::open`] removes.
//!
//! Writes are not fsynced: a killed process loses nothing (the page cache
//! outlives it), and an fsync per file made a cold `cargo fetch` through
//! wharf twice as slow. What a power loss could leave behind (a renamed file
//! whose data never reached the disk) is caught by the readers: crate files
//! are checked against the index checksum when read back from storage, and
//! index files against the sha256 in their sidecar.
//!
//! Directories whose names start with `.` (`.tmp`, and a registry's
//! `.cache-meta` and `.sync`) hold working state that is never served: they
//! are created 0700, whatever the umask, and tightened to 0700 on open if an
//! older wharf made them readable. Everything else (the served tree) is left
//! to the operator's umask, so that a web server can read a mirror's files.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BlobKey, BlobStore, StagedBlob, StoreError};

mod files;

pub use files::create_private_dir;
use files::{
    FsStage, INLINE_BYTES, in_place, off_thread_unless, read_file, tighten_private_dirs,
    write_atomic,
};

/// Temporary files older than this are leftovers of a killed process.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Blobs as files under a root directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`, and removes
    /// temporary files left by a process that was killed mid-write.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let tmp = root.join(".tmp");
        let (private, shown) = (tmp.clone(), tmp.display().to_string());
        let made_root = root.clone();
        tokio::task::spawn_blocking(move || {
            create_private_dir(&private)?;
            tighten_private_dirs(&made_root);
            Ok(())
        })
        .await
        .map_err(|e| io_err("create", &shown, std::io::Error::other(e)))?
        .map_err(|source| io_err("create", &shown, source))?;
        let store = Self {
            root,
            tmp,
            counter: AtomicU64::new(0),
        };
        store.sweep_tmp(STALE_TMP).await;
        Ok(store)
    }

    /// The temporary files of the store rooted at `root` (writes under way,
    /// or left by a killed process), without opening it (opening sweeps them).
    pub fn temporary_files(root: &Path) -> usize {
        std::fs::read_dir(root.join(".tmp")).map_or(0, |dir| dir.flatten().count())
    }

    /// Removes temporary files older than `age`, and those of writers that are
    /// no longer running (their process id is part of the file name). Files of
    /// writes still under way, by this or another live process, are left alone.
    pub async fn sweep_tmp(&self, age: Duration) {
        let Ok(mut dir) = tokio::fs::read_dir(&self.tmp).await else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|a| a >= age);
            let orphan = writer_pid(&entry.file_name().to_string_lossy())
                .is_some_and(|pid| pid != std::process::id() && !process_alive(pid));
            if old || orphan {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`.
    pub fn path_of(&self, key: &BlobKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.tmp
            .join(format!("{}-{nanos}-{n}.part", std::process::id()))
    }
}

/// The process id a temporary file name starts with (`{pid}-{nanos}-{n}.part`).
fn writer_pid(file_name: &str) -> Option<u32> {
    file_name
        .strip_suffix(".part")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Whether a process runs with this id. Where that cannot be told, it is
/// assumed to run, so only age removes its files.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

fn io_err(op: &'static str, key: &str, source: std::io::Error) -> StoreError {
    StoreError::from_io(op, key, source)
}

#[async_trait]
impl BlobStore for FsStore {
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError> {
        match read_file(self.path_of(key)).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A file where a directory is expected also means "no such blob".
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(io_err("read", key.as_str(), e)),
        }
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        let (temp, dest) = (self.temp_path(), self.path_of(key));
        let root = self.root.clone();
        let small = bytes.len() <= INLINE_BYTES;
        off_thread_unless(small, move || {
            write_atomic(&root, &temp, &dest, &bytes, None)
        })
        .await
        .map_err(|e| io_err("write", key.as_str(), e))
    }

    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        let (temp, dest) = (self.temp_path(), self.path_of(key));
        let root = self.root.clone();
        // A hard link fails when its name exists, so of two writers exactly
        // one links its complete file into place (`O_EXCL` on the final name
        // would let a reader see it half written).
        let small = bytes.len() <= INLINE_BYTES;
        let linked = off_thread_unless(small, move || {
            let result = (|| {
                std::fs::write(&temp, &bytes)?;
                in_place(&root, &dest, || std::fs::hard_link(&temp, &dest))
            })();
            let _ = std::fs::remove_file(&temp);
            result
        })
        .await;
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(io_err("write", key.as_str(), e)),
        }
    }

    async fn list(&self, prefix: &BlobKey) -> Result<Vec<BlobKey>, StoreError> {
        let (root, start) = (self.root.clone(), self.path_of(prefix));
        tokio::task::spawn_blocking(move || list_files(&root, &start))
            .await
            .map_err(|e| io_err("list", prefix.as_str(), std::io::Error::other(e)))?
            .map_err(|e| io_err("list", prefix.as_str(), e))
    }

    async fn stage(&self, key: &BlobKey) -> Result<Box<dyn StagedBlob>, StoreError> {
        Ok(Box::new(FsStage::new(
            self.root.clone(),
            self.temp_path(),
            self.path_of(key),
            key.clone(),
        )))
    }

    async fn exists(&self, key: &BlobKey) -> Result<bool, StoreError> {
        // A stat: on the calling thread (see `INLINE_BYTES`).
        match std::fs::metadata(self.path_of(key)) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(io_err("read", key.as_str(), e)),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", key.as_str(), e)),
        }
    }

    fn describe(&self) -> String {
        format!("files under {}", self.root.display())
    }
}

/// The keys of every file below `start` (relative to `root`). Names that
/// are no valid key (an editor's backup, a stray file) are passed over.
fn list_files(root: &Path, start: &Path) -> std::io::Result<Vec<BlobKey>> {
    let mut keys = Vec::new();
    let mut dirs = vec![start.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file()
                && let Some(key) = entry
                    .path()
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .and_then(|p| BlobKey::new(p).ok())
            {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> BlobKey {
        BlobKey::new(k).unwrap()
    }

    /// Issue 13.6: working state is private whatever the umask; the served
    /// tree is not touched.
    #[cfg(unix)]
    #[tokio::test]
    async fn dot_directories_are_private_and_tightened_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // What an older wharf left: readable working directories.
        for old in [".tmp", "r/.cache-meta", "r/.sync"] {
            let old = dir.path().join(old);
            std::fs::create_dir_all(&old).unwrap();
            std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let store = FsStore::open(dir.path()).await.unwrap();
        for private in [".tmp", "r/.cache-meta", "r/.sync"] {
            assert_eq!(mode(&dir.path().join(private)), 0o700, "{private}");
        }
        store
            .put(
                &key("s/.cache-meta/index/se/rd/serde.json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        store
            .put(&key("s/index/se/rd/serde"), Bytes::from_static(b"line"))
            .await
            .unwrap();
        assert_eq!(mode(&dir.path().join("s/.cache-meta")), 0o700);
        assert_ne!(
            mode(&dir.path().join("s/index")),
            0o700,
            "served: the umask's"
        );
        assert_ne!(mode(&dir.path().join("s")), 0o700, "served: the umask's");
    }

    #[tokio::test]
    async fn put_if_absent_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let k = key("r/crates/a/a-1.0.0.crate");
        store
            .put_if_absent(&k, Bytes::from_static(b"first"))
            .await
            .unwrap();
        let again = store.put_if_absent(&k, Bytes::from_static(b"second")).await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "{again:?}"
        );
        assert_eq!(store.get(&k).await.unwrap().unwrap(), "first");
        // No temporary file is left behind either way.
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn list_finds_every_key_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        for k in [
            "r/index/1/a",
            "r/index/se/rd/serde",
            "r/crates/a/a-1.0.0.crate",
            "s/index/1/b",
        ] {
            store.put(&key(k), Bytes::from_static(b"x")).await.unwrap();
        }
        let mut listed: Vec<String> = store
            .list(&key("r/index"))
            .await
            .unwrap()
            .iter()
            .map(|k| k.to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, ["r/index/1/a", "r/index/se/rd/serde"]);
        assert!(store.list(&key("nothing/here")).await.unwrap().is_empty());
    }

    #[test]
    fn a_full_or_read_only_disk_makes_the_store_unavailable() {
        for kind in [
            std::io::ErrorKind::StorageFull,
            std::io::ErrorKind::ReadOnlyFilesystem,
            std::io::ErrorKind::PermissionDenied,
        ] {
            assert!(StoreError::from_io("write", "k", kind.into()).is_unavailable());
        }
        assert!(
            !StoreError::from_io("read", "k", std::io::ErrorKind::InvalidData.into())
                .is_unavailable()
        );
    }

    #[tokio::test]
    async fn put_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let k = key("r/index/se/rd/serde");
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert!(!store.exists(&k).await.unwrap());
        store.put(&k, Bytes::from_static(b"one")).await.unwrap();
        assert!(store.exists(&k).await.unwrap());
        assert_eq!(store.get(&k).await.unwrap().unwrap(), "one");
        store.put(&k, Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap().unwrap(), "two");
        store.delete(&k).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap(), None);
        store.delete(&k).await.unwrap();
    }

    #[tokio::test]
    async fn staged_write_is_invisible_until_commit_and_dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let k = key("r/crates/a/a-1.0.0.crate");
        let mut stage = store.stage(&k).await.unwrap();
        stage.write(b"partial").await.unwrap();
        assert_eq!(store.get(&k).await.unwrap(), None);
        drop(stage);
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );

        let mut stage = store.stage(&k).await.unwrap();
        stage.write(b"whole").await.unwrap();
        stage.commit().await.unwrap();
        assert_eq!(store.get(&k).await.unwrap().unwrap(), "whole");
    }

    #[tokio::test]
    async fn a_large_staged_write_spills_to_disk_and_is_discarded_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let k = key("r/crates/big/big-1.0.0.crate");
        let chunk = vec![7u8; 1 << 20];
        let mut stage = store.stage(&k).await.unwrap();
        for _ in 0..10 {
            stage.write(&chunk).await.unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            1
        );
        drop(stage);
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );

        let mut stage = store.stage(&k).await.unwrap();
        for _ in 0..10 {
            stage.write(&chunk).await.unwrap();
        }
        stage.commit().await.unwrap();
        assert_eq!(store.get(&k).await.unwrap().unwrap().len(), 10 << 20);
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn open_sweeps_leftovers_of_dead_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        // No process has pid 4294967 on Linux (pid_max is at most 4194304).
        std::fs::write(tmp.join("4294967-1-0.part"), b"partial").unwrap();
        let live = format!("{}-1-0.part", std::process::id());
        std::fs::write(tmp.join(&live), b"in progress").unwrap();
        FsStore::open(dir.path()).await.unwrap();
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(live)]);
    }
}
