//! The one integration test binary of cutover-store: the conformance suite
//! against SQLite (a file database and an in-memory one), SQLite-specific
//! behaviour (files, migrations, locking across connections), and the
//! parameter key grammar.

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod param_key;
mod sqlite;
