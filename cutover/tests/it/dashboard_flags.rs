//! The environment page's feature flags in real Chromium (`cdp.rs`): shown with who changed
//! them and when, toggled from the page (confirmed on production; the API and the instances'
//! flags file follow), a change made with the CLI shown without a reload through the event
//! stream, a promote that carries the flags, and a viewer token's toggle refused with the API's
//! own words.

use serde_json::Value;

use crate::cdp::Browser;
use crate::dashboard_live::{js, mint, sign_in};
use crate::pipeline_support::App;

fn flags_file(app: &App, env: &str) -> Value {
    let path = app.env_dir(env).join("flags.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The value the page shows for flag `name` (`on`/`off`), or null while it has no row.
fn shown(name: &str) -> String {
    format!(
        "document.querySelector('[data-flag-value=' + {} + ']')?.textContent",
        js(&format!("\"{name}\""))
    )
}

fn click(name: &str) -> String {
    format!(
        "document.querySelector('[data-action=flag][data-flag=' + {} + ']').click(); true",
        js(&format!("\"{name}\""))
    )
}

#[test]
fn flags_are_shown_toggled_and_followed_live_on_the_environment_page_in_chromium() {
    let app = App::new();
    let server = app.start();
    server.cli_json("bob", &["flag", "set", "prod", "new_checkout", "off"]);

    let mut browser = Browser::start();
    let tab = browser.open(&format!("{}/#/env/prod", server.url));
    sign_in(&mut browser, &tab, &server.token("alice"));
    assert_eq!(browser.wait_for(&tab, &shown("new_checkout")), "off");
    // Who changed it last is on the row.
    let row = browser.eval(
        &tab,
        "document.querySelector('[data-flag-value=\"new_checkout\"]').closest('tr').textContent",
    );
    assert!(row.as_str().unwrap().contains("bob"), "{row}");
    browser.wait_for(&tab, "document.body.dataset.live === 'sse'");
    browser.eval(&tab, "window.notReloaded = true; true");

    // Production asks first; declined, nothing changes.
    browser.accept_dialogs = false;
    browser.eval(&tab, &click("new_checkout"));
    let asked = browser.dialogs.last().cloned().unwrap_or_default();
    assert!(
        asked.contains("new_checkout") && asked.contains("on") && asked.contains("production"),
        "{asked}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(flags_file(&app, "prod")["flags"]["new_checkout"], false);

    // Accepted: the API, the flags file and the page say on.
    browser.accept_dialogs = true;
    browser.eval(&tab, &click("new_checkout"));
    browser.wait_for(&tab, &format!("{} === 'on'", shown("new_checkout")));
    let list = server.cli_json("x", &["flag", "list", "prod"]);
    assert_eq!(list[0]["value"], "on", "{list}");
    assert_eq!(list[0]["updated_by"], "alice", "{list}");
    assert_eq!(flags_file(&app, "prod")["flags"]["new_checkout"], true);

    // A change made elsewhere (the CLI) appears without a reload, through the event stream.
    server.cli_json("bob", &["flag", "set", "prod", "dark-mode", "on"]);
    browser.wait_for(&tab, &format!("{} === 'on'", shown("dark-mode")));
    server.cli_json("bob", &["flag", "set", "prod", "new_checkout", "off"]);
    browser.wait_for(&tab, &format!("{} === 'off'", shown("new_checkout")));
    assert_eq!(
        browser.eval(
            &tab,
            "window.notReloaded === true && document.body.dataset.polls === undefined"
        ),
        true,
        "the updates came through the event stream, into the same page"
    );

    // Promote with its flags: the page asks, names the flags, and the target gets them.
    server.deploy("alice", "staging", &app.good[0][..12]);
    server.cli_json("alice", &["flag", "set", "staging", "carried", "on"]);
    browser.eval(&tab, "location.hash = '#/env/staging'; true");
    browser.wait_for(&tab, "document.getElementById('promote-flags')");
    browser.eval(
        &tab,
        "document.getElementById('promote-to').value = 'dev'; document.getElementById('promote-flags').checked = true; \
         document.querySelector('[data-action=promote]').click(); true",
    );
    browser.wait_for(&tab, "location.hash.startsWith('#/run/')");
    assert!(
        browser
            .dialogs
            .last()
            .unwrap()
            .contains("copy every feature flag of staging onto dev"),
        "{:?}",
        browser.dialogs
    );
    assert_eq!(flags_file(&app, "dev")["flags"]["carried"], true);

    // A viewer sees the flags; a toggle is refused with the API's words, and nothing changes.
    let viewer = mint(&server, "vera", &["--role", "viewer"]);
    let tab = browser.open(&format!("{}/#/env/dev&token={viewer}", server.url));
    server.cli_json("bob", &["flag", "set", "dev", "beta", "off"]);
    assert_eq!(browser.wait_for(&tab, &shown("beta")), "off");
    browser.eval(&tab, &click("beta"));
    let refusal = browser.wait_for(
        &tab,
        "document.querySelector('[data-action=flag][data-flag=\"beta\"]').parentElement.querySelector('.action-error').textContent",
    );
    assert!(refusal.as_str().unwrap().contains("deployer"), "{refusal}");
    assert_eq!(flags_file(&app, "dev")["flags"]["beta"], false);
    assert_eq!(browser.eval(&tab, &shown("beta")), "off");
}
