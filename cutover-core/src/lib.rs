//! Domain types and `cutover.yml` parsing for Cutover.
//!
//! Architecture invariant: this crate does no I/O beyond reading the text it
//! is handed, and knows no database, HTTP, git or process runtime.

pub mod access;
pub mod config;
pub mod names;
pub mod run;
pub mod settings;

pub use access::{Grants, Role};
pub use config::{
    Config, ConfigError, ConfigErrors, Environment, RepoSource, RuntimeKind, Service, Strategy, Tier,
};
pub use names::{Actor, AppName, EnvName, JobName, NameError, ServiceName, Version, VersionRef};
pub use run::{RunKind, RunState, Stage, StageStatus};
