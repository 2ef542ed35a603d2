//! The JSON metadata cargo sends ahead of the crate file.
//!
//! These mirror cargo's `crates_io::NewCrate` and `NewCrateDependency` field for field.
//! Unknown fields are ignored, so a newer cargo that sends more still publishes. Only
//! `name` and `vers` (and a dependency's `name` and `version_req`) are required: older
//! cargos omit fields added since, and the defaults are what cargo means by absence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The metadata of the version being published, as cargo sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCrate {
    /// The crate name, spelled as in `Cargo.toml`.
    pub name: String,
    /// The version.
    pub vers: String,
    /// Every dependency, of every kind and target.
    #[serde(default)]
    pub deps: Vec<NewCrateDependency>,
    /// The `[features]` table, feature name to the features and dependencies it enables.
    #[serde(default)]
    pub features: BTreeMap<String, Vec<String>>,
    /// `package.authors`.
    #[serde(default)]
    pub authors: Vec<String>,
    /// `package.description`.
    #[serde(default)]
    pub description: Option<String>,
    /// `package.documentation`.
    #[serde(default)]
    pub documentation: Option<String>,
    /// `package.homepage`.
    #[serde(default)]
    pub homepage: Option<String>,
    /// The contents of the readme file.
    #[serde(default)]
    pub readme: Option<String>,
    /// `package.readme`: the readme's path in the package.
    #[serde(default)]
    pub readme_file: Option<String>,
    /// `package.keywords`.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// `package.categories`.
    #[serde(default)]
    pub categories: Vec<String>,
    /// `package.license`.
    #[serde(default)]
    pub license: Option<String>,
    /// `package.license-file`.
    #[serde(default)]
    pub license_file: Option<String>,
    /// `package.repository`.
    #[serde(default)]
    pub repository: Option<String>,
    /// `[badges]`.
    #[serde(default)]
    pub badges: BTreeMap<String, BTreeMap<String, String>>,
    /// `package.links`.
    #[serde(default)]
    pub links: Option<String>,
    /// `package.rust-version`.
    #[serde(default)]
    pub rust_version: Option<String>,
}

/// One dependency, as cargo sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCrateDependency {
    /// Whether the dependency is optional.
    #[serde(default)]
    pub optional: bool,
    /// Whether the dependency's default features are enabled.
    #[serde(default = "default_true")]
    pub default_features: bool,
    /// The crate's real name (its `package`, when renamed).
    pub name: String,
    /// Features enabled on the dependency.
    #[serde(default)]
    pub features: Vec<String>,
    /// The version requirement, such as `^1.2`.
    pub version_req: String,
    /// The platform (`cfg(windows)` or a target triple), when target-specific.
    #[serde(default)]
    pub target: Option<String>,
    /// Normal, build or dev.
    #[serde(default)]
    pub kind: DependencyKind,
    /// The index URL of the registry the dependency comes from; absent when it is the
    /// registry being published to. A crates.io dependency arrives as
    /// `https://github.com/rust-lang/crates.io-index`.
    #[serde(default)]
    pub registry: Option<String>,
    /// The name the dependency is given in `Cargo.toml`, when it is renamed there.
    #[serde(default)]
    pub explicit_name_in_toml: Option<String>,
    /// Artifact kinds, for an (unstable) artifact dependency.
    #[serde(default)]
    pub artifact: Option<Vec<String>>,
    /// The target of an (unstable) artifact dependency.
    #[serde(default)]
    pub bindep_target: Option<String>,
    /// Whether an (unstable) artifact dependency is also used as a library.
    #[serde(default)]
    pub lib: bool,
}

fn default_true() -> bool {
    true
}

/// The kind of a dependency. The order (normal, build, dev) is the order crates.io
/// sorts an index line's dependencies in when their names are equal.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// `[dependencies]`.
    #[default]
    Normal,
    /// `[build-dependencies]`.
    Build,
    /// `[dev-dependencies]`.
    Dev,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_cargo_sends_and_ignores_unknown_fields() {
        let json = r#"{
            "name": "foo", "vers": "1.0.0",
            "deps": [{
                "optional": false, "default_features": true, "name": "bar",
                "features": ["x"], "version_req": "^1", "target": null,
                "kind": "dev", "registry": null, "explicit_name_in_toml": null,
                "some_future_field": 1
            }],
            "features": {"default": ["x"]}, "authors": ["a"], "description": "d",
            "documentation": null, "homepage": null, "readme": null, "readme_file": null,
            "keywords": [], "categories": [], "license": "MIT", "license_file": null,
            "repository": null, "badges": {}, "links": null, "rust_version": "1.70",
            "another_future_field": {"nested": true}
        }"#;
        let krate: NewCrate = serde_json::from_str(json).unwrap();
        assert_eq!(krate.name, "foo");
        assert_eq!(krate.deps[0].kind, DependencyKind::Dev);
        assert_eq!(krate.rust_version.as_deref(), Some("1.70"));
    }

    #[test]
    fn absent_fields_take_cargos_defaults() {
        let krate: NewCrate = serde_json::from_str(
            r#"{"name":"foo","vers":"1.0.0","deps":[{"name":"bar","version_req":"^1"}]}"#,
        )
        .unwrap();
        let dep = &krate.deps[0];
        assert!(dep.default_features);
        assert!(!dep.optional);
        assert_eq!(dep.kind, DependencyKind::Normal);
        assert!(krate.features.is_empty());
    }

    #[test]
    fn rejects_unknown_kind_and_missing_name() {
        assert!(
            serde_json::from_str::<NewCrate>(
                r#"{"name":"foo","vers":"1.0.0","deps":[{"name":"b","version_req":"1","kind":"weird"}]}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<NewCrate>(r#"{"vers":"1.0.0"}"#).is_err());
    }
}
