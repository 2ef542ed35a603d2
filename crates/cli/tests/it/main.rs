//! wharf's integration tests: one binary, a module per area. Every test runs
//! on loopback against a fake upstream it starts itself, and uses the real
//! `cargo` as the client.

mod access;
mod access_limits;
mod alerts;
mod bad_requests;
mod bucket;
mod cache_build;
mod cache_faults;
mod cache_http;
mod check;
mod common;
mod crash;
mod dashboard;
mod deploy;
mod hardening;
mod help;
mod hosted;
mod instances;
mod metrics;
mod mirror;
mod mirror_git;
mod owners;
mod run;
mod stats;
mod storage;
mod verify;
