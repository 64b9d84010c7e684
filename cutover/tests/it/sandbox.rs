//! Application code cannot reach Cutover's state (issue 11, finding 1), and
//! one-off tasks of a killed server do not outlive it (finding 8): settings
//! whose names change how shells and interpreters start are refused, the
//! data directory and its files are private, hooks and instances are
//! confined by Landlock, `run_as` drops root, and a hook left running by a
//! `kill -9`ed server is killed (whole group) at the next start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pipeline_support::{APP_CONFIG, App};
use crate::support::{fails_with, json, stdout};

/// The repro: a deployer sets `BASH_ENV` to a command substitution
/// that copies the admin token; refused at `param put`, with the reason.
#[test]
fn settings_that_change_how_shells_and_interpreters_start_are_refused_at_param_put() {
    let app = App::new();
    let server = app.start();
    let loot = app.dir.path().join("loot");
    let payload = format!(
        "$(cp {} {})",
        app.dir.path().join("data/admin.token").display(),
        loot.display()
    );
    fails_with(
        &server.cli("alice", &["param", "put", "/shop-dev/env/BASH_ENV", &payload]),
        &["BASH_ENV", "refused", "bash runs the file it names"],
    );
    for name in [
        "ENV",
        "LD_PRELOAD",
        "DYLD_INSERT_LIBRARIES",
        "PATH",
        "IFS",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "RUBYOPT",
        "NODE_OPTIONS",
        "JAVA_TOOL_OPTIONS",
        "GIT_SSH_COMMAND",
        "CUTOVER_ENV_DIR",
    ] {
        let key = format!("/shop-dev/env/{name}");
        fails_with(
            &server.cli("alice", &["param", "put", &key, "x"]),
            &[name, "refused"],
        );
    }
    // Ordinary names still work, and nothing was stored for the refused ones.
    let ok = server.cli_json("alice", &["param", "put", "/shop-dev/env/COLOR", "blue"]);
    assert_eq!(ok["version"], 1);
    let list = server.cli_json("alice", &["param", "list", "/shop-dev/env"]);
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["key"].as_str())
        .collect();
    assert_eq!(keys, ["/shop-dev/env/COLOR"], "{list:#}");

    // The release that would have run it succeeds and runs nothing of the deployer's.
    server.deploy("alice", "dev", &app.good[0]);
    assert!(!loot.exists(), "the admin token was copied");
}

/// A `BASH_ENV` that got into the store before names were refused (an older
/// version) is refused again when settings are rendered: the run fails with
/// the reason and no hook runs with it.
#[test]
fn a_refused_setting_already_in_the_store_fails_the_run_at_render_time() {
    let app = App::new();
    let data = app.dir.path().join("data");
    let loot = app.dir.path().join("loot");
    {
        let server = app.start();
        server.deploy("alice", "dev", &app.good[0]);
    }
    let payload = format!("$(cp {} {})", data.join("admin.token").display(), loot.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use cutover_store::Store;
        let store = cutover_store::SqliteStore::open(&data).await.unwrap();
        let key = cutover_store::ParamKey::parse("/shop-dev/env/BASH_ENV").unwrap();
        store.param_put(&key, &payload, "mallory", None).await.unwrap();
        store.close().await;
    });
    let server = app.start();
    let id = server.release("alice", "dev", &app.good[1]);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/shop-dev/env/BASH_ENV") && error.contains("refused"),
        "{run:#}"
    );
    assert!(!loot.exists(), "the admin token was copied");
    // Emptying it (the store has no delete) lets releases through again.
    server.cli_json("alice", &["param", "put", "/shop-dev/env/BASH_ENV", ""]);
    server.deploy("alice", "dev", &app.good[1]);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The data directory is 0700; the database (with -wal, -shm), the secret
/// key, the admin token and the lock are 0600, on a fresh start and after a
/// restart of a directory an older version left open.
#[test]
fn the_data_directory_is_private_to_the_server() {
    let app = App::new();
    let data = app.dir.path().join("data");
    let check = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: data directory");
        for file in [
            "cutover.db",
            "cutover.db-wal",
            "cutover.db-shm",
            "secret.key",
            "admin.token",
            "server.lock",
        ] {
            assert_eq!(mode(&data.join(file)), 0o600, "{when}: {file}");
        }
        for dir in ["runtime", "envs", "releases"] {
            if data.join(dir).exists() {
                assert_eq!(mode(&data.join(dir)), 0o700, "{when}: {dir}/");
            }
        }
    };
    let server = app.start();
    server.deploy("alice", "dev", &app.good[0]);
    check("first start");
    drop(server);

    // As an older version left it: 0755 and 0644.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in ["cutover.db", "secret.key", "admin.token", "server.lock"] {
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let _server = app.start();
    check("restart");
}

/// A config whose install hook and api instance try to read Cutover's state
/// through `CUTOVER_ENV_DIR/../..` (the data directory) and record what
/// happened in their own environment directory.
fn probing_config() -> String {
    let probe = |who: &str| {
        format!(
            "d=$CUTOVER_ENV_DIR/../..; r=$CUTOVER_ENV_DIR/{who}-${{CUTOVER_REPLICA:-0}}; : > $r; \
             for f in admin.token secret.key cutover.db; do \
               if cat $d/$f > /dev/null 2>> $r.err; then echo read $f >> $r; else echo denied $f >> $r; fi; done; \
             if ls $d/envs/prod > /dev/null 2>> $r.err; then echo read prod >> $r; else echo denied prod >> $r; fi; \
             if cat VERSION > /dev/null; then echo read release >> $r; fi; \
             if echo x > $CUTOVER_ENV_DIR/own; then echo wrote env >> $r; fi; \
             if ls /usr > /dev/null && ls /proc/self > /dev/null; then echo read root >> $r; fi"
        )
    };
    APP_CONFIG
        .replace(
            "install: \"sh hooks/install.sh\"",
            &format!("install: \"{}; sh hooks/install.sh\"", probe("hook")),
        )
        .replace(
            "run: \"sh run.sh api\"",
            &format!("run: \"{}; exec sh run.sh api\"", probe("instance")),
        )
}

/// Landlock: a hook and an instance get EACCES on the admin token, the key,
/// the database and another environment's directory, and keep their own
/// release and environment directories and the rest of the filesystem.
/// `cutover status` and the start log say which protection is in force.
#[test]
fn hooks_and_instances_cannot_read_the_data_directory() {
    let app = App::with_config(&probing_config());
    std::fs::create_dir_all(app.dir.path().join("data/envs/prod")).unwrap();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    let expected = "denied admin.token\ndenied secret.key\ndenied cutover.db\ndenied prod\n\
                    read release\nwrote env\nread root\n";
    let env = app.env_dir("staging");
    // Each replica of the instance writes its own file.
    for who in ["hook-0", "instance-0", "instance-1"] {
        let seen = std::fs::read_to_string(env.join(who)).unwrap_or_default();
        let errors = std::fs::read_to_string(env.join(format!("{who}.err"))).unwrap_or_default();
        assert_eq!(seen, expected, "{who}: {errors}");
        assert!(errors.contains("Permission denied"), "{who}: {errors}");
    }
    let status = server.cli_json("x", &["status", "staging"]);
    let protection = status["protection"].as_str().unwrap_or_default();
    assert!(protection.starts_with("landlock ABI "), "{status:#}");
    let text = stdout(&server.cli("x", &["status", "staging"]));
    assert!(text.contains("children confined: landlock ABI"), "{text}");
}

/// A hook of a server killed with SIGKILL is recorded and its whole process
/// group is killed when the next server starts, before that server answers
/// anything (so before any run starts).
#[test]
fn a_hook_left_running_by_a_killed_server_is_killed_at_the_next_start() {
    let config = APP_CONFIG.replace(
        "install: \"sh hooks/install.sh\"",
        "install: \"echo $$ > $CUTOVER_ENV_DIR/install.pgid; sleep 300 & sh hooks/install.sh\"",
    );
    let app = App::with_config(&config);
    let mut server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    app.hold("staging", "hold-install");
    // The first deploy's hook wrote this file too, and its group is gone:
    // read only what the held run's hook writes.
    let pgid_file = app.env_dir("staging").join("install.pgid");
    std::fs::remove_file(&pgid_file).unwrap();
    let held = server.release("alice", "staging", &app.good[1]);
    server.wait_stage(held, "install");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pgid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pgid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the install hook never wrote its pid");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _reaper = KillGroup(pgid);
    assert!(!group_members(pgid).is_empty(), "the hook's group runs");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let left = group_members(pgid);
    assert!(
        left.len() >= 2,
        "with the server gone the hook (sh, its loop, sleep 300) runs on: {left:?}"
    );

    // The hold is still there: only the new server's recovery can end the hook.
    server = app.start();
    // The engine recovers before the API answers its first request.
    let run = server.cli_json("x", &["run", &held.to_string()]);
    assert!(
        group_members(pgid).is_empty(),
        "the hook's group survived the restart: {:?} (run {run:#})",
        group_members(pgid)
    );
    let run = server.wait_run(held, &["interrupted"]);
    assert_eq!(run["failed_stage"], "install");
    app.release_hold("staging", "hold-install");
    server.deploy("alice", "staging", &app.good[2]);
}

/// Live (non-zombie) processes of group `pgid`.
fn group_members(pgid: i32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first().is_some_and(|s| *s != "Z" && *s != "X")
                && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

/// Kills what is left of a group when the test ends, so a failure leaves
/// nothing behind.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if !group_members(self.0).is_empty() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .status();
        }
    }
}

/// With `run_as`, a server running as root starts hooks and instances as
/// that user; their release and environment directories are theirs.
#[test]
fn run_as_starts_children_as_the_configured_user() {
    // SAFETY of the premise: CI and this suite run as root (as `scripts/test` does).
    let me = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        stdout(&me).trim(),
        "0",
        "this test needs root, as the whole suite does"
    );
    let config = APP_CONFIG.replace(
        "install: \"sh hooks/install.sh\"",
        "install: \"id -u > $CUTOVER_ENV_DIR/hook-uid; sh hooks/install.sh\"",
    );
    let app = App::with_config(&format!("run_as: nobody\n{config}"));
    // The temporary directory is 0700 (tempfile); the user must reach the data directory in it.
    std::fs::set_permissions(app.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let server = app.start();
    server.deploy("alice", "staging", &app.good[0]);
    let env = app.env_dir("staging");
    let nobody = stdout(&Command::new("id").args(["-u", "nobody"]).output().unwrap())
        .trim()
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(env.join("hook-uid")).unwrap().trim(),
        nobody
    );
    let status = json(
        &server
            .command("x")
            .args(["status", "staging", "-o", "json"])
            .output()
            .unwrap(),
    );
    let pid = status["services"][0]["instances"][0]["pid"].as_u64().unwrap();
    let meta = std::fs::metadata(format!("/proc/{pid}")).unwrap();
    assert_eq!(meta.uid().to_string(), nobody, "{status:#}");
    assert!(
        status["protection"]
            .as_str()
            .unwrap_or_default()
            .contains("run_as user nobody"),
        "{status:#}"
    );
    // The data directory itself stays closed to that user: traversable, not readable.
    let data = app.dir.path().join("data");
    assert_eq!(mode(&data), 0o711);
    for file in ["cutover.db", "secret.key", "admin.token"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// The start log says which protection is in force, before the server
/// listens.
#[test]
fn the_start_log_says_which_protection_is_in_force() {
    use std::io::{BufRead, BufReader};
    let fx = crate::support::Fixture::new();
    let home = tempfile::tempdir().unwrap();
    let mut child = crate::support::serve_command(fx.config(), fx.data_dir())
        .env("RUST_LOG", "warn")
        .env("XDG_CONFIG_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("cutover: listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    crate::support::reap_data_dir(&fx.data_dir());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cutover: children confined: landlock ABI ")),
        "{lines:#?}"
    );
}
