//! Integration tests of the router over real sockets on 127.0.0.1 (port 0), bounded in time.

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod edge;
mod fast;
mod flags;
mod gates;
mod h2_frames;
mod http2;
mod routing;
mod slow_clients;
mod strict;
mod support;
mod switching;
mod threads;
mod tls;
mod upstream;
