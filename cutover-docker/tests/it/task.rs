//! One-off task containers: output, exit codes, timeout, cancel, and
//! nothing left behind.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use cutover_docker::{DockerRuntime, TASK_IMAGE_VAR, labels};
use cutover_runtime::{LogStream, Runtime, RuntimeError, TaskExit, TaskLine, TaskSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{Fixture, SHA, chain};

fn spec(f: &Fixture, command: &str, timeout: Duration) -> TaskSpec {
    TaskSpec {
        label: "install hook".into(),
        command: command.into(),
        dir: f.release(),
        env_vars: vec![
            (TASK_IMAGE_VAR.into(), f.tag()),
            ("CUTOVER_VERSION".into(), SHA.into()),
            ("CUTOVER_BRANCH".into(), "feature/$(touch /tmp/pwned);x".into()),
        ],
        timeout,
    }
}

async fn run(
    f: &Fixture,
    spec: TaskSpec,
    cancel: CancellationToken,
) -> (cutover_runtime::TaskOutcome, Vec<TaskLine>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = f.rt.run_task(spec, tx, cancel).await.expect("run_task");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    (outcome, lines)
}

async fn task_containers(rt: &DockerRuntime) -> usize {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{}={}", labels::OWNER, rt.owner()),
            labels::TASK.to_owned(),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    rt.docker().list_containers(Some(options)).await.unwrap().len()
}

fn texts(lines: &[TaskLine], stream: LogStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text.as_str())
        .collect()
}

#[tokio::test]
async fn a_task_streams_its_output_and_ends_with_its_exit_code() {
    let f = Fixture::new("ittask").await;
    let command = "echo \"version $CUTOVER_VERSION\"; echo \"branch $CUTOVER_BRANCH\"; \
                   echo oops >&2; cat /www/version; echo; exit 3";
    let (outcome, lines) = run(
        &f,
        spec(&f, command, Duration::from_secs(20)),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome.exit, TaskExit::Code(3), "{lines:#?}");
    assert!(!outcome.success());
    let out = texts(&lines, LogStream::Stdout);
    assert_eq!(
        out,
        [
            format!("version {SHA}").as_str(),
            "branch feature/$(touch /tmp/pwned);x",
            SHA
        ],
        "{lines:#?}"
    );
    assert_eq!(texts(&lines, LogStream::Stderr), ["oops"]);
    assert_eq!(task_containers(&f.rt).await, 0, "the task container was left");

    let (ok, _) = run(
        &f,
        spec(&f, "true", Duration::from_secs(20)),
        CancellationToken::new(),
    )
    .await;
    assert!(ok.success());

    let mut no_image = spec(&f, "true", Duration::from_secs(5));
    no_image.env_vars.retain(|(k, _)| k != TASK_IMAGE_VAR);
    let (tx, _rx) = mpsc::unbounded_channel();
    let err =
        f.rt.run_task(no_image, tx, CancellationToken::new())
            .await
            .expect_err("no image");
    assert!(matches!(err, RuntimeError::Engine { .. }), "{err:?}");
    assert!(chain(&err).contains(TASK_IMAGE_VAR), "{}", chain(&err));
}

#[tokio::test]
async fn a_task_past_its_timeout_or_cancelled_is_stopped_and_removed() {
    let f = Fixture::new("ittimeout").await;
    let began = std::time::Instant::now();
    let (outcome, lines) = run(
        &f,
        spec(&f, "echo started; exec sleep 30", Duration::from_secs(1)),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        outcome.exit,
        TaskExit::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    assert!(began.elapsed() < Duration::from_secs(10), "{:?}", began.elapsed());
    assert_eq!(texts(&lines, LogStream::Stdout), ["started"]);
    assert!(
        texts(&lines, LogStream::Cutover)
            .iter()
            .any(|l| l.contains("timed out after 1s")),
        "{lines:#?}"
    );
    assert_eq!(task_containers(&f.rt).await, 0, "the task container was left");

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        trigger.cancel();
    });
    let (outcome, _) = run(&f, spec(&f, "exec sleep 30", Duration::from_secs(30)), cancel).await;
    assert_eq!(outcome.exit, TaskExit::Cancelled);
    assert_eq!(task_containers(&f.rt).await, 0, "the task container was left");
}
