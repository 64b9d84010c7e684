//! Turning what a user typed into a full commit SHA.
//!
//! The accepted forms, in the order they are tried:
//!
//! 1. `HEAD`;
//! 2. a full 40-hex SHA;
//! 3. a full ref name (`refs/...`), looked up exactly and nowhere else;
//! 4. `refs/heads/<name>` (a local branch);
//! 5. `refs/tags/<name>` (annotated tags are peeled to their commit);
//! 6. `refs/remotes/<name>` (so `origin/main` works), then `refs/<name>`
//!    (so `heads/main` and `tags/v1` work, as in git);
//! 7. `refs/remotes/<remote>/<name>` for every remote (so `main` works in a
//!    clone that has no local `main`); several remotes that disagree make the
//!    name ambiguous;
//! 8. a short SHA of at least 4 hex digits.
//!
//! Refs win over short SHAs, as in git: a branch called `cafe` is the branch.
//! Unlike git, a local branch wins over a tag of the same name: environments
//! follow branches, and `branch: x` in cutover.yml must not silently deploy a
//! tag `x` instead.
//!
//! A short SHA matching several objects is narrowed to the candidates that
//! are commits (or tags of commits), like `git log <prefix>` does; if that
//! leaves exactly one commit, it is the answer, otherwise the error lists the
//! candidates. Rejected: gix's `rev_parse`, see the crate documentation.

use std::collections::HashSet;

use gix::ObjectId;
use gix::objs::Kind;

use crate::{GitError, Repo, Version};

/// Minimum length of a short SHA, as in git.
const MIN_SHORT_SHA: usize = 4;
/// Hex digits shown for a candidate in an ambiguity error.
const SHOWN_HEX: usize = 12;
/// Tags of tags of tags...: stop following after this many.
const MAX_TAG_DEPTH: usize = 16;

impl Repo {
    /// Resolves what a user typed (see the module documentation for the
    /// accepted forms and their order) to the full SHA of a commit.
    ///
    /// Errors: [`GitError::UnknownRef`] when nothing matches,
    /// [`GitError::AmbiguousRef`] when a short SHA (or a branch name on several
    /// remotes) matches more than one commit, [`GitError::NotACommit`] when
    /// the match is a tree or a blob. Every message names the repository.
    pub fn resolve(&self, reference: &str) -> Result<Version, GitError> {
        let repo = self.local();
        let unknown = || GitError::UnknownRef {
            reference: reference.to_owned(),
            repo: self.path.clone(),
        };
        if reference.is_empty() {
            return Err(unknown());
        }
        if reference == "HEAD" {
            let mut head = repo.head().map_err(self.fail("read HEAD"))?;
            let id = head.try_peel_to_id().map_err(self.fail("peel HEAD"))?;
            let id = id.ok_or_else(unknown)?.detach();
            return self.peel_to_commit(&repo, id, reference);
        }
        if reference.len() == 40 && is_hex(reference) {
            let id = ObjectId::from_hex(reference.to_ascii_lowercase().as_bytes()).map_err(|_| unknown())?;
            if !repo.has_object(id) {
                return Err(unknown());
            }
            return self.peel_to_commit(&repo, id, reference);
        }
        if let Some(id) = self.find_ref(&repo, reference, true)? {
            return self.peel_to_commit(&repo, id, reference);
        }
        if reference.len() >= MIN_SHORT_SHA && is_hex(reference) {
            return self.resolve_short_sha(&repo, reference);
        }
        Err(unknown())
    }

    /// The commit at the tip of `branch`: `refs/heads/<branch>`, else
    /// `refs/remotes/<remote>/<branch>` (or exactly `branch` if it starts with
    /// `refs/`). [`GitError::BranchNotFound`] if there is none.
    pub fn branch_head(&self, branch: &str) -> Result<Version, GitError> {
        let repo = self.local();
        let id = self.branch_tip(&repo, branch)?;
        to_version(id)
    }

    /// The commit id at the tip of `branch`, see [`Repo::branch_head`].
    pub(crate) fn branch_tip(&self, repo: &gix::Repository, branch: &str) -> Result<ObjectId, GitError> {
        match self.find_ref(repo, branch, false)? {
            Some(id) => self.peel_to_commit_id(repo, id, branch),
            None => Err(GitError::BranchNotFound {
                branch: branch.to_owned(),
                repo: self.path.clone(),
            }),
        }
    }

    /// Looks `name` up as a ref (steps 3 to 7 of the module documentation;
    /// tags only when `tags`), returning the fully peeled target.
    fn find_ref(&self, repo: &gix::Repository, name: &str, tags: bool) -> Result<Option<ObjectId>, GitError> {
        if name.starts_with("refs/") {
            return self.exact_ref(repo, name);
        }
        let mut candidates = vec![format!("refs/heads/{name}")];
        if tags {
            candidates.push(format!("refs/tags/{name}"));
            candidates.push(format!("refs/remotes/{name}"));
            candidates.push(format!("refs/{name}"));
        }
        for full in candidates {
            if let Some(id) = self.exact_ref(repo, &full)? {
                return Ok(Some(id));
            }
        }
        self.remote_branch(repo, name)
    }

    /// The peeled target of the ref called exactly `full`, if it exists.
    /// A name git would refuse (`a..b`, `x.lock`) simply does not exist.
    fn exact_ref(&self, repo: &gix::Repository, full: &str) -> Result<Option<ObjectId>, GitError> {
        let Ok(name) = gix::refs::FullName::try_from(full) else {
            return Ok(None);
        };
        let found = repo
            .try_find_reference(&name)
            .map_err(self.fail(format!("look up {full}")))?;
        match found {
            None => Ok(None),
            Some(mut reference) => {
                let id = reference
                    .peel_to_id()
                    .map_err(self.fail(format!("peel {full}")))?;
                Ok(Some(id.detach()))
            }
        }
    }

    /// `refs/remotes/<remote>/<name>` across all remotes. One commit (even on
    /// several remotes) is an answer; several different commits are ambiguous.
    fn remote_branch(&self, repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, GitError> {
        let platform = repo.references().map_err(self.fail("list references"))?;
        let iter = platform
            .remote_branches()
            .map_err(self.fail("list remote branches"))?;
        let mut found: Vec<(String, ObjectId)> = Vec::new();
        for reference in iter {
            let mut reference = reference.map_err(self.fail("read a remote branch"))?;
            let full = reference.name().as_bstr().to_string();
            let Some(rest) = full.strip_prefix("refs/remotes/") else {
                continue;
            };
            let Some((_remote, branch)) = rest.split_once('/') else {
                continue;
            };
            if branch != name {
                continue;
            }
            let id = reference
                .peel_to_id()
                .map_err(self.fail(format!("peel {full}")))?;
            found.push((full, id.detach()));
        }
        let Some(&(_, first)) = found.first() else {
            return Ok(None);
        };
        if found.iter().all(|(_, id)| *id == first) {
            return Ok(Some(first));
        }
        let mut candidates: Vec<String> = found
            .iter()
            .map(|(full, id)| format!("{full} ({})", id.to_hex_with_len(SHOWN_HEX)))
            .collect();
        candidates.sort();
        Err(GitError::AmbiguousRef {
            reference: name.to_owned(),
            repo: self.path.clone(),
            candidates,
        })
    }

    fn resolve_short_sha(&self, repo: &gix::Repository, short: &str) -> Result<Version, GitError> {
        let lower = short.to_ascii_lowercase();
        let unknown = || GitError::UnknownRef {
            reference: short.to_owned(),
            repo: self.path.clone(),
        };
        let prefix = gix::hash::Prefix::from_hex(&lower).map_err(|_| unknown())?;
        let mut matches = HashSet::new();
        repo.objects
            .lookup_prefix(prefix, Some(&mut matches))
            .map_err(self.fail(format!("look up objects starting with {lower}")))?;
        let mut matches: Vec<ObjectId> = matches.into_iter().collect();
        matches.sort();
        match matches.as_slice() {
            [] => return Err(unknown()),
            [only] => return self.peel_to_commit(repo, *only, short),
            _ => {}
        }
        // Several objects: keep those that are, or tag, a commit.
        let mut commits: Vec<ObjectId> = Vec::new();
        let mut committish: Vec<ObjectId> = Vec::new();
        for id in &matches {
            if let Some(commit) = self.try_peel_to_commit(repo, *id)? {
                committish.push(*id);
                if !commits.contains(&commit) {
                    commits.push(commit);
                }
            }
        }
        if let [only] = commits.as_slice() {
            return to_version(*only);
        }
        let shown = if committish.is_empty() {
            &matches
        } else {
            &committish
        };
        Err(GitError::AmbiguousRef {
            reference: short.to_owned(),
            repo: self.path.clone(),
            candidates: shown
                .iter()
                .map(|id| id.to_hex_with_len(SHOWN_HEX).to_string())
                .collect(),
        })
    }

    /// Follows tags from `id` to a commit; anything else is
    /// [`GitError::NotACommit`], reported against `reference`.
    fn peel_to_commit(
        &self,
        repo: &gix::Repository,
        id: ObjectId,
        reference: &str,
    ) -> Result<Version, GitError> {
        to_version(self.peel_to_commit_id(repo, id, reference)?)
    }

    fn peel_to_commit_id(
        &self,
        repo: &gix::Repository,
        id: ObjectId,
        reference: &str,
    ) -> Result<ObjectId, GitError> {
        let (end, kind) = self.peel_tags(repo, id)?;
        if kind == Kind::Commit {
            return Ok(end);
        }
        Err(GitError::NotACommit {
            reference: reference.to_owned(),
            repo: self.path.clone(),
            kind: kind.to_string(),
        })
    }

    /// `Some(commit)` if `id` is a commit or a tag (of a tag...) of one.
    fn try_peel_to_commit(&self, repo: &gix::Repository, id: ObjectId) -> Result<Option<ObjectId>, GitError> {
        let (end, kind) = self.peel_tags(repo, id)?;
        Ok((kind == Kind::Commit).then_some(end))
    }

    /// Follows annotated tags from `id` until something that is not a tag.
    fn peel_tags(&self, repo: &gix::Repository, mut id: ObjectId) -> Result<(ObjectId, Kind), GitError> {
        for _ in 0..MAX_TAG_DEPTH {
            let object = repo
                .find_object(id)
                .map_err(self.fail(format!("read object {id}")))?;
            if object.kind != Kind::Tag {
                return Ok((id, object.kind));
            }
            id = object
                .to_tag_ref_iter()
                .target_id()
                .map_err(self.fail(format!("decode tag {id}")))?;
        }
        Ok((id, Kind::Tag))
    }

    /// The commit id for `v`, checking that the repository has it as a commit.
    pub(crate) fn commit_id(&self, repo: &gix::Repository, v: &Version) -> Result<ObjectId, GitError> {
        let unknown = || GitError::UnknownCommit {
            version: v.clone(),
            repo: self.path.clone(),
        };
        let id = ObjectId::from_hex(v.as_str().as_bytes()).map_err(|_| unknown())?;
        let header = repo
            .try_find_header(id)
            .map_err(self.fail(format!("look up commit {v}")))?
            .ok_or_else(unknown)?;
        if header.kind() != Kind::Commit {
            return Err(GitError::NotACommit {
                reference: v.to_string(),
                repo: self.path.clone(),
                kind: header.kind().to_string(),
            });
        }
        Ok(id)
    }
}

/// A commit id as a [`Version`]. Only SHA-1 is compiled into gix here, so
/// every id is 40 hex digits and this cannot fail in practice.
pub(crate) fn to_version(id: ObjectId) -> Result<Version, GitError> {
    Version::parse(&id.to_hex().to_string()).map_err(|e| GitError::Repository {
        action: format!("use object id {id} as a version"),
        repo: std::path::PathBuf::new(),
        source: gix::Error::from_error(e),
    })
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_detection() {
        assert!(is_hex("cafe"));
        assert!(is_hex("CAFE01"));
        assert!(!is_hex("main"));
        assert!(!is_hex("cafe-1"));
    }

    #[test]
    fn ids_become_versions() {
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").expect("hex");
        assert_eq!(
            to_version(id).expect("version").as_str(),
            "0123456789abcdef0123456789abcdef01234567"
        );
    }
}
