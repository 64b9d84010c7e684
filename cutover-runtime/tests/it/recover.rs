//! Crash recovery: state files left by a server that died.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use cutover_core::{AppName, EnvName, ServiceName};
use cutover_runtime::{InstanceId, RecoveryAction, Runtime, StateFile, os};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

fn detached(script: &str) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn state(id: &str, pid: u32, start: Option<u64>) -> StateFile {
    StateFile {
        id: InstanceId::parse(id).unwrap(),
        pid,
        pgid: pid,
        port: 1,
        app: AppName::parse("shop").unwrap(),
        env: EnvName::parse("staging").unwrap(),
        service: ServiceName::parse("web").unwrap(),
        version: version(),
        replica: 0,
        release_dir: "/nowhere".into(),
        started_at: 0,
        proc_start_time: start,
        server_pid: 1,
    }
}

#[tokio::test]
async fn recover_adopts_what_still_runs_cleans_up_the_rest_and_spares_reused_pids() {
    let fx = Fixture::new(Duration::from_secs(2));
    let dir = fx.rt.config().instances_dir();

    // 1. A leftover instance, still running, with a child in its group.
    let mut leftover = detached(&format!("sleep 1000 & exec '{}'", testapp()));
    let pid = leftover.id();
    let _guard = KillOnDrop::new([pid]);
    let members = eventually(Duration::from_secs(5), "the leftover's group", || async {
        let m = os::group_members(pid);
        (m.len() == 2).then_some(m)
    })
    .await;
    state("aaaaaaaa-r0-000001", pid, os::proc_start_time(pid))
        .write(&dir)
        .unwrap();

    // 2. A live process whose pid "was reused" (other start time).
    let mut stranger = detached("exec sleep 1000");
    let spid = stranger.id();
    let _stranger_guard = KillOnDrop::new([spid]);
    state(
        "aaaaaaaa-r0-000002",
        spid,
        os::proc_start_time(spid).map(|t| t + 1),
    )
    .write(&dir)
    .unwrap();

    // 3. A main process that died, leaving a worker in its group.
    let mut orphaned = detached("sleep 1000 & exec sleep 1000");
    let opid = orphaned.id();
    let _orphan_guard = KillOnDrop::new([opid]);
    let ostart = os::proc_start_time(opid);
    eventually(Duration::from_secs(5), "the worker", || async {
        (os::group_members(opid).len() == 2).then_some(())
    })
    .await;
    kill_process(Pid::from_raw(opid as i32).unwrap(), Signal::KILL).unwrap();
    orphaned.wait().unwrap();
    state("aaaaaaaa-r0-000003", opid, ostart).write(&dir).unwrap();

    // 4. Nothing left at all.
    let mut gone = detached("exit 0");
    let gpid = gone.id();
    gone.wait().unwrap();
    state("aaaaaaaa-r0-000004", gpid, None).write(&dir).unwrap();

    // 5. Garbage.
    std::fs::write(dir.join("broken.json"), "{").unwrap();

    let report = fx.rt.recover().await.unwrap();
    let actions: Vec<(Option<String>, RecoveryAction)> = report
        .instances
        .iter()
        .map(|i| (i.state.as_ref().map(|s| s.id.to_string()), i.action.clone()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (Some("aaaaaaaa-r0-000001".into()), RecoveryAction::Adopted),
            (Some("aaaaaaaa-r0-000002".into()), RecoveryAction::PidReused),
            (
                Some("aaaaaaaa-r0-000003".into()),
                RecoveryAction::TerminatedOrphans {
                    count: 1,
                    graceful: true
                }
            ),
            (Some("aaaaaaaa-r0-000004".into()), RecoveryAction::AlreadyGone),
            (None, actions[4].1.clone()),
        ]
    );
    assert!(
        matches!(&actions[4].1, RecoveryAction::Unreadable { error } if error.contains("EOF")),
        "{actions:?}"
    );
    assert_eq!(report.terminated(), 1);
    let adopted: Vec<_> = report.adopted().map(|s| s.pid).collect();
    assert_eq!(adopted, [pid]);

    // The adopted one runs on, listed, its file kept; everything else is cleaned up.
    assert!(members.iter().all(|m| os::is_alive(*m)), "adopted, not killed");
    assert!(os::group_members(opid).is_empty());
    assert!(os::is_alive(spid), "an unrelated process must survive");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        ["aaaaaaaa-r0-000001.json"],
        "only the adopted one's file stays"
    );
    let id = InstanceId::parse("aaaaaaaa-r0-000001").unwrap();
    let status = fx.rt.instance(&id).await.unwrap();
    assert_eq!((status.pid, status.port), (Some(pid), 1));
    assert!(status.owner.adopted, "{status:?}");

    // Stopping it terminates its whole group: SIGTERM first (the test app exits 0 only on
    // SIGTERM; a SIGKILL would show as a signal), and removes its file.
    let outcome = fx.rt.stop(&id).await.unwrap();
    assert!(outcome.graceful, "{outcome:?}");
    let status = leftover.wait().unwrap();
    assert_eq!((status.code(), status.signal()), (Some(0), None), "SIGTERM first");
    assert!(members.iter().all(|m| !os::is_alive(*m)));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "every state file is removed"
    );

    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

#[tokio::test]
async fn recover_leaves_the_current_servers_instances_alone() {
    let fx = Fixture::new(Duration::from_secs(2));
    let s = fx.rt.start(fx.spec(run_testapp(""), 0)).await.unwrap();
    let report = fx.rt.recover().await.unwrap();
    assert!(report.instances.is_empty(), "{report:?}");
    assert!(fx.rt.config().state_file(&s.id).exists());
    let recorded: StateFile =
        serde_json::from_slice(&std::fs::read(fx.rt.config().state_file(&s.id)).unwrap()).unwrap();
    assert_eq!(Some(recorded.pid), s.pid);
    assert_eq!(recorded.proc_start_time, os::proc_start_time(recorded.pid));
    assert_eq!(recorded.port, s.port);
    fx.rt.shutdown().await.unwrap();
}

/// A running task is recorded in `tasks/` and the record goes when it ends;
/// a record left by a dead server gets its whole group killed by `recover`.
#[tokio::test]
async fn tasks_are_recorded_while_they_run_and_a_dead_servers_tasks_are_killed() {
    use cutover_runtime::TaskSpec;
    use cutover_runtime::recover::TaskStateFile;
    let fx = Fixture::new(Duration::from_secs(2));
    let tasks = fx.rt.config().tasks_dir();

    // Recorded while it runs, gone after.
    let marker = fx.dir.path().join("go");
    let spec = TaskSpec {
        label: "install hook".into(),
        command: format!("while [ ! -e '{}' ]; do sleep 0.05; done", marker.display()),
        dir: fx.release.clone(),
        env_vars: vec![],
        timeout: Duration::from_secs(20),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = fx.rt.clone();
    let running = tokio::spawn(async move {
        rt.run_task(spec, tx, tokio_util::sync::CancellationToken::new())
            .await
    });
    let record = eventually(Duration::from_secs(5), "the task's record", || async {
        let entry = std::fs::read_dir(&tasks).ok()?.flatten().next()?;
        serde_json::from_slice::<TaskStateFile>(&std::fs::read(entry.path()).ok()?).ok()
    })
    .await;
    assert_eq!(record.label, "install hook");
    assert!(os::is_alive(record.pid));
    std::fs::write(&marker, "").unwrap();
    assert!(running.await.unwrap().unwrap().success());
    assert_eq!(std::fs::read_dir(&tasks).unwrap().count(), 0, "record removed");

    // Left by a dead server: a hook and what it started in the background.
    let mut leftover = detached("sleep 1000 & sleep 1000");
    let pid = leftover.id();
    eventually(Duration::from_secs(5), "the leftover's group", || async {
        (os::group_members(pid).len() >= 2).then_some(())
    })
    .await;
    TaskStateFile {
        label: "install hook".into(),
        pid,
        pgid: pid,
        dir: fx.release.clone(),
        started_at: 0,
        proc_start_time: os::proc_start_time(pid),
        server_pid: 1,
    }
    .write(&tasks)
    .unwrap();
    let report = fx.rt.recover().await.unwrap();
    assert_eq!(report.tasks.len(), 1, "{report:?}");
    assert!(
        matches!(report.tasks[0].action, RecoveryAction::Terminated { .. }),
        "{report:?}"
    );
    assert!(os::group_members(pid).is_empty());
    let _ = leftover.wait();
    assert_eq!(std::fs::read_dir(&tasks).unwrap().count(), 0, "record removed");
}
