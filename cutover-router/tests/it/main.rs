//! Integration tests of the router over real sockets on 127.0.0.1 (port 0), bounded in time.

mod routing;
mod support;
mod switching;
