//! `kill -9` of the server in the middle of runs, then a restart; and the
//! scheduler around deployments.

use crate::pipeline_support::App;
use crate::support::fails_with;

#[test]
fn kill_9_mid_run_at_several_stages_then_restart_and_release_again() {
    let app = App::new();
    let mut server = app.start();
    server.deploy("alice", "staging", &app.good[0]);

    // 1. Killed while held in the Install hook, with the scheduler suspended by the run.
    app.hold("staging", "hold-install");
    let held = server.release("alice", "staging", &app.good[1]);
    server.wait_stage(held, "install");
    assert_eq!(
        server.cli_json("x", &["scheduler", "status", "staging"])["suspended"],
        true
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    app.release_hold("staging", "hold-install");
    server = app.start();
    let run = server.wait_run(held, &["interrupted"]);
    assert_eq!(run["failed_stage"], "install");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("interrupted during Install"),
        "{run:#}"
    );
    // The environment is back on its one deployed version; the scheduler is not left suspended.
    wait_for(
        || server.api_version("staging").as_deref() == Some(app.good[0].as_str()),
        "v1 serving again",
    );
    let sched = server.cli_json("x", &["scheduler", "status", "staging"]);
    assert_eq!(
        (sched["suspended"].as_bool(), sched["version"].as_str()),
        (Some(false), Some(app.good[0].as_str()))
    );

    // 2. Killed while waiting for approval on production.
    let waiting = server.release("alice", "prod", &app.good[0]);
    server.wait_run(waiting, &["awaiting_approval"]);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server = app.start();
    let run = server.wait_run(waiting, &["interrupted"]);
    assert_eq!(run["failed_stage"], "approval");
    fails_with(
        &server.cli("bob", &["approve", &waiting.to_string()]),
        &["not waiting for approval", "interrupted"],
    );

    // 3. Killed during Deploy services (a version whose instances never become healthy).
    let deploying = server.release("alice", "staging", &app.broken);
    server.wait_stage(deploying, "deploy_services");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server = app.start();
    let run = server.wait_run(deploying, &["interrupted"]);
    assert_eq!(run["failed_stage"], "deploy_services");
    wait_for(
        || server.api_version("staging").as_deref() == Some(app.good[0].as_str()),
        "v1 serving again",
    );
    let status = server.cli_json("x", &["status", "staging"]);
    for svc in status["services"].as_array().unwrap() {
        for i in svc["instances"].as_array().unwrap() {
            assert_eq!(
                i["version"], app.good[0],
                "one whole version runs after the restart: {i}"
            );
        }
    }

    // And the next release succeeds.
    server.deploy("alice", "staging", &app.good[2]);
    assert_eq!(
        server.api_version("staging").as_deref(),
        Some(app.good[2].as_str())
    );
}

#[test]
fn a_running_job_delays_the_suspend_and_no_job_runs_while_a_pipeline_installs() {
    let app = App::new();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);

    // A long job of v1 is running when v2's pipeline wants to suspend.
    app.hold("staging", "job-hold");
    let job = server.cli_json("alice", &["scheduler", "run", "staging", "report"]);
    assert_eq!(job["version"], app.good[0]);
    app.hold("staging", "hold-install");
    let run = server.release("alice", "staging", &app.good[1]);
    server.wait_stage(run, "pre_deploy_hook");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let still = server.cli_json("x", &["run", &run.to_string()]);
    assert_eq!(
        still["current_stage"], "pre_deploy_hook",
        "the suspend waits for the running job"
    );
    assert!(server.logs(run).contains("waiting for running jobs: report"));
    app.release_hold("staging", "job-hold");

    // In Install the scheduler holds the new jobs; nobody can start one.
    server.wait_stage(run, "install");
    let sched = server.cli_json("x", &["scheduler", "status", "staging"]);
    assert_eq!(sched["suspended"], true);
    assert_eq!(sched["pending_version"], app.good[1]);
    fails_with(
        &server.cli("bob", &["scheduler", "run", "staging", "report"]),
        &["half-migrated"],
    );
    app.release_hold("staging", "hold-install");
    assert_eq!(
        server.wait_run(run, &["succeeded", "failed"])["state"],
        "succeeded"
    );

    // After Install: resumed with v2's jobs.
    let sched = server.cli_json("x", &["scheduler", "status", "staging"]);
    assert_eq!(
        (sched["suspended"].as_bool(), sched["version"].as_str()),
        (Some(false), Some(app.good[1].as_str()))
    );
    let job = server.cli_json("bob", &["scheduler", "run", "staging", "report"]);
    assert_eq!(job["version"], app.good[1]);
    wait_for(
        || {
            std::fs::read_to_string(app.env_dir("staging").join("jobs"))
                .unwrap_or_default()
                .lines()
                .count()
                == 2
        },
        "two job runs recorded",
    );
    let jobs = std::fs::read_to_string(app.env_dir("staging").join("jobs")).unwrap();
    assert_eq!(jobs, format!("job of {}\njob of {}\n", app.good[0], app.good[1]));
    let logs = server.cli_json("x", &["scheduler", "logs", "staging", "report"]);
    assert_eq!(logs["runs"].as_array().unwrap().len(), 2);
}

#[test]
fn a_suspend_by_a_person_survives_a_restart_and_pipelines_leave_it_suspended() {
    let app = App::new();
    let mut server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    let s = server.cli_json("alice", &["scheduler", "suspend", "staging"]);
    assert_eq!(s["suspended"], true);
    assert_eq!(s["reason"], "suspended by alice");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server = app.start();
    assert_eq!(
        server.cli_json("x", &["scheduler", "status", "staging"])["suspended"],
        true
    );

    server.deploy("alice", "staging", &app.good[1]);
    let s = server.cli_json("x", &["scheduler", "status", "staging"]);
    assert_eq!(
        (s["suspended"].as_bool(), s["version"].as_str()),
        (Some(true), Some(app.good[1].as_str()))
    );
    let s = server.cli_json("alice", &["scheduler", "resume", "staging"]);
    assert_eq!(s["suspended"], false);
    // The job's `timezone:` is honoured: midnight of 1 January in Auckland (NZDT, UTC+13) is
    // 11:00 UTC on 31 December.
    let job = &server.cli_json("x", &["scheduler", "status", "staging"])["jobs"][0];
    assert_eq!(job["timezone"], "Pacific/Auckland", "{job}");
    let next = job["next_at_ms"].as_i64().unwrap_or_else(|| panic!("{job}"));
    assert_eq!(next.rem_euclid(86_400_000), 11 * 3_600_000, "{job}");
    let table = server.cli("x", &["scheduler", "status", "staging"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("0 0 1 1 * (Pacific/Auckland)"),
        "{table:?}"
    );
    fails_with(
        &server.cli("alice", &["scheduler", "run", "staging", "nope"]),
        &["unknown job", "report"],
    );
}

fn wait_for(mut check: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn sigterm_during_a_run_cancels_it_cleanly_before_stopping() {
    let app = App::new();
    let mut server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    app.hold("staging", "hold-install");
    let held = server.release("alice", "staging", &app.good[1]);
    server.wait_stage(held, "install");
    let status = server.terminate();
    assert!(status.success(), "graceful exit: {status}");
    app.release_hold("staging", "hold-install");
    server = app.start();
    let run = server.cli_json("x", &["run", &held.to_string()]);
    assert_eq!(
        run["state"], "cancelled",
        "the run ended before the server did: {run:#}"
    );
    assert!(
        server
            .logs(held)
            .contains("scheduler back on the serving version"),
        "{}",
        server.logs(held)
    );
    wait_for(
        || server.api_version("staging").as_deref() == Some(app.good[0].as_str()),
        "v1 serving again",
    );
    assert_eq!(
        server.cli_json("x", &["scheduler", "status", "staging"])["suspended"],
        false
    );
}

#[test]
fn overlapping_runs_are_skipped_unless_the_job_allows_them_and_a_crash_marks_runs_interrupted() {
    let strict = App::new();
    let mut server = strict.start();
    server.deploy("alice", "staging", &strict.good[0]);
    strict.hold("staging", "job-hold");
    assert_eq!(
        server.cli_json("alice", &["scheduler", "run", "staging", "report"])["state"],
        "running"
    );
    let second = server.cli_json("alice", &["scheduler", "run", "staging", "report"]);
    assert_eq!(second["state"], "skipped");
    assert!(
        second["note"].as_str().unwrap().contains("still running"),
        "{second}"
    );

    // The server dies while the job runs: the job run is recorded as interrupted.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    strict.release_hold("staging", "job-hold");
    server = strict.start();
    let runs = server.cli_json("x", &["scheduler", "logs", "staging", "report"]);
    let states: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["skipped", "interrupted"], "{runs:#}");
    drop(server);

    let relaxed = App::with_config(&crate::pipeline_support::APP_CONFIG.replace(
        "run: \"sh hooks/job.sh\" }",
        "run: \"sh hooks/job.sh\", overlap: true }",
    ));
    let server = relaxed.start();
    server.deploy("alice", "staging", &relaxed.good[0]);
    relaxed.hold("staging", "job-hold");
    assert_eq!(
        server.cli_json("alice", &["scheduler", "run", "staging", "report"])["state"],
        "running"
    );
    assert_eq!(
        server.cli_json("alice", &["scheduler", "run", "staging", "report"])["state"],
        "running"
    );
    relaxed.release_hold("staging", "job-hold");
}
