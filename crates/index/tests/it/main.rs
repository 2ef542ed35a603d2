//! wharf-index through its public API, with inputs an upstream or a client
//! controls.

mod fuzz;
