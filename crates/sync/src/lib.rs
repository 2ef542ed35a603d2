#![doc = include_str!("../README.md")]

mod feed;
mod git;
pub mod manifest;
mod selection;
mod sync;

pub use selection::{LockedPackage, Selection, locked_packages};
pub use sync::{Mirror, PassKind, Progress, SilentProgress, Summary, SyncError, work_dir};
