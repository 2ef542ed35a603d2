#![doc = include_str!("../README.md")]

mod health;
mod limits;
mod set;

pub use health::HealthReport;
pub use limits::{ClientBudget, Limits};
pub use set::{Downloaded, FetchError, IndexFetch, UpstreamSet, UpstreamSettings, Validators};
