//! The pull-through cache registry: index files and crate files from upstream,
//! kept in storage and in memory.

mod budget;
mod crates;
mod index;

pub use budget::MissBudget;
pub use crates::CrateFiles;
pub(crate) use index::HotFiles;
pub use index::{IndexCache, IndexEntry, Lookup};
