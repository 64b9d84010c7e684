//! The dashboard driven in real Chromium through the DevTools protocol (`cdp.rs`):
//! the overview's sync/health badges, last run and approval marker; approval buttons
//! offered to another approver but never to the requester; a deep link opened in a
//! fresh tab after one sign-in; updates carried by the event stream, not by polling;
//! actions with their confirmations and the API's refusals; token management.
//! Screenshots at 1280×1000 go to `$CUTOVER_DASHBOARD_SHOTS` when it is set.

use std::path::PathBuf;

use serde_json::Value;

use crate::cdp::{Browser, Tab};
use crate::pipeline_support::App;
use crate::support::Server;

fn shot(browser: &mut Browser, tab: &Tab, name: &str) {
    let dir = std::env::var_os("CUTOVER_DASHBOARD_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    browser.screenshot(tab, &dir.join(format!("cutover-{name}.png")));
}

/// A JavaScript string literal of `s` (JSON is valid JavaScript).
pub(crate) fn js(s: &str) -> String {
    Value::from(s).to_string()
}

/// The text of the cell `col` (0-based) of the overview row of `env`.
fn cell(env: &str, col: usize) -> String {
    format!(
        "[...document.querySelectorAll('tbody tr')].find((r) => r.cells[0] && r.cells[0].textContent === {})?.cells[{col}]",
        js(env)
    )
}

pub(crate) fn sign_in(browser: &mut Browser, tab: &Tab, token: &str) {
    // The script has run (it marks body[data-live]) and asks for a token.
    browser.wait_for(
        tab,
        "document.body.dataset.live && !document.getElementById('signin-form').hidden",
    );
    browser.eval(
        tab,
        &format!(
            "document.getElementById('token').value = {}; document.getElementById('signin-form').requestSubmit(); true",
            js(token)
        ),
    );
    browser.wait_for(tab, "!document.getElementById('signed-in').hidden");
}

pub(crate) fn mint(server: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend(args);
    server.cli_json("admin", &all)["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_overview_tells_sync_health_runs_and_approvals_and_updates_live_in_chromium() {
    let app = App::with_config(&format!(
        "{}  review:  {{ tier: integration }}\n",
        crate::pipeline_support::APP_CONFIG
    ));
    let server = app.start();
    let short = &app.good[0][..12];
    // staging: deployed = desired (in sync); prod: waiting for approval, nothing deployed
    // (drift: desired is not deployed).
    server.deploy("alice", "staging", short);
    let waiting = server.release("alice", "prod", short);
    server.wait_run(waiting, &["awaiting_approval"]);

    let mut browser = Browser::start();
    // A fresh tab: the page asks to sign in and shows no data.
    let home = browser.open(&format!("{}/#/", server.url));
    browser.wait_for(&home, "document.getElementById('signin-notice').hidden === false");
    sign_in(&mut browser, &home, &server.token("alice"));
    browser.wait_for(&home, &cell("staging", 1));
    assert_eq!(
        browser.eval(&home, "document.getElementById('signin-notice').hidden"),
        true,
        "the sign-in banner goes once signed in"
    );

    // Badges: text, and the reason as the tooltip.
    let badge = |env: &str, what: &str, attr: &str| {
        format!("{}.querySelector('[data-glance={what}]').{attr}", cell(env, 1))
    };
    assert_eq!(
        browser.eval(&home, &badge("staging", "sync", "textContent")),
        "in sync"
    );
    assert_eq!(
        browser.eval(&home, &badge("staging", "health", "textContent")),
        "healthy"
    );
    let why = browser.eval(&home, &badge("staging", "sync", "title"));
    assert!(why.as_str().unwrap().contains(short), "{why}");
    assert_eq!(
        browser.eval(&home, &badge("prod", "sync", "textContent")),
        "drift"
    );
    let why = browser.eval(&home, &badge("prod", "sync", "title"));
    assert!(why.as_str().unwrap().contains("not deployed"), "{why}");
    // The last run in words, and who has to approve.
    let last = browser.eval(&home, &format!("{}.textContent", cell("staging", 2)));
    assert!(
        last.as_str().unwrap().contains("succeeded") && last.as_str().unwrap().contains("ago")
            || last.as_str().unwrap().contains("just now"),
        "{last}"
    );
    let marker = browser.eval(
        &home,
        &format!(
            "{}.querySelector('[data-approval]').dataset.approval",
            cell("prod", 3)
        ),
    );
    assert_eq!(marker, "other", "alice requested it: not hers to approve");
    // Templates are listed as templates, not environments; no Stage column.
    assert_eq!(
        browser.eval(
            &home,
            "document.querySelector('a[href=\"#/env/review\"]') === null"
        ),
        true,
        "a template is no environment"
    );
    assert_eq!(
        browser.eval(&home, "document.querySelector('[data-template=review]') !== null"),
        true
    );
    assert_eq!(
        browser.eval(
            &home,
            "[...document.querySelectorAll('th')].some((th) => th.textContent === 'Stage')"
        ),
        false
    );
    shot(&mut browser, &home, "overview");

    // Live: the page follows the event stream; a release made elsewhere shows up with no
    // fallback poll made (the page counts them in body[data-polls]).
    browser.wait_for(&home, "document.body.dataset.live === 'sse'");
    let dev = server.deploy("bob", "dev", short);
    browser.wait_for(
        &home,
        &format!(
            "{}.textContent.includes('#{dev}') && {}.textContent.includes('succeeded')",
            cell("dev", 2),
            cell("dev", 2)
        ),
    );
    assert_eq!(
        browser.eval(
            &home,
            "document.body.dataset.polls === undefined && document.body.dataset.live"
        ),
        "sse",
        "the update came through the event stream, not a poll"
    );
    let requests = browser.requests(&home);
    assert!(
        requests.iter().any(|u| u.ends_with("/api/v1/events")),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|u| !u.contains("token=")),
        "no token in any URL: {requests:?}"
    );

    // A deep link opened in a new tab of the signed-in tab: no second sign-in, no token
    // in the URL; the requester is not offered Approve/Reject; the log is on screen.
    browser.eval(&home, &format!("window.open('/#/run/{waiting}'); true"));
    let run = browser.find_tab(&format!("#/run/{waiting}"), &home);
    browser.wait_for(&run, "document.querySelector('[data-decision=own]')");
    assert_eq!(
        browser.eval(&run, "document.querySelector('h1').textContent"),
        format!("Run #{waiting}")
    );
    assert_eq!(
        browser.eval(&run, "[...document.querySelectorAll('button')].some((b) => b.textContent === 'Approve' || b.textContent === 'Reject')"),
        false
    );
    browser.wait_for(
        &run,
        "document.querySelector('.log').textContent.includes('[source]')",
    );
    let log_top = browser.eval(
        &run,
        "document.querySelector('.log').getBoundingClientRect().top + 60 < window.innerHeight",
    );
    assert_eq!(log_top, true, "the log starts on screen at 1280×1000");
    assert_eq!(browser.eval(&run, "location.href.includes('token')"), false);
    shot(&mut browser, &run, "run-requester");

    // Another approver, handed over with the legacy `&token=` once: it is taken out of the
    // address bar, and Approve/Reject are offered.
    let bob = server.token("bob");
    let other = browser.open(&format!("{}/#/run/{waiting}&token={bob}", server.url));
    browser.wait_for(
        &other,
        "[...document.querySelectorAll('button')].some((b) => b.textContent === 'Approve')",
    );
    assert_eq!(browser.eval(&other, "location.href.includes('token')"), false);
    assert_eq!(browser.eval(&other, "location.hash"), format!("#/run/{waiting}"));
    assert_eq!(
        browser.eval(
            &other,
            "[...document.querySelectorAll('button')].some((b) => b.textContent === 'Reject')"
        ),
        true
    );
    shot(&mut browser, &other, "run-approver");
    // Bob's overview says the run waits for him.
    browser.eval(&other, "location.hash = '#/'; true");
    let marker = browser.wait_for(
        &other,
        &format!("{}.querySelector('[data-approval]').textContent", cell("prod", 3)),
    );
    assert!(
        marker.as_str().unwrap().contains("waiting for your approval"),
        "{marker}"
    );
    browser.eval(&other, &format!("location.hash = '#/run/{waiting}'; true"));
    browser.wait_for(
        &other,
        "[...document.querySelectorAll('button')].some((b) => b.textContent === 'Approve')",
    );
    // Bob approves; alice's tab sees the run go on without a reload.
    browser.eval(
        &other,
        "[...document.querySelectorAll('button')].find((b) => b.textContent === 'Approve').click(); true",
    );
    server.wait_run(waiting, &["succeeded"]);
    // Alice's tabs are in the background: they hold no stream and do not poll (a browser
    // has six connections per server); in front again, they reconnect and catch up.
    browser.wait_for(&run, "document.body.dataset.live === 'paused'");
    browser.front(&run);
    browser.wait_for(&run, "document.querySelector('.badge.s-succeeded')");
    browser.wait_for(&run, "document.body.dataset.live === 'sse'");
    browser.front(&home);
    browser.wait_for(
        &home,
        &format!(
            "{}.querySelector('[data-glance=sync]').textContent === 'in sync'",
            cell("prod", 1)
        ),
    );
    assert_eq!(
        browser.eval(&home, "document.body.dataset.polls === undefined"),
        true,
        "no fallback poll in any of it"
    );
}

#[test]
fn dashboard_actions_confirm_show_refusals_and_manage_tokens_in_chromium() {
    let app = App::new();
    let server = app.start();
    let short = &app.good[0][..12];
    server.deploy("alice", "staging", short);
    let mut browser = Browser::start();
    let tab = browser.open(&format!("{}/#/env/staging", server.url));
    sign_in(&mut browser, &tab, &server.token("alice"));
    browser.wait_for(&tab, "document.querySelector('[data-action=rollback]')");
    shot(&mut browser, &tab, "environment");

    let click = |action: &str| format!("document.querySelector('[data-action={action}]').click(); true");
    // Declined: nothing happens.
    browser.accept_dialogs = false;
    browser.eval(&tab, &click("rollback"));
    assert!(
        browser.dialogs.last().unwrap().contains("Roll staging back"),
        "{:?}",
        browser.dialogs
    );
    assert_eq!(
        server
            .cli_json("alice", &["runs", "staging"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Accepted: the API refuses (nothing earlier to go back to), and the page says why.
    browser.accept_dialogs = true;
    browser.eval(&tab, &click("rollback"));
    let refused = browser.wait_for(
        &tab,
        "document.querySelector('[data-action=rollback]').parentElement.querySelector('.action-error').textContent",
    );
    assert!(
        refused.as_str().unwrap().to_lowercase().contains("roll"),
        "{refused}"
    );

    // The scheduler: suspend (confirmed), the page follows, resume.
    browser.eval(&tab, &click("suspend"));
    assert!(
        browser
            .dialogs
            .last()
            .unwrap()
            .contains("Suspend staging's scheduler")
    );
    browser.wait_for(&tab, "document.querySelector('[data-scheduler=suspended]')");
    let sched = server.cli_json("alice", &["scheduler", "status", "staging"]);
    assert_eq!(sched["suspended"], true, "{sched}");
    browser.eval(&tab, &click("resume"));
    browser.wait_for(&tab, "document.querySelector('[data-scheduler=active]')");

    // Promote staging's version to prod: confirmed, and the page opens the new run.
    browser.eval(&tab, "document.getElementById('promote-to').value = 'prod'; true");
    browser.eval(&tab, &click("promote"));
    browser.wait_for(&tab, "location.hash.startsWith('#/run/')");
    assert!(
        browser.dialogs.last().unwrap().contains("to prod"),
        "{:?}",
        browser.dialogs
    );
    let id: i64 = browser
        .eval(&tab, "location.hash.slice(6)")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Cancel it from its page.
    browser.wait_for(&tab, "document.querySelector('[data-action=cancel]')");
    browser.eval(&tab, &click("cancel"));
    let run = server.wait_run(id, &["cancelled", "succeeded", "failed"]);
    assert_eq!(run["state"], "cancelled", "{run}");
    browser.wait_for(&tab, "document.querySelector('.badge.s-cancelled')");

    // Tokens (admin): make one, its secret shown once; revoke it (confirmed).
    browser.eval(&tab, "location.hash = '#/tokens'; true");
    browser.wait_for(
        &tab,
        "!document.getElementById('nav-tokens').hidden && document.getElementById('token-name')",
    );
    browser.eval(
        &tab,
        "document.getElementById('token-name').value = 'ci'; document.getElementById('token-role').value = 'deployer'; \
         document.querySelector('#token-name').form.requestSubmit(); true",
    );
    let secret = browser.wait_for(&tab, "document.querySelector('code.secret').textContent");
    assert!(secret.as_str().unwrap().starts_with("cut_"), "{secret}");
    browser.wait_for(&tab, "document.querySelector('[data-token=ci]')");
    shot(&mut browser, &tab, "tokens");
    browser.eval(&tab, "document.querySelector('[data-token=ci]').click(); true");
    assert!(browser.dialogs.last().unwrap().contains("Revoke the token ci"));
    browser.wait_for(&tab, "!document.querySelector('[data-token=ci]')");
    let tokens = server.cli_json("alice", &["token", "list"]);
    let ci = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap();
    assert!(ci["revoked_at_ms"].is_i64(), "{ci}");

    // A fast rollback once a warm release exists: confirmed, and the page opens its run.
    server.deploy("alice", "staging", &app.good[1][..12]);
    browser.eval(&tab, "location.hash = '#/env/staging'; true");
    browser.wait_for(
        &tab,
        "document.querySelector('[data-action=rollback-fast]') && !document.querySelector('[data-action=rollback-fast]').disabled",
    );
    browser.eval(&tab, &click("rollback-fast"));
    assert!(
        browser
            .dialogs
            .last()
            .unwrap()
            .contains("back to the warm release"),
        "{:?}",
        browser.dialogs
    );
    browser.wait_for(&tab, "location.hash.startsWith('#/run/')");
    // The test app's install step ran since the warm release served: the API refuses a plain
    // fast rollback and the page asks before forcing it.
    assert!(
        browser
            .dialogs
            .iter()
            .any(|d| d.contains("ran an install step") && d.contains("anyway (force)")),
        "{:?}",
        browser.dialogs
    );
    let id: i64 = browser
        .eval(&tab, "location.hash.slice(6)")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let run = server.wait_run(id, &["succeeded", "failed"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["version"], app.good[0].as_str(), "{run}");

    // A deployer: no token page link, and the page shows the API's refusal.
    let deployer = mint(&server, "dora", &["--role", "deployer"]);
    let tab = browser.open(&format!("{}/#/tokens&token={deployer}", server.url));
    let refusal = browser.wait_for(&tab, "document.querySelector('[role=alert] .error').textContent");
    assert!(refusal.as_str().unwrap().contains("admin"), "{refusal}");
    assert_eq!(
        browser.eval(&tab, "document.getElementById('nav-tokens').hidden"),
        true
    );
}

/// A refusal that answers a request sent before the sign-in (the page's look without a token)
/// and arrives after it leaves the page signed in. It used to sign the page out again ("Not
/// signed in" with the environments loaded: a CI run's flake when that answer came late).
#[test]
fn a_late_refusal_of_a_request_sent_before_the_sign_in_does_not_sign_the_page_out() {
    let app = App::new();
    let server = app.start();
    let token = server.token("alice");
    let mut browser = Browser::start();
    let tab = browser.open(&format!("{}/#/", server.url));
    browser.wait_for(
        &tab,
        "document.body.dataset.live && !document.getElementById('signin-form').hidden",
    );
    // Answers to requests without a token come 800 ms late; then the page asks for a view
    // (without a token) and the token is entered at once.
    browser.eval(
        &tab,
        "const f = window.fetch; \
         window.fetch = (u, o) => (o && o.headers && o.headers.Authorization) ? f(u, o) \
           : f(u, o).then((r) => new Promise((ok) => setTimeout(() => ok(r), 800))); \
         location.hash = '#/runs'; true",
    );
    sign_in(&mut browser, &tab, &token);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        browser.eval(&tab, "!document.getElementById('signed-in').hidden"),
        true,
        "the late refusal signed the page out"
    );
    browser.wait_for(&tab, "document.title.startsWith('Runs')");
}

#[test]
fn the_dashboard_polls_while_its_event_stream_is_refused_and_keeps_retrying_it() {
    let app = App::new();
    let server = app.start();
    let token = server.token("alice");
    // Alice's token holds every stream it may have: the page's own is refused (429).
    let held: Vec<_> = (0..crate::events::PER_TOKEN)
        .map(|_| crate::events::open(&server, Some(&token)).unwrap())
        .collect();
    let mut browser = Browser::start();
    let tab = browser.open(&format!("{}/#/", server.url));
    sign_in(&mut browser, &tab, &token);
    browser.wait_for(&tab, "document.body.dataset.live === 'polling'");
    // It retries the stream (backoff 1 s, 2 s, ...) ...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let tries = browser
            .requests(&tab)
            .iter()
            .filter(|u| u.ends_with("/api/v1/events"))
            .count();
        if tries >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stream is not retried");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // ... and meanwhile a change shows up by polling.
    let dev = server.deploy("bob", "dev", &app.good[0][..12]);
    browser.wait_for(
        &tab,
        &format!(
            "{}.textContent.includes('#{dev}') && {}.textContent.includes('succeeded')",
            cell("dev", 2),
            cell("dev", 2)
        ),
    );
    assert_eq!(
        browser.eval(&tab, "Number(document.body.dataset.polls) > 0"),
        true,
        "the update came by a fallback poll"
    );
    drop(held);
}
