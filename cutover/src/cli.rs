//! Command-line grammar. Every command's `--help` says what it does, what it
//! needs and an example.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod process;

pub use process::{DataPlaneArg, DataPlaneArgs, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Self-hosted deployment control plane: pin versions, run pipelines, switch traffic without dropping a request",
    long_about = None,
    after_help = "Start a server with `cutover serve --config cutover.yml`; the other commands talk to it \
                  (at --server, or CUTOVER_URL, default http://127.0.0.1:7070) with an API token: --token, \
                  CUTOVER_TOKEN, or the one `cutover login` saved for that server. The first start of a server \
                  writes an admin token to <data-dir>/admin.token and saves it for the CLI of the user who ran it.\n\n\
                  Examples:\n  cutover demo\n  cutover serve --config cutover.yml\n  cutover status prod\n  \
                  cutover release staging --version main --wait\n  cutover completions bash > ~/.local/share/bash-completion/completions/cutover"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// URL of the Cutover server to talk to.
    #[arg(
        long,
        global = true,
        env = "CUTOVER_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,

    /// Output format: human-readable tables, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// The API token to send (default: the one `cutover login` saved for --server). Your
    /// token's name is who you are in history and the audit log.
    #[arg(
        long,
        global = true,
        env = "CUTOVER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// A PEM CA certificate to trust for an https:// --server (a private CA), beside the
    /// system's roots. The server's certificate is always verified.
    #[arg(long, global = true, env = "CUTOVER_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Gone: who you are is now the name of your API token.
    #[arg(long = "as", global = true, hide = true, value_name = "NAME")]
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (HTTP API) until Ctrl-C or SIGTERM.
    #[command(
        after_help = "Example: cutover serve --config examples/shop/cutover.yml --listen 127.0.0.1:7070"
    )]
    Serve(ServeArgs),

    /// Stop everything on purpose: every instance of every environment, the data plane (the
    /// router) and the server. A plain Ctrl-C/SIGTERM of `cutover serve` leaves production
    /// serving for the next server instead.
    #[command(after_help = "Example: cutover stop --all")]
    Stop {
        /// Required: say that every environment, production included, stops serving.
        #[arg(long)]
        all: bool,
    },

    /// Replace the data plane (the router process) with the `cutover` binary now installed at
    /// the server's path, without dropping a connection: it takes the listening sockets and
    /// routes over, the old one drains and exits. Upgrading Cutover: install the new binary,
    /// restart `cutover serve` (instances are adopted), then run this.
    #[command(after_help = "Example: cutover upgrade --data-plane")]
    Upgrade {
        /// Required: what to upgrade (the control plane upgrades by restarting it).
        #[arg(long)]
        data_plane: bool,
    },

    /// The control plane and the data plane: pids, since when, data-plane restarts, instances
    /// adopted at start.
    #[command(after_help = "Example: cutover system --output json")]
    System,

    /// Start Cutover with the example shop: dev and staging deployed, production awaiting approval.
    #[command(after_help = "Example: cutover demo   (then open the URLs it prints; Ctrl-C stops everything)")]
    Demo(DemoArgs),

    /// Run the data plane (the router's listeners and routing table) of a data directory; `cutover
    /// serve` starts it when none runs, and it keeps serving when the control plane stops.
    #[command(after_help = "Example: cutover data-plane --data-dir ./.cutover\n\
                      Files in <data-dir>/dataplane/: control.sock, secret, pid, routes.json, dataplane.log.\n\
                      With --take-over it replaces the running data plane without dropping a connection.")]
    DataPlane(DataPlaneArgs),

    /// Work with a cutover.yml without a server: check it, or print its JSON Schema for editors.
    #[command(
        subcommand,
        after_help = "Examples:\n  cutover config check --file examples/shop/cutover.yml\n  \
                      cutover config schema > cutover.schema.json"
    )]
    Config(ConfigCommand),

    /// Environments and their versions; create and delete per-branch integration environments.
    #[command(
        subcommand,
        after_help = "Examples:\n  cutover env list\n  cutover env show staging\n  \
                      cutover env create review --branch feature/login --deploy"
    )]
    Env(EnvCommand),

    /// The parameter store: versioned keys with history and compare-and-set.
    #[command(
        subcommand,
        after_help = "Examples:\n  cutover param list /shop-prod\n  cutover param get /shop-prod/desired_version\n  \
                      cutover param put /shop-prod/secrets/db_password - < password.txt"
    )]
    Param(ParamCommand),

    /// Recent commits of an environment's branch, marked built / desired / deployed.
    #[command(after_help = "Example: cutover versions staging --limit 10")]
    Versions(VersionsArgs),

    /// Fetch a remote `repo:` into the server's mirror now (a release, a run and auto-deploy
    /// fetch on their own).
    #[command(after_help = "Example: cutover fetch")]
    Fetch,

    /// Run the deployment pipeline for an environment (queued behind its active run).
    #[command(after_help = "Examples:\n  cutover release staging --version main\n  \
                            cutover release dev --destructive --yes\n  cutover release prod --follow\n  \
                            cutover release staging --version main --wait --timeout 20m   # in CI: exit 0 only if it succeeded\n\n\
                            A release is asynchronous: it queues a run and returns (as rollback and promote do)\n\
                            unless you --follow its log or --wait for its outcome.")]
    Release(ReleaseArgs),

    /// Recent pipeline runs, newest first.
    #[command(after_help = "Examples:\n  cutover runs\n  cutover runs prod -n 5 -o json")]
    Runs {
        /// Only this environment's runs.
        env: Option<String>,
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u32,
    },

    /// One run: its stages with status, start and duration.
    #[command(after_help = "Example: cutover run 42")]
    Run { id: i64 },

    /// A run's log, all stages or one; --follow streams it live until the run ends.
    #[command(after_help = "Example: cutover logs 42 --stage install --follow")]
    Logs {
        id: i64,
        /// Only this stage (e.g. build, install, deploy-services).
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, short = 'f')]
        follow: bool,
    },

    /// Cancel a queued or active run; an active run puts the serving version back.
    #[command(after_help = "Example: cutover cancel 42")]
    Cancel { id: i64 },

    /// Approve the version of a run waiting in its Approval stage (fixed when it was requested).
    /// On production: not a run you requested, nor one whose version you chose.
    #[command(after_help = "Example: cutover approve 42 --version 3f2a9c1 -m \"checked on staging\"")]
    Approve {
        id: i64,
        #[arg(long, short = 'm')]
        comment: Option<String>,
        /// The SHA you approve (7+ characters); refused if the run deploys another one.
        #[arg(long)]
        version: Option<String>,
    },

    /// Reject a run waiting in its Approval stage; the comment is required.
    #[command(after_help = "Example: cutover reject 42 --version 3f2a9c1 -m \"breaks checkout on staging\"")]
    Reject {
        id: i64,
        #[arg(long, short = 'm')]
        comment: Option<String>,
        /// The SHA you reject (7+ characters); refused if the run deploys another one.
        #[arg(long)]
        version: Option<String>,
    },

    /// Roll back: deploy an older version through the pipeline, or --fast switch to the warm previous release.
    #[command(
        after_help = "Examples:\n  cutover rollback prod            # the version deployed before the current one\n  \
                            cutover rollback prod --to 3f2a9c1\n  cutover rollback prod --fast     # traffic only, under a second"
    )]
    Rollback {
        env: String,
        /// Version to roll back to (default: the one deployed before the current one).
        #[arg(long)]
        to: Option<String>,
        /// Switch traffic back to the still-warm previous release (no build, no hooks).
        #[arg(long, conflicts_with = "to")]
        fast: bool,
        /// With --fast: switch even though the version left ran an install step (a migration)
        /// since the warm release served; audited with force=true.
        #[arg(long, requires = "fast")]
        force: bool,
        /// Admins only: deploy although the version has not succeeded on the environments this one
        /// `requires:` (cutover.yml); the reason is recorded on the run and in the audit log.
        #[arg(long, value_name = "REASON")]
        override_policy: Option<String>,
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },

    /// Deploy what one environment runs to another (sets its desired_version, starts a run).
    #[command(after_help = "Examples:\n  cutover promote staging prod\n  \
                            cutover promote staging prod --wait --timeout 1h   # exit 5 while it waits for approval\n  \
                            cutover promote staging prod --flags   # staging's feature flags too")]
    Promote {
        from: String,
        to: String,
        /// Also copy every feature flag of FROM onto TO (audited as flag.set with the promote as
        /// reason; flags only TO has stay). Onto a production tier this needs the approver role.
        #[arg(long)]
        flags: bool,
        /// Admins only: deploy although the version has not succeeded on the environments this one
        /// `requires:` (cutover.yml); the reason is recorded on the run and in the audit log.
        #[arg(long, value_name = "REASON")]
        override_policy: Option<String>,
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },

    /// What really runs: per service, each instance's version read from the process, health, restarts.
    #[command(after_help = "Examples:\n  cutover status prod\n  cutover status staging -o json")]
    Status { env: String },

    /// A service's instance logs.
    #[command(
        subcommand,
        after_help = "Example: cutover service logs prod storefront -n 50 --follow"
    )]
    Service(ServiceCommand),

    /// The cron scheduler of an environment.
    #[command(
        subcommand,
        after_help = "Examples:\n  cutover scheduler status prod\n  cutover scheduler suspend prod\n  \
                      cutover scheduler run prod nightly-import"
    )]
    Scheduler(SchedulerCommand),

    /// Change a service's replica count; on fixed-size tiers a change request for someone else.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "dev and integration environments apply a scale change at once: new instances start,\n\
                      become healthy and take the traffic, then the old ones drain and stop. On stage,\n\
                      prod-like and prod it is a change request that someone else approves (on prod\n\
                      within autoscale min..max). The count holds for every later deploy.\n\n\
                      Examples:\n  cutover scale dev api 3\n  cutover scale staging api 4 -m \"load test friday\"\n  \
                      cutover scale requests\n  cutover scale approve 7\n  cutover scale reject 7 -m \"not before the sale\""
    )]
    Scale(ScaleArgs),

    /// Feature flags of an environment: running instances read them from $CUTOVER_FLAGS_FILE.
    #[command(
        subcommand,
        after_help = "A flag change reaches running instances without a restart or a deploy: every instance\n\
                      has CUTOVER_FLAGS_FILE, a JSON file {\"flags\": {\"NAME\": true, ...}} rewritten atomically.\n\n\
                      Examples:\n  cutover flag set dev new_checkout on\n  cutover flag list dev\n  \
                      cutover param history /shop-dev/flags/new_checkout"
    )]
    Flag(FlagCommand),

    /// Maintenance mode of an environment: the router answers 503 with Retry-After and a page.
    #[command(
        subcommand,
        after_help = "Every request to the environment's public services gets 503, Retry-After and the page,\n\
                      until it is turned off; a data-plane restart or upgrade keeps it. Deployer on the\n\
                      environment (approver on prod); audited as maintenance.on / maintenance.off.\n\n\
                      Examples:\n  cutover maintenance on staging --page down.html\n  cutover maintenance status staging\n  \
                      cutover maintenance off staging"
    )]
    Maintenance(MaintenanceCommand),

    /// The append-only audit log of every change, newest first.
    #[command(after_help = "Examples:\n  cutover audit\n  cutover audit -n 200 -o json")]
    Audit {
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: u32,
    },

    /// Save an API token for a server, so later commands need no --token.
    #[command(
        long_about = "Save an API token for a server in your credentials file \
                      ($XDG_CONFIG_HOME/cutover/credentials.json, else ~/.config/cutover/credentials.json, mode 0600), \
                      after checking it with the server. Without --token, the token is read from standard input \
                      (so it stays out of your shell history).",
        after_help = "Examples:\n  cutover login --server http://cutover.internal:7070 < my.token\n  \
                      sudo cat /var/lib/cutover/admin.token | cutover login --server http://127.0.0.1:7070"
    )]
    Login,

    /// Who the server says you are: your token's name and roles.
    #[command(
        after_help = "Examples:\n  cutover whoami\n  CUTOVER_TOKEN=$(cat ci.token) cutover whoami -o json"
    )]
    Whoami,

    /// API tokens: create (admin), list, revoke.
    #[command(
        subcommand,
        after_help = "Examples:\n  cutover token create ci --role deployer --env dev --expires 90d\n  \
                      cutover token list\n  cutover token revoke ci"
    )]
    Token(TokenCommand),

    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Examples:\n  cutover completions bash > ~/.local/share/bash-completion/completions/cutover\n  \
                      cutover completions zsh > \"${fpath[1]}/_cutover\"\n  \
                      cutover completions fish > ~/.config/fish/completions/cutover.fish"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff) of cutover, or with --dir write one page per command.
    #[command(after_help = "Examples:\n  cutover man | man -l -\n  \
                      cutover man --dir /usr/local/share/man/man1   # cutover.1, cutover-release.1, ...")]
    Man {
        /// Write cutover.1 and a page per subcommand (cutover-release.1, cutover-env-create.1, ...)
        /// into this directory instead of printing the top page.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token; its secret is printed once and stored nowhere (only a hash is kept).
    #[command(
        long_about = "Mint an API token named NAME (the name is who its holder is in history and the audit log) \
                      with ROLE on each --env, or on every environment without --env. Roles, each including the \
                      ones before it: viewer (reads), deployer (release, rollback, promote into, cancel, scheduler, \
                      parameters), approver (approve/reject runs; never one's own), admin (tokens; parameters \
                      outside every environment). Needs admin on every environment.",
        after_help = "Examples:\n  cutover token create ci --role deployer --env dev --env staging --expires 90d\n  \
                      cutover token create alice --role approver\n  \
                      cutover token create dashboard-tv --role viewer -o json"
    )]
    Create {
        /// Who holds it: 1 to 64 letters, digits, '.', '_', '@' or '-'.
        name: String,
        /// What the token may do on its environments.
        #[arg(long, value_parser = ["viewer", "deployer", "approver", "admin"])]
        role: String,
        /// An environment the role applies to (repeatable); none: every environment.
        #[arg(long = "env", value_name = "ENV")]
        envs: Vec<String>,
        /// Lifetime, as durations in cutover.yml: e.g. 12h, 30d, 1h30m; none: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<DurationArg>,
    },
    /// Every token with its roles, creation, expiry and whether it still works (never secrets).
    #[command(after_help = "Example: cutover token list -o json")]
    List,
    /// Revoke the live token NAME: requests with it fail from now on.
    #[command(after_help = "Example: cutover token revoke ci")]
    Revoke { name: String },
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(subcommand)]
    pub action: Option<ScaleAction>,
    /// Environment name, e.g. dev.
    #[arg(required = true)]
    pub env: Option<String>,
    /// Service name, e.g. api.
    #[arg(required = true)]
    pub service: Option<String>,
    /// The new replica count (1..32).
    #[arg(required = true)]
    pub replicas: Option<u32>,
    /// Why (shown to whoever approves it).
    #[arg(long, short = 'm')]
    pub comment: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// Turn a flag on or off, or on for a share of users (deployer on the environment); audited as flag.set.
    #[command(
        after_help = "Examples:\n  cutover flag set dev new_checkout on\n  cutover flag set prod new_checkout off\n  \
                      cutover flag set prod new_checkout 25%   # on for the users whose bucket is below 25 (README)"
    )]
    Set {
        /// Environment name, e.g. dev.
        env: String,
        /// Flag name: a lowercase letter, then lowercase letters, digits, '_' or '-' (at most 63).
        name: String,
        /// `on`, `off`, or a whole percentage `0%`..`100%` (the app decides per user: README).
        value: String,
    },
    /// The flags of an environment, by name.
    #[command(after_help = "Examples:\n  cutover flag list dev\n  cutover flag list prod -o json")]
    List {
        /// Environment name, e.g. dev.
        env: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Answer every request with 503 + Retry-After + the page.
    #[command(
        after_help = "Examples:\n  cutover maintenance on staging\n  cutover maintenance on prod --page down.html"
    )]
    On {
        /// Environment name, e.g. staging.
        env: String,
        /// An HTML file to answer with (read here, at most 64 KiB). Default: the environment's
        /// maintenance_page, else a built-in page.
        #[arg(long, value_name = "FILE")]
        page: Option<std::path::PathBuf>,
    },
    /// Serve the environment again.
    #[command(after_help = "Examples:\n  cutover maintenance off staging")]
    Off {
        /// Environment name, e.g. staging.
        env: String,
    },
    /// Whether the environment is in maintenance mode.
    #[command(after_help = "Examples:\n  cutover maintenance status staging -o json")]
    Status {
        /// Environment name, e.g. staging.
        env: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScaleAction {
    /// Scale changes, newest first: applied, pending approval, rejected, failed.
    #[command(after_help = "Examples:\n  cutover scale requests\n  cutover scale requests prod")]
    Requests {
        /// Only this environment's.
        env: Option<String>,
    },
    /// Approve a pending scale request (not your own); it is applied at once.
    #[command(after_help = "Example: cutover scale approve 7 -m \"ok for the sale\"")]
    Approve {
        id: i64,
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
    /// Reject a pending scale request; the comment is required.
    #[command(after_help = "Example: cutover scale reject 7 -m \"not before the sale\"")]
    Reject {
        id: i64,
        #[arg(long, short = 'm')]
        comment: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Environment name, e.g. staging.
    pub env: String,
    /// Set desired_version first: `latest`, a SHA (short or full), a branch or a tag.
    #[arg(long)]
    pub version: Option<String>,
    /// Run the destructive pipeline (resets data; refused on production tiers).
    #[arg(long)]
    pub destructive: bool,
    /// Confirm the destructive pipeline.
    #[arg(long)]
    pub yes: bool,
    /// Admins only: deploy although the version has not succeeded on the environments this one
    /// `requires:` (cutover.yml); the reason is recorded on the run and in the audit log.
    #[arg(long, value_name = "REASON")]
    pub override_policy: Option<String>,

    /// Stream the run's log until it ends; exit 1 unless it succeeded.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `--wait [--timeout D]`: the CI contract of release, rollback and promote.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the run ends and exit with its outcome: 0 succeeded, 1 failed or interrupted,
    /// 3 cancelled or superseded, 4 --timeout passed first, 5 waiting for an approval.
    #[arg(long, conflicts_with = "follow")]
    pub wait: bool,
    /// With --wait: how long to wait at most, as in cutover.yml (e.g. 30m, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub timeout: DurationArg,
}

/// A duration on the command line (`--timeout`, `--expires`), read by the one parser
/// `cutover.yml` uses ([`cutover_core::config::parse_duration`]), so `90s`, `5m`, `1h30m`, `7d`
/// mean the same in both and `0`, `-1s` or `90days` are refused by both. Kept with the text as
/// typed, which messages repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationArg {
    pub text: String,
    pub value: Duration,
}

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        cutover_core::config::parse_duration(text).map(|value| Self {
            text: text.to_owned(),
            value,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// The last lines of every instance of a service; --follow streams new ones.
    #[command(after_help = "Example: cutover service logs staging storefront --follow")]
    Logs {
        env: String,
        service: String,
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines until the instances stop (Ctrl-C to leave).
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Suspended or not, active version, jobs with last and next run.
    #[command(after_help = "Example: cutover scheduler status prod")]
    Status { env: String },
    /// No new jobs start; waits for running jobs (bounded).
    #[command(after_help = "Example: cutover scheduler suspend prod")]
    Suspend { env: String },
    /// Jobs start again on schedule.
    #[command(after_help = "Example: cutover scheduler resume prod")]
    Resume { env: String },
    /// Run a job now from the active release.
    #[command(
        after_help = "Example: cutover scheduler run prod nightly-import   (JOB: a key of scheduler.jobs)"
    )]
    Run { env: String, job: String },
    /// Recent job runs, with the log of the newest one (or of --run ID); --follow waits for it to end.
    #[command(after_help = "Examples:\n  cutover scheduler logs prod nightly-import\n  \
                            cutover scheduler logs prod nightly-import --run 12 --follow")]
    Logs {
        env: String,
        job: String,
        /// A specific job run id (see `cutover scheduler logs ENV JOB`).
        #[arg(long)]
        run: Option<i64>,
        /// Keep printing the job run's new lines until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps the example repository and Cutover's state; reused on the next run.
    #[arg(long, env = "CUTOVER_DEMO_DIR", default_value = "./.cutover-demo")]
    pub data_dir: PathBuf,
    /// Address of the API (the CLI's CUTOVER_URL).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Address of the router in front of the shop's services.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub router_listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a cutover.yml and print a summary, or every error with file:line:column; exits 1 on error.
    #[command(
        after_help = "Examples:\n  cutover config check\n  cutover config check --file deploy/cutover.yml -o json\n  cutover config check --version main      # the definition the head of main would deploy"
    )]
    Check {
        /// The file to check.
        #[arg(long, short = 'f', default_value = "cutover.yml")]
        file: PathBuf,
        /// Also check the application definition (services, hooks, scheduler, rabbitmq,
        /// task_service) a commit carries in its own cutover.yml, as a release of it would: a
        /// branch, tag or SHA of the file's `repo:`.
        #[arg(long, value_name = "REF")]
        version: Option<String>,
    },
    /// Make the running server read its cutover.yml again, without a restart: environments added
    /// or changed, the file's application part. A file with errors, an environment removed while
    /// it still runs (without --tear-down), or a change only a restart can apply (app, repo, router,
    /// run_as, webhooks, fixed ports) is refused and changes nothing. Admin. SIGHUP does the same.
    #[command(
        after_help = "Examples:\n  cutover config reload\n  cutover config reload --tear-down qa   # qa was removed from the file: stop what it runs"
    )]
    Reload {
        /// An environment removed from the file whose instances may be stopped (repeatable).
        #[arg(long = "tear-down", value_name = "ENV")]
        tear_down: Vec<String>,
    },
    /// Print a JSON Schema (draft 2020-12) of cutover.yml: every key with its type, allowed values,
    /// default and meaning, for editors (e.g. yaml-language-server).
    #[command(after_help = "Examples:\n  cutover config schema > cutover.schema.json\n\n\
                      Then, for yaml-language-server (VS Code's YAML extension, Neovim, Helix...), first line of cutover.yml:\n  \
                      # yaml-language-server: $schema=./cutover.schema.json")]
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Every environment with its kind (static, integration), tier, branch, versions and expiry.
    #[command(after_help = "Example: cutover env list -o json")]
    List,
    /// One environment in detail.
    #[command(after_help = "Example: cutover env show staging")]
    Show {
        /// Environment name, e.g. staging.
        env: String,
    },
    /// Create an integration environment for a branch from an integration template of cutover.yml
    /// (named <template>-<branch>; at most `max_active` per template).
    #[command(
        after_help = "Examples:\n  cutover env create review --branch feature/login\n  cutover env create review --branch feature/login --deploy"
    )]
    Create {
        /// The integration-tier entry of cutover.yml to instantiate, e.g. review.
        template: String,
        /// The branch it runs; must exist in the application's repository.
        #[arg(long)]
        branch: String,
        /// Also start a release of the branch head.
        #[arg(long)]
        deploy: bool,
    },
    /// Delete an integration environment: stops its services and scheduler, removes its routes,
    /// directory and unshared releases; keeps its runs, parameters and audit.
    #[command(
        after_help = "Example: cutover env delete review-feature-login   (--force cancels an active run first)"
    )]
    Delete {
        /// The integration environment, e.g. review-feature-login.
        env: String,
        /// Cancel an active run first instead of refusing.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ParamCommand {
    /// Print the newest value of a key.
    #[command(after_help = "Example: cutover param get /shop-prod/desired_version")]
    Get { key: String },

    /// Write a new version of a key. For /<app>-<env>/desired_version the value may be
    /// `latest`, a full or short SHA, a branch or a tag; it is resolved through git and the
    /// full SHA is stored.
    #[command(
        after_help = "Examples:\n  cutover param put /shop-staging/desired_version 3f2a9c1\n  \
                            cutover param put /shop-staging/desired_version main --expect-version 4\n  \
                            cutover param put /shop-prod/secrets/db_password - < password.txt"
    )]
    Put {
        key: String,
        /// The value, or `-` to read it from standard input (one trailing newline is dropped):
        /// a secret typed on the command line lands in shell history and the process list.
        value: String,
        /// Write only if the newest version is N (0: only if the key does not exist yet).
        #[arg(long, value_name = "N")]
        expect_version: Option<i64>,
    },

    /// Every version of a key, newest first, with who wrote it and when.
    #[command(after_help = "Example: cutover param history /shop-prod/desired_version")]
    History { key: String },

    /// The newest value of every key under a path prefix.
    #[command(after_help = "Example: cutover param list /shop-prod")]
    List {
        #[arg(default_value = "/")]
        prefix: String,
    },
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// Environment name, e.g. staging.
    pub env: String,
    /// How many commits to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
}

#[cfg(test)]
mod tests;
