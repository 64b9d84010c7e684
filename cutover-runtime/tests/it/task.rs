//! One-shot tasks: exit codes, streamed output, environment, working
//! directory, timeout and cancel (the whole group goes), errors.

use std::path::Path;
use std::time::{Duration, SystemTime};

use cutover_runtime::os;
use cutover_runtime::{
    LogStream, MAX_TASK_LINE, Runtime, RuntimeError, TaskExit, TaskLine, TaskOutcome, TaskSpec,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn spec(dir: &Path, command: &str) -> TaskSpec {
    TaskSpec {
        label: "install hook".into(),
        command: command.into(),
        dir: dir.to_owned(),
        env_vars: vec![("CUTOVER_RUN_ID".into(), "42".into())],
        timeout: Duration::from_secs(20),
    }
}

/// Runs to the end; returns the outcome and every line sent.
async fn run(fx: &Fixture, spec: TaskSpec) -> (TaskOutcome, Vec<TaskLine>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        fx.rt.run_task(spec, tx, CancellationToken::new()),
    )
    .await
    .expect("the task ended in time")
    .expect("the task ran");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    (outcome, lines)
}

fn texts(lines: &[TaskLine], stream: LogStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text.as_str())
        .collect()
}

/// Waits for the task to write its pids (`echo $$ $!` style) to `file`.
async fn read_pids(file: &Path) -> Vec<u32> {
    eventually(Duration::from_secs(10), "the task's pid file", || async {
        let text = std::fs::read_to_string(file).ok()?;
        let pids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        (text.ends_with('\n') && pids.len() >= 2).then_some(pids)
    })
    .await
}

#[tokio::test]
async fn exit_codes_and_both_streams_in_order_with_timestamps() {
    let fx = Fixture::new(Duration::from_secs(5));
    let before = SystemTime::now();
    let (ok, lines) = run(&fx, spec(&fx.release, "printf 'a\\nb\\n'; echo c >&2")).await;
    assert_eq!(ok.exit, TaskExit::Code(0));
    assert!(ok.success());
    assert_eq!(texts(&lines, LogStream::Stdout), ["a", "b"]);
    assert_eq!(texts(&lines, LogStream::Stderr), ["c"]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let after = SystemTime::now();
    assert!(lines.iter().all(|l| before <= l.at && l.at <= after));
    let out: Vec<&TaskLine> = lines.iter().filter(|l| l.stream == LogStream::Stdout).collect();
    assert!(out[0].at <= out[1].at);

    let (failed, lines) = run(&fx, spec(&fx.release, "echo no >&2; exit 7")).await;
    assert_eq!(failed.exit, TaskExit::Code(7));
    assert!(!failed.success());
    assert_eq!(texts(&lines, LogStream::Stderr), ["no"]);
    assert_eq!(failed.exit.to_string(), "exit status 7");

    let (killed, _) = run(&fx, spec(&fx.release, "kill -9 $$")).await;
    assert_eq!(killed.exit, TaskExit::Signal(9));
}

#[tokio::test]
async fn env_values_arrive_verbatim_and_execute_nothing() {
    let fx = Fixture::new(Duration::from_secs(5));
    let marker = fx.dir.path().join("pwned");
    let evil = format!("$(touch {0}); ;rm `touch {0}` && touch {0}", marker.display());
    let mut s = spec(
        &fx.release,
        "printf '%s\\n' \"$CUTOVER_VERSION\" \"$CUTOVER_RUN_ID\"; pwd",
    );
    s.env_vars.push(("CUTOVER_VERSION".into(), evil.clone()));
    let (outcome, lines) = run(&fx, s).await;
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    let release = std::fs::canonicalize(&fx.release).unwrap();
    assert_eq!(
        texts(&lines, LogStream::Stdout),
        [evil.as_str(), "42", release.to_str().unwrap()]
    );
    assert!(!marker.exists(), "a value was executed");
}

#[tokio::test]
async fn a_missing_dir_and_a_bad_spawn_are_clear_errors() {
    let fx = Fixture::new(Duration::from_secs(5));
    let missing = fx.dir.path().join("no-such-release");
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = fx
        .rt
        .run_task(spec(&missing, "true"), tx.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::TaskDirMissing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(missing.to_str().unwrap()), "{text}");
    assert!(text.contains("install hook"), "{text}");

    // A NUL in a variable name makes the spawn itself fail.
    let mut bad = spec(&fx.release, "true");
    bad.label = "build yves".into();
    bad.env_vars.push(("A\0B".into(), "x".into()));
    let err = fx
        .rt
        .run_task(bad, tx, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::TaskSpawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("could not start the build yves"),
        "{err}"
    );
}

/// Starts `sleep 1000 & sleep 1000` and returns (pgid, [sh, background sleep]).
fn sleeper(fx: &Fixture, pid_file: &Path) -> TaskSpec {
    let mut s = spec(
        &fx.release,
        &format!("sleep 1000 & echo $$ $! > '{}'; sleep 1000", pid_file.display()),
    );
    s.label = "job queue-worker".into();
    s
}

fn assert_all_gone(pids: &[u32]) {
    for pid in pids {
        assert!(!os::is_alive(*pid), "pid {pid} is still alive");
    }
    assert!(os::group_members(pids[0]).is_empty(), "the group is not empty");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group_including_a_grandchild() {
    let fx = Fixture::new(Duration::from_secs(2));
    let pid_file = fx.dir.path().join("pids");
    let mut s = sleeper(&fx, &pid_file);
    s.timeout = Duration::from_millis(700);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = fx.rt.clone();
    let running = tokio::spawn(async move { rt.run_task(s, tx, CancellationToken::new()).await });
    let pids = read_pids(&pid_file).await;
    assert!(pids.iter().all(|p| os::is_alive(*p)), "{pids:?}");
    assert_eq!(os::group_members(pids[0]).len(), 3, "sh and two sleeps");

    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("ended in time")
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome.exit,
        TaskExit::TimedOut {
            after: Duration::from_millis(700)
        }
    );
    assert!(outcome.duration >= Duration::from_millis(700), "{outcome:?}");
    assert!(
        outcome.duration < Duration::from_secs(2),
        "SIGTERM was enough: {outcome:?}"
    );
    assert_all_gone(&pids);
    let mut notes = Vec::new();
    while let Ok(line) = rx.try_recv() {
        notes.push(line);
    }
    let notes = texts(&notes, LogStream::Cutover);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("timed out after 700ms: SIGTERM")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn cancel_mid_run_terminates_the_group() {
    let fx = Fixture::new(Duration::from_secs(2));
    let pid_file = fx.dir.path().join("pids");
    let s = sleeper(&fx, &pid_file);
    let cancel = CancellationToken::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = fx.rt.clone();
    let token = cancel.clone();
    let running = tokio::spawn(async move { rt.run_task(s, tx, token).await });
    let pids = read_pids(&pid_file).await;
    cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("ended in time")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.exit, TaskExit::Cancelled);
    assert!(!outcome.success());
    assert_all_gone(&pids);
}

#[tokio::test]
async fn sigterm_is_escalated_and_leftovers_of_a_finished_task_are_killed() {
    let fx = Fixture::new(Duration::from_millis(300));
    let pid_file = fx.dir.path().join("pids");
    // The task exits 0 at once but leaves a background child that ignores
    // SIGTERM. It exits only once the child has set its trap: a child killed
    // before that (a loaded machine) would not show the escalation.
    let ready = fx.dir.path().join("trapped");
    let s = spec(
        &fx.release,
        &format!(
            "(trap '' TERM; : > '{ready}'; exec sleep 1000) & echo $$ $! > '{}'; \
             while [ ! -e '{ready}' ]; do sleep 0.01; done; echo done",
            pid_file.display(),
            ready = ready.display()
        ),
    );
    let (outcome, lines) = run(&fx, s).await;
    assert_eq!(outcome.exit, TaskExit::Code(0));
    assert_eq!(texts(&lines, LogStream::Stdout), ["done"]);
    let pids = read_pids(&pid_file).await;
    assert_all_gone(&pids);
    let notes = texts(&lines, LogStream::Cutover);
    assert!(
        notes.iter().any(|n| n.contains("left 1 process(es)")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("ignored SIGTERM")), "{notes:?}");
}

#[tokio::test]
async fn ten_thousand_lines_all_arrive_in_order() {
    let fx = Fixture::new(Duration::from_secs(5));
    let (outcome, lines) = run(&fx, spec(&fx.release, "seq 1 10000; seq 1 10000 >&2")).await;
    assert!(outcome.success());
    let expected: Vec<String> = (1..=10_000).map(|n| n.to_string()).collect();
    assert_eq!(texts(&lines, LogStream::Stdout), expected);
    assert_eq!(texts(&lines, LogStream::Stderr), expected);
}

#[tokio::test]
async fn a_long_line_is_split_and_nothing_is_lost() {
    let fx = Fixture::new(Duration::from_secs(5));
    // 40 000 bytes of 'é' (2 bytes each, so a cut at 16 KiB falls inside
    // one when the line starts with 'x'), then a normal line, then an
    // unterminated last line.
    let long = format!("x{}", "é".repeat(20_000));
    let dir = fx.dir.path();
    std::fs::write(dir.join("long.txt"), format!("{long}\nshort\nno newline")).unwrap();
    let (outcome, lines) = run(&fx, spec(dir, "cat long.txt")).await;
    assert!(outcome.success());
    let out = texts(&lines, LogStream::Stdout);
    assert_eq!(out.len(), 5, "three pieces, short, no newline");
    assert!(out[..3].iter().all(|piece| piece.len() <= MAX_TASK_LINE));
    assert!(out[..3].iter().all(|piece| !piece.contains('\u{FFFD}')));
    assert_eq!(out[..3].concat(), long);
    assert_eq!(out[3..], ["short", "no newline"]);

    // A line of exactly MAX_TASK_LINE bytes is one line, not two.
    let exact = "y".repeat(MAX_TASK_LINE);
    std::fs::write(dir.join("exact.txt"), format!("{exact}\nz\n")).unwrap();
    let (_, lines) = run(&fx, spec(dir, "cat exact.txt")).await;
    assert_eq!(texts(&lines, LogStream::Stdout), [exact.as_str(), "z"]);
}

#[tokio::test]
async fn shutdown_cancels_running_tasks_and_refuses_new_ones() {
    let fx = Fixture::new(Duration::from_secs(2));
    let pid_file = fx.dir.path().join("pids");
    let s = sleeper(&fx, &pid_file);
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = fx.rt.clone();
    let tx2 = tx.clone();
    let running = tokio::spawn(async move { rt.run_task(s, tx2, CancellationToken::new()).await });
    let pids = read_pids(&pid_file).await;
    fx.rt.shutdown().await.unwrap();
    assert_all_gone(&pids);
    let outcome = running.await.unwrap().unwrap();
    assert_eq!(outcome.exit, TaskExit::Cancelled);
    let err = fx
        .rt
        .run_task(spec(&fx.release, "true"), tx, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ShutDown), "{err}");
}

/// A restart of the server: its runs end (tasks cancelled, their groups gone), its instances
/// run on for the next server.
#[tokio::test]
async fn detach_cancels_running_tasks_but_leaves_instances_running() {
    let fx = Fixture::new(Duration::from_secs(2));
    let instance = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    let pid_file = fx.dir.path().join("pids");
    let s = sleeper(&fx, &pid_file);
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = fx.rt.clone();
    let tx2 = tx.clone();
    let running = tokio::spawn(async move { rt.run_task(s, tx2, CancellationToken::new()).await });
    let pids = read_pids(&pid_file).await;
    fx.rt.detach().await.unwrap();
    assert_all_gone(&pids);
    assert_eq!(running.await.unwrap().unwrap().exit, TaskExit::Cancelled);
    let err = fx
        .rt
        .run_task(spec(&fx.release, "true"), tx, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ShutDown), "{err}");
    let pid = instance.pid.unwrap();
    assert!(os::is_alive(pid), "the instance runs on");
    assert!(fx.rt.config().state_file(&instance.id).exists());
    assert!(
        fx.rt.status().await.unwrap().is_empty(),
        "no longer supervised here"
    );
    // The fixture's reaper ends the instance.
}

#[tokio::test]
async fn dropping_a_running_task_kills_its_group() {
    let fx = Fixture::new(Duration::from_secs(5));
    let pid_file = fx.dir.path().join("pids");
    let s = sleeper(&fx, &pid_file);
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = fx.rt.clone();
    let running = tokio::spawn(async move { rt.run_task(s, tx, CancellationToken::new()).await });
    let pids = read_pids(&pid_file).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    eventually(Duration::from_secs(5), "the group to go", || async {
        pids.iter().all(|p| !os::is_alive(*p)).then_some(())
    })
    .await;
    assert_all_gone(&pids);
}
