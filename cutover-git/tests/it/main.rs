//! Integration tests of `cutover-git` against real repositories built with
//! the `git` binary (tests may use it; the library never does).

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod checkout;
mod fixture;
mod history;
mod resolve;
