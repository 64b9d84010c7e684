//! Integration tests of the process runtime: real processes (the
//! `cutover-testapp` binary of this crate), loopback only, bounded in time.

mod support;

mod health;
mod lifecycle;
mod recover;
mod task;
