//! The application definition each version deploys: the version is the whole truth.
//!
//! `cutover.yml` holds two things. The *platform* part (`app`, `repo`, `environments`, `router`,
//! `registry`, `webhooks`, `run_as`) is the server's, read once at start. The *application* part
//! (`services`, `hooks`, `scheduler`, `rabbitmq`, `task_service`) is read from the repository at
//! each run's SHA, from the same path the server's file has inside the repository (else
//! `cutover.yml` at its root), and validated against the server's platform part with the same
//! file:line:column errors as `config check` (`cutover_core::config::parse_at_commit`). A commit
//! without the file deploys the server's application part. Source fails a run whose commit's
//! definition is invalid, before anything changes.
//!
//! What serves an environment remembers the definition it was deployed with (`EnvServices`),
//! and so does the warm release, so a rollback (fast or not) brings back the older version's
//! services, and everything that asks about an environment's services (status, scale, the
//! scheduler, metrics) asks [`Engine::app`]: the serving release's definition, else the
//! server's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cutover_core::config::{AppDefinition, RepoSource};
use cutover_core::{EnvName, Version};

use crate::{Engine, EngineError};

/// Definitions read from commits, by version (a commit never changes; the server's platform
/// part they are validated against can: `config reload` clears them).
#[derive(Debug, Default)]
pub(crate) struct Definitions {
    by_version: Mutex<HashMap<Version, Arc<AppDefinition>>>,
}

impl Definitions {
    pub(crate) fn clear(&self) {
        self.by_version.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Where a version's definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefinitionSource {
    /// The commit's own file (its path in the repository).
    Commit(String),
    /// The commit has no file there: the server's file's application part.
    Server(PathBuf),
}

impl std::fmt::Display for DefinitionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Commit(path) => write!(f, "{path} of the commit"),
            Self::Server(file) => write!(
                f,
                "the server's {} (the commit has no definition)",
                file.display()
            ),
        }
    }
}

/// The path of `file` inside the repository at `repo`, `/`-separated, if it lies inside.
fn path_in_repo(file: &Path, repo: &Path) -> Option<String> {
    let file = std::fs::canonicalize(file).ok()?;
    let repo = std::fs::canonicalize(repo).ok()?;
    let rel = file.strip_prefix(&repo).ok()?;
    let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Where a commit's application definition lives in the repository of `config`: the file's
/// own path when it lies inside the repository, else `cutover.yml` at its root.
pub fn definition_path_of(config: &cutover_core::config::Config) -> String {
    match &config.repo {
        RepoSource::Path { path, .. } => path_in_repo(&config.file, path),
        RepoSource::Url { .. } => None,
    }
    .unwrap_or_else(|| "cutover.yml".to_owned())
}

impl Engine {
    /// Where a commit's application definition lives in the repository: the server's
    /// `cutover.yml`'s own path when it lies inside the repository, else `cutover.yml`.
    pub fn definition_path(&self) -> String {
        definition_path_of(&self.inner.base.load())
    }

    /// The server's own application definition (its file as read at start).
    pub(crate) fn base_definition(&self) -> Arc<AppDefinition> {
        self.inner.base_definition.load_full()
    }

    /// The application definition `version` deploys and where it came from. Errors: the
    /// commit is unknown, or its definition is invalid (`Refused`, every problem with
    /// file@sha:line:column).
    pub async fn definition_at(
        &self,
        version: &Version,
    ) -> Result<(Arc<AppDefinition>, DefinitionSource), EngineError> {
        let path = self.definition_path();
        if let Some(def) = self
            .inner
            .definitions
            .by_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(version)
        {
            return Ok((def.clone(), DefinitionSource::Commit(path)));
        }
        let v = version.clone();
        let p = path.clone();
        let bytes = self
            .with_repo(move |repo| {
                repo.read_file(&v, &p)
                    .map_err(|e| EngineError::Refused(e.to_string()))
            })
            .await?;
        let Some(bytes) = bytes else {
            return Ok((
                self.base_definition(),
                DefinitionSource::Server(self.inner.base.load().file.clone()),
            ));
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| EngineError::Refused(format!("{path} at {} is not UTF-8 text", version.short())))?;
        let label = PathBuf::from(format!("{path}@{}", version.short()));
        let def = cutover_core::config::parse_at_commit(
            &self.inner.base.load(),
            &self.inner.config_text.load(),
            &text,
            &label,
        )
        .map_err(|errors| {
            EngineError::Refused(format!(
                "the application definition of {} is invalid:\n{errors}",
                version.short()
            ))
        })?;
        let def = Arc::new(def);
        self.inner
            .definitions
            .by_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(version.clone(), def.clone());
        Ok((def, DefinitionSource::Commit(path)))
    }

    /// The definition `version` was read with earlier (Source reads it first), else what serves
    /// `env`: for synchronous paths (a hook's image, a job) during a run.
    pub(crate) fn def_for(&self, env: &EnvName, version: &Version) -> Arc<AppDefinition> {
        let cached = self
            .inner
            .definitions
            .by_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(version)
            .cloned();
        cached.unwrap_or_else(|| self.app(env))
    }

    /// The definition of what serves `env`: the one its current release was deployed with,
    /// else the server's.
    pub fn app(&self, env: &EnvName) -> Arc<AppDefinition> {
        self.env_services(env)
            .def
            .unwrap_or_else(|| self.base_definition())
    }
}
