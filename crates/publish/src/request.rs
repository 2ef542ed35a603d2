//! From a publish body to a checked [`PublishRequest`]: the order of the checks and
//! the limits they use.

use std::fmt;

use wharf_index::{Cksum, CrateName, NameError, VersionError};

use crate::body::split_body;
use crate::error::{NameProblem, PublishError};
use crate::metadata::NewCrate;
use crate::rules::{check_crate_name, check_metadata, check_version};
use crate::tarball::check_tarball;

/// The size and count limits a publish request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest JSON metadata accepted (crates.io: 1 MiB). It holds the readme.
    pub max_metadata_bytes: u64,
    /// The largest crate file accepted (crates.io: 10 MB).
    pub max_crate_bytes: u64,
    /// The most bytes the crate file may inflate to, tar headers included.
    pub max_unpacked_bytes: u64,
    /// The most features a crate may declare, and the most values one feature may
    /// have (crates.io: 300).
    pub max_features: usize,
    /// The most dependencies a crate may have, of all kinds (crates.io: 500).
    pub max_dependencies: usize,
}

impl Limits {
    /// crates.io's limits around a crate file limit of `max_crate_bytes`.
    ///
    /// The unpacked limit is crates.io's too: 512 MiB, or the crate file limit if
    /// that is larger. A tighter bound such as ten times the crate file would refuse
    /// crates that crates.io takes (generated tables and test data compress far
    /// better than ten to one), while any bound at all defeats a decompression bomb:
    /// the archive is streamed, so the cost is CPU time, not memory.
    pub fn new(max_crate_bytes: u64) -> Self {
        Self {
            max_metadata_bytes: 1024 * 1024,
            max_crate_bytes,
            max_unpacked_bytes: max_crate_bytes.max(512 * 1024 * 1024),
            max_features: 300,
            max_dependencies: 500,
        }
    }
}

/// A publish request that passed every check: its metadata, its crate file, and the
/// values derived from them.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishRequest {
    metadata: NewCrate,
    name: CrateName,
    version: semver::Version,
    vers: wharf_index::Version,
    tarball: Vec<u8>,
    cksum: Cksum,
}

impl PublishRequest {
    /// The metadata as cargo sent it (readme, description, keywords and the rest).
    pub fn metadata(&self) -> &NewCrate {
        &self.metadata
    }

    /// The crate name, spelled as the metadata and `Cargo.toml` both spell it.
    pub fn name(&self) -> &CrateName {
        &self.name
    }

    /// The version. Its `to_string` is the spelling of the index line and of the crate
    /// file name `{name}-{version}.crate`.
    pub fn version(&self) -> &semver::Version {
        &self.version
    }

    /// The version as wharf-index models it, for storage keys and crate file names.
    pub fn vers(&self) -> &wharf_index::Version {
        &self.vers
    }

    /// The crate file, byte for byte as received.
    pub fn tarball(&self) -> &[u8] {
        &self.tarball
    }

    /// The crate file, given up without a copy.
    pub fn into_tarball(self) -> Vec<u8> {
        self.tarball
    }

    /// The sha256 of [`tarball`](Self::tarball), computed here, never taken from the client.
    pub fn cksum(&self) -> Cksum {
        self.cksum
    }
}

impl fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The crate file and the readme would drown everything else.
        f.debug_struct("PublishRequest")
            .field("name", &self.name)
            .field("version", &self.version.to_string())
            .field("tarball_bytes", &self.tarball.len())
            .field("cksum", &self.cksum)
            .finish_non_exhaustive()
    }
}

/// Parses and checks the body of `PUT /api/v1/crates/new` with crates.io's limits
/// around a crate file limit of `max_crate_bytes` ([`Limits::new`]).
pub fn parse_publish_body(
    body: &[u8],
    max_crate_bytes: u64,
) -> Result<PublishRequest, PublishError> {
    parse_publish_body_with(body, &Limits::new(max_crate_bytes))
}

/// Parses and checks the body of `PUT /api/v1/crates/new` under `limits`.
///
/// The checks run cheapest first: the framing, the JSON, the metadata rules, and
/// only then the crate file, which is inflated and read to its end. This is
/// CPU-bound for up to [`Limits::max_unpacked_bytes`]; an async caller runs it on a
/// blocking thread.
pub fn parse_publish_body_with(
    body: &[u8],
    limits: &Limits,
) -> Result<PublishRequest, PublishError> {
    let parts = split_body(body, limits)?;
    let metadata: NewCrate = serde_json::from_slice(parts.metadata)
        .map_err(|e| PublishError::InvalidMetadata(e.to_string()))?;

    check_crate_name(&metadata.name)?;
    let name = CrateName::new(&metadata.name).map_err(|e| PublishError::InvalidCrateName {
        name: metadata.name.clone(),
        problem: name_problem(&metadata.name, &e),
    })?;
    let version = check_version(&metadata.vers)?;
    let vers = wharf_index::Version::new(&version.to_string()).map_err(|e| match e {
        VersionError::TooLong => PublishError::VersionTooLong,
        VersionError::BadStart | VersionError::BadChar => PublishError::InvalidVersion {
            vers: metadata.vers.clone(),
        },
    })?;
    check_metadata(&metadata, limits)?;

    let package = check_tarball(
        parts.tarball,
        &format!("{name}-{vers}"),
        limits.max_unpacked_bytes,
    )?;
    if package.name != metadata.name {
        return Err(PublishError::NameMismatch {
            metadata: metadata.name,
            manifest: package.name,
        });
    }
    if semver::Version::parse(&package.version).ok().as_ref() != Some(&version) {
        return Err(PublishError::VersionMismatch {
            metadata: metadata.vers,
            manifest: package.version,
        });
    }

    Ok(PublishRequest {
        name,
        version,
        vers,
        cksum: Cksum::of(parts.tarball),
        tarball: parts.tarball.to_vec(),
        metadata,
    })
}

/// wharf-index's rules are looser than crates.io's, which have already passed, so
/// this only keeps the error honest should that ever change.
fn name_problem(name: &str, e: &NameError) -> NameProblem {
    let bad = |c: &char| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_');
    match e {
        NameError::Empty => NameProblem::Empty,
        NameError::TooLong => NameProblem::TooLong,
        NameError::BadStart => NameProblem::BadStart(name.chars().next().unwrap_or('?')),
        NameError::BadChar => NameProblem::BadChar(name.chars().find(bad).unwrap_or('?')),
    }
}
