//! crates.io's rules for what a published version may contain.
//!
//! Each function here is a copy of a check in crates.io's source, named after it, so
//! that a crate wharf accepts would also pass crates.io's checks and the other way
//! round. The source is cited on each item; the crates.io paths are from
//! `rust-lang/crates.io` as of 2026.

use crate::error::{FeatureProblem, NameProblem, PublishError};
use crate::metadata::NewCrate;
use crate::request::Limits;

/// The longest crate or dependency name, in characters (crates.io's `MAX_NAME_LENGTH`).
pub const MAX_NAME_LEN: usize = 64;

/// The longest version, in characters, once normalised.
///
/// crates.io allows 150 (`MAX_VERSION_LENGTH`); wharf stores versions as
/// [`wharf_index::Version`], which allows 128, and a version wharf could publish
/// but not serve would be worse than one refused.
pub const MAX_VERSION_LEN: usize = 128;

/// The most keywords a crate may have (`controllers/krate/publish.rs`).
pub const MAX_KEYWORDS: usize = 5;

/// The longest keyword, in bytes (`controllers/krate/publish.rs`).
pub const MAX_KEYWORD_LEN: usize = 20;

/// The most categories a crate may have (`controllers/krate/publish.rs`).
pub const MAX_CATEGORIES: usize = 5;

/// The longest description, in bytes (`MAX_DESCRIPTION_LENGTH` in
/// `controllers/krate/publish.rs`).
pub const MAX_DESCRIPTION_LEN: usize = 1000;

/// Names no crate may take, compared after folding case and `-` into `_`.
///
/// crates.io keeps these in its `reserved_crate_names` table, filled by the
/// migrations `20170305095748_create_reserved_crate_names` (parts of Rust itself),
/// `20170430202433_reserve_windows_crate_names` and `2021-02-10-141019_reserve_com0_lpt0`
/// (Windows device names, which cannot be file names there).
pub const RESERVED_NAMES: &[&str] = &[
    "alloc",
    "arena",
    "ast",
    "builtins",
    "collections",
    "compiler-builtins",
    "compiler-rt",
    "compiletest",
    "core",
    "coretest",
    "debug",
    "driver",
    "flate",
    "fmt_macros",
    "grammar",
    "graphviz",
    "macro",
    "macros",
    "proc_macro",
    "rbml",
    "rust-installer",
    "rustbook",
    "rustc",
    "rustc_back",
    "rustc_borrowck",
    "rustc_driver",
    "rustc_llvm",
    "rustc_resolve",
    "rustc_trans",
    "rustc_typeck",
    "rustdoc",
    "rustllvm",
    "rustuv",
    "serialize",
    "std",
    "syntax",
    "test",
    "unicode",
    "nul",
    "con",
    "prn",
    "aux",
    "com0",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "lpt0",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
];

/// The form crates.io compares names in (`canon_crate_name`: lowercase, `-` as `_`).
fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Whether `name` is one of [`RESERVED_NAMES`] once case and `-`/`_` are folded.
pub fn is_reserved_name(name: &str) -> bool {
    let name = canonical(name);
    RESERVED_NAMES
        .iter()
        .any(|reserved| canonical(reserved) == name)
}

/// A crate name, or the real name of a dependency: at most [`MAX_NAME_LEN`]
/// characters, an ASCII letter first, then ASCII letters, digits, `-` and `_`
/// (`validate_crate_name` in `crates/crates_io_validation`).
pub fn validate_crate_name(name: &str) -> Result<(), NameProblem> {
    validate_ident(name, false)
}

/// The name a dependency is renamed to in `Cargo.toml`: as a crate name, but it may
/// also start with `_` (`validate_dependency_name` in `crates/crates_io_validation`).
pub fn validate_dependency_name(name: &str) -> Result<(), NameProblem> {
    validate_ident(name, true)
}

fn validate_ident(name: &str, underscore_first: bool) -> Result<(), NameProblem> {
    if name.chars().count() > MAX_NAME_LEN {
        return Err(NameProblem::TooLong);
    }
    let mut chars = name.chars();
    let first = chars.next().ok_or(NameProblem::Empty)?;
    if first.is_ascii_digit() {
        return Err(NameProblem::StartsWithDigit);
    }
    if !(first.is_ascii_alphabetic() || (underscore_first && first == '_')) {
        return Err(NameProblem::BadStart(first));
    }
    match chars.find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        Some(c) => Err(NameProblem::BadChar(c)),
        None => Ok(()),
    }
}

/// A feature's own name (the `THIS` in `THIS`, `dep/THIS`): a Unicode XID start
/// character, `_` or a digit first, then XID continue characters, `+`, `-` or `.`
/// (`validate_feature_name` in `crates/crates_io_validation`).
pub fn validate_feature_name(name: &str) -> Result<(), FeatureProblem> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(FeatureProblem::Empty)?;
    if !(unicode_ident::is_xid_start(first) || first == '_' || first.is_ascii_digit()) {
        return Err(FeatureProblem::BadStart(first));
    }
    match chars.find(|&c| !(unicode_ident::is_xid_continue(c) || matches!(c, '+' | '-' | '.'))) {
        Some(c) => Err(FeatureProblem::BadChar(c)),
        None => Ok(()),
    }
}

/// A whole feature string, as a feature's value or in a dependency's `features`:
/// `feat`, `dep/feat`, `dep?/feat` or `dep:dep` (`validate_feature` in
/// `crates/crates_io_validation`, including its quirk that anything before `dep:`
/// is ignored).
pub fn validate_feature(feature: &str) -> Result<(), FeatureProblem> {
    let dep_name = |name: &str| {
        validate_dependency_name(name).map_err(|problem| FeatureProblem::DependencyName {
            name: name.to_owned(),
            problem,
        })
    };
    if let Some((dep, dep_feature)) = feature.split_once('/') {
        dep_name(dep.strip_suffix('?').unwrap_or(dep))?;
        validate_feature_name(dep_feature)
    } else if let Some((_, dep)) = feature.split_once("dep:") {
        dep_name(dep)
    } else {
        validate_feature_name(feature)
    }
}

/// A keyword: an ASCII letter or digit, then ASCII letters, digits, `_`, `-` or `+`,
/// at most [`MAX_KEYWORD_LEN`] bytes (`Keyword::valid_name` in
/// `crates/crates_io_database/src/models/keyword.rs`, and the length check in
/// `controllers/krate/publish.rs`).
pub fn is_valid_keyword(keyword: &str) -> bool {
    let mut chars = keyword.chars();
    keyword.len() <= MAX_KEYWORD_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
}

/// `rust-version`: a version requirement made only of digits and dots, such as
/// `1.70` (`validate_rust_version` in `controllers/krate/publish.rs`).
pub fn is_valid_rust_version(value: &str) -> bool {
    semver::VersionReq::parse(value).is_ok()
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Checks the crate name: crates.io's rules, then the reserved list.
pub(crate) fn check_crate_name(name: &str) -> Result<(), PublishError> {
    validate_crate_name(name).map_err(|problem| PublishError::InvalidCrateName {
        name: name.to_owned(),
        problem,
    })?;
    if is_reserved_name(name) {
        return Err(PublishError::ReservedCrateName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Parses the version and normalises it the way crates.io does (a parse and
/// `to_string` round trip), which is the spelling the index line and the crate file
/// name use.
pub(crate) fn check_version(vers: &str) -> Result<semver::Version, PublishError> {
    let version = semver::Version::parse(vers).map_err(|_| PublishError::InvalidVersion {
        vers: vers.to_owned(),
    })?;
    if version.to_string().chars().count() > MAX_VERSION_LEN {
        return Err(PublishError::VersionTooLong);
    }
    Ok(version)
}

/// Every metadata check crates.io makes, in its order, except the name and version
/// ([`check_crate_name`], [`check_version`]) and those that need a database
/// (existing crates, owners, category slugs).
pub(crate) fn check_metadata(krate: &NewCrate, limits: &Limits) -> Result<(), PublishError> {
    if let Some(description) = &krate.description
        && description.len() > MAX_DESCRIPTION_LEN
    {
        return Err(PublishError::DescriptionTooLong {
            len: description.len(),
        });
    }
    for (field, url) in [
        ("homepage", &krate.homepage),
        ("documentation", &krate.documentation),
        ("repository", &krate.repository),
    ] {
        // crates.io also parses the URL; the prefix is what keeps a `javascript:` or
        // relative link off a web page, and these fields never reach the index.
        if let Some(url) = url
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return Err(PublishError::InvalidUrl {
                field,
                url: url.clone(),
            });
        }
    }
    if let Some(value) = &krate.rust_version
        && !is_valid_rust_version(value)
    {
        return Err(PublishError::InvalidRustVersion {
            value: value.clone(),
        });
    }
    if krate.keywords.len() > MAX_KEYWORDS {
        return Err(PublishError::TooManyKeywords {
            count: krate.keywords.len(),
        });
    }
    if let Some(keyword) = krate.keywords.iter().find(|k| !is_valid_keyword(k)) {
        return Err(PublishError::InvalidKeyword {
            keyword: keyword.clone(),
        });
    }
    if krate.categories.len() > MAX_CATEGORIES {
        return Err(PublishError::TooManyCategories {
            count: krate.categories.len(),
        });
    }
    check_features(krate, limits)?;
    check_dependencies(krate, limits)
}

fn feature_error(feature: &str) -> impl FnOnce(FeatureProblem) -> PublishError + '_ {
    move |problem| PublishError::InvalidFeature {
        feature: feature.to_owned(),
        problem,
    }
}

fn check_features(krate: &NewCrate, limits: &Limits) -> Result<(), PublishError> {
    if krate.features.len() > limits.max_features {
        return Err(PublishError::TooManyFeatures {
            count: krate.features.len(),
            max: limits.max_features,
        });
    }
    for (name, values) in &krate.features {
        validate_feature_name(name).map_err(feature_error(name))?;
        if values.len() > limits.max_features {
            return Err(PublishError::TooManyFeatureValues {
                feature: name.clone(),
                count: values.len(),
                max: limits.max_features,
            });
        }
        for value in values {
            validate_feature(value).map_err(feature_error(value))?;
        }
    }
    Ok(())
}

/// `validate_dependency` in `controllers/krate/publish.rs`, except that a dependency
/// from another registry is allowed: crates.io refuses them, but a private registry
/// exists to mix its own crates with crates.io's.
fn check_dependencies(krate: &NewCrate, limits: &Limits) -> Result<(), PublishError> {
    if krate.deps.len() > limits.max_dependencies {
        return Err(PublishError::TooManyDependencies {
            count: krate.deps.len(),
            max: limits.max_dependencies,
        });
    }
    for dep in &krate.deps {
        validate_crate_name(&dep.name).map_err(|problem| PublishError::InvalidDependencyName {
            name: dep.name.clone(),
            problem,
        })?;
        for feature in &dep.features {
            validate_feature(feature).map_err(feature_error(feature))?;
        }
        match semver::VersionReq::parse(&dep.version_req) {
            Err(_) => {
                return Err(PublishError::InvalidVersionReq {
                    dependency: dep.name.clone(),
                    req: dep.version_req.clone(),
                });
            }
            Ok(req) if req == semver::VersionReq::STAR => {
                return Err(PublishError::WildcardDependency {
                    dependency: dep.name.clone(),
                });
            }
            Ok(_) => {}
        }
        if let Some(toml_name) = &dep.explicit_name_in_toml {
            validate_dependency_name(toml_name).map_err(|problem| {
                PublishError::InvalidRenamedDependency {
                    name: toml_name.clone(),
                    problem,
                }
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::NewCrateDependency;

    fn krate() -> NewCrate {
        serde_json::from_str(r#"{"name":"foo","vers":"1.0.0"}"#).unwrap()
    }

    fn dep(name: &str, req: &str) -> NewCrateDependency {
        serde_json::from_value(serde_json::json!({"name": name, "version_req": req})).unwrap()
    }

    fn check(krate: &NewCrate) -> Result<(), PublishError> {
        check_metadata(krate, &Limits::new(10 << 20))
    }

    // The cases of crates.io's `test_validate_crate_name`.
    #[test]
    fn crate_names() {
        assert_eq!(validate_crate_name("foo"), Ok(()));
        assert_eq!(validate_crate_name("foo_underscore"), Ok(()));
        assert_eq!(validate_crate_name("foo-dash"), Ok(()));
        assert_eq!(validate_crate_name("Inflector"), Ok(()));
        assert_eq!(validate_crate_name("京"), Err(NameProblem::BadStart('京')));
        assert_eq!(validate_crate_name(""), Err(NameProblem::Empty));
        assert_eq!(validate_crate_name("💝"), Err(NameProblem::BadStart('💝')));
        assert_eq!(
            validate_crate_name("foo+plus"),
            Err(NameProblem::BadChar('+'))
        );
        assert_eq!(validate_crate_name("_foo"), Err(NameProblem::BadStart('_')));
        assert_eq!(validate_crate_name("-foo"), Err(NameProblem::BadStart('-')));
        assert_eq!(
            validate_crate_name("123"),
            Err(NameProblem::StartsWithDigit)
        );
        assert_eq!(validate_crate_name(&"o".repeat(64)), Ok(()));
        assert_eq!(
            validate_crate_name(&"o".repeat(65)),
            Err(NameProblem::TooLong)
        );
        assert_eq!(validate_crate_name("a/b"), Err(NameProblem::BadChar('/')));
    }

    // The cases of crates.io's `test_validate_dependency_name`.
    #[test]
    fn renamed_dependency_names_may_start_with_underscore() {
        assert_eq!(validate_dependency_name("_foo"), Ok(()));
        assert_eq!(validate_dependency_name("foo-dash"), Ok(()));
        assert_eq!(
            validate_dependency_name("-foo"),
            Err(NameProblem::BadStart('-'))
        );
        assert_eq!(
            validate_dependency_name("1foo"),
            Err(NameProblem::StartsWithDigit)
        );
        assert_eq!(validate_dependency_name(""), Err(NameProblem::Empty));
        assert_eq!(
            validate_dependency_name("foo+plus"),
            Err(NameProblem::BadChar('+'))
        );
        assert_eq!(
            validate_dependency_name(&"o".repeat(65)),
            Err(NameProblem::TooLong)
        );
    }

    #[test]
    fn reserved_names_fold_case_and_dashes() {
        for name in [
            "std",
            "core",
            "alloc",
            "proc_macro",
            "proc-macro",
            "Proc-Macro",
            "test",
        ] {
            assert!(is_reserved_name(name), "{name}");
        }
        for name in ["con", "NUL", "aux", "prn", "com0", "com9", "LPT1", "lpt9"] {
            assert!(is_reserved_name(name), "{name}");
        }
        assert!(is_reserved_name("compiler_builtins"));
        for name in ["stdx", "serde", "com10", "rust", "console"] {
            assert!(!is_reserved_name(name), "{name}");
        }
        assert_eq!(
            check_crate_name("Std").unwrap_err().to_string(),
            "the crate name `Std` is reserved; choose another name"
        );
        assert!(matches!(
            check_crate_name("9lives"),
            Err(PublishError::InvalidCrateName {
                problem: NameProblem::StartsWithDigit,
                ..
            })
        ));
    }

    // The cases of crates.io's `test_validate_feature_names`.
    #[test]
    fn features() {
        for ok in [
            "foo",
            "1foo",
            "_foo",
            "_foo-_+.1",
            "a/a",
            "32-column-tables",
            "c++20",
            "krate/c++20",
            "foo?/bar",
            "dep:foo",
            "bar.web",
            "foo/bar.web",
            "größe",
        ] {
            assert_eq!(validate_feature(ok), Ok(()), "{ok}");
        }
        let dep = |name: &str, problem| FeatureProblem::DependencyName {
            name: name.to_owned(),
            problem,
        };
        assert_eq!(validate_feature(""), Err(FeatureProblem::Empty));
        assert_eq!(validate_feature("/"), Err(dep("", NameProblem::Empty)));
        assert_eq!(
            validate_feature("%/%"),
            Err(dep("%", NameProblem::BadStart('%')))
        );
        assert_eq!(
            validate_feature("c++20/wow"),
            Err(dep("c++20", NameProblem::BadChar('+')))
        );
        assert_eq!(
            validate_feature("dep:foo?/bar"),
            Err(dep("dep:foo", NameProblem::BadChar(':')))
        );
        assert_eq!(
            validate_feature("foo/?bar"),
            Err(FeatureProblem::BadStart('?'))
        );
        assert_eq!(
            validate_feature("foo?bar"),
            Err(FeatureProblem::BadChar('?'))
        );
        assert_eq!(
            validate_feature("dep:0foo"),
            Err(dep("0foo", NameProblem::StartsWithDigit))
        );
        assert_eq!(
            validate_feature("0foo?/bar.web"),
            Err(dep("0foo", NameProblem::StartsWithDigit))
        );
        assert_eq!(
            validate_feature_name("a b"),
            Err(FeatureProblem::BadChar(' '))
        );
    }

    #[test]
    fn feature_table_is_checked() {
        let mut k = krate();
        k.features
            .insert("default".into(), vec!["dep:serde".into(), "std".into()]);
        assert_eq!(check(&k), Ok(()));
        k.features.insert("bad name".into(), vec![]);
        assert!(
            matches!(check(&k), Err(PublishError::InvalidFeature { feature, .. }) if feature == "bad name")
        );
        k.features.remove("bad name");
        k.features.insert("x".into(), vec!["dep:9".into()]);
        let err = check(&k).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid feature `dep:9`: dependency name `9`: the name cannot start with a digit"
        );
    }

    #[test]
    fn feature_limits() {
        let limits = Limits {
            max_features: 2,
            ..Limits::new(1 << 20)
        };
        let mut k = krate();
        k.features
            .insert("a".into(), vec!["b".into(), "c".into(), "d".into()]);
        assert_eq!(
            check_metadata(&k, &limits),
            Err(PublishError::TooManyFeatureValues {
                feature: "a".into(),
                count: 3,
                max: 2
            })
        );
        k.features.insert("b".into(), vec![]);
        k.features.insert("c".into(), vec![]);
        assert_eq!(
            check_metadata(&k, &limits),
            Err(PublishError::TooManyFeatures { count: 3, max: 2 })
        );
    }

    #[test]
    fn keywords() {
        let mut k = krate();
        k.keywords = vec![
            "a".into(),
            "b-c".into(),
            "c_d".into(),
            "c++".into(),
            "12345678901234567890".into(),
        ];
        assert_eq!(check(&k), Ok(()));
        k.keywords.push("six".into());
        assert_eq!(check(&k), Err(PublishError::TooManyKeywords { count: 6 }));
        for bad in ["123456789012345678901", "-a", "", "a b", "é", "a.b"] {
            k.keywords = vec![bad.into()];
            assert_eq!(
                check(&k),
                Err(PublishError::InvalidKeyword {
                    keyword: bad.into()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn categories() {
        let mut k = krate();
        k.categories = vec!["a".into(); 5];
        assert_eq!(check(&k), Ok(()));
        k.categories.push("f".into());
        assert_eq!(check(&k), Err(PublishError::TooManyCategories { count: 6 }));
    }

    #[test]
    fn description_length() {
        let mut k = krate();
        k.description = Some("x".repeat(MAX_DESCRIPTION_LEN));
        assert_eq!(check(&k), Ok(()));
        k.description = Some("x".repeat(MAX_DESCRIPTION_LEN + 1));
        assert_eq!(
            check(&k),
            Err(PublishError::DescriptionTooLong { len: 1001 })
        );
    }

    #[test]
    fn urls() {
        let mut k = krate();
        k.homepage = Some("https://example.com".into());
        k.repository = Some("http://example.com/repo".into());
        assert_eq!(check(&k), Ok(()));
        k.documentation = Some("javascript:alert(1)".into());
        let err = check(&k).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the `documentation` URL must begin with http:// or https://, found `javascript:alert(1)`"
        );
    }

    #[test]
    fn rust_versions() {
        for ok in ["1.70", "1.70.0", "1"] {
            assert!(is_valid_rust_version(ok), "{ok}");
        }
        for bad in ["^1.70", "1.70-beta", ">=1.70", "nightly", "", "1..2"] {
            assert!(!is_valid_rust_version(bad), "{bad}");
        }
        let mut k = krate();
        k.rust_version = Some("~1.70".into());
        assert_eq!(
            check(&k),
            Err(PublishError::InvalidRustVersion {
                value: "~1.70".into()
            })
        );
    }

    #[test]
    fn versions() {
        assert_eq!(check_version("1.2.3").unwrap().to_string(), "1.2.3");
        assert_eq!(
            check_version("1.0.0-rc.1+build.5").unwrap().to_string(),
            "1.0.0-rc.1+build.5"
        );
        for bad in ["1.0", "v1.0.0", "01.0.0", "", "1.0.0 "] {
            assert_eq!(
                check_version(bad),
                Err(PublishError::InvalidVersion { vers: bad.into() }),
                "{bad}"
            );
        }
        let long = format!("1.0.0-{}", "a".repeat(MAX_VERSION_LEN - 6));
        assert!(check_version(&long).is_ok());
        let too_long = format!("{long}a");
        assert_eq!(check_version(&too_long), Err(PublishError::VersionTooLong));
        // wharf-index must accept every version this crate accepts.
        assert!(wharf_index::Version::new(&long).is_ok());
    }

    #[test]
    fn dependencies() {
        let mut k = krate();
        k.deps = vec![dep("serde", "^1.0")];
        assert_eq!(check(&k), Ok(()));

        k.deps = vec![dep("_serde", "^1.0")];
        assert!(matches!(
            check(&k),
            Err(PublishError::InvalidDependencyName {
                problem: NameProblem::BadStart('_'),
                ..
            })
        ));

        k.deps = vec![dep("serde", "not a req")];
        assert_eq!(
            check(&k).unwrap_err().to_string(),
            "dependency `serde` has an invalid version requirement `not a req`"
        );

        k.deps = vec![dep("serde", "*")];
        assert_eq!(
            check(&k),
            Err(PublishError::WildcardDependency {
                dependency: "serde".into()
            })
        );
        k.deps = vec![dep("serde", ">=0")];
        assert_eq!(check(&k), Ok(()));

        let mut renamed = dep("serde", "1");
        renamed.explicit_name_in_toml = Some("_serde1".into());
        k.deps = vec![renamed.clone()];
        assert_eq!(check(&k), Ok(()));
        renamed.explicit_name_in_toml = Some("serde.1".into());
        k.deps = vec![renamed];
        assert!(matches!(
            check(&k),
            Err(PublishError::InvalidRenamedDependency { .. })
        ));

        let mut featured = dep("serde", "1");
        featured.features = vec!["derive".into(), "bad feature".into()];
        k.deps = vec![featured];
        assert!(
            matches!(check(&k), Err(PublishError::InvalidFeature { feature, .. }) if feature == "bad feature")
        );

        let mut other_registry = dep("serde", "1");
        other_registry.registry = Some("https://github.com/rust-lang/crates.io-index".into());
        k.deps = vec![other_registry];
        assert_eq!(check(&k), Ok(()));

        let limits = Limits {
            max_dependencies: 1,
            ..Limits::new(1 << 20)
        };
        k.deps = vec![dep("a", "1"), dep("b", "1")];
        assert_eq!(
            check_metadata(&k, &limits),
            Err(PublishError::TooManyDependencies { count: 2, max: 1 })
        );
    }
}
