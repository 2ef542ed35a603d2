//! The embedded default store: plain files under a root directory.
//!
//! A write goes to a uniquely named file under `{root}/.tmp/` and is renamed
//! into place. A rename within one filesystem is atomic, so a reader sees the
//! old file or the whole new one; a process killed mid-write leaves only a
//! file under `.tmp/`, which [`FsStore::open`] removes.
//!
//! Writes are not fsynced: a killed process loses nothing (the page cache
//! outlives it), and an fsync per file made a cold `cargo fetch` through
//! wharf twice as slow. What a power loss could leave behind (a renamed file
//! whose data never reached the disk) is caught by the readers: crate files
//! are checked against the index checksum when read back from storage, and
//! index files against the sha256 in their sidecar.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::{BlobKey, BlobStore, StagedBlob, StoreError};

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
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|source| io_err("create", &tmp.display().to_string(), source))?;
        let store = Self {
            root,
            tmp,
            counter: AtomicU64::new(0),
        };
        store.sweep_tmp(STALE_TMP).await;
        Ok(store)
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
    StoreError::Io {
        op,
        key: key.to_owned(),
        source,
    }
}

#[async_trait]
impl BlobStore for FsStore {
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError> {
        match tokio::fs::read(self.path_of(key)).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A file where a directory is expected also means "no such blob".
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(io_err("read", key.as_str(), e)),
        }
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        let mut stage = self.stage(key).await?;
        stage.write(&bytes).await?;
        stage.commit().await
    }

    async fn stage(&self, key: &BlobKey) -> Result<Box<dyn StagedBlob>, StoreError> {
        let temp = self.temp_path();
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| io_err("write", key.as_str(), e))?;
        Ok(Box::new(FsStage {
            file: Some(file),
            temp,
            dest: self.path_of(key),
            key: key.clone(),
            committed: false,
        }))
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

/// A write in progress to a temporary file.
struct FsStage {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    dest: PathBuf,
    key: BlobKey,
    committed: bool,
}

#[async_trait]
impl StagedBlob for FsStage {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("file is present until commit");
        file.write_all(chunk)
            .await
            .map_err(|e| io_err("write", self.key.as_str(), e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let key = self.key.as_str().to_owned();
        let mut file = self.file.take().expect("file is present until commit");
        file.flush().await.map_err(|e| io_err("write", &key, e))?;
        // Flush to disk before the rename, so that a crash of the machine
        // cannot leave the new name pointing at an empty file.
        file.sync_all()
            .await
            .map_err(|e| io_err("write", &key, e))?;
        drop(file);
        if let Some(parent) = self.dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err("write", &key, e))?;
        }
        tokio::fs::rename(&self.temp, &self.dest)
            .await
            .map_err(|e| io_err("rename", &key, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for FsStage {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover is swept on the next start.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> BlobKey {
        BlobKey::new(k).unwrap()
    }

    #[tokio::test]
    async fn put_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let k = key("r/index/se/rd/serde");
        assert_eq!(store.get(&k).await.unwrap(), None);
        store.put(&k, Bytes::from_static(b"one")).await.unwrap();
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
