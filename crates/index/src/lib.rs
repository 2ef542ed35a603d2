#![doc = include_str!("../README.md")]

mod cksum;
mod config;
mod line;
mod name;
mod path;
mod version;

pub use cksum::{Cksum, CksumError};
pub use config::{DlTemplate, RegistryConfig};
pub use line::{IndexLine, find_version, is_well_formed, parse_line, same_registry_deps};
pub use name::{CrateName, NameError};
pub use path::{IndexPath, PathError, prefix};
pub use version::{Version, VersionError};
