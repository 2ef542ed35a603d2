//! The index line of a published version, built the way crates.io builds it.
//!
//! The structs and their field order copy `Crate` and `Dependency` in crates.io's
//! `crates/crates_io_index/src/data.rs`; the conversion copies `index_metadata` in
//! its `src/index.rs`; the feature split copies `split_features` in
//! `crates/crates_io_index/src/features.rs`. Two things crates.io never needs are
//! added where cargo's own index format puts them: a dependency's `registry` (after
//! `kind`), because crates.io refuses dependencies from other registries and wharf
//! does not, and `pubtime` is always written.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metadata::{DependencyKind, NewCrateDependency};
use crate::request::PublishRequest;

/// A `[features]` table, sorted by feature name as crates.io writes it.
type FeaturesMap = BTreeMap<String, Vec<String>>;

/// One index line (crates.io's `crates_io_index::Crate`, same field order).
#[derive(Serialize)]
struct IndexEntry<'a> {
    name: &'a str,
    vers: String,
    deps: Vec<IndexDependency>,
    cksum: String,
    features: FeaturesMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    features2: Option<FeaturesMap>,
    yanked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rust_version: Option<&'a str>,
    pubtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
}

/// One dependency of an index line (crates.io's `crates_io_index::Dependency`, same
/// field order, with cargo's `registry` before `package`).
#[derive(Debug, Serialize, PartialEq, Eq)]
struct IndexDependency {
    name: String,
    req: String,
    features: Vec<String>,
    optional: bool,
    default_features: bool,
    target: Option<String>,
    kind: DependencyKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<String>,
}

impl Ord for IndexDependency {
    /// crates.io's order: by name, then kind (normal first, because old cargos
    /// misread `optional` when one crate appears twice with normal not first), then
    /// the rest. `registry` comes last; crates.io has no such field.
    fn cmp(&self, other: &Self) -> Ordering {
        (
            &self.name,
            self.kind,
            &self.req,
            self.optional,
            self.default_features,
            &self.target,
            &self.package,
            &self.features,
            &self.registry,
        )
            .cmp(&(
                &other.name,
                other.kind,
                &other.req,
                other.optional,
                other.default_features,
                &other.target,
                &other.package,
                &other.features,
                &other.registry,
            ))
    }
}

impl PartialOrd for IndexDependency {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl IndexDependency {
    fn new(dep: &NewCrateDependency) -> Self {
        // The index names a dependency the way `Cargo.toml` does, since that is what
        // cargo passes to rustc as `--extern NAME=...`; the real crate goes in
        // `package`.
        let (name, package) = match &dep.explicit_name_in_toml {
            Some(explicit) => (explicit.clone(), Some(dep.name.clone())),
            None => (dep.name.clone(), None),
        };
        // crates.io stores the requirement after a parse and `to_string` round trip.
        let req = semver::VersionReq::parse(&dep.version_req)
            .map_or_else(|_| dep.version_req.clone(), |req| req.to_string());
        Self {
            name,
            req,
            features: dep.features.clone(),
            optional: dep.optional,
            default_features: dep.default_features,
            target: dep.target.clone(),
            kind: dep.kind,
            // Absent means this registry. Cargo sends a crates.io dependency as
            // `https://github.com/rust-lang/crates.io-index`, which is kept as sent:
            // a consumer's source replacement of crates.io then applies to it.
            registry: dep.registry.clone().filter(|r| !r.is_empty()),
            package,
        }
    }
}

/// Splits features into those old cargos can read and those that use `dep:` or
/// `?/` (crates.io's `split_features`). A feature that enables a feature in the
/// second group moves there too, since an old cargo could not resolve it.
fn split_features(features: FeaturesMap) -> (FeaturesMap, FeaturesMap) {
    // crates.io's bound on moving features across, which a chain of features
    // longer than this would need.
    const ITERATION_LIMIT: usize = 100;

    let (mut features, mut features2): (FeaturesMap, FeaturesMap) = features
        .into_iter()
        .partition(|(_, values)| !values.iter().any(|v| has_features2_syntax(v)));
    for _ in 0..ITERATION_LIMIT {
        let (stay, moved): (FeaturesMap, FeaturesMap) = features
            .into_iter()
            .partition(|(_, values)| !values.iter().any(|v| features2.contains_key(v)));
        features = stay;
        if moved.is_empty() {
            break;
        }
        features2.extend(moved);
    }
    (features, features2)
}

fn has_features2_syntax(value: &str) -> bool {
    value.starts_with("dep:") || value.contains("?/")
}

/// `time` as crates.io writes `pubtime`: UTC, whole seconds, `2025-11-18T08:58:23Z`.
fn format_pubtime(time: SystemTime) -> String {
    // Whole seconds since the epoch, rounded down as chrono's `timestamp` does.
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(before.subsec_nanos() > 0)
        }
    };
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The index line for `request`, published at `pubtime`: one line of JSON, no
/// trailing newline, byte for byte what crates.io would write for the same version
/// (plus `registry` on dependencies from other registries, and `pubtime`).
///
/// `yanked` is `false`; the checksum is the request's own ([`PublishRequest::cksum`]),
/// computed from the bytes received, never taken from the client.
pub fn index_line(request: &PublishRequest, pubtime: SystemTime) -> String {
    let metadata = request.metadata();
    let mut deps: Vec<IndexDependency> = metadata.deps.iter().map(IndexDependency::new).collect();
    deps.sort();
    let (features, features2) = split_features(metadata.features.clone());
    let (features2, v) = if features2.is_empty() {
        (None, None)
    } else {
        (Some(features2), Some(2))
    };
    let entry = IndexEntry {
        name: request.name().as_str(),
        vers: request.version().to_string(),
        deps,
        cksum: request.cksum().to_hex(),
        features,
        features2,
        yanked: false,
        links: metadata.links.as_deref(),
        rust_version: metadata.rust_version.as_deref(),
        pubtime: format_pubtime(pubtime),
        v,
    };
    serde_json::to_string(&entry).expect("an index line of strings and maps serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn features(json: serde_json::Value) -> FeaturesMap {
        serde_json::from_value(json).unwrap()
    }

    // The cases of crates.io's `split_features` tests.
    #[test]
    fn splits_features_like_crates_io() {
        let (f1, f2) = split_features(features(serde_json::json!({
            "feature1": ["val1", "val2"], "feature2": ["dep:val3"], "feature3": ["val4", "val5?/val6"]
        })));
        assert_eq!(
            f1,
            features(serde_json::json!({"feature1": ["val1", "val2"]}))
        );
        assert_eq!(
            f2,
            features(
                serde_json::json!({"feature2": ["dep:val3"], "feature3": ["val4", "val5?/val6"]})
            )
        );

        let nested = features(serde_json::json!({
            "feature1": ["feature2"], "feature2": [], "feature3": ["feature1"]
        }));
        assert_eq!(split_features(nested.clone()), (nested, FeaturesMap::new()));

        let (f1, f2) = split_features(features(serde_json::json!({
            "feature1": ["feature2"], "feature2": ["feature3"], "feature3": ["dep:foo"]
        })));
        assert!(f1.is_empty());
        assert_eq!(f2.len(), 3);
    }

    // crates.io's `test_split_features_clap` and its snapshot.
    #[test]
    fn splits_clap_like_crates_io_snapshot() {
        let (f1, f2) = split_features(features(serde_json::json!({
            "env": ["clap_builder/env"],
            "std": ["clap_builder/std"],
            "help": ["clap_builder/help"],
            "cargo": ["clap_builder/cargo"],
            "color": ["clap_builder/color"],
            "debug": ["clap_builder/debug", "clap_derive?/debug"],
            "usage": ["clap_builder/usage"],
            "derive": ["dep:clap_derive"],
            "string": ["clap_builder/string"],
            "default": ["std", "color", "help", "usage", "error-context", "suggestions"],
            "unicode": ["clap_builder/unicode"],
            "wrap_help": ["clap_builder/wrap_help"],
            "deprecated": ["clap_builder/deprecated", "clap_derive?/deprecated"],
            "suggestions": ["clap_builder/suggestions"],
            "unstable-v5": ["clap_builder/unstable-v5", "clap_derive?/unstable-v5", "deprecated"],
            "unstable-doc": ["clap_builder/unstable-doc", "derive"],
            "unstable-ext": ["clap_builder/unstable-ext"],
            "error-context": ["clap_builder/error-context"],
            "unstable-styles": ["clap_builder/unstable-styles"]
        })));
        assert_eq!(
            f1.keys().collect::<Vec<_>>(),
            [
                "cargo",
                "color",
                "default",
                "env",
                "error-context",
                "help",
                "std",
                "string",
                "suggestions",
                "unicode",
                "unstable-ext",
                "unstable-styles",
                "usage",
                "wrap_help",
            ]
        );
        assert_eq!(
            f2.keys().collect::<Vec<_>>(),
            [
                "debug",
                "deprecated",
                "derive",
                "unstable-doc",
                "unstable-v5"
            ]
        );
        assert_eq!(
            f1["default"],
            [
                "std",
                "color",
                "help",
                "usage",
                "error-context",
                "suggestions"
            ]
        );
    }

    #[test]
    fn pubtime_is_whole_seconds_utc() {
        let at = |secs: u64, nanos: u32| format_pubtime(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        // crates.io's `test_write_crate`: 1_763_456_303_013_233_232 ns.
        assert_eq!(at(1_763_456_303, 13_233_232), "2025-11-18T08:58:23Z");
        assert_eq!(at(1_577_836_800, 0), "2020-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_868_799, 999_999_999), "2000-02-29T23:59:59Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(
            format_pubtime(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            format_pubtime(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
    }

    fn dep(json: serde_json::Value) -> IndexDependency {
        IndexDependency::new(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn renamed_dependencies_are_listed_under_their_toml_name() {
        let d = dep(serde_json::json!({
            "name": "serde", "version_req": "^1.0", "explicit_name_in_toml": "serde1"
        }));
        assert_eq!(d.name, "serde1");
        assert_eq!(d.package.as_deref(), Some("serde"));
    }

    #[test]
    fn requirements_are_normalised_like_crates_io() {
        let req = |r: &str| dep(serde_json::json!({"name": "a", "version_req": r})).req;
        assert_eq!(req("^1.0"), "^1.0");
        assert_eq!(req(">=1.0,   <2"), ">=1.0, <2");
        assert_eq!(req("1.2.3"), "^1.2.3");
        assert_eq!(req("= 1.2"), "=1.2");
    }

    #[test]
    fn empty_registry_means_this_registry() {
        let d = dep(serde_json::json!({"name": "a", "version_req": "1", "registry": ""}));
        assert_eq!(d.registry, None);
    }

    #[test]
    fn dependencies_sort_by_name_then_normal_build_dev() {
        let mut deps = [
            dep(serde_json::json!({"name": "b", "version_req": "1", "kind": "dev"})),
            dep(serde_json::json!({"name": "b", "version_req": "1", "kind": "build"})),
            dep(serde_json::json!({"name": "b", "version_req": "2", "kind": "normal"})),
            dep(
                serde_json::json!({"name": "b", "version_req": "1", "kind": "normal", "target": "cfg(unix)"}),
            ),
            dep(serde_json::json!({"name": "b", "version_req": "1", "kind": "normal"})),
            dep(serde_json::json!({"name": "a", "version_req": "9", "kind": "dev"})),
        ];
        deps.sort();
        let order: Vec<_> = deps
            .iter()
            .map(|d| format!("{} {:?} {} {:?}", d.name, d.kind, d.req, d.target))
            .collect();
        assert_eq!(
            order,
            [
                "a Dev ^9 None",
                "b Normal ^1 None",
                "b Normal ^1 Some(\"cfg(unix)\")",
                "b Normal ^2 None",
                "b Build ^1 None",
                "b Dev ^1 None",
            ]
        );
    }
}
