//! Every reason a publish request is refused, each with a message cargo shows the user.
//!
//! The messages follow crates.io's wording where it has one, made lowercase and one line,
//! so that a user who has published to crates.io recognises them.

use std::fmt;

use crate::rules::{
    MAX_CATEGORIES, MAX_DESCRIPTION_LEN, MAX_KEYWORD_LEN, MAX_KEYWORDS, MAX_NAME_LEN,
    MAX_VERSION_LEN,
};

/// Why a publish request is refused.
///
/// Every variant is the client's fault; the server answers 413 for the two that
/// [`PublishError::is_too_large`] picks out and 400 for the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The body ends before a length prefix or the part it announces.
    #[error(
        "the publish request is truncated: expected {expected_bytes} bytes of {part}, \
         found {found_bytes}; retry the upload"
    )]
    Truncated {
        /// Which part was cut short.
        part: BodyPart,
        /// How many bytes the part needed.
        expected_bytes: u64,
        /// How many bytes were there.
        found_bytes: u64,
    },
    /// Bytes follow the crate file.
    #[error(
        "the publish request has {count} unexpected bytes after the crate file; \
         send only the metadata and the crate file"
    )]
    TrailingBytes {
        /// How many bytes are left over.
        count: u64,
    },
    /// A length prefix does not fit in this machine's address space.
    #[error("the {part} length {length_bytes} is too large for this server")]
    LengthOverflow {
        /// Which part's length overflowed.
        part: BodyPart,
        /// The length as sent.
        length_bytes: u64,
    },
    /// The JSON metadata is over [`Limits::max_metadata_bytes`](crate::Limits::max_metadata_bytes).
    #[error(
        "the JSON metadata is {size_bytes} bytes, more than the {max_bytes} allowed; \
         shorten the readme"
    )]
    MetadataTooLarge {
        /// The announced size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The crate file is over [`Limits::max_crate_bytes`](crate::Limits::max_crate_bytes).
    #[error(
        "the crate file is {size_bytes} bytes, more than this registry's limit of {max_bytes}; \
         leave files out with `package.include` or `package.exclude`"
    )]
    CrateTooLarge {
        /// The announced size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The metadata is not the JSON cargo sends.
    #[error("invalid upload request: {0}")]
    InvalidMetadata(String),

    /// The crate name breaks crates.io's rules.
    #[error("invalid crate name `{name}`: {problem}")]
    InvalidCrateName {
        /// The name as sent.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// The crate name is reserved (a Windows device name or a part of Rust itself).
    #[error("the crate name `{name}` is reserved; choose another name")]
    ReservedCrateName {
        /// The name as sent.
        name: String,
    },
    /// The version is not semver.
    #[error("`{vers}` is an invalid semver version; use a version such as `1.2.3`")]
    InvalidVersion {
        /// The version as sent.
        vers: String,
    },
    /// The version is longer than wharf stores.
    #[error("the version number is too long (max {MAX_VERSION_LEN} characters)")]
    VersionTooLong,
    /// A dependency's crate name breaks crates.io's rules.
    #[error("invalid dependency name `{name}`: {problem}")]
    InvalidDependencyName {
        /// The name as sent.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// The name a dependency is renamed to in `Cargo.toml` breaks crates.io's rules.
    #[error("invalid renamed dependency `{name}`: {problem}")]
    InvalidRenamedDependency {
        /// The name as written in `Cargo.toml`.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A dependency's version requirement does not parse.
    #[error("dependency `{dependency}` has an invalid version requirement `{req}`")]
    InvalidVersionReq {
        /// The dependency's crate name.
        dependency: String,
        /// The requirement as sent.
        req: String,
    },
    /// A dependency's version requirement is `*`.
    #[error(
        "dependency `{dependency}` has the wildcard version requirement `*`, which is \
         not allowed; give it a version such as `^1.2`"
    )]
    WildcardDependency {
        /// The dependency's crate name.
        dependency: String,
    },
    /// The crate has more dependencies than [`Limits::max_dependencies`](crate::Limits::max_dependencies).
    #[error("the crate has {count} dependencies, more than the {max} allowed")]
    TooManyDependencies {
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A feature name, a feature's value or a feature a dependency enables breaks
    /// crates.io's rules.
    #[error("invalid feature `{feature}`: {problem}")]
    InvalidFeature {
        /// The whole feature string as sent.
        feature: String,
        /// What is wrong with it.
        problem: FeatureProblem,
    },
    /// The crate declares more features than [`Limits::max_features`](crate::Limits::max_features).
    #[error("the crate declares {count} features, more than the {max} allowed")]
    TooManyFeatures {
        /// How many it declares.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One feature enables more than [`Limits::max_features`](crate::Limits::max_features) others.
    #[error(
        "the feature `{feature}` enables {count} features or dependencies, more than the {max} allowed"
    )]
    TooManyFeatureValues {
        /// The feature's name.
        feature: String,
        /// How many it enables.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More keywords than crates.io allows.
    #[error("expected at most {MAX_KEYWORDS} keywords per crate, found {count}")]
    TooManyKeywords {
        /// How many were sent.
        count: usize,
    },
    /// A keyword is too long or holds a character crates.io does not allow.
    #[error(
        "`{keyword}` is an invalid keyword; keywords have at most {MAX_KEYWORD_LEN} characters, \
         start with an ASCII letter or digit and hold only ASCII letters, digits, `_`, `-` and `+`"
    )]
    InvalidKeyword {
        /// The keyword as sent.
        keyword: String,
    },
    /// More categories than crates.io allows.
    #[error("expected at most {MAX_CATEGORIES} categories per crate, found {count}")]
    TooManyCategories {
        /// How many were sent.
        count: usize,
    },
    /// The description is longer than crates.io allows.
    #[error(
        "the `description` is too long ({len} bytes); at most {MAX_DESCRIPTION_LEN} are allowed"
    )]
    DescriptionTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// `homepage`, `documentation` or `repository` is not an http(s) URL.
    #[error("the `{field}` URL must begin with http:// or https://, found `{url}`")]
    InvalidUrl {
        /// The manifest field.
        field: &'static str,
        /// The value as sent.
        url: String,
    },
    /// `rust-version` is not a bare version such as `1.70`.
    #[error("invalid `rust-version` value `{value}`; use a bare version such as `1.70`")]
    InvalidRustVersion {
        /// The value as sent.
        value: String,
    },

    /// The crate file does not start with the gzip magic bytes.
    #[error(
        "the crate file is not gzip-compressed; upload the `.crate` file that `cargo package` makes"
    )]
    NotGzip,
    /// The gzip stream ends early.
    #[error("the crate file is truncated; retry the upload")]
    TruncatedTarball,
    /// The gzip stream or the tar archive inside it is damaged.
    #[error("the crate file is malformed: {0}")]
    MalformedTarball(String),
    /// The crate file unpacks to more than [`Limits::max_unpacked_bytes`](crate::Limits::max_unpacked_bytes).
    #[error(
        "the crate file unpacks to more than {max_bytes} bytes; leave files out with `package.include` or `package.exclude`"
    )]
    UnpackedTooLarge {
        /// The limit.
        max_bytes: u64,
    },
    /// An entry's path is absolute, holds `..` or is not UTF-8.
    #[error("invalid path found in the crate file: {path}")]
    InvalidPath {
        /// The path, lossily decoded.
        path: String,
    },
    /// An entry lies outside the `{name}-{vers}/` directory.
    #[error("the crate file holds `{path}`, outside `{prefix}/`; package it with `cargo package`")]
    EntryOutsidePackage {
        /// The entry's path.
        path: String,
        /// The directory every entry must be in.
        prefix: String,
    },
    /// An entry is not a regular file or directory (a link, a device, a sparse file).
    #[error(
        "the crate file holds `{path}`, a {kind}; only regular files and directories are allowed"
    )]
    UnexpectedEntry {
        /// The entry's path.
        path: String,
        /// What kind of entry it is.
        kind: String,
    },
    /// An entry's pax `size` disagrees with its tar header, so two tar readers would
    /// see different files.
    #[error("the crate file is malformed: `{path}` has mismatched pax and tar header sizes")]
    PaxSizeMismatch {
        /// The entry's path.
        path: String,
    },
    /// There is no `{name}-{vers}/Cargo.toml`.
    #[error("the crate file is missing `{path}`")]
    MissingManifest {
        /// The path that was looked for.
        path: String,
    },
    /// The manifest is spelled `CARGO.TOML` or similar; only `Cargo.toml` is accepted.
    #[error(
        "the crate file has `{found}` but the manifest must be named `Cargo.toml` with that exact casing"
    )]
    IncorrectlyCasedManifest {
        /// The file name found.
        found: String,
    },
    /// More than one spelling of `Cargo.toml` is present.
    #[error("the crate file contains more than one `Cargo.toml` manifest: {paths}")]
    TooManyManifests {
        /// The paths found, comma separated.
        paths: String,
    },
    /// `Cargo.toml` is not TOML, or is not a publishable package manifest.
    #[error("failed to parse `Cargo.toml` manifest file: {0}")]
    InvalidManifest(String),
    /// The metadata's `name` differs from `package.name` in `Cargo.toml`.
    #[error("metadata name `{metadata}` does not match manifest name `{manifest}`")]
    NameMismatch {
        /// The name in the JSON metadata.
        metadata: String,
        /// The name in `Cargo.toml`.
        manifest: String,
    },
    /// The metadata's `vers` differs from `package.version` in `Cargo.toml`.
    #[error("metadata version `{metadata}` does not match manifest version `{manifest}`")]
    VersionMismatch {
        /// The version in the JSON metadata.
        metadata: String,
        /// The version in `Cargo.toml`.
        manifest: String,
    },
}

impl PublishError {
    /// Whether the request is refused for its size alone (HTTP 413) rather than its content.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::MetadataTooLarge { .. } | Self::CrateTooLarge { .. }
        )
    }
}

/// A part of the publish body, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPart {
    /// The `u32` before the JSON metadata.
    MetadataLength,
    /// The JSON metadata.
    Metadata,
    /// The `u32` before the crate file.
    CrateLength,
    /// The crate file.
    Crate,
}

impl fmt::Display for BodyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MetadataLength => "metadata length",
            Self::Metadata => "JSON metadata",
            Self::CrateLength => "crate file length",
            Self::Crate => "crate file",
        })
    }
}

/// What is wrong with a crate or dependency name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// The name is empty.
    #[error("the name cannot be empty")]
    Empty,
    /// The name has more than [`MAX_NAME_LEN`] characters.
    #[error("the name is too long (max {MAX_NAME_LEN} characters)")]
    TooLong,
    /// The name starts with a digit.
    #[error("the name cannot start with a digit")]
    StartsWithDigit,
    /// The name starts with a character other than an ASCII letter (or `_`, for a
    /// renamed dependency).
    #[error("invalid first character `{0}`; the name must start with an ASCII letter")]
    BadStart(char),
    /// The name holds a character other than ASCII letters, digits, `-` and `_`.
    #[error("invalid character `{0}`; use only ASCII letters, digits, `-` and `_`")]
    BadChar(char),
}

/// What is wrong with a feature string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureProblem {
    /// The feature name is empty.
    #[error("feature names cannot be empty")]
    Empty,
    /// The first character is not a Unicode XID start character, `_` or a digit.
    #[error("invalid first character `{0}`; a feature name starts with a letter, `_` or a digit")]
    BadStart(char),
    /// A character is not a Unicode XID character, `+`, `-` or `.`.
    #[error("invalid character `{0}`; use letters, digits, `_`, `+`, `-` or `.`")]
    BadChar(char),
    /// The dependency part (`dep:NAME`, `NAME/feature`, `NAME?/feature`) is not a
    /// valid dependency name.
    #[error("dependency name `{name}`: {problem}")]
    DependencyName {
        /// The dependency part.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
}
