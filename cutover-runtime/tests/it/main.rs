//! Integration tests of the process runtime: real processes (the
//! `cutover-testapp` binary of this crate), loopback only, bounded in time.

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod support;

mod adopt;
mod health;
mod lifecycle;
mod recover;
mod task;
