//! The web dashboard in a real browser: headless Chromium (Debian's
//! `chromium` package, no WebDriver) loads the page from `cutover serve`, runs
//! its script against the real API and prints the rendered DOM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pipeline_support::App;
use crate::support::Server;

/// Debian's Chromium; the test fails, not skips, without it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .expect(
            "the dashboard test needs headless Chromium: `apt-get install chromium` \
             (scripts/test installs it when run as root)",
        )
}

/// Runs headless Chromium on `url` with `extra` arguments, bounded, and
/// returns its stdout.
fn browse(tmp: &Path, profile: &str, url: &str, extra: &[&str]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", tmp.join(profile).display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // Read stdout on a thread so a large DOM cannot fill the pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(status.success(), "chromium failed on {url}: {status}\n{stderr}");
    stdout
}

fn dump_dom(tmp: &Path, profile: &str, url: &str) -> String {
    // A page whose fetch failed outright ("Failed to fetch": the browser got no answer, seen
    // once in CI on a loaded machine) is loaded again, at most twice; an answer the server
    // gave, error or not, is what the test judges.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let dom = browse(tmp, profile, url, &["--dump-dom"]);
        assert!(dom.contains("</html>"), "no DOM from {url}: {dom}");
        if attempts == 3 || !dom.contains("Cannot reach the server: Failed to fetch") {
            return dom;
        }
        eprintln!("{url}: the page's fetch failed (attempt {attempts}), loading it again");
    }
}

/// The table row whose first cell links to `#/env/{env}`, split into cells.
fn env_row(dom: &str, env: &str) -> Vec<String> {
    let row = dom
        .split("<tr>")
        .find(|r| r.contains(&format!("<td><a href=\"#/env/{env}\">{env}</a></td>")))
        .unwrap_or_else(|| panic!("no row for {env} in the environments table: {dom}"));
    let row = row.split("</tr>").next().unwrap();
    row.split("<td>")
        .skip(1)
        .map(|c| c.split("</td>").next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_dashboard_shows_environments_a_run_and_its_stages_in_a_real_browser() {
    chromium();
    // With an integration template, so the page offers to make one.
    let app = App::with_config(&format!(
        "{}  review:  {{ tier: integration }}\n",
        crate::pipeline_support::APP_CONFIG
    ));
    let server = app.start();
    let id = server.release("alice", "staging", &app.good[0][..12]);
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{}", server.logs(id));
    let full = &app.good[0];
    let short = &full[..12];
    let tmp = tempfile::tempdir().unwrap();

    // Without a token: the page loads, the data does not, and it asks to sign in.
    let dom = dump_dom(tmp.path(), "anonymous", &format!("{}/#/", server.url));
    assert!(dom.contains("Sign in with an API token"), "{dom}");
    assert!(
        !dom.contains("<td><a href=\"#/env/staging\">"),
        "no data without a token: {dom}"
    );
    assert!(
        dom.contains("cutover token create"),
        "the page says how to get a token: {dom}"
    );

    // The page and its two assets come from the server itself; the token is
    // handed over in the fragment (and removed from the address bar).
    let token = server.token("alice");
    let dom = dump_dom(tmp.path(), "home", &format!("{}/#token={token}", server.url));
    assert!(dom.contains("<h1>Environments</h1>"), "{dom}");
    assert!(
        dom.contains("<strong id=\"who\">alice</strong>"),
        "signed in as the token's name: {dom}"
    );
    // Environments at a glance: status, last run, approval, deployed / desired, tier, branch.
    let cells = env_row(&dom, "staging");
    assert!(cells[1].contains(">in sync</span>"), "{cells:?}");
    assert!(cells[2].contains(&format!("#{id}</a>")), "{cells:?}");
    assert_eq!(cells[6], "stage", "{cells:?}");
    assert_eq!(cells[7], "main", "{cells:?}");
    let version = format!("<code title=\"{full}\">{short}</code>");
    assert!(cells[4].contains(&version), "deployed: {cells:?}");
    assert!(cells[5].contains(&version), "desired: {cells:?}");
    assert!(
        dom.contains("<label for=\"new-template\">")
            && dom.contains("<option value=\"review\">review</option>"),
        "a form for integration environments: {dom}"
    );
    let dev = env_row(&dom, "dev");
    assert!(dev[4].contains('—'), "dev has deployed nothing: {dev:?}");
    assert!(
        dom.contains(&format!("<a href=\"#/run/{id}\">#{id}</a>")),
        "recent runs: {dom}"
    );

    // The run: 13 stage boxes in order with the API's statuses, and its log.
    let dom = dump_dom(
        tmp.path(),
        "run",
        &format!("{}/#/run/{id}&token={token}", server.url),
    );
    assert_eq!(dom.matches("<li class=\"stage st-").count(), 13, "{dom}");
    let mut at = 0;
    for (stage, status) in Server::stages(&run) {
        let needle =
            format!("<li class=\"stage st-{status}\" data-stage=\"{stage}\" data-status=\"{status}\">");
        let found = dom[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("no box {needle} after byte {at}: {dom}"));
        at += found + needle.len();
    }
    assert!(
        dom.contains("[install] "),
        "the log tail shows the install hook: {dom}"
    );
    assert!(
        dom.contains("class=\"badge s-succeeded\">succeeded</span>"),
        "{dom}"
    );

    // The environment: each instance's version as read from the process.
    let dom = dump_dom(
        tmp.path(),
        "env",
        &format!("{}/#/env/staging&token={token}", server.url),
    );
    assert!(dom.contains("<h3>api<span"), "{dom}");
    assert!(
        dom.contains("data-replicas=\"2\"> · 2 replicas</span>"),
        "the replica count in force: {dom}"
    );
    assert!(
        dom.contains("<label for=\"release-version\">"),
        "a release form: {dom}"
    );
    assert!(dom.contains("staging.shop.localhost"), "the router URL: {dom}");
    assert!(
        dom.matches("<span class=\"ok\">healthy</span>").count() >= 2,
        "{dom}"
    );
    assert!(dom.contains("History of desired_version"), "{dom}");
    assert!(dom.contains("<td>alice</td>"), "who set desired_version: {dom}");

    // An integration environment's page can delete it.
    let made = server.cli_json("alice", &["env", "create", "review", "--branch", "main"]);
    let name = made["environment"]["name"].as_str().unwrap().to_owned();
    let dom = dump_dom(
        tmp.path(),
        "integration",
        &format!("{}/#/env/{name}&token={token}", server.url),
    );
    assert!(dom.contains(&format!(">Delete {name}</button>")), "{dom}");

    // A scale change waiting for an admin, with its buttons.
    let pending = server.cli_json("alice", &["scale", "staging", "api", "3", "-m", "load test"]);
    assert_eq!(pending["request"]["state"], "pending", "{pending:#}");
    let dom = dump_dom(
        tmp.path(),
        "scale",
        &format!("{}/#/scale&token={token}", server.url),
    );
    assert!(dom.contains("<h1>Scale changes</h1>"), "{dom}");
    assert!(dom.contains("<td>2 → 3</td>"), "{dom}");
    assert!(dom.contains("<td>load test</td>"), "{dom}");
    assert!(
        dom.contains(">pending</span>") && dom.contains(">Approve</button>"),
        "{dom}"
    );

    // The audit log.
    let dom = dump_dom(
        tmp.path(),
        "audit",
        &format!("{}/#/audit&token={token}", server.url),
    );
    assert!(dom.contains("<td>alice</td>"), "{dom}");

    // A prod run waiting for approval: its boxes, and the decision form.
    let waiting = server.release("alice", "prod", short);
    let run = server.wait_run(waiting, &["awaiting_approval"]);
    // Its requester is not offered the decision (four-eyes) ...
    let dom = dump_dom(
        tmp.path(),
        "requester",
        &format!("{}/#/run/{waiting}&token={token}", server.url),
    );
    assert!(dom.contains("data-decision=\"own\""), "{dom}");
    assert!(!dom.contains(">Approve</button>"), "{dom}");
    // ... another approver is.
    let url = format!("{}/#/run/{waiting}&token={}", server.url, server.token("bob"));
    let dom = dump_dom(tmp.path(), "approval", &url);
    for (stage, status) in Server::stages(&run) {
        let needle = format!("data-stage=\"{stage}\" data-status=\"{status}\">");
        assert!(dom.contains(&needle), "no box {needle}: {dom}");
    }
    assert!(
        dom.contains("data-stage=\"approval\" data-status=\"running\""),
        "{dom}"
    );
    assert!(dom.contains(">Approve</button>"), "{dom}");
    assert!(dom.contains(">Reject</button>"), "{dom}");
    assert!(dom.contains("<label for=\"decision-comment\">"), "{dom}");
    // The form names the SHA fixed when the run was requested (issue 11): what Approve approves.
    let fixed = format!("<code class=\"approval-sha\">{}</code>", app.good[0]);
    assert!(dom.contains(&fixed), "no {fixed}: {dom}");
    assert!(dom.contains("(requested by alice, chosen by alice)"), "{dom}");

    // One screenshot of that run, for a human to look at.
    let png = tmp.path().join("run.png");
    browse(
        tmp.path(),
        "shot",
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "a near-empty screenshot: {} bytes",
        bytes.len()
    );
    if let Some(copy) = std::env::var_os("CUTOVER_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, copy).unwrap();
    }
}
