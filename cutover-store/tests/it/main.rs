//! The one integration test binary of cutover-store: the conformance suite
//! against SQLite (a file database and an in-memory one) and PostgreSQL (a
//! fresh schema per test on the server `scripts/postgres-setup` starts),
//! backend-specific behaviour (files, reconnecting, migrations, writers in
//! two stores at once), and the parameter key grammar.

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod param_key;
mod postgres;
mod sqlite;
