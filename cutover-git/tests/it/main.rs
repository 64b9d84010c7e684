//! Integration tests of `cutover-git` against real repositories built with
//! the `git` binary (tests may use it; the library never does).

mod checkout;
mod fixture;
mod history;
mod resolve;
