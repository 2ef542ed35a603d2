//! The tree of one registry, as keys: the one place a key is spelled.
//!
//! ```text
//! {R}/index/config.json                       {R}/status.json
//! {R}/index/se/rd/serde                       {R}/manifest.json, manifest.json.sig
//! {R}/crates/serde/serde-1.0.200.crate        {R}/.cache-meta/index/se/rd/serde.json
//! {R}/.sync/upstream/se/rd/serde (+ .validators.json)   {R}/.sync/state.json
//! ```
//!
//! Everything outside the dot directories is served as is, by wharf or by
//! any static file server; `.cache-meta` and `.sync` are working state.

use crate::{BlobKey, KeyError};

/// The keys of registry `R`'s files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    registry: String,
}

impl Layout {
    /// The layout of registry `registry` (a validated registry name).
    pub fn new(registry: impl Into<String>) -> Self {
        Self {
            registry: registry.into(),
        }
    }

    /// The registry's name.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn key(&self, rest: &str) -> Result<BlobKey, KeyError> {
        BlobKey::new(format!("{}/{rest}", self.registry))
    }

    /// The root of the registry's tree (`{R}`), to list it.
    pub fn root(&self) -> Result<BlobKey, KeyError> {
        BlobKey::new(self.registry.clone())
    }

    /// The directory of its index files (`{R}/index`), to list them.
    pub fn index_dir(&self) -> Result<BlobKey, KeyError> {
        self.key("index")
    }

    /// An index file at sparse path `path` (`se/rd/serde`).
    pub fn index_file(&self, path: &str) -> Result<BlobKey, KeyError> {
        self.key(&format!("index/{path}"))
    }

    /// The `config.json` of a tree served without wharf.
    pub fn config_json(&self) -> Result<BlobKey, KeyError> {
        self.key("index/config.json")
    }

    /// The crate file of `name` `vers`.
    pub fn crate_file(&self, name: &str, vers: &str) -> Result<BlobKey, KeyError> {
        self.key(&format!("crates/{name}/{name}-{vers}.crate"))
    }

    /// A cache's sidecar of an index file: upstream validators, times, sha256.
    pub fn cache_meta(&self, path: &str) -> Result<BlobKey, KeyError> {
        self.key(&format!(".cache-meta/index/{path}.json"))
    }

    /// A mirror's copy of the upstream's index file as last published.
    pub fn sync_upstream(&self, path: &str) -> Result<BlobKey, KeyError> {
        self.key(&format!(".sync/upstream/{path}"))
    }

    /// The validators of [`Layout::sync_upstream`]'s copy.
    pub fn sync_upstream_validators(&self, path: &str) -> Result<BlobKey, KeyError> {
        self.key(&format!(".sync/upstream/{path}.validators.json"))
    }

    /// A mirror's cursor and totals.
    pub fn sync_state(&self) -> Result<BlobKey, KeyError> {
        self.key(".sync/state.json")
    }

    /// A file at the root of the tree: `status.json`, `manifest.json`,
    /// `manifest.json.sig`.
    pub fn top_file(&self, file: &str) -> Result<BlobKey, KeyError> {
        self.key(file)
    }

    /// A mirror's `status.json`.
    pub fn status_json(&self) -> Result<BlobKey, KeyError> {
        self.top_file("status.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_the_readme_documents() {
        let r = Layout::new("crates-io");
        let keys = [
            r.index_file("se/rd/serde"),
            r.config_json(),
            r.crate_file("serde", "1.0.200+meta"),
            r.cache_meta("se/rd/serde"),
            r.sync_upstream("se/rd/serde"),
            r.sync_upstream_validators("se/rd/serde"),
            r.sync_state(),
            r.status_json(),
            r.top_file("manifest.json.sig"),
        ];
        let keys: Vec<String> = keys.into_iter().map(|k| k.unwrap().to_string()).collect();
        assert_eq!(
            keys,
            [
                "crates-io/index/se/rd/serde",
                "crates-io/index/config.json",
                "crates-io/crates/serde/serde-1.0.200+meta.crate",
                "crates-io/.cache-meta/index/se/rd/serde.json",
                "crates-io/.sync/upstream/se/rd/serde",
                "crates-io/.sync/upstream/se/rd/serde.validators.json",
                "crates-io/.sync/state.json",
                "crates-io/status.json",
                "crates-io/manifest.json.sig",
            ]
        );
        assert!(r.crate_file("../x", "1").is_err());
    }
}
