//! `Repo::open` and `Repo::resolve`.

use std::collections::HashMap;

use cutover_git::{GitError, Repo, Version};

use crate::fixture::{Fixture, sample};

#[test]
fn resolves_shas_branches_tags_and_head() {
    let s = sample();
    let repo = s.f.open();
    assert_eq!(repo.resolve(s.c2.as_str()).unwrap(), s.c2);
    assert_eq!(repo.resolve(&s.c2.as_str().to_ascii_uppercase()).unwrap(), s.c2);
    assert_eq!(repo.resolve(&s.c2.as_str()[..7]).unwrap(), s.c2);
    assert_eq!(repo.resolve("main").unwrap(), s.c3);
    assert_eq!(repo.resolve("feature").unwrap(), s.f2);
    assert_eq!(repo.resolve("refs/heads/feature").unwrap(), s.f2);
    assert_eq!(repo.resolve("v1").unwrap(), s.c1, "lightweight tag");
    assert_eq!(
        repo.resolve("v2").unwrap(),
        s.c2,
        "annotated tag peeled to its commit"
    );
    assert_eq!(repo.resolve("refs/tags/v2").unwrap(), s.c2);
    assert_eq!(repo.resolve("HEAD").unwrap(), s.c3);
    assert_eq!(repo.resolve("heads/feature").unwrap(), s.f2);
    assert_eq!(repo.resolve("tags/v2").unwrap(), s.c2);

    // A branch shadows a tag of the same name.
    s.f.git(&["tag", "feature", s.c1.as_str()]);
    assert_eq!(repo.resolve("feature").unwrap(), s.f2);
    assert_eq!(repo.resolve("refs/tags/feature").unwrap(), s.c1);

    // Detached HEAD.
    s.f.git(&["checkout", "-q", "--detach", s.c2.as_str()]);
    assert_eq!(repo.resolve("HEAD").unwrap(), s.c2);

    // The SHA of the annotated tag object itself, full and short, also peels.
    let tag_object = s.f.git(&["rev-parse", "v2"]);
    assert_ne!(tag_object, s.c2.as_str());
    assert_eq!(repo.resolve(&tag_object).unwrap(), s.c2);
    assert_eq!(repo.resolve(&tag_object[..10]).unwrap(), s.c2);
}

#[test]
fn unknown_refs_name_the_repository() {
    let s = sample();
    let repo = s.f.open();
    for bad in [
        "nope",
        "",
        "abc",
        "a..b",
        "refs/heads/nope",
        "0000000000000000000000000000000000000000",
        "feature/",
    ] {
        let err = repo.resolve(bad).expect_err(bad);
        assert!(
            matches!(err, GitError::UnknownRef { ref reference, .. } if reference == bad),
            "{bad:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&repo.path().display().to_string()), "{msg}");
    }
}

#[test]
fn refs_to_trees_and_blobs_are_not_commits() {
    let s = sample();
    let repo = s.f.open();
    let tree = s.f.git(&["rev-parse", "main^{tree}"]);
    let err = repo.resolve(&tree).expect_err("tree");
    assert!(
        matches!(err, GitError::NotACommit { ref kind, .. } if kind == "tree"),
        "{err:?}"
    );

    let blob = s.f.git(&["rev-parse", "main:README.md"]);
    s.f.git(&["tag", "blobtag", &blob]);
    let err = repo.resolve("blobtag").expect_err("blob");
    assert!(
        matches!(err, GitError::NotACommit { ref kind, .. } if kind == "blob"),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a commit"), "{err}");
}

#[test]
fn remote_tracking_branches_resolve_by_short_name() {
    let s = sample();
    s.f.git(&["update-ref", "refs/remotes/origin/release", s.c2.as_str()]);
    let repo = s.f.open();
    assert_eq!(repo.resolve("release").unwrap(), s.c2);
    assert_eq!(repo.resolve("origin/release").unwrap(), s.c2);
    assert_eq!(repo.branch_head("release").unwrap(), s.c2);
    assert!(repo.branch_contains("release", &s.c1).unwrap());

    // The same name on a second remote at the same commit is still fine...
    s.f.git(&["update-ref", "refs/remotes/mirror/release", s.c2.as_str()]);
    assert_eq!(repo.resolve("release").unwrap(), s.c2);
    // ...at a different commit it is ambiguous, listing both refs.
    s.f.git(&["update-ref", "refs/remotes/upstream/release", s.c3.as_str()]);
    let err = repo.resolve("release").expect_err("ambiguous");
    let GitError::AmbiguousRef { candidates, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(candidates.len(), 3, "{candidates:?}");
    assert!(
        candidates
            .iter()
            .any(|c| c.starts_with("refs/remotes/upstream/release")),
        "{candidates:?}"
    );
    // A local branch of that name wins over the remotes.
    s.f.git(&["branch", "release", s.c1.as_str()]);
    assert_eq!(repo.resolve("release").unwrap(), s.c1);
}

/// Writes `count` small blobs in one `git hash-object` call; returns their SHAs.
fn write_blobs(f: &Fixture, count: usize) -> Vec<String> {
    let scratch = f.dir.path().join("blobs");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut list = String::new();
    for i in 0..count {
        let p = scratch.join(format!("b{i}"));
        std::fs::write(&p, format!("blob number {i}\n")).unwrap();
        list.push_str(&format!("{}\n", p.display()));
    }
    let list_file = f.dir.path().join("blob-list");
    std::fs::write(&list_file, list).unwrap();
    let output = std::process::Command::new("git")
        .current_dir(f.path())
        .env("HOME", f.dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["hash-object", "-w", "--no-filters", "--stdin-paths"])
        .stdin(std::fs::File::open(&list_file).unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn short_sha_matching_two_objects_is_ambiguous() {
    let s = sample();
    let blobs = write_blobs(&s.f, 2000);
    let mut by_prefix: HashMap<&str, Vec<&str>> = HashMap::new();
    for b in &blobs {
        by_prefix.entry(&b[..4]).or_default().push(b);
    }
    // Deterministic contents: the same pair every run; 2000 blobs over 65536
    // prefixes collide with near certainty (and do for these contents).
    let (prefix, pair) = by_prefix
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .min_by_key(|(p, _)| **p)
        .expect("two blobs sharing a 4-hex prefix");
    let repo = s.f.open();
    let err = repo.resolve(prefix).expect_err("ambiguous");
    let GitError::AmbiguousRef {
        reference,
        candidates,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(reference, prefix);
    for sha in pair {
        assert!(
            candidates.contains(&sha[..12].to_owned()),
            "{candidates:?} lacks {sha}"
        );
    }
    let msg = err.to_string();
    assert!(
        msg.contains("ambiguous") && msg.contains(&repo.path().display().to_string()),
        "{msg}"
    );

    // One more digit tells them apart when the blobs differ there: then it
    // is a single blob, which is not a commit.
    let (a, b) = (pair[0], pair[1]);
    let n = (5..40).find(|&n| a[..n] != b[..n]).unwrap();
    let err = repo.resolve(&a[..n]).expect_err("blob");
    assert!(matches!(err, GitError::NotACommit { .. }), "{err:?}");
}

#[test]
fn short_sha_shared_by_a_commit_and_a_blob_means_the_commit() {
    let s = sample();
    let blobs = write_blobs(&s.f, 2000);
    let prefixes: std::collections::HashSet<&str> = blobs.iter().map(|b| &b[..4]).collect();
    // Deterministic dates make deterministic SHAs; about 3% of commits hit a
    // blob prefix, so 400 tries is far more than enough.
    let mut hit: Option<Version> = None;
    for i in 0..400 {
        let c = s.f.commit(&format!("try {i}"), 10_000 + i);
        if prefixes.contains(&c.as_str()[..4]) {
            hit = Some(c);
            break;
        }
    }
    let commit = hit.expect("a commit sharing a 4-hex prefix with a blob");
    let repo = s.f.open();
    assert_eq!(repo.resolve(&commit.as_str()[..4]).unwrap(), commit);
}

#[test]
fn opens_bare_repositories_and_refuses_plain_directories() {
    let s = sample();
    let bare = s.f.dir.path().join("bare.git");
    s.f.git(&[
        "clone",
        "-q",
        "--bare",
        s.f.path().to_str().unwrap(),
        bare.to_str().unwrap(),
    ]);
    let repo = Repo::open(&bare).unwrap();
    assert_eq!(repo.path(), bare);
    assert_eq!(repo.resolve("main").unwrap(), s.c3);
    assert_eq!(repo.resolve("v2").unwrap(), s.c2);
    assert_eq!(repo.resolve("HEAD").unwrap(), s.c3);

    let missing = s.f.dir.path().join("missing");
    let err = Repo::open(&missing).expect_err("missing");
    assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing.display().to_string()));
}

#[test]
fn sees_commits_made_after_opening() {
    let s = sample();
    let repo = s.f.open();
    s.f.git(&["checkout", "-q", "main"]);
    let c4 = s.f.commit("fourth", 5_000);
    assert_eq!(repo.resolve("main").unwrap(), c4);
    assert_eq!(repo.commit(&c4).unwrap().subject, "fourth");
}

#[test]
fn everything_still_resolves_after_gc_packs_objects_refs_and_the_commit_graph() {
    let s = sample();
    s.f.git(&["gc", "-q", "--aggressive"]);
    s.f.git(&["commit-graph", "write", "--reachable"]);
    assert!(s.f.path().join(".git/packed-refs").exists());
    let repo = s.f.open();
    assert_eq!(repo.resolve("main").unwrap(), s.c3);
    assert_eq!(repo.resolve("v2").unwrap(), s.c2, "peeled tag from packed-refs");
    assert_eq!(
        repo.resolve(&s.f1.as_str()[..8]).unwrap(),
        s.f1,
        "short SHA from a pack index"
    );
    assert!(repo.is_ancestor(&s.c1, &s.f2).unwrap());
    assert!(!repo.is_ancestor(&s.f1, &s.c3).unwrap());
    let list = repo.commits_between(Some(&s.c1), &s.f2, 10).unwrap();
    assert_eq!(list.len(), 3);
}

#[test]
fn an_empty_repository_resolves_nothing() {
    let f = Fixture::new();
    let repo = f.open();
    for r in ["HEAD", "main", "abcd"] {
        assert!(matches!(repo.resolve(r), Err(GitError::UnknownRef { .. })), "{r}");
    }
    assert!(matches!(
        repo.branch_head("main"),
        Err(GitError::BranchNotFound { .. })
    ));
}
