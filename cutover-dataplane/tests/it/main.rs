//! Integration tests of the data plane: in-process data planes (`run` on a task or on a runtime
//! of their own, which is how a test "kills" one), real unix and TCP sockets on loopback, real
//! HTTP through the router.

mod support;

mod control;
mod handover;
mod restart;
mod tcp;
