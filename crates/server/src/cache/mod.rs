//! The pull-through cache registry: index files and crate files from upstream,
//! kept in storage and in memory.

mod crates;
mod index;

pub use crates::CrateFiles;
pub use index::{IndexCache, IndexEntry, Lookup};
