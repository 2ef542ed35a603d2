//! A mirror over a fake upstream with its tree in a temporary directory, for
//! the unit tests of a pass's parts.

use std::sync::Arc;

use tempfile::TempDir;
use wharf_config::MirrorRegistry;
use wharf_storage::{BlobKey, BlobStore, FsStore};
use wharf_test_support::{fixture::FixtureCrate, upstream::FakeUpstream};

use super::Mirror;

/// A mirror named `m`, its store and its upstream.
pub(super) struct TestMirror {
    pub mirror: Mirror,
    pub store: Arc<FsStore>,
    pub upstream: FakeUpstream,
    pub dir: TempDir,
}

impl TestMirror {
    /// A mirror of `crates` configured by `settings` (lines of a mirror
    /// registry's TOML, such as `include = ["a"]`).
    pub async fn start(crates: Vec<FixtureCrate>, settings: &str) -> Self {
        let upstream = FakeUpstream::start(crates).await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::over(upstream, dir, settings).await
    }

    async fn over(upstream: FakeUpstream, dir: TempDir, settings: &str) -> Self {
        let config: MirrorRegistry = toml::from_str(&format!(
            "upstreams = [\"{}\"]\nupstream_timeout = \"2s\"\nmax_requests_per_sec = 1000\n{settings}",
            upstream.index_url()
        ))
        .expect("test settings parse");
        let store = Arc::new(
            FsStore::open(dir.path().join("data"))
                .await
                .expect("a store"),
        );
        let mirror = Mirror::from_config(
            "m",
            &config,
            store.clone(),
            "http://127.0.0.1:1",
            &super::work_dir(dir.path(), "m"),
        )
        .expect("a mirror");
        Self {
            mirror,
            store,
            upstream,
            dir,
        }
    }

    /// The text stored under `key` (`m/index/3/a/abc`), if any.
    pub async fn read(&self, key: &str) -> Option<String> {
        let key = BlobKey::new(key).expect("a valid key");
        self.store
            .get(&key)
            .await
            .expect("the store reads")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}
