//! wharf's integration tests: one binary, a module per area. Every test runs
//! on loopback against a fake upstream it starts itself, and uses the real
//! `cargo` as the client.

mod access;
mod access_limits;
mod bad_requests;
mod cache_build;
mod cache_faults;
mod cache_http;
mod common;
mod crash;
mod dashboard;
mod hardening;
mod help;
mod hosted;
mod metrics;
mod mirror;
mod mirror_git;
mod run;
mod stats;
mod storage;
mod verify;
