//! wharf-config through its public API.

mod durations;
mod fuzz;
