//! wharf-config through its public API.

mod downloads;
mod durations;
mod fuzz;
