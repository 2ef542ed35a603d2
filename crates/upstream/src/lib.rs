#![doc = include_str!("../README.md")]

mod health;
mod set;

pub use health::HealthReport;
pub use set::{Downloaded, FetchError, IndexFetch, UpstreamSet, UpstreamSettings, Validators};
