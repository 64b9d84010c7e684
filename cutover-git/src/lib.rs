//! Git access for Cutover, without the `git` binary.
//!
//! One job: turn what a user typed into a full commit SHA ([`Version`]), list
//! and compare commits, and write the tree of a commit into a release
//! directory. Everything goes through `gix`; no library code path spawns
//! `git`, so no user-typed string ever reaches a command line, and the
//! result does not depend on which git version (or which `~/.gitconfig`) the
//! server happens to have.
//!
//! Rejected alternatives:
//! - shelling out to `git rev-parse`/`git log`/`git archive`: needs the binary
//!   at run time, parses human output, and makes argument injection (`-` at
//!   the start of a ref) a constant worry;
//! - `git2` (libgit2): a C dependency with its own TLS/SSH build story, for
//!   nothing we need here;
//! - `gix`'s `rev_parse`: it accepts the whole revision grammar (`HEAD~3`,
//!   `:/message`, `@{upstream}`), which is more than a deploy tool should
//!   interpret, and its lookup order and ambiguity errors are not ours to
//!   control. [`Repo::resolve`] implements the documented subset directly.
//!
//! The API is synchronous (gix is); async callers wrap calls in
//! `tokio::task::spawn_blocking`. [`Repo`] is cheap to clone and `Send + Sync`;
//! each call makes a thread-local handle, so refs and packs written by a
//! `git fetch` after [`Repo::open`] are seen by the next call.
//!
//! Repositories are opened *isolated*: only the repository's own config file
//! is read, never the system or user config or `GIT_*` environment variables,
//! so the server's environment cannot change what a ref resolves to.

mod checkout;
mod error;
mod file;
mod history;
mod remote;
mod resolve;

use std::path::{Path, PathBuf};

pub use cutover_core::Version;
pub use error::GitError;
pub use remote::{Credentials, FetchOptions, FetchOutcome, check_remote_url, redact};

/// One commit, as shown in run logs, the dashboard and `cutover log`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CommitInfo {
    pub version: Version,
    /// Author name (not the committer: for a rebased or cherry-picked commit
    /// this is who wrote the change).
    pub author: String,
    pub email: String,
    /// Author time, seconds since the Unix epoch (0 if the commit's date
    /// cannot be parsed).
    pub time_unix: i64,
    /// The first paragraph of the message, folded onto one line.
    pub subject: String,
}

/// The application's git repository: a work tree or a bare repository.
#[derive(Clone)]
pub struct Repo {
    inner: gix::ThreadSafeRepository,
    path: PathBuf,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Object cache per call: commit walks look each commit up twice (once to
/// order by time, once to read the message).
const OBJECT_CACHE_BYTES: usize = 4 * 1024 * 1024;

impl Repo {
    /// Opens the repository at `path`: a work tree (with `.git` inside) or a
    /// bare repository. Does not search parent directories.
    pub fn open(path: &Path) -> Result<Repo, GitError> {
        let inner = gix::open::Options::isolated()
            .open(path)
            .map_err(|source| GitError::NotARepository {
                path: path.to_owned(),
                source,
            })?;
        Ok(Repo {
            inner,
            path: path.to_owned(),
        })
    }

    /// The path this repository was opened with, as given to [`Repo::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A thread-local handle for one call.
    fn local(&self) -> gix::Repository {
        let mut repo = self.inner.to_thread_local();
        repo.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
        repo
    }

    /// Maps a gix failure to [`GitError::Repository`], naming what we were doing.
    fn fail(&self, action: impl Into<String>) -> impl FnOnce(gix::Error) -> GitError {
        let action = action.into();
        let repo = self.path.clone();
        move |source| GitError::Repository { action, repo, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_traits<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn repo_is_clone_send_sync() {
        assert_traits::<Repo>();
    }

    #[test]
    fn opening_a_plain_directory_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Repo::open(dir.path()).expect_err("not a repository");
        let msg = err.to_string();
        assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("not a git repository"), "{msg}");
    }
}
