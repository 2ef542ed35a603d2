//! Which crates and versions a mirror holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use wharf_config::{MirrorRegistry, glob, is_glob};

use crate::sync::SyncError;

/// The sources a `Cargo.lock` names for crates.io packages.
const CRATES_IO_SOURCES: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

/// What a mirror holds: roots, their dependencies, minus exclusions.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Crates to start from (lowercase).
    pub roots: BTreeSet<String>,
    /// Versions that are always kept, by lowercase crate name.
    pub pinned: BTreeMap<String, BTreeSet<String>>,
    /// Globs a dependency must match to be followed (none: every dependency).
    pub include_globs: Vec<String>,
    /// Globs never mirrored.
    pub exclude_globs: Vec<String>,
    /// Keep only the newest N versions (plus pinned ones).
    pub keep_versions: Option<usize>,
    /// Crates that come only from lockfiles: exactly their locked versions,
    /// and no dependencies followed (the lockfile already holds them all).
    pub exact: BTreeSet<String>,
}

impl Selection {
    /// Reads the selection of a mirror registry: its `include`, `list_file`
    /// and `lockfiles`.
    pub fn from_config(config: &MirrorRegistry) -> Result<Self, SyncError> {
        let mut selection = Self {
            keep_versions: config.keep_versions,
            exclude_globs: config.exclude.clone(),
            ..Self::default()
        };
        for pattern in &config.include {
            if is_glob(pattern) {
                selection.include_globs.push(pattern.clone());
            } else {
                selection.roots.insert(pattern.to_ascii_lowercase());
            }
        }
        if let Some(path) = &config.list_file {
            let text = read(path)?;
            for line in text.lines() {
                let name = line.split('#').next().unwrap_or("").trim();
                if !name.is_empty() {
                    selection.roots.insert(name.to_ascii_lowercase());
                }
            }
        }
        let named = selection.roots.clone();
        for path in &config.lockfiles {
            selection.add_lockfile(path, &read(path)?)?;
        }
        selection.exact = selection.roots.difference(&named).cloned().collect();
        Ok(selection)
    }

    /// Adds the crates.io packages of a `Cargo.lock` as roots with pinned versions.
    pub fn add_lockfile(&mut self, path: &Path, text: &str) -> Result<(), SyncError> {
        let packages = locked_packages(text).map_err(|message| SyncError::Selection {
            path: path.to_owned(),
            message,
        })?;
        for package in packages {
            if !CRATES_IO_SOURCES.contains(&package.source.as_str()) {
                continue;
            }
            let name = package.name.to_ascii_lowercase();
            self.roots.insert(name.clone());
            self.pinned.entry(name).or_default().insert(package.version);
        }
        Ok(())
    }

    /// Whether a crate found as a dependency is mirrored.
    pub fn follows(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if self.exclude_globs.iter().any(|g| glob::matches(g, &name)) {
            return false;
        }
        self.roots.contains(&name)
            || self.include_globs.is_empty()
            || self.include_globs.iter().any(|g| glob::matches(g, &name))
    }

    /// Whether a root is mirrored (exclusions win over roots).
    pub fn keeps_root(&self, name: &str) -> bool {
        !self.exclude_globs.iter().any(|g| glob::matches(g, name))
    }

    /// Whether a crate found in a full index listing is mirrored, when the
    /// selection has no roots: it matches an `include` glob (or there are
    /// none) and no `exclude` glob.
    pub fn keeps_listed(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        !self.exclude_globs.iter().any(|g| glob::matches(g, &name))
            && (self.include_globs.is_empty()
                || self.include_globs.iter().any(|g| glob::matches(g, &name)))
    }

    /// A short text that changes whenever the selection does, so a pass can
    /// tell that crates it skipped as unchanged must be looked at again.
    pub fn fingerprint(&self) -> String {
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.roots,
            self.pinned,
            self.include_globs,
            self.exclude_globs,
            self.keep_versions,
            self.exact
        );
        // FNV-1a: stable across builds, unlike the standard library's hasher.
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// Whether a crate is mirrored exactly as lockfiles pin it.
    pub fn is_exact(&self, name: &str) -> bool {
        self.exact.contains(&name.to_ascii_lowercase())
    }

    /// Picks the versions to keep among `versions` (in index order) of a crate.
    /// Returns their positions in index order.
    pub fn pick(&self, name: &str, versions: &[&str]) -> Vec<usize> {
        let pinned = self.pinned.get(&name.to_ascii_lowercase());
        if self.is_exact(name) {
            return (0..versions.len())
                .filter(|i| pinned.is_some_and(|p| p.contains(versions[*i])))
                .collect();
        }
        let Some(keep) = self.keep_versions else {
            return (0..versions.len()).collect();
        };
        let mut order: Vec<usize> = (0..versions.len()).collect();
        // Newest first by semver; versions that are not semver sort last.
        order.sort_by(|a, b| {
            let va = semver::Version::parse(versions[*a]).ok();
            let vb = semver::Version::parse(versions[*b]).ok();
            vb.cmp(&va)
        });
        let mut chosen: BTreeSet<usize> = order.into_iter().take(keep).collect();
        if let Some(pinned) = pinned {
            chosen.extend((0..versions.len()).filter(|i| pinned.contains(versions[*i])));
        }
        chosen.into_iter().collect()
    }
}

/// One package of a `Cargo.lock` that comes from a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPackage {
    /// Its name, as the lockfile spells it.
    pub name: String,
    /// Its locked version.
    pub version: String,
    /// Its source (`registry+https://…`, `sparse+https://…`).
    pub source: String,
    /// Its checksum, when the lockfile records one.
    pub checksum: Option<String>,
}

/// The registry packages of a `Cargo.lock` (path and git packages are left
/// out); an error says why the text is not a lockfile.
pub fn locked_packages(text: &str) -> Result<Vec<LockedPackage>, String> {
    let lock: toml::Value =
        toml::from_str(text).map_err(|e| format!("not a Cargo.lock: {}", e.to_string().trim()))?;
    let field = |package: &toml::Value, key: &str| {
        package.get(key).and_then(|v| v.as_str()).map(str::to_owned)
    };
    Ok(lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|package| {
            let source = field(package, "source")?;
            if !source.starts_with("registry+") && !source.starts_with("sparse+") {
                return None;
            }
            Some(LockedPackage {
                name: field(package, "name")?,
                version: field(package, "version")?,
                source,
                checksum: field(package, "checksum"),
            })
        })
        .collect())
}

fn read(path: &Path) -> Result<String, SyncError> {
    std::fs::read_to_string(path).map_err(|e| SyncError::Selection {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfile_roots_and_pins() {
        let mut s = Selection::default();
        s.add_lockfile(
            Path::new("Cargo.lock"),
            r#"
version = 4
[[package]]
name = "consumer"
version = "0.1.0"
[[package]]
name = "Serde"
version = "1.0.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"
[[package]]
name = "private"
version = "1.0.0"
source = "sparse+https://other.example/index/"
"#,
        )
        .unwrap();
        assert_eq!(s.roots.iter().collect::<Vec<_>>(), ["serde"]);
        assert!(s.pinned["serde"].contains("1.0.1"));
    }

    #[test]
    fn newest_n_plus_pinned() {
        let mut s = Selection {
            keep_versions: Some(2),
            ..Selection::default()
        };
        s.pinned
            .entry("a".into())
            .or_default()
            .insert("0.1.0".into());
        let versions = ["0.1.0", "1.0.0", "0.9.0", "1.1.0-rc.1", "1.0.1"];
        // Semver order: 1.1.0-rc.1 and 1.0.1 are the newest two.
        assert_eq!(s.pick("a", &versions), [0, 3, 4]);
        s.keep_versions = None;
        assert_eq!(s.pick("a", &versions).len(), 5);
    }

    #[test]
    fn lockfile_only_crates_are_exact() {
        let mut s = Selection::default();
        s.pinned
            .entry("a".into())
            .or_default()
            .insert("1.0.0".into());
        s.exact.insert("a".into());
        assert_eq!(s.pick("a", &["0.9.0", "1.0.0", "1.1.0"]), [1]);
    }

    #[test]
    fn exclusions_and_include_globs() {
        let s = Selection {
            roots: ["app".to_owned()].into(),
            include_globs: vec!["fx-*".into()],
            exclude_globs: vec!["*-sys".into()],
            ..Selection::default()
        };
        assert!(s.follows("fx-1"));
        assert!(!s.follows("other"));
        assert!(!s.follows("fx-sys"));
        assert!(s.follows("app"));
    }

    #[test]
    fn listed_crates_and_fingerprints() {
        let mut s = Selection {
            include_globs: vec!["fx-*".into()],
            exclude_globs: vec!["*-sys".into()],
            ..Selection::default()
        };
        assert!(s.keeps_listed("fx-1"));
        assert!(!s.keeps_listed("fx-sys"));
        assert!(!s.keeps_listed("serde"));
        let before = s.fingerprint();
        assert_eq!(before, s.clone().fingerprint());
        s.keep_versions = Some(3);
        assert_ne!(before, s.fingerprint());
        assert!(Selection::default().keeps_listed("anything"));
    }
}
