//! wharf-db's integration tests. Every test in `publish`, `yank`, `owners`,
//! `tokens`, `search` and `access` runs twice, on SQLite (a temporary file) and on
//! PostgreSQL (a database of its own on a server shared by this binary):
//! `cargo test -p wharf-db sqlite` or `… postgres` runs one backend.

#[macro_use]
mod support;

mod access;
mod connect;
mod owner_facts;
mod owners;
mod publish;
mod search;
mod stats;
mod tokens;
mod yank;
