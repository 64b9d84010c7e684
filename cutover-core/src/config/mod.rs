//! `cutover.yml`: the typed configuration of one application, and its
//! parsing and validation.
//!
//! [`parse`] reads the text into a located node tree (`node`), then walks it
//! (`build`, `environments`) into [`Config`], collecting *every* problem as a
//! [`ConfigError`] with file, line, column, field path and a message that
//! says what is accepted. Unknown keys are refused with the nearest valid key
//! suggested, so a typo never silently falls back to a default.
//!
//! Rejected alternatives: deriving `Deserialize` with `deny_unknown_fields`
//! (stops at the first error, no suggestions, no cross-references such as
//! `like:`); `serde_yaml` (archived). Nothing here touches the file system
//! except [`load`], which reads the file it is given.

mod build;
mod cron;
mod environments;
mod error;
mod extract;
mod hosts;
pub use hosts::{branch_label, expand_host, is_pattern};
pub mod keys;
mod node;
mod notifications;
mod router;
mod schema;
mod services;
mod types;
mod values;

use std::path::{Path, PathBuf};

pub use cron::CronSchedule;
pub use error::{ConfigError, ConfigErrors};
pub use notifications::{
    DEFAULT_GITHUB_API, DEFAULT_GITLAB_API, Notifications, NotifyEvent, Receiver, ReceiverKind,
    check_api_url, is_loopback_host,
};
pub use router::{DEFAULT_ACCESS_LOG_KEEP, DEFAULT_ACCESS_LOG_MAX_SIZE};
pub use schema::json_schema;
pub use types::*;
pub use values::{format_duration, parse_duration};

use crate::EnvName;
use extract::Ctx;
use node::{Node, ParseOutcome};

/// Parses and validates the text of a `cutover.yml`. `file` is used in
/// error messages and to resolve a relative `repo:` (against its directory).
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(file);
    let tree = match node::parse_tree(text) {
        ParseOutcome::Tree(tree) => tree,
        ParseOutcome::Malformed { message, location } => {
            let message = format!("invalid YAML: {message}");
            match location {
                Some(at) => ctx.error(at, "", message),
                None => ctx.error(serde_saphyr::Location::UNKNOWN, "", message),
            }
            return Err(ctx.finish());
        }
    };
    if tree.value == Node::Null {
        ctx.error(
            tree.referenced,
            "",
            "the file is empty; expected a mapping with at least `app`, `services` and `environments`",
        );
        return Err(ctx.finish());
    }
    match build::config(&mut ctx, &tree) {
        Some(config) if !ctx.has_errors() => Ok(config),
        _ => {
            if !ctx.has_errors() {
                ctx.error(tree.referenced, "", "the configuration is incomplete");
            }
            Err(ctx.finish())
        }
    }
}

/// The keys of `cutover.yml` that describe the *application*: read from the repository at each
/// run's SHA, so a commit's own definition is what its run deploys.
pub const APPLICATION_KEYS: &[&str] = &["services", "hooks", "scheduler", "rabbitmq", "task_service"];

/// The keys that describe the *platform*: always the server's file's (a commit cannot move
/// itself to another environment, router, registry or user).
pub const PLATFORM_KEYS: &[&str] = &[
    "app",
    "repo",
    "environments",
    "router",
    "registry",
    "webhooks",
    "run_as",
    "source",
    "notifications",
];

/// The configuration a run at one commit deploys: the platform part (`PLATFORM_KEYS`) of the
/// server's file `platform_text` and the application part (`APPLICATION_KEYS`) of the commit's
/// file `commit_text`; platform keys in the commit's file are ignored, unknown keys refused.
/// Errors name `commit_file` (e.g. `cutover.yml@3f2a9c1`) with the commit's line and column;
/// cross-references into the platform part (an environment's `ports:` or `replicas:` naming a
/// service the commit removed) are reported against the server's file's line with the same
/// label, and name the field path.
pub fn parse_at_commit(
    platform: &Config,
    platform_text: &str,
    commit_text: &str,
    commit_file: &Path,
) -> Result<AppDefinition, ConfigErrors> {
    let mut ctx = Ctx::new(commit_file);
    let commit = match node::parse_tree(commit_text) {
        ParseOutcome::Tree(tree) => tree,
        ParseOutcome::Malformed { message, location } => {
            ctx.error(
                location.unwrap_or(serde_saphyr::Location::UNKNOWN),
                "",
                format!("invalid YAML: {message}"),
            );
            return Err(ctx.finish());
        }
    };
    let server = match node::parse_tree(platform_text) {
        ParseOutcome::Tree(tree) => tree,
        ParseOutcome::Malformed { .. } => {
            ctx.error(
                commit.referenced,
                "",
                format!(
                    "the server's own {} no longer parses; fix it first",
                    platform.file.display()
                ),
            );
            return Err(ctx.finish());
        }
    };
    let Node::Map(commit_entries) = &commit.value else {
        ctx.error(
            commit.referenced,
            "",
            format!(
                "the file must be a mapping with (some of) the keys {}; found {}",
                APPLICATION_KEYS.join(", "),
                commit.value.kind()
            ),
        );
        return Err(ctx.finish());
    };
    let mut merged: Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Node>)> = commit_entries
        .iter()
        .filter(|(k, _)| !PLATFORM_KEYS.contains(&k.value.as_str()))
        .cloned()
        .collect();
    if let Node::Map(server_entries) = &server.value {
        merged.extend(
            server_entries
                .iter()
                .filter(|(k, _)| PLATFORM_KEYS.contains(&k.value.as_str()))
                .cloned(),
        );
    }
    let root = serde_saphyr::Spanned::new(Node::Map(merged), commit.referenced, commit.defined);
    match build::config(&mut ctx, &root) {
        Some(config) if !ctx.has_errors() => Ok(config.definition()),
        _ => {
            if !ctx.has_errors() {
                ctx.error(root.referenced, "", "the application definition is incomplete");
            }
            Err(ctx.finish())
        }
    }
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("cannot read the configuration file: {e}"),
            }],
        }),
    }
}

impl Config {
    /// The parameter-store prefix of an environment: `/<app>-<env>`.
    pub fn param_prefix(&self, env: &EnvName) -> String {
        format!("/{}-{}", self.app, env)
    }

    /// Looks an environment up by the name a user typed.
    pub fn environment(&self, name: &str) -> Option<(&EnvName, &Environment)> {
        self.environments.iter().find(|(k, _)| k.as_str() == name)
    }

    /// The branch whose commits `env` accepts, or `None` when any branch is
    /// accepted (dev, integration) or the environment is unknown. Stage and
    /// prod default to `main`; prod-like accepts what its `like` target does.
    pub fn accepted_branch(&self, env: &EnvName) -> Option<&str> {
        let environment = self.environments.get(env)?;
        match environment.tier {
            Tier::Dev | Tier::Integration => None,
            Tier::ProdLike => match &environment.like {
                Some(target) if target != env => self.accepted_branch(target),
                _ => Some("main"),
            },
            Tier::Stage | Tier::Prod => Some(environment.branch.as_deref().unwrap_or("main")),
        }
    }

    /// The artifact name of a service in an environment: `<app>-<env>-<service>`.
    pub fn artifact_name(&self, env: &EnvName, service: &crate::ServiceName) -> String {
        format!("{}-{}-{}", self.app, env, service)
    }

    /// A short human summary, one line per service and environment.
    pub fn summary(&self) -> String {
        let mut out = format!("app {} from {}\n", self.app, self.repo);
        for (name, s) in &self.services {
            out.push_str(&format!(
                "service {name}: replicas {}, {}, health {}\n",
                s.replicas,
                if s.public { "public" } else { "internal" },
                s.health.as_deref().unwrap_or("-"),
            ));
        }
        for (name, job) in &self.scheduler.jobs {
            out.push_str(&format!("job {name}: {:?}\n", job.schedule));
        }
        if let Some(r) = &self.rabbitmq {
            let users: usize = r.vhosts.iter().map(|v| v.users.len()).sum();
            out.push_str(&format!(
                "rabbitmq {}: {} vhost(s), {users} user(s)\n",
                r.url,
                r.vhosts.len()
            ));
        }
        for (name, e) in &self.environments {
            out.push_str(&format!(
                "env {name}: tier {}, {}",
                e.tier,
                self.param_prefix(name)
            ));
            match self.accepted_branch(name) {
                Some(b) => out.push_str(&format!(", branch {b}")),
                None => out.push_str(", any branch"),
            }
            out.push_str(&format!(", {} on {}", e.strategy, e.runtime));
            if e.approval {
                out.push_str(", approval");
            }
            if e.auto_deploy {
                out.push_str(", auto-deploy");
            }
            if let Some(like) = &e.like {
                out.push_str(&format!(", like {like}"));
            }
            if let Some(ttl) = e.ttl {
                out.push_str(&format!(", ttl {}", format_duration(ttl)));
            }
            if let Some(a) = &e.autoscale {
                out.push_str(&format!(", autoscale {}-{}", a.min, a.max));
            }
            if let Some(n) = e.max_active {
                out.push_str(&format!(", max {n} active"));
            }
            out.push('\n');
        }
        out
    }
}

/// Resolves `repo:` text relative to the directory of `file`: a URL stays a
/// URL; a path is joined to the file's directory, made absolute against the
/// current directory if needed, and normalised lexically (`.`, `..`).
pub(crate) fn resolve_repo(raw: &str, file: &Path) -> RepoSource {
    if is_url(raw) {
        return RepoSource::Url { url: raw.to_owned() };
    }
    let base = file.parent().unwrap_or(Path::new(""));
    let joined = base.join(raw);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    let mut path = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                path.pop();
            }
            other => path.push(other),
        }
    }
    RepoSource::Path {
        raw: raw.to_owned(),
        path,
    }
}

/// `scheme://...` or scp-like `user@host:path`.
fn is_url(raw: &str) -> bool {
    if let Some((scheme, _)) = raw.split_once("://") {
        return !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    }
    match (raw.find('@'), raw.find(':'), raw.find('/')) {
        (Some(at), Some(colon), slash) => at < colon && slash.is_none_or(|s| colon < s),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
