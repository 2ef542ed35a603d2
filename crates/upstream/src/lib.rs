#![doc = include_str!("../README.md")]

mod health;
mod limits;
mod redact;
mod set;

pub use health::HealthReport;
pub use limits::{ClientBudget, Limits};
pub use redact::{redact, redact_in};
pub use set::{
    Downloaded, FetchError, IndexFetch, RequestObserver, Slot, UpstreamSet, UpstreamSettings,
    Validators,
};
