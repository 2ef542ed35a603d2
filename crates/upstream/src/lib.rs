#![doc = include_str!("../README.md")]

mod decode;
mod health;
mod limits;
mod owners_api;
mod redact;
mod set;

pub use health::HealthReport;
pub use limits::{ClientBudget, Limits};
pub use owners_api::{DumpFetch, LookupError, OwnersApi, OwnersApiSettings};
pub use redact::{redact, redact_in};
pub use set::{
    Downloaded, FetchError, IndexFetch, RequestObserver, Slot, UpstreamSet, UpstreamSettings,
    Validators,
};
