//! Integration tests of the docker runtime against a real Docker engine,
//! loopback only, bounded in time. They need `scripts/docker-setup` to have
//! run (dockerd up, `cutover-base:latest` built without a registry); when
//! Docker is unreachable they FAIL and say so — they never skip.

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod support;

mod lifecycle;
mod recover;
mod restart;
mod swarm;
mod task;
