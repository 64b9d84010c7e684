//! End-to-end tests: the real `cutover` binary, a real git repository, real
//! sockets on loopback. Each test gets its own repository, data directory and
//! server on port 0.

// Tests start real binaries and fixture tools (git, sh) directly.
#![allow(clippy::disallowed_methods)]

mod support;

mod acme;
mod api_tls;
mod approvals;
mod auth;
mod auth_matrix;
mod branch_hosts;
mod broker;
mod build_context;
mod cdp;
mod cli_config;
mod cli_contract;
mod cli_help;
mod cli_params;
mod control_plane;
mod crash_and_scheduler;
mod dashboard;
mod dashboard_flags;
mod dashboard_live;
mod dataplane;
mod definition;
mod demo;
mod events;
pub(crate) mod example_shop;
mod expand_contract;
mod flags;
mod git_hosts;
mod image_command;
mod leaks;
mod lifecycle;
mod many_instances;
mod migration_hold;
mod notifications;
mod openapi;
mod pipeline;
mod pipeline_more;
mod pipeline_support;
mod postgres_backend;
mod registry;
mod registry_auth;
mod reload;
mod remote_source;
mod router_edge;
mod runtimes;
mod sandbox;
mod scale;
mod security;
mod server_lifecycle;
mod swarm_nodes;
mod webhooks;
