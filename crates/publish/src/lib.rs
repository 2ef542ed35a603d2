#![doc = include_str!("../README.md")]

mod body;
mod error;
mod index_line;
mod license;
mod metadata;
mod request;
pub mod rules;
mod tarball;

pub use error::{BodyPart, FeatureProblem, NameProblem, PublishError};
pub use index_line::index_line;
pub use license::{LicenseError, LicenseExpr, license_of};
pub use metadata::{DependencyKind, NewCrate, NewCrateDependency};
pub use request::{Limits, PublishRequest, parse_publish_body, parse_publish_body_with};
