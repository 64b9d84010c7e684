//! `cutover demo`: the example shop, deployed, in one command.
//!
//! Writes the example application (embedded in this binary) into the data
//! directory as its own git repository with two commits, starts the server
//! with it, deploys dev and staging, requests production (which waits for
//! approval, four-eyes) and prints what to open and type next. Ctrl-C stops
//! everything. It deploys with a token of its own (`demo`, deployer), so the
//! admin token it saves for your CLI (and hands the dashboard in the URL it
//! prints) belongs to someone else and may approve production.
//!
//! Running it again resumes what you did: the same repository and state, and
//! no environment that was ever deployed is deployed again (the server's own
//! reconciliation brings each back to its `last_deployed_version`, your
//! releases and rollbacks included); a run pending somewhere is left alone.
//! Stopping the demo ends the production run waiting for approval (runs end
//! with their server), so the demo requests it again only when it was its own
//! and ended by that stop (cancelled with no `run.cancel` in the audit log, or
//! interrupted); a run you rejected or cancelled, or requested yourself, is
//! not requested again: the next steps print the command to do it. Rejected:
//! re-requesting production whenever nothing waits, which would undo a
//! rejection.
//!
//! The repository is created with the `git` binary: the demo is a
//! convenience for people, not a Cutover code path (Cutover itself reads git
//! without the binary). Rejected: generating commits through gix, a lot of
//! code for a one-off.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use cutover_server::{App, ServeOptions};
use serde_json::{Value, json};

use crate::cli::DemoArgs;
use crate::client::Client;

/// The example shop, as committed in `examples/shop`.
const FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../examples/shop/README.md")),
    (".gitignore", include_str!("../../../examples/shop/.gitignore")),
    ("build.sh", include_str!("../../../examples/shop/build.sh")),
    ("cutover.yml", include_str!("../../../examples/shop/cutover.yml")),
    (
        "demo-orders.txt",
        include_str!("../../../examples/shop/demo-orders.txt"),
    ),
    (
        "migrations/001_products.txt",
        include_str!("../../../examples/shop/migrations/001_products.txt"),
    ),
    (
        "migrations/002_more_products.txt",
        include_str!("../../../examples/shop/migrations/002_more_products.txt"),
    ),
    (
        "public/app.js",
        include_str!("../../../examples/shop/public/app.js"),
    ),
    (
        "public/index.html",
        include_str!("../../../examples/shop/public/index.html"),
    ),
    ("src/shop.rs", include_str!("../../../examples/shop/src/shop.rs")),
];

/// The second commit: a migration that a release to staging applies.
const WINTER_SALE: (&str, &str) = (
    "migrations/003_winter_sale.txt",
    "# Winter sale: the grey hoodie is cheaper.\nhoodie-grey 3900 Grey hoodie\n",
);

const ACTOR: &str = "demo";

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the demo directory {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let repo = dir.join("shop");
    let (first, second) = ensure_repository(&repo)?;
    let resuming = dir.join("state").is_dir();
    let app = App::build(ServeOptions {
        config: repo.join("cutover.yml"),
        data_dir: dir.join("state"),
        listen: args.listen,
        router_listen: Some(args.router_listen),
        database_url: None,
        standby: false,
        secret_key_file: None,
        reset_admin_token: false,
        rotate_secret_key: false,
        // Ctrl-C of the demo stops everything it started.
        data_plane: cutover_server::DataPlaneMode::Process,
        stop_on_exit: true,
        tls: None,
    })
    .await
    .map_err(|e| match e {
        cutover_server::StartError::Config(errors) => anyhow::anyhow!("{errors}"),
        other => anyhow::Error::new(other),
    })?;
    let api = app.local_addr()?;
    let router = app.router_addr()?;
    let admin = admin_token(&app)?;
    super::serve::save_admin_token(api, &admin, app.admin_token_file());
    println!("cutover: router on http://{router}");
    println!("cutover: listening on http://{api}");
    if resuming {
        println!(
            "demo: resuming the state in {} (what was deployed is not deployed again; remove {} to start afresh)",
            dir.join("state").display(),
            dir.display()
        );
    }
    std::io::stdout().flush().ok();
    let mut server = tokio::spawn(app.run_until_stopped());

    let url = super::serve::local_url(api);
    let deploy = async {
        let client = demo_client(&url, &admin).await?;
        for (env, pinned) in [("dev", &second), ("staging", &first)] {
            match found(&client, env).await? {
                Found::Nothing => deploy(&client, env, pinned).await?,
                Found::Deployed(v) => comes_back(&client, env, &v, pinned).await?,
                Found::Pending(run) => leave_pending(env, &run),
            }
        }
        request_production(&client, &first).await
    };
    tokio::select! {
        r = deploy => match r {
            Ok(prod) => print_next_steps(&url, &admin, router, &prod, &first, &second),
            // Keep serving: the failed run's log is where the answer is.
            Err(e) => eprintln!("error: {e:#}\nThe server keeps running so you can look: CUTOVER_URL={url} cutover runs"),
        },
        r = &mut server => return finished(r),
    }
    std::io::stdout().flush().ok();
    // The server runs until Ctrl-C / SIGTERM, then stops every instance.
    finished(server.await)
}

/// The admin token: minted by this start, or the one an earlier run wrote.
fn admin_token(app: &App) -> anyhow::Result<String> {
    if let Some(t) = app.new_admin_token() {
        return Ok(t.to_owned());
    }
    let file = app.admin_token_file();
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "the demo's state has API tokens but its admin token file {} cannot be read; \
             remove the demo directory to start afresh",
            file.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

/// A client acting as the `demo` token (deployer everywhere), minted afresh
/// through the admin token on every run (the secret of an earlier one is gone).
async fn demo_client(url: &str, admin: &str) -> anyhow::Result<Client> {
    let admin = Client::new(url, Some(admin), None)?;
    let tokens: Value = admin.get("/api/v1/tokens").await?;
    let live = tokens.as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["name"] == ACTOR && t["revoked_at_ms"].is_null())
    });
    if live {
        let _: Value = admin
            .post(&format!("/api/v1/tokens/{ACTOR}/revoke"), &json!({}))
            .await?;
    }
    let issued: Value = admin
        .post(
            "/api/v1/tokens",
            &json!({ "name": ACTOR, "grants": { "default": "deployer" } }),
        )
        .await?;
    let secret = issued["secret"]
        .as_str()
        .context("the server did not return the demo token's secret")?;
    Client::new(url, Some(secret), None)
}

fn finished(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("the server stopped")),
        Err(e) => Err(anyhow::anyhow!("the server task failed: {e}")),
    }
}

/// Creates the example's repository with two commits unless it exists.
/// Returns (first, second) commit SHAs.
fn ensure_repository(repo: &Path) -> anyhow::Result<(String, String)> {
    if repo.join(".git").is_dir() {
        let log = git(repo, &["log", "--format=%H", "--reverse"])?;
        let shas: Vec<&str> = log.lines().collect();
        if shas.len() >= 2 {
            println!("demo: reusing the example repository at {}", repo.display());
            return Ok((shas[0].to_owned(), shas[1].to_owned()));
        }
        bail!(
            "{} exists but is not the demo's repository; remove it or pick another --data-dir",
            repo.display()
        );
    }
    println!(
        "demo: writing the example shop into {} (a git repository of its own)",
        repo.display()
    );
    for (path, text) in FILES {
        write(repo, path, text)?;
    }
    git(repo, &["init", "-q", "-b", "main"])?;
    git(repo, &["add", "-A"])?;
    git(
        repo,
        &[
            "commit",
            "-q",
            "-m",
            "Shop: storefront, back office, API, front end",
        ],
    )?;
    let first = git(repo, &["rev-parse", "HEAD"])?;
    write(repo, WINTER_SALE.0, WINTER_SALE.1)?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", "Winter sale: grey hoodie at 39.00"])?;
    let second = git(repo, &["rev-parse", "HEAD"])?;
    Ok((first, second))
}

fn write(repo: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let p: PathBuf = repo.join(path);
    std::fs::create_dir_all(p.parent().unwrap_or(repo))?;
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
}

#[allow(clippy::disallowed_methods)] // the demo's own repository, see the module doc
fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Cutover Demo",
            "-c",
            "user.email=demo@cutover.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .context("the demo needs git to create the example repository: sudo apt-get install git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Releases `version` to `env` unless it already runs there, printing each stage as it ends.
async fn deploy(client: &Client, env: &str, version: &str) -> anyhow::Result<()> {
    let summary: Value = client.get(&format!("/api/v1/environments/{env}")).await?;
    if summary["last_deployed_version"].as_str() == Some(version) {
        println!("demo: {env} already runs {}", &version[..12]);
        return Ok(());
    }
    let run: Value = client
        .post(
            &format!("/api/v1/environments/{env}/releases"),
            &json!({ "version": version }),
        )
        .await?;
    let id = run["id"].as_i64().unwrap_or_default();
    println!(
        "demo: deploying {} to {env} (run {id}; the first build compiles the shop, ~10 s)",
        &version[..12]
    );
    let run = watch(client, id, &["succeeded", "failed", "cancelled", "interrupted"]).await?;
    if run["state"] != "succeeded" {
        bail!(
            "the demo's run {id} on {env} {}: {}; see `cutover logs {id}` (CUTOVER_URL is printed above)",
            run["state"],
            run["error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// What the demo finds in an environment before it touches it.
enum Found {
    /// Never deployed and no run under way: the demo deploys it (a first run, or one stopped
    /// before it got there).
    Nothing,
    /// Its `last_deployed_version`: the server's reconciliation brings it back, the demo
    /// deploys nothing (it may be the user's own release).
    Deployed(String),
    /// A run queued, running or waiting for approval: left alone, never superseded.
    Pending(Value),
}

async fn found(client: &Client, env: &str) -> anyhow::Result<Found> {
    // A queued run survives a restart and changes what gets deployed: look for it first.
    let runs: Value = client.get(&format!("/api/v1/runs?env={env}&limit=20")).await?;
    let pending = runs.as_array().and_then(|r| {
        r.iter().find(|r| {
            matches!(
                r["state"].as_str(),
                Some("queued" | "running" | "awaiting_approval")
            )
        })
    });
    if let Some(run) = pending {
        return Ok(Found::Pending(run.clone()));
    }
    let summary: Value = client.get(&format!("/api/v1/environments/{env}")).await?;
    Ok(match summary["last_deployed_version"].as_str() {
        Some(v) => Found::Deployed(v.to_owned()),
        None => Found::Nothing,
    })
}

fn short(v: &str) -> &str {
    v.get(..12).unwrap_or(v)
}

/// A later run: `env` comes back to its last deployed version by the server's own
/// reconciliation; waits until it serves it, so the URLs printed next answer.
async fn comes_back(client: &Client, env: &str, deployed: &str, pinned: &str) -> anyhow::Result<()> {
    let whose = if deployed == pinned {
        String::new()
    } else {
        format!(", released since the demo deployed {}", short(pinned))
    };
    println!(
        "demo: {env} resumes on {}, its last deployed version{whose}",
        short(deployed)
    );
    for _ in 0..3000 {
        let status: Value = client.get(&format!("/api/v1/environments/{env}/status")).await?;
        let services = status["services"].as_array().cloned().unwrap_or_default();
        let up = status["serving_version"].as_str() == Some(deployed)
            && services.iter().all(|s| {
                s["instances"].as_array().is_some_and(|i| {
                    i.iter().any(|i| {
                        i["version"].as_str() == Some(deployed) && i["healthy"] != Value::Bool(false)
                    })
                })
            });
        if up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "{env} did not come back to {} within 10 minutes; see the server log above and \
         `cutover status {env}`",
        short(deployed)
    )
}

fn leave_pending(env: &str, run: &Value) {
    let id = run["id"].as_i64().unwrap_or_default();
    println!(
        "demo: {env} has run {id} {} (requested by {}); the demo leaves it be: cutover run {id}",
        run["state"].as_str().unwrap_or("?"),
        run["requested_by"].as_str().unwrap_or("?")
    );
}

/// What production is left with, for the next steps.
enum Prod {
    /// A release waits for approval: the demo's, requested now or found waiting.
    Waiting(i64),
    /// Something was deployed there; nothing is requested.
    Deployed,
    /// Not requested again: the last production run did not end by a stop of the demo
    /// (someone rejected or cancelled it, it failed, or it is someone else's).
    Left {
        run: i64,
        state: String,
        version: String,
    },
}

/// Requests a production release that waits for approval, unless prod was deployed, a run
/// is pending there, or its last run ended by someone's decision. A demo stop ends the run
/// waiting for approval (runs end with their server: cancelled at the stop, or interrupted
/// by the next start after a kill); the demo requests it again only if it was its own.
async fn request_production(client: &Client, version: &str) -> anyhow::Result<Prod> {
    match found(client, "prod").await? {
        Found::Deployed(v) => {
            println!(
                "demo: prod runs {} (deployed before; nothing is requested)",
                short(&v)
            );
            return Ok(Prod::Deployed);
        }
        Found::Pending(run) => {
            let id = run["id"].as_i64().unwrap_or_default();
            return waiting(client, id).await;
        }
        Found::Nothing => {}
    }
    let runs: Value = client.get("/api/v1/runs?env=prod&limit=1").await?;
    if let Some(last) = runs.as_array().and_then(|r| r.first()) {
        let id = last["id"].as_i64().unwrap_or_default();
        let state = last["state"].as_str().unwrap_or("?").to_owned();
        if !ended_by_a_stop(client, last).await? {
            let v = last["target_version"].as_str().unwrap_or(version).to_owned();
            println!(
                "demo: prod's last run {id} (requested by {}) ended {state}{}; the demo does not request it again",
                last["requested_by"].as_str().unwrap_or("?"),
                last["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            return Ok(Prod::Left {
                run: id,
                state,
                version: v,
            });
        }
        println!("demo: production run {id} ended ({state}) when the demo stopped; requesting it again");
    }
    let run: Value = client
        .post(
            "/api/v1/environments/prod/releases",
            &json!({ "version": version }),
        )
        .await?;
    waiting(client, run["id"].as_i64().unwrap_or_default()).await
}

/// Whether a production run is the demo's own and ended only because its server stopped:
/// interrupted, or cancelled with no one's `run.cancel` in the audit log.
async fn ended_by_a_stop(client: &Client, run: &Value) -> anyhow::Result<bool> {
    if run["requested_by"] != ACTOR {
        return Ok(false);
    }
    match run["state"].as_str() {
        Some("interrupted") => Ok(true),
        Some("cancelled") => {
            let target = format!("run/{}", run["id"].as_i64().unwrap_or_default());
            let audit: Value = client.get("/api/v1/audit?limit=1000").await?;
            let by_someone = audit.as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["action"] == "run.cancel" && e["target"] == target.as_str())
            });
            Ok(!by_someone)
        }
        _ => Ok(false),
    }
}

/// Follows a production run to its Approval stage.
async fn waiting(client: &Client, id: i64) -> anyhow::Result<Prod> {
    let run = watch(
        client,
        id,
        &[
            "awaiting_approval",
            "succeeded",
            "failed",
            "cancelled",
            "rejected",
            "interrupted",
        ],
    )
    .await?;
    let state = run["state"].as_str().unwrap_or("?");
    if state == "awaiting_approval" {
        println!("demo: production run {id} is waiting for approval");
        return Ok(Prod::Waiting(id));
    }
    println!("demo: production run {id} ended {state}");
    Ok(Prod::Left {
        run: id,
        state: state.to_owned(),
        version: run["target_version"].as_str().unwrap_or("").to_owned(),
    })
}

/// Polls a run, printing stages as they finish, until it reaches one of `states`.
async fn watch(client: &Client, id: i64, states: &[&str]) -> anyhow::Result<Value> {
    let mut printed = 0usize;
    for _ in 0..3000 {
        let run: Value = client.get(&format!("/api/v1/runs/{id}")).await?;
        let stages = run["stages"].as_array().cloned().unwrap_or_default();
        while printed < stages.len() {
            let s = &stages[printed];
            let status = s["status"].as_str().unwrap_or("");
            if !matches!(status, "succeeded" | "skipped" | "failed") {
                break;
            }
            println!("  {:<32} {status}", crate::output::stage_title(&s["stage"]));
            printed += 1;
        }
        if states.contains(&run["state"].as_str().unwrap_or("")) {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("run {id} did not finish within 10 minutes; see `cutover logs {id}`")
}

fn print_next_steps(
    api: &str,
    admin: &str,
    router: std::net::SocketAddr,
    prod: &Prod,
    first: &str,
    second: &str,
) {
    let port = router.port();
    println!();
    println!("Cutover demo is running (Ctrl-C stops it and every service).");
    println!();
    println!("Open in a browser (*.localhost reaches this machine):");
    for env in ["dev", "staging"] {
        for svc in ["storefront", "backoffice", "frontend"] {
            println!("  {env:<8} {svc:<11} http://{svc}.{env}.shop.localhost:{port}/");
        }
    }
    println!();
    println!("Dashboard (signed in as admin by the token after #; keep this URL to yourself):");
    println!("  {api}/#token={admin}");
    println!();
    println!("In another terminal (your CLI has the admin token for {api}; `cutover whoami`):");
    println!("  export CUTOVER_URL={api}");
    println!("  cutover env list                      # desired / built / deployed per environment");
    println!("  cutover status staging                # every instance and the version it really runs");
    println!("  cutover versions staging              # commits, marked built / desired / deployed");
    if let Prod::Waiting(id) = prod {
        // Padded to the comment column of the lines around them, whatever the id's width.
        let run = format!("cutover run {id}");
        let approve = format!("cutover approve {id}");
        println!("  {run:<38}# production waits in its Approval stage");
        println!("  {approve:<38}# four-eyes: the demo requested it as \"{ACTOR}\", you are admin");
    }
    if let Prod::Left { run, state, version } = prod {
        let again = format!("cutover release prod --version {}", short(version));
        println!("  {again:<38}# production again (run {run} ended {state}); waits for approval");
    }
    println!(
        "  cutover release staging --version {} --follow   # the winter sale to staging",
        &second[..12]
    );
    println!(
        "  cutover rollback staging --fast       # back to {} in under a second",
        &first[..12]
    );
}
