//! The file operations under [`super::FsStore`]: atomic writes (a
//! temporary file renamed into place, its directories made only when the
//! rename fails for want of them), staged writes, small reads and writes on
//! the calling thread, and the private directories of working state.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use async_trait::async_trait;

use super::io_err;
use crate::{BlobKey, StagedBlob, StoreError};

/// Creates directory `path` (and its missing parents, which keep the umask's
/// mode) readable by its owner only: 0700 whatever the umask, and an existing
/// directory is tightened to 0700. For working state that is never served.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes the private directories an older wharf created readable
/// (`{root}/.tmp`, `{root}/{R}/.cache-meta`, `{root}/{R}/.sync`) 0700. Best
/// effort: a directory that cannot be changed is left as it is.
pub(super) fn tighten_private_dirs(root: &Path) {
    let Ok(registries) = std::fs::read_dir(root) else {
        return;
    };
    for registry in registries.flatten() {
        if !registry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(children) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) && is_private(&child.file_name()) {
                let _ = create_private_dir(&child.path());
            }
        }
    }
}

/// Whether a directory name is one of working state (it starts with `.`;
/// no crate name, sparse path segment or registry name does).
fn is_private(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Runs `place` (a rename or link to `dest`), first creating the missing
/// directories of `dest` when it fails for want of them: the directories
/// are there for most writes, which then cost no `stat` or `mkdir`.
pub(super) fn in_place(
    root: &Path,
    dest: &Path,
    place: impl Fn() -> std::io::Result<()>,
) -> std::io::Result<()> {
    match place() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent() {
                create_dir_under(root, parent)?;
            }
            place()
        }
        placed => placed,
    }
}

/// Creates `dir` and its missing ancestors, the deepest first (so a missing
/// crate directory is one `mkdir`); below `root`, those whose names start
/// with `.` private (see [`create_private_dir`]).
fn create_dir_under(root: &Path, dir: &Path) -> std::io::Result<()> {
    if dir == root || dir.strip_prefix(root).is_err() {
        return std::fs::create_dir_all(dir);
    }
    if dir.file_name().is_some_and(is_private) {
        // It creates its ancestors itself.
        return create_private_dir(dir);
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(root);
            create_dir_under(root, parent)?;
            match std::fs::create_dir(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                made => made,
            }
        }
        Err(e) => Err(e),
    }
}

/// Files up to this size are read and written on the calling thread, as
/// are stats: on a filesystem in the page cache that takes microseconds,
/// less than the two thread switches a trip to tokio's blocking pool costs,
/// and a mirror pass makes four such trips per crate file (a first pass of
/// 40,000 crate files took 20% longer with them, and its blocking threads
/// doubled its memory). Larger files, listings and deletions go to the
/// pool.
pub(super) const INLINE_BYTES: usize = 64 << 10;

/// Runs `work` here when `small`, else on the blocking pool.
pub(super) async fn off_thread_unless<T: Send + 'static>(
    small: bool,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    if small {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// The whole file at `path`: opened and measured here, read here when it
/// is small, else on the blocking pool.
pub(super) async fn read_file(path: PathBuf) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(&path)?;
    let len = file.metadata()?.len();
    let read = move || {
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok(bytes)
    };
    off_thread_unless(len <= INLINE_BYTES as u64, read).await
}

/// Writes `tail` (after whatever `file` already holds) to `temp`, then
/// renames it to `dest` (under `root`). On failure the temporary file is
/// removed.
pub(super) fn write_atomic(
    root: &Path,
    temp: &Path,
    dest: &Path,
    tail: &[u8],
    file: Option<std::fs::File>,
) -> std::io::Result<()> {
    let result = (|| {
        let mut file = match file {
            Some(file) => file,
            None => std::fs::File::create(temp)?,
        };
        file.write_all(tail)?;
        drop(file);
        in_place(root, dest, || std::fs::rename(temp, dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

/// Staged writes up to this size stay in memory until commit; larger ones
/// spill to the temporary file.
const SPILL_BYTES: usize = 8 << 20;

/// A write in progress: in memory, or spilled to a temporary file.
pub(super) struct FsStage {
    root: PathBuf,
    buffer: Vec<u8>,
    file: Option<std::fs::File>,
    temp: PathBuf,
    dest: PathBuf,
    key: BlobKey,
    finished: bool,
}

impl FsStage {
    /// A write of `key`, to end up at `dest` by way of `temp`.
    pub(super) fn new(root: PathBuf, temp: PathBuf, dest: PathBuf, key: BlobKey) -> Self {
        Self {
            root,
            buffer: Vec::new(),
            file: None,
            temp,
            dest,
            key,
            finished: false,
        }
    }
}

#[async_trait]
impl StagedBlob for FsStage {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() < SPILL_BYTES {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let file = self.file.take();
        let temp = self.temp.clone();
        let spilled = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut file = match file {
                Some(file) => file,
                None => std::fs::File::create(&temp)?,
            };
            file.write_all(&buffer)?;
            Ok(file)
        })
        .await
        .map_err(|e| io_err("write", self.key.as_str(), std::io::Error::other(e)))?
        .map_err(|e| io_err("write", self.key.as_str(), e))?;
        self.file = Some(spilled);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let buffer = std::mem::take(&mut self.buffer);
        let file = self.file.take();
        let (temp, dest) = (self.temp.clone(), self.dest.clone());
        let root = self.root.clone();
        self.finished = true;
        let small = file.is_none() && buffer.len() <= INLINE_BYTES;
        off_thread_unless(small, move || {
            write_atomic(&root, &temp, &dest, &buffer, file)
        })
        .await
        .map_err(|e| io_err("rename", self.key.as_str(), e))
    }
}

impl Drop for FsStage {
    fn drop(&mut self) {
        if !self.finished && self.file.is_some() {
            // Best effort: a leftover is swept on the next start.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
