//! `Repo::checkout`.

use std::fs;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

use cutover_git::{GitError, Version};

use crate::fixture::sample;

#[test]
fn writes_the_tree_with_modes_and_without_git() {
    let s = sample();
    let repo = s.f.open();
    let releases = s.f.dir.path().join("releases");
    let dest = releases.join(s.c1.as_str());
    repo.checkout(&s.c1, &dest).unwrap();

    assert_eq!(fs::read_to_string(dest.join("README.md")).unwrap(), "# shop\n");
    assert_eq!(
        fs::read_to_string(dest.join("config/app.yml")).unwrap(),
        "port: 1\n"
    );
    assert!(!dest.join(".git").exists());
    assert!(!dest.join("feature.txt").exists());
    #[cfg(unix)]
    {
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode();
        assert_eq!(mode("bin/run.sh") & 0o111, 0o111, "executable bit kept");
        assert_eq!(mode("README.md") & 0o111, 0, "plain files stay plain");
        assert_ne!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o700,
            "release dir gets a normal mode"
        );
        let link = fs::symlink_metadata(dest.join("LINK.md")).unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!(
            fs::read_link(dest.join("LINK.md")).unwrap().to_str(),
            Some("README.md")
        );
    }
    let mut names: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["LINK.md", "README.md", "bin", "config"],
        "nothing but the tree"
    );
    let siblings: Vec<_> = fs::read_dir(&releases).unwrap().collect();
    assert_eq!(siblings.len(), 1, "no temporary directory left behind");

    // Another version in its own directory.
    let dest2 = releases.join(s.c3.as_str());
    repo.checkout(&s.c3, &dest2).unwrap();
    assert_eq!(fs::read_to_string(dest2.join("README.md")).unwrap(), "# shop 3\n");
}

#[test]
fn accepts_an_empty_directory_and_refuses_a_full_one() {
    let s = sample();
    let repo = s.f.open();
    let empty = s.f.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    repo.checkout(&s.c2, &empty).unwrap();
    assert_eq!(
        fs::read_to_string(empty.join("config/app.yml")).unwrap(),
        "port: 2\n"
    );

    let err = repo.checkout(&s.c3, &empty).unwrap_err();
    assert!(
        matches!(&err, GitError::DestinationNotEmpty { dest } if *dest == empty),
        "{err:?}"
    );
    assert!(err.to_string().contains(&empty.display().to_string()));
    assert_eq!(
        fs::read_to_string(empty.join("README.md")).unwrap(),
        "# shop\n",
        "untouched"
    );

    let file = s.f.dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    assert!(matches!(
        repo.checkout(&s.c3, &file),
        Err(GitError::DestinationNotEmpty { .. })
    ));
    let parent_entries = fs::read_dir(s.f.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".partial-")
        })
        .count();
    assert_eq!(parent_entries, 0, "refusals leave no temporary directory");
}

#[test]
fn unknown_commit_writes_nothing() {
    let s = sample();
    let repo = s.f.open();
    let dest = s.f.dir.path().join("never");
    let absent = Version::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
    assert!(matches!(
        repo.checkout(&absent, &dest),
        Err(GitError::UnknownCommit { .. })
    ));
    assert!(!dest.exists());
}

#[test]
fn checks_out_from_a_bare_repository() {
    let s = sample();
    let bare = s.f.dir.path().join("bare.git");
    s.f.git(&[
        "clone",
        "-q",
        "--bare",
        s.f.path().to_str().unwrap(),
        bare.to_str().unwrap(),
    ]);
    let repo = cutover_git::Repo::open(&bare).unwrap();
    let dest = s.f.dir.path().join("from-bare");
    repo.checkout(&s.f2, &dest).unwrap();
    assert_eq!(fs::read_to_string(dest.join("feature.txt")).unwrap(), "f2\n");
}
