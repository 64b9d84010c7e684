//! The engine's error type and the one classification the API edge maps to
//! HTTP statuses (`ErrorKind`). Messages say what was wrong and how to fix it;
//! causes are kept as `#[source]` and not repeated in `Display`.

use cutover_core::NameError;
use cutover_git::GitError;
use cutover_store::StoreError;

/// How a caller should treat an error; the API edge maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (bad name, unknown ref, policy refusal).
    BadRequest,
    /// The caller is known, but a rule says they may not do this (four-eyes,
    /// an override only an admin may make).
    Forbidden,
    /// The thing asked for does not exist.
    NotFound,
    /// The request conflicts with the current state (compare-and-set mismatch).
    Conflict,
    /// Cutover or its surroundings failed; the request may be fine.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown environment {name:?}; {app} has: {known}")]
    UnknownEnvironment {
        name: String,
        app: String,
        known: String,
    },

    #[error(transparent)]
    InvalidInput(#[from] NameError),

    #[error("parameter {key} does not exist; `cutover param list` shows the keys that do")]
    ParamNotFound { key: String },

    #[error(
        "{key} is written by Cutover's pipelines only ({why}); set /{prefix}/desired_version instead and run a release"
    )]
    ReservedKey {
        key: String,
        prefix: String,
        why: &'static str,
    },

    #[error("cannot set {key} to {reference:?}")]
    Resolve {
        key: String,
        reference: String,
        #[source]
        source: Box<GitError>,
    },

    #[error(
        "version {version} is not on branch {branch:?}, the only branch environment {env} (tier {tier}) accepts; \
         merge it into {branch} first, or deploy it to a dev or integration environment"
    )]
    NotOnBranch {
        version: String,
        branch: String,
        env: String,
        tier: String,
    },

    #[error("git repository {repo} could not be read")]
    Git {
        repo: String,
        #[source]
        source: Box<GitError>,
    },

    #[error(transparent)]
    Store(#[from] StoreError),

    /// A request that policy or the current state refuses; the message says why and what to do.
    #[error("{0}")]
    Refused(String),

    /// Refused because of who asks (four-eyes, admin-only overrides); the message says why.
    #[error("{0}")]
    Forbidden(String),

    /// Refused because of the current state (a limit reached, a run active); the message says what to do.
    #[error("{0}")]
    Conflict(String),

    #[error("run {id} does not exist; `cutover runs` lists recent runs")]
    RunNotFound { id: i64 },

    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownEnvironment { .. } | Self::ParamNotFound { .. } | Self::RunNotFound { .. } => {
                ErrorKind::NotFound
            }
            Self::InvalidInput(_)
            | Self::ReservedKey { .. }
            | Self::NotOnBranch { .. }
            | Self::Refused(_) => ErrorKind::BadRequest,
            Self::Resolve { source, .. } => match source.as_ref() {
                GitError::UnknownRef { .. } | GitError::AmbiguousRef { .. } | GitError::NotACommit { .. } => {
                    ErrorKind::BadRequest
                }
                _ => ErrorKind::Internal,
            },
            Self::Store(e) => match e {
                StoreError::VersionMismatch { .. }
                | StoreError::RunStateConflict { .. }
                | StoreError::JobRunConflict { .. } => ErrorKind::Conflict,
                StoreError::TokenNameTaken { .. } => ErrorKind::Conflict,
                StoreError::RunNotFound { .. }
                | StoreError::JobRunNotFound { .. }
                | StoreError::TokenNotFound { .. } => ErrorKind::NotFound,
                StoreError::InvalidKey { .. } | StoreError::InvalidText { .. } => ErrorKind::BadRequest,
                _ => ErrorKind::Internal,
            },
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::Git { .. } | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message with every cause appended, for logs and API bodies.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            if !out.contains(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        out
    }
}
