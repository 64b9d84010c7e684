//! Writing the tree of a commit into a release directory.
//!
//! The files are written into a temporary sibling of the destination
//! (`.<name>.partial-XXXXXX`, same file system) and renamed into place only
//! when every entry was written, so a crash or an error never leaves a half
//! release where a runtime could start it. A crash can leave a `.partial-`
//! sibling behind; it is never mistaken for a release.
//!
//! The tree goes through gix's checkout (the same code `gix clone` uses), so
//! `.gitattributes` end-of-line rules apply as with `git checkout`, the
//! executable bit and symlinks are preserved, and paths git would refuse
//! (`.git`, `..`) are refused. External filter drivers (`filter.<x>.smudge`,
//! e.g. Git LFS) are *not* run: no program configured in a repository is
//! executed by Cutover, so LFS files arrive as their pointer files.
//!
//! Rejected: `git archive | tar x` (needs the git binary and a shell) and
//! writing blobs by hand (would re-implement attributes, symlinks and path
//! validation).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::{GitError, Repo, Version};

impl Repo {
    /// Writes the tree of commit `v` into `dest`, which must be absent or an
    /// empty directory (its parent is created if needed). No `.git` is
    /// written; executable bits and symlinks are preserved.
    ///
    /// Errors: [`GitError::UnknownCommit`], [`GitError::DestinationNotEmpty`],
    /// [`GitError::Io`] for file-system failures, and
    /// [`GitError::CheckoutIncomplete`] if some entries could not be written
    /// (then nothing is placed at `dest`).
    pub fn checkout(&self, v: &Version, dest: &Path) -> Result<(), GitError> {
        let repo = self.local();
        let commit_id = self.commit_id(&repo, v)?;
        ensure_empty_or_absent(dest)?;

        let io_err = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source: io::Error| GitError::Io { action, path, source }
        };
        let name = dest.file_name().ok_or_else(|| GitError::Io {
            action: "use as a release directory",
            path: dest.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no final component"),
        })?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent).map_err(io_err("create the directory", parent))?;
        let prefix = format!(".{}.partial-", name.to_string_lossy());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        #[cfg(unix)]
        {
            // The default of tempfile is 0o700; a release directory gets the
            // usual mode (0o777 minus the umask), as `mkdir` would give it.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o777));
        }
        let staging = builder
            .tempdir_in(parent)
            .map_err(io_err("create a temporary directory in", parent))?;

        self.write_tree(&repo, commit_id, v, dest, staging.path())?;

        match fs::rename(staging.path(), dest) {
            Ok(()) => {
                // The directory now lives at `dest`; nothing left to clean up.
                let _ = staging.keep();
                Ok(())
            }
            // Someone wrote into `dest` meanwhile; `staging` is removed on drop.
            Err(e)
                if e.kind() == io::ErrorKind::DirectoryNotEmpty
                    || e.kind() == io::ErrorKind::AlreadyExists =>
            {
                Err(GitError::DestinationNotEmpty {
                    dest: dest.to_owned(),
                })
            }
            Err(e) => Err(io_err("move the checked-out tree to", dest)(e)),
        }
    }

    fn write_tree(
        &self,
        repo: &gix::Repository,
        commit_id: gix::ObjectId,
        v: &Version,
        dest: &Path,
        staging: &Path,
    ) -> Result<(), GitError> {
        let tree_id = repo
            .find_commit(commit_id)
            .and_then(|c| c.tree_id())
            .map_err(self.fail(format!("read the tree of commit {v}")))?;
        let mut index = repo
            .index_from_tree(&tree_id)
            .map_err(self.fail(format!("read the tree of commit {v}")))?;
        let mut options = repo
            .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
            .map_err(self.fail("read the checkout configuration"))?;
        options.destination_is_initially_empty = true;
        options.overwrite_existing = false;
        options.keep_going = true;
        // Probe the file system we write to, not the one the repository is on.
        options.fs = gix::fs::Capabilities::probe_dir(staging);
        options.filters.options_mut().drivers.clear();

        let objects = repo.objects.clone().into_arc().map_err(|source| GitError::Io {
            action: "open the object database of",
            path: self.path.clone(),
            source,
        })?;
        let interrupt = AtomicBool::new(false);
        let outcome = gix::worktree::state::checkout(
            &mut index,
            staging,
            objects,
            &gix::progress::Discard,
            &gix::progress::Discard,
            &interrupt,
            options,
        )
        .map_err(self.fail(format!("check out commit {v}")))?;

        let mut failed: Vec<String> = outcome
            .collisions
            .iter()
            .map(|c| format!("{}: {:?}", c.path, c.error_kind))
            .chain(outcome.errors.iter().map(|e| format!("{}: {}", e.path, e.error)))
            .chain(
                outcome
                    .delayed_paths_unknown
                    .iter()
                    .map(|p| format!("{p}: delayed by a filter")),
            )
            .chain(
                outcome
                    .delayed_paths_unprocessed
                    .iter()
                    .map(|p| format!("{p}: delayed by a filter")),
            )
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let count = failed.len();
        Err(GitError::CheckoutIncomplete {
            version: v.clone(),
            dest: dest.to_owned(),
            count,
            first: failed.swap_remove(0),
        })
    }
}

/// `Ok` if `dest` does not exist or is an empty directory.
fn ensure_empty_or_absent(dest: &Path) -> Result<(), GitError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GitError::Io {
            action: "inspect",
            path: dest.to_owned(),
            source,
        }),
        Ok(meta) if !meta.is_dir() => Err(GitError::DestinationNotEmpty {
            dest: dest.to_owned(),
        }),
        Ok(_) => {
            let mut entries = fs::read_dir(dest).map_err(|source| GitError::Io {
                action: "read",
                path: dest.to_owned(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(GitError::DestinationNotEmpty {
                    dest: dest.to_owned(),
                });
            }
            Ok(())
        }
    }
}
