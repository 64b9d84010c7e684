//! What keeps the application's code away from Cutover's own state: every
//! process this runtime starts (instances, hooks, builds, jobs) is confined
//! by a Landlock ruleset that denies the data directory, except the child's
//! own release directory and its environment's directory (`CUTOVER_ENV_DIR`).
//!
//! Landlock is an allow-list (a ruleset lists what stays allowed), so the
//! rest of the filesystem is allowed by granting full access to every entry
//! *beside* the path from `/` down to the data directory: for
//! `/var/lib/cutover`, everything in `/` but `var`, everything in `/var` but
//! `lib`, everything in `/var/lib` but `cutover`; then the child's own two
//! directories. `/proc`, `/dev`, `/tmp`, `/usr`, the repository and `$HOME`
//! are siblings along that path and stay as they were. Two consequences,
//! documented in the README: entries created beside that path *after* the
//! child started are not reachable for it (the ruleset is built at each
//! spawn, so later children see them), and a child cannot create new entries
//! directly in an ancestor of the data directory (with a data directory in
//! `/tmp/x/data`, nothing new in `/tmp` or `/tmp/x`; use a dedicated parent
//! such as `/var/lib/cutover`; when the data directory is inside the system's
//! temporary directory anyway, as in tests and `cutover demo`, children get
//! `TMPDIR=<env_dir>/.tmp`, so compilers and `mktemp` keep working). A sibling that resolves to an ancestor of
//! the data directory (a symlink to `/`) is skipped, as granting it would
//! grant the data directory. Landlock resolves magic links (`/proc/<pid>/fd`)
//! to the real file and forbids ptrace of processes outside the sandbox, so
//! neither reaches the server's open files. Signals to processes outside the
//! child's sandbox (the server) are refused too (ABI 6 scope).
//!
//! The ruleset is built in the parent and enforced in the child between
//! `fork` and `exec` (`pre_exec`): only `prctl(PR_SET_NO_NEW_PRIVS)` and
//! `landlock_restrict_self(fd)` run there, two system calls and no
//! allocation, which is what is allowed after `fork` in a threaded process.
//! This is the one `unsafe` of the crate (`pre_exec` is an unsafe method);
//! rejected: a trampoline binary that restricts itself and then `exec`s `sh`
//! (a second executable to ship and find) and the `nix`/`libc` crates (the
//! `landlock` crate already wraps the system calls).
//!
//! When the server runs as root, children may additionally run as an
//! unprivileged user (`run_as:` in `cutover.yml`); see [`RunAs`]. Landlock is
//! the protection in every case; `run_as` adds the ordinary file permissions
//! (the data directory is 0700) and takes root's other powers away.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope,
};
use tokio::process::Command;

/// The Landlock ABI whose access rights this code was written and tested for.
const ABI_USED: ABI = ABI::V7;

/// An unprivileged user children run as (from `/etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Looks `name` up in `/etc/passwd` (no NSS: users of a host's own
    /// files, as created by `useradd`).
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| format!("cannot read /etc/passwd to find run_as user {name:?}: {e}"))?;
        Self::find(&passwd, name).ok_or_else(|| {
            format!(
                "run_as names user {name:?}, which is not in /etc/passwd; create it (e.g. `useradd --system \
                 --no-create-home {name}`) or remove run_as"
            )
        })
    }

    fn find(passwd: &str, name: &str) -> Option<RunAs> {
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            let (user, _, uid, gid) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (user == name).then_some(())?;
            Some(RunAs {
                name: name.to_owned(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
            })
        })
    }
}

/// Which protection the children of this runtime get, for the start log and
/// `cutover status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// The kernel's Landlock ABI when children are confined; `None` when the
    /// kernel lacks Landlock or no data directory is protected.
    pub landlock_abi: Option<i32>,
    /// Why there is no Landlock confinement.
    pub landlock_missing: Option<String>,
    /// The user children run as, when not the server's.
    pub run_as: Option<String>,
}

/// `landlock ABI 7, run_as user cutover-app`, `none: kernel lacks landlock`.
impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(abi) = self.landlock_abi {
            parts.push(format!("landlock ABI {abi}"));
        }
        if let Some(user) = &self.run_as {
            parts.push(format!("run_as user {user}"));
        }
        if parts.is_empty() {
            let why = self
                .landlock_missing
                .as_deref()
                .unwrap_or("kernel lacks landlock");
            return write!(f, "none: {why}");
        }
        f.write_str(&parts.join(", "))
    }
}

/// The confinement of every child of one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sandbox {
    /// The directory children may not reach (canonical), except their own
    /// release and environment directories. `None`: no Landlock ruleset.
    pub protect: Option<PathBuf>,
    pub run_as: Option<RunAs>,
}

impl Sandbox {
    /// Protects `data_dir` (made canonical here, as Landlock sees real paths).
    pub fn protecting(data_dir: &Path, run_as: Option<RunAs>) -> io::Result<Sandbox> {
        Ok(Sandbox {
            protect: Some(data_dir.canonicalize()?),
            run_as,
        })
    }

    /// What is in force, probing the kernel once.
    pub fn protection(&self) -> Protection {
        let (landlock_abi, landlock_missing) = match (&self.protect, kernel_abi()) {
            (None, _) => (None, Some("no data directory to protect".to_owned())),
            (Some(_), Ok(abi)) => (Some(abi), None),
            (Some(_), Err(why)) => (None, Some(why)),
        };
        Protection {
            landlock_abi,
            landlock_missing,
            run_as: self.run_as.as_ref().map(|u| u.name.clone()),
        }
    }

    /// Arranges for `cmd`'s process to run confined: `own` are the
    /// directories inside the data directory it may use (release and
    /// environment directory; missing ones are skipped). With `run_as`,
    /// those directories are handed to that user first. When the data
    /// directory lies in the system's temporary directory (tests, the demo),
    /// where the child could create nothing, its `TMPDIR` is
    /// `<env_dir>/.tmp` instead.
    pub fn apply(&self, cmd: &mut Command, own: &[&Path], env_dir: Option<&Path>) -> io::Result<()> {
        if let (Some(protect), Some(env_dir)) = (&self.protect, env_dir)
            && under_temp_dir(protect)
        {
            let tmp = env_dir.join(".tmp");
            std::fs::create_dir_all(&tmp)?;
            if let Some(user) = &self.run_as {
                std::os::unix::fs::lchown(&tmp, Some(user.uid), Some(user.gid))?;
            }
            cmd.env("TMPDIR", &tmp);
        }
        if let Some(user) = &self.run_as {
            for dir in own {
                hand_over(dir, user)?;
            }
            cmd.uid(user.uid).gid(user.gid);
        }
        let Some(protect) = &self.protect else {
            return Ok(());
        };
        let Some(ruleset) = ruleset(protect, own)? else {
            return Ok(());
        };
        let mut ruleset = Some(ruleset);
        // SAFETY: the closure runs in the child between fork and exec. It calls
        // prctl(PR_SET_NO_NEW_PRIVS) and landlock_restrict_self on a descriptor made in the
        // parent; neither allocates, takes a lock or touches state another thread could hold.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || match ruleset.take() {
                Some(r) => r.restrict_self().map(drop).map_err(io::Error::other),
                None => Ok(()),
            });
        }
        Ok(())
    }
}

/// The system's temporary directory (`$TMPDIR`, else `/tmp`) is an ancestor
/// of `protect`: children could not create their temporary files there.
fn under_temp_dir(protect: &Path) -> bool {
    std::env::temp_dir()
        .canonicalize()
        .is_ok_and(|tmp| protect.starts_with(&tmp) && protect != tmp)
}

/// The ruleset for a child whose own directories are `own`; `None` when
/// the kernel lacks Landlock (the child then runs unconfined, as the start
/// log and `cutover status` say).
fn ruleset(protect: &Path, own: &[&Path]) -> io::Result<Option<RulesetCreated>> {
    if kernel_abi().is_err() {
        return Ok(None);
    }
    let all = AccessFs::from_all(ABI_USED);
    let file = AccessFs::from_file(ABI_USED);
    let fail = |what: String| move |e: landlock::RulesetError| io::Error::other(format!("{what}: {e}"));
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(fail("landlock: handle access".into()))?
        .scope(Scope::Signal)
        .map_err(fail("landlock: scope signals".into()))?
        .create()
        .map_err(fail("landlock: create ruleset".into()))?;
    let grant = |rs: RulesetCreated, path: &Path| -> io::Result<RulesetCreated> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(rs); // gone (or a dangling link) since it was listed
        };
        let Ok(fd) = PathFd::new(path) else {
            return Ok(rs);
        };
        let access = if meta.is_dir() { all } else { file };
        rs.add_rule(PathBeneath::new(fd, access))
            .map_err(fail(format!("landlock: allow {}", path.display())))
    };
    // Every entry beside the path from / down to the protected directory.
    let mut ancestor = PathBuf::from("/");
    for component in protect.components().skip(1) {
        let Component::Normal(next) = component else {
            continue;
        };
        let entries = std::fs::read_dir(&ancestor).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "landlock: cannot list {} to allow what lies beside the data directory: {e}",
                    ancestor.display()
                ),
            )
        })?;
        for entry in entries.flatten() {
            if entry.file_name() == next {
                continue;
            }
            let path = entry.path();
            // A sibling resolving to the path itself (a symlink to `/`) would grant it all.
            if let Ok(real) = path.canonicalize()
                && protect.starts_with(&real)
            {
                continue;
            }
            rs = grant(rs, &path)?;
        }
        ancestor.push(next);
    }
    for dir in own {
        rs = grant(rs, dir)?;
    }
    Ok(Some(rs))
}

/// The running kernel's Landlock ABI, or why there is none. Probed by
/// restricting a short-lived thread of our own (the status is only reported
/// by an enforcement), so the server itself is never confined.
pub fn kernel_abi() -> Result<i32, String> {
    use std::sync::OnceLock;
    static ABI_SEEN: OnceLock<Result<i32, String>> = OnceLock::new();
    ABI_SEEN
        .get_or_init(|| {
            let probe = std::thread::spawn(|| -> Result<i32, String> {
                let status = Ruleset::default()
                    .handle_access(AccessFs::Execute)
                    .and_then(|r| r.create())
                    .and_then(|r| r.restrict_self())
                    .map_err(|e| format!("landlock unusable: {e}"))?;
                match status.landlock {
                    LandlockStatus::Available {
                        effective_abi,
                        kernel_abi,
                    } => Ok(kernel_abi.unwrap_or(effective_abi as i32)),
                    LandlockStatus::NotEnabled => {
                        Err("kernel has landlock disabled (boot option lsm=)".into())
                    }
                    LandlockStatus::NotImplemented => Err("kernel lacks landlock".into()),
                }
            });
            probe
                .join()
                .unwrap_or_else(|_| Err("landlock probe panicked".into()))
        })
        .clone()
}

/// The server's effective user is root (only root can start children as
/// another user).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Gives `dir` (recursively) to `user`, when its top is not theirs yet: a
/// release checked out, or an environment directory created, by the server.
fn hand_over(dir: &Path, user: &RunAs) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.uid() == user.uid => Ok(()),
        Ok(_) => chown_tree(dir, user),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn chown_tree(path: &Path, user: &RunAs) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_in_passwd_text() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\napp:x:998:997::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            RunAs::find(passwd, "app"),
            Some(RunAs {
                name: "app".into(),
                uid: 998,
                gid: 997
            })
        );
        assert_eq!(RunAs::find(passwd, "ap"), None);
    }

    #[test]
    fn protection_reads_well() {
        let p = Protection {
            landlock_abi: Some(7),
            landlock_missing: None,
            run_as: Some("app".into()),
        };
        assert_eq!(p.to_string(), "landlock ABI 7, run_as user app");
        let none = Protection {
            landlock_abi: None,
            landlock_missing: Some("kernel lacks landlock".into()),
            run_as: None,
        };
        assert_eq!(none.to_string(), "none: kernel lacks landlock");
    }
}
