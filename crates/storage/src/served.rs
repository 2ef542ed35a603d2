//! How a served object describes itself when something other than wharf
//! serves it (a bucket's own endpoint, its static website, a CDN in front):
//! its `Content-Type` and `Cache-Control`, derived from where its key is in
//! a registry's tree, so that no caller has to pass them.
//!
//! Crate files never change, so they are cached for a year; everything else
//! that is served (index files, `config.json`, `status.json`, the manifest
//! and its signature) changes with each sync pass and is kept fresh with a
//! short, revalidated lifetime (configurable). Working state (`.sync`,
//! `.cache-meta`, probes) is not served and gets nothing.

use crate::BlobKey;

/// `Cache-Control` of crate files: they never change once stored.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The default `Cache-Control` of what a sync pass rewrites: a CDN may keep
/// it a minute, then must ask again (a conditional request, cheap).
pub const DEFAULT_FRESH_FOR: &str = "public, max-age=60, must-revalidate";

/// What an object says about itself to whoever serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its `Cache-Control`.
    pub cache_control: String,
}

/// The headers of the object under `key`, or `None` for what is never
/// served (a registry's dot directories, probes). `changing` is the
/// `Cache-Control` of files a pass rewrites ([`DEFAULT_FRESH_FOR`]).
pub fn served_as(key: &BlobKey, changing: &str) -> Option<Served> {
    let mut parts = key.as_str().splitn(3, '/');
    let registry = parts.next()?;
    let second = parts.next()?;
    let rest = parts.next();
    if registry.starts_with('.') {
        return None;
    }
    let (content_type, cache_control) = match (second, rest) {
        ("index", Some("config.json")) => ("application/json", changing),
        ("index", Some(_)) => ("text/plain; charset=utf-8", changing),
        ("crates", Some(file)) if file.ends_with(".crate") => ("application/gzip", IMMUTABLE),
        ("status.json" | "manifest.json", None) => ("application/json", changing),
        ("manifest.json.sig", None) => ("text/plain; charset=utf-8", changing),
        _ => return None,
    };
    Some(Served {
        content_type,
        cache_control: cache_control.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Layout;

    fn served(key: Result<BlobKey, crate::KeyError>) -> Option<(&'static str, String)> {
        served_as(&key.unwrap(), DEFAULT_FRESH_FOR).map(|s| (s.content_type, s.cache_control))
    }

    #[test]
    fn every_served_file_of_the_tree_says_what_it_is() {
        let r = Layout::new("m");
        let fresh = || DEFAULT_FRESH_FOR.to_owned();
        assert_eq!(
            served(r.index_file("se/rd/serde")),
            Some(("text/plain; charset=utf-8", fresh()))
        );
        assert_eq!(
            served(r.index_file("3/a/abc")),
            Some(("text/plain; charset=utf-8", fresh()))
        );
        assert_eq!(served(r.config_json()), Some(("application/json", fresh())));
        assert_eq!(
            served(r.crate_file("serde", "1.0.0")),
            Some(("application/gzip", IMMUTABLE.to_owned()))
        );
        assert_eq!(served(r.status_json()), Some(("application/json", fresh())));
        assert_eq!(
            served(r.top_file("manifest.json")),
            Some(("application/json", fresh()))
        );
        assert_eq!(
            served(r.top_file("manifest.json.sig")),
            Some(("text/plain; charset=utf-8", fresh()))
        );
    }

    #[test]
    fn working_state_is_not_described() {
        let r = Layout::new("m");
        assert_eq!(served(r.cache_meta("se/rd/serde")), None);
        assert_eq!(served(r.sync_upstream("se/rd/serde")), None);
        assert_eq!(served(r.sync_state()), None);
        assert_eq!(served(BlobKey::new(".probe/start-1-2")), None);
        assert_eq!(served(r.top_file("other.json")), None);
    }

    #[test]
    fn the_configured_freshness_is_used() {
        let key = Layout::new("m").index_file("se/rd/serde").unwrap();
        assert_eq!(
            served_as(&key, "public, max-age=5").unwrap().cache_control,
            "public, max-age=5"
        );
    }
}
