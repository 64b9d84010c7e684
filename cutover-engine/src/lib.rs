//! The engine: the one place where Cutover's desired state changes.
//!
//! Cutover is a reconciler: the parameter store holds what *should* run
//! (`desired_version`), the runtime reports what *does* run, and a pipeline run
//! is the only sanctioned way to move the second towards the first. This crate
//! owns those rules; `cutover-server` only translates HTTP into calls here.
//!
//! Architecture invariant: the engine never speaks HTTP and never formats for
//! a terminal; it returns typed results and `EngineError`s.

mod environments;
mod error;
mod params;

use std::sync::Arc;

use cutover_core::config::Config;
use cutover_core::{Actor, EnvName};
use cutover_git::Repo;
use cutover_store::{NewAuditEntry, Store};

pub use environments::{EnvironmentSummary, VersionRow, VersionsReport};
pub use error::{EngineError, ErrorKind};
pub use params::{ReservedKey, WellKnownKey};

/// The control plane's shared state: configuration, store and repository.
/// Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    repo: Repo,
}

impl Engine {
    pub fn new(config: Config, store: Arc<dyn Store>, repo: Repo) -> Self {
        Self {
            inner: Arc::new(Inner { config, store, repo }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn repo(&self) -> &Repo {
        &self.inner.repo
    }

    /// Looks an environment up by the name a user typed; the error lists the
    /// environments that exist.
    pub fn env_name(&self, name: &str) -> Result<EnvName, EngineError> {
        match self.config().environment(name) {
            Some((env, _)) => Ok(env.clone()),
            None => Err(EngineError::UnknownEnvironment {
                name: name.to_owned(),
                app: self.config().app.to_string(),
                known: self
                    .config()
                    .environments
                    .keys()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Runs blocking git work off the async threads.
    async fn with_repo<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&Repo) -> Result<T, EngineError> + Send + 'static,
    {
        let repo = self.inner.repo.clone();
        tokio::task::spawn_blocking(move || f(&repo))
            .await
            .map_err(|e| EngineError::Internal(format!("git task failed: {e}")))?
    }

    async fn audit(&self, actor: &Actor, action: &str, target: &str, detail: serde_json::Value) {
        let entry = NewAuditEntry {
            actor: actor.to_string(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        if let Err(e) = self.inner.store.audit_append(entry).await {
            // The change itself is durable; a lost audit line is logged loudly
            // rather than turning a successful change into a reported failure.
            tracing::error!(error = %e, action, target, "could not append to the audit log");
        }
    }
}
