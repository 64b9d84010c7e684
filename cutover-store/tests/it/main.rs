//! The one integration test binary of cutover-store: the conformance suite
//! against SQLite (a file database and an in-memory one), SQLite-specific
//! behaviour (files, migrations, locking across connections), and the
//! parameter key grammar.

mod param_key;
mod sqlite;
