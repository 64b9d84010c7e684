//! `commit`, `commits_between`, `is_ancestor`, `branch_contains`, `recent_commits`.

use cutover_git::{CommitInfo, GitError, Version};

use crate::fixture::sample;

fn versions(list: &[CommitInfo]) -> Vec<&Version> {
    list.iter().map(|c| &c.version).collect()
}

#[test]
fn commit_info_has_author_time_and_subject() {
    let s = sample();
    let repo = s.f.open();
    let info = repo.commit(&s.c1).unwrap();
    assert_eq!(info.version, s.c1);
    assert_eq!(info.author, "Ada Lovelace");
    assert_eq!(info.email, "ada@example.com");
    assert_eq!(info.time_unix, 1_000);
    assert_eq!(
        info.subject, "first commit",
        "the body is not part of the subject"
    );

    let json = serde_json::to_string(&info).unwrap();
    assert!(json.contains(s.c1.as_str()), "{json}");
    assert_eq!(serde_json::from_str::<CommitInfo>(&json).unwrap(), info);
}

#[test]
fn unknown_commits_are_reported_as_such() {
    let s = sample();
    let repo = s.f.open();
    let absent = Version::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
    for err in [
        repo.commit(&absent).unwrap_err(),
        repo.commits_between(Some(&absent), &s.c3, 10).unwrap_err(),
        repo.commits_between(None, &absent, 10).unwrap_err(),
        repo.is_ancestor(&absent, &s.c3).unwrap_err(),
        repo.branch_contains("main", &absent).unwrap_err(),
    ] {
        assert!(
            matches!(&err, GitError::UnknownCommit { version, .. } if *version == absent),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&repo.path().display().to_string()),
            "{err}"
        );
    }
    let tree = Version::parse(&s.f.git(&["rev-parse", "main^{tree}"])).unwrap();
    assert!(matches!(repo.commit(&tree), Err(GitError::NotACommit { .. })));
}

#[test]
fn commits_between_lists_what_a_deployment_adds() {
    let s = sample();
    let repo = s.f.open();
    let list = repo.commits_between(Some(&s.c1), &s.c3, 10).unwrap();
    assert_eq!(versions(&list), [&s.c3, &s.c2]);
    let list = repo.commits_between(Some(&s.c3), &s.f2, 10).unwrap();
    assert_eq!(versions(&list), [&s.f2, &s.f1], "side branch: only what c3 lacks");
    let list = repo.commits_between(None, &s.f2, 10).unwrap();
    assert_eq!(versions(&list), [&s.f2, &s.f1, &s.c2, &s.c1]);
    let list = repo.commits_between(None, &s.f2, 2).unwrap();
    assert_eq!(versions(&list), [&s.f2, &s.f1]);
    assert!(repo.commits_between(Some(&s.c3), &s.c3, 10).unwrap().is_empty());
    assert!(
        repo.commits_between(Some(&s.c3), &s.c1, 10).unwrap().is_empty(),
        "rollback"
    );
    assert!(repo.commits_between(None, &s.c3, 0).unwrap().is_empty());
}

#[test]
fn commits_between_follows_merged_branches() {
    let s = sample();
    s.f.git_at(
        &s.f.path(),
        &["merge", "-q", "--no-ff", "-m", "merge feature", "feature"],
        6_000,
    );
    let merge = s.f.head();
    let repo = s.f.open();
    let list = repo.commits_between(Some(&s.c3), &merge, 10).unwrap();
    assert_eq!(versions(&list), [&merge, &s.f2, &s.f1]);
    let recent = repo.recent_commits("main", 3).unwrap();
    assert_eq!(
        versions(&recent),
        [&merge, &s.f2, &s.c3],
        "full history, newest first"
    );
}

#[test]
fn ancestry_both_ways() {
    let s = sample();
    let repo = s.f.open();
    assert!(repo.is_ancestor(&s.c1, &s.c3).unwrap());
    assert!(!repo.is_ancestor(&s.c3, &s.c1).unwrap());
    assert!(
        repo.is_ancestor(&s.c3, &s.c3).unwrap(),
        "a commit is its own ancestor"
    );
    assert!(repo.is_ancestor(&s.c2, &s.f2).unwrap());
    assert!(!repo.is_ancestor(&s.f1, &s.c3).unwrap(), "siblings");
    assert!(!repo.is_ancestor(&s.c3, &s.f1).unwrap(), "siblings");
}

#[test]
fn unrelated_histories_are_not_ancestors() {
    let s = sample();
    s.f.git(&["checkout", "-q", "--orphan", "other"]);
    let orphan = s.f.commit("unrelated root", 7_000);
    let repo = s.f.open();
    assert!(!repo.is_ancestor(&s.c1, &orphan).unwrap());
    assert!(!repo.branch_contains("main", &orphan).unwrap());
}

#[test]
fn branch_contains_true_false_and_missing() {
    let s = sample();
    let repo = s.f.open();
    assert!(repo.branch_contains("main", &s.c2).unwrap());
    assert!(repo.branch_contains("main", &s.c3).unwrap());
    assert!(!repo.branch_contains("main", &s.f1).unwrap());
    assert!(repo.branch_contains("feature", &s.f1).unwrap());
    let err = repo.branch_contains("nope", &s.c1).unwrap_err();
    assert!(
        matches!(&err, GitError::BranchNotFound { branch, .. } if branch == "nope"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&repo.path().display().to_string()),
        "{err}"
    );
    // A tag is not a branch.
    assert!(matches!(
        repo.branch_contains("v1", &s.c1),
        Err(GitError::BranchNotFound { .. })
    ));
}

#[test]
fn recent_commits_newest_first() {
    let s = sample();
    let repo = s.f.open();
    let list = repo.recent_commits("main", 2).unwrap();
    assert_eq!(versions(&list), [&s.c3, &s.c2]);
    assert_eq!(list[0].subject, "third commit");
    assert_eq!(list[0].time_unix, 3_500);
    let all = repo.recent_commits("feature", 100).unwrap();
    assert_eq!(versions(&all), [&s.f2, &s.f1, &s.c2, &s.c1]);
    assert!(matches!(
        repo.recent_commits("nope", 5),
        Err(GitError::BranchNotFound { .. })
    ));
}
