//! `cutover demo`: the example shop, deployed, in one command.
//!
//! Writes the example application (embedded in this binary) into the data
//! directory as its own git repository with two commits, starts the server
//! with it, deploys dev and staging, requests production (which waits for
//! approval, four-eyes) and prints what to open and type next. Ctrl-C stops
//! everything. It deploys with a token of its own (`demo`, deployer), so the
//! admin token it saves for your CLI (and hands the dashboard in the URL it
//! prints) belongs to someone else and may approve production. Running it again reuses the repository and the state: what is
//! already deployed is not deployed again.
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
    std::io::stdout().flush().ok();
    let mut server = tokio::spawn(app.run_until_stopped());

    let url = super::serve::local_url(api);
    let deploy = async {
        let client = demo_client(&url, &admin).await?;
        deploy(&client, "dev", &second).await?;
        deploy(&client, "staging", &first).await?;
        request_production(&client, &first).await
    };
    tokio::select! {
        r = deploy => match r {
            Ok(waiting) => print_next_steps(&url, &admin, router, waiting, &first, &second),
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
    let admin = Client::new(url, Some(admin))?;
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
    Client::new(url, Some(secret))
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

/// Requests a production release that waits for approval; reuses a waiting one.
async fn request_production(client: &Client, version: &str) -> anyhow::Result<Option<i64>> {
    let summary: Value = client.get("/api/v1/environments/prod").await?;
    if summary["last_deployed_version"].as_str().is_some() {
        println!(
            "demo: prod already runs {}",
            summary["last_deployed_version"].as_str().unwrap_or("")
        );
        return Ok(None);
    }
    let runs: Value = client.get("/api/v1/runs?env=prod&limit=5").await?;
    let waiting = runs.as_array().and_then(|r| {
        r.iter()
            .find(|r| r["state"] == "awaiting_approval" || r["state"] == "queued")
    });
    let id = match waiting {
        Some(r) => r["id"].as_i64().unwrap_or_default(),
        None => {
            let run: Value = client
                .post(
                    "/api/v1/environments/prod/releases",
                    &json!({ "version": version }),
                )
                .await?;
            run["id"].as_i64().unwrap_or_default()
        }
    };
    watch(client, id, &["awaiting_approval", "succeeded", "failed"]).await?;
    println!("demo: production run {id} is waiting for approval");
    Ok(Some(id))
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
    waiting: Option<i64>,
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
    if let Some(id) = waiting {
        // Padded to the comment column of the lines around them, whatever the id's width.
        let run = format!("cutover run {id}");
        let approve = format!("cutover approve {id}");
        println!("  {run:<38}# production waits in its Approval stage");
        println!("  {approve:<38}# four-eyes: the demo requested it as \"{ACTOR}\", you are admin");
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
