//! The one error type of `cutover-git`.
//!
//! Every variant carries the repository path (or the destination directory)
//! so that a message read in a run log, far from the call site, still says
//! *which* repository and *what* to do about it. Causes from `gix` travel as
//! `#[source]` and are never repeated in `Display`; log the whole chain.
//!
//! Rejected: passing `gix::Error` through unchanged. Its messages describe
//! gix internals ("revspec did not resolve to a single object") rather than
//! what the user typed, and they do not name the repository.

use std::path::PathBuf;

use cutover_core::Version;

/// What went wrong while reading the application repository or writing a
/// release directory.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `Repo::open` was given a path that holds no git repository.
    #[error(
        "{} is not a git repository (neither a work tree with .git nor a bare repository); \
         set `repo:` in cutover.yml to the application's git repository",
        path.display()
    )]
    NotARepository {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },

    /// Nothing in the repository is called `reference`.
    #[error(
        "{reference:?} is not a commit SHA, branch or tag in the repository at {}; \
         check the spelling, or fetch the repository if it was pushed recently",
        repo.display()
    )]
    UnknownRef { reference: String, repo: PathBuf },

    /// `reference` matches several objects (a short SHA) or several remote
    /// branches that disagree. `candidates` are short SHAs, or full ref names
    /// for a branch name found on several remotes.
    #[error(
        "{reference:?} is ambiguous in the repository at {}: it matches {}; \
         give more hex digits of the SHA, or the full ref name",
        repo.display(),
        candidates.join(", ")
    )]
    AmbiguousRef {
        reference: String,
        repo: PathBuf,
        candidates: Vec<String>,
    },

    /// `reference` names an object that is not a commit (a tree, a blob, or a
    /// tag pointing at one).
    #[error(
        "{reference:?} in the repository at {} points at a {kind}, not a commit; \
         give a commit SHA, a branch, or a tag that points at a commit",
        repo.display()
    )]
    NotACommit {
        reference: String,
        repo: PathBuf,
        kind: String,
    },

    /// A full SHA that the repository does not contain as a commit.
    #[error(
        "commit {version} is not in the repository at {}; \
         fetch the repository, or check that the version belongs to this application",
        repo.display()
    )]
    UnknownCommit { version: Version, repo: PathBuf },

    /// No `refs/heads/<branch>` and no `refs/remotes/*/<branch>`.
    #[error(
        "branch {branch:?} does not exist in the repository at {}; \
         check `branch:` in cutover.yml, or fetch the repository",
        repo.display()
    )]
    BranchNotFound { branch: String, repo: PathBuf },

    /// `checkout` refuses to mix a release with files already at `dest`.
    #[error(
        "cannot check out into {}: it exists and is not an empty directory; \
         remove it or choose another release directory",
        dest.display()
    )]
    DestinationNotEmpty { dest: PathBuf },

    /// A file-system step of `checkout` failed (creating the temporary
    /// directory, renaming it into place).
    #[error("could not {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The checkout ran but some entries could not be written.
    #[error(
        "checking out {version} into {} left {count} entries unwritten (first: {first}); \
         nothing was placed at the destination",
        dest.display()
    )]
    CheckoutIncomplete {
        version: Version,
        dest: PathBuf,
        count: usize,
        first: String,
    },

    /// `repo:` names a URL Cutover cannot mirror.
    #[error("cannot fetch from {url:?}: {why}")]
    BadRemote { url: String, why: String },

    /// Fetching from the git host failed; `message` is what the host or the transport said
    /// (secrets redacted).
    #[error(
        "could not {action} from {url}: {message}; check that the host answers, that the URL in `repo:` \
         is right, and that the credentials in `source:` may read the repository"
    )]
    Fetch {
        url: String,
        action: String,
        message: String,
    },

    /// Reading the repository failed for a reason other than a missing
    /// object or ref: corruption, permissions, an unreadable pack.
    #[error("could not {action} in the repository at {}", repo.display())]
    Repository {
        action: String,
        repo: PathBuf,
        #[source]
        source: gix::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn errors_cross_threads() {
        assert_send_sync::<GitError>();
    }

    #[test]
    fn messages_name_the_repository_and_the_fix() {
        let e = GitError::AmbiguousRef {
            reference: "abcd".into(),
            repo: PathBuf::from("/srv/shop"),
            candidates: vec!["abcd01234567".into(), "abcd89abcdef".into()],
        };
        let msg = e.to_string();
        assert!(msg.contains("/srv/shop"), "{msg}");
        assert!(msg.contains("abcd01234567, abcd89abcdef"), "{msg}");
        assert!(msg.contains("more hex digits"), "{msg}");

        let e = GitError::UnknownRef {
            reference: "nope".into(),
            repo: PathBuf::from("/srv/shop"),
        };
        assert!(e.to_string().contains("\"nope\""));
    }
}
