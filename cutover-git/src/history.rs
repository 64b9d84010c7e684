//! Reading commit history: one commit, the commits a deployment adds, and
//! ancestry questions ("is this version on `main`?", "is this a rollback?").
//!
//! Lists follow the *full* history (every parent of a merge), ordered newest
//! first by commit time, as `git log` shows them; this is what a reviewer
//! wants to see in "what does this deployment ship". Rejected: first-parent
//! only, which hides the commits of merged feature branches behind a single
//! "Merge pull request" line.
//!
//! Ancestry uses gix's merge-base (which reads the commit-graph file when
//! present) rather than a walk with a time cutoff, which clock skew between
//! committers can fool.

use gix::ObjectId;
use gix::revision::walk::Sorting;
use gix::traverse::commit::simple::CommitTimeOrder;

use crate::resolve::to_version;
use crate::{CommitInfo, GitError, Repo, Version};

impl Repo {
    /// The commit `v`. [`GitError::UnknownCommit`] if the repository does not
    /// have it (fetch first).
    pub fn commit(&self, v: &Version) -> Result<CommitInfo, GitError> {
        let repo = self.local();
        let id = self.commit_id(&repo, v)?;
        self.commit_info(&repo, id)
    }

    /// Commits reachable from `to` but not from `from`, newest first, at most
    /// `limit` (`git log from..to`). With `from = None`, the newest `limit`
    /// commits of `to`'s history, `to` included.
    ///
    /// For a rollback (`to` is an ancestor of `from`) the list is empty; swap
    /// the arguments to see what the rollback takes away.
    pub fn commits_between(
        &self,
        from: Option<&Version>,
        to: &Version,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        let repo = self.local();
        let to_id = self.commit_id(&repo, to)?;
        let hidden = from.map(|f| self.commit_id(&repo, f)).transpose()?;
        self.walk(&repo, to_id, hidden, limit)
    }

    /// Is `ancestor` reachable from `descendant` by following parents? A
    /// commit is its own ancestor. Both must exist ([`GitError::UnknownCommit`]).
    pub fn is_ancestor(&self, ancestor: &Version, descendant: &Version) -> Result<bool, GitError> {
        let repo = self.local();
        let a = self.commit_id(&repo, ancestor)?;
        let d = self.commit_id(&repo, descendant)?;
        self.is_ancestor_id(&repo, a, d)
    }

    /// Is `v` on `branch`, that is, reachable from its tip? The branch is
    /// looked up as in [`Repo::branch_head`]; [`GitError::BranchNotFound`] if
    /// it does not exist.
    pub fn branch_contains(&self, branch: &str, v: &Version) -> Result<bool, GitError> {
        let repo = self.local();
        let tip = self.branch_tip(&repo, branch)?;
        let id = self.commit_id(&repo, v)?;
        self.is_ancestor_id(&repo, id, tip)
    }

    /// The newest `limit` commits of `branch`, newest first, following the
    /// full history (all parents of merges), `git log <branch>` order.
    pub fn recent_commits(&self, branch: &str, limit: usize) -> Result<Vec<CommitInfo>, GitError> {
        let repo = self.local();
        let tip = self.branch_tip(&repo, branch)?;
        self.walk(&repo, tip, None, limit)
    }

    fn is_ancestor_id(
        &self,
        repo: &gix::Repository,
        ancestor: ObjectId,
        descendant: ObjectId,
    ) -> Result<bool, GitError> {
        if ancestor == descendant {
            return Ok(true);
        }
        let base = repo
            .merge_base(ancestor, descendant)
            .map_err(self.fail(format!("find the merge base of {ancestor} and {descendant}")))?;
        // If `ancestor` is reachable from `descendant`, it is the single best
        // common ancestor: every other common ancestor is an ancestor of it.
        Ok(base.is_some_and(|base| base.detach() == ancestor))
    }

    fn walk(
        &self,
        repo: &gix::Repository,
        tip: ObjectId,
        hidden: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let walk = repo
            .rev_walk([tip])
            .with_hidden(hidden)
            .sorting(Sorting::ByCommitTime(CommitTimeOrder::NewestFirst))
            .all()
            .map_err(self.fail(format!("walk the history of {tip}")))?;
        let mut out = Vec::with_capacity(limit.min(256));
        for info in walk.take(limit) {
            let info = info.map_err(self.fail(format!("walk the history of {tip}")))?;
            out.push(self.commit_info(repo, info.id)?);
        }
        Ok(out)
    }

    fn commit_info(&self, repo: &gix::Repository, id: ObjectId) -> Result<CommitInfo, GitError> {
        let commit = repo
            .find_commit(id)
            .map_err(self.fail(format!("read commit {id}")))?;
        let author = commit
            .author()
            .map_err(self.fail(format!("decode the author of commit {id}")))?
            .trim();
        // A malformed date should not hide the commit from a list.
        let time_unix = author.time().map(|t| t.seconds).unwrap_or(0);
        let subject = match commit.message() {
            Ok(message) => message.summary().to_string(),
            Err(_) => first_line(&commit.message_raw_sloppy().to_string()),
        };
        Ok(CommitInfo {
            version: to_version(id)?,
            author: author.name.to_string(),
            email: author.email.to_string(),
            time_unix,
            subject,
        })
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}
