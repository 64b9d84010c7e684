//! One file of a commit, read from the object database without a checkout: how the engine
//! reads a commit's own `cutover.yml` (the application definition a run deploys).

use crate::{GitError, Repo, Version};

impl Repo {
    /// The bytes of `path` (relative to the repository root, `/`-separated) in commit `v`, or
    /// `None` when the commit has no such file (or it is a directory or a submodule).
    ///
    /// Errors: [`GitError::UnknownCommit`] and [`GitError::Repository`] for a damaged object
    /// database.
    pub fn read_file(&self, v: &Version, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let repo = self.local();
        let id = self.commit_id(&repo, v)?;
        let fail = |action: String| self.fail(action);
        let commit = repo
            .find_commit(id)
            .map_err(|e| fail(format!("read commit {v}"))(e))?;
        let tree = commit
            .tree()
            .map_err(|e| fail(format!("read the tree of {v}"))(e))?;
        let Some(entry) = tree
            .lookup_entry_by_path(path)
            .map_err(|e| fail(format!("look up {path} in {v}"))(e))?
        else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let object = entry
            .object()
            .map_err(|e| fail(format!("read {path} of {v}"))(e))?;
        Ok(Some(object.data.clone()))
    }
}
