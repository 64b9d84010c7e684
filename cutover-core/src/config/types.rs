//! The typed, validated configuration. Every value here has been checked;
//! defaults are already applied, so consumers never re-interpret raw YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{ser_duration, ser_opt_duration};
use crate::{AppName, EnvName, JobName, ServiceName};

/// A validated `cutover.yml`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file this was read from, as given.
    pub file: PathBuf,
    pub app: AppName,
    pub repo: RepoSource,
    pub services: BTreeMap<ServiceName, Service>,
    pub hooks: Hooks,
    pub scheduler: Scheduler,
    pub rabbitmq: Option<RabbitMq>,
    pub environments: BTreeMap<EnvName, Environment>,
    pub router: RouterConfig,
    /// On Docker and Swarm, whose image hooks and scheduler jobs run in.
    /// Default: the first non-public service (as the platform documents run
    /// the scheduler from the back office image), else the first service.
    pub task_service: Option<ServiceName>,
    /// On Docker and Swarm, where the Build stage pushes each image
    /// (`<url>/<app>-<env>-<service>:<sha>`). `None`: images stay local.
    pub registry: Option<Registry>,
    /// Where run and stage events are POSTed as JSON.
    pub webhooks: Vec<Webhook>,
    /// When the server runs as root: the unprivileged user (created by the
    /// operator) that instances, hooks, builds and jobs of the process
    /// runtime run as. `None`: they run as the server's user (still confined
    /// by Landlock where the kernel has it).
    pub run_as: Option<String>,
    /// How a remote `repo:` is fetched (credentials, timeout); defaults when absent.
    pub source: SourceSettings,
    /// Messages people read and the git host's deployment records; none when absent.
    pub notifications: super::Notifications,
}

/// `source:`: how Cutover fetches a remote `repo:` into its own mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceSettings {
    /// https: the parameter-store secret (`/<app>/secrets/<name>`) holding a token sent as
    /// the password of HTTP basic authentication.
    pub token_secret: Option<String>,
    /// https: the user name sent with the token (default `x-access-token`; GitLab: `oauth2`).
    pub token_user: String,
    /// ssh: a private key file (absolute, resolved against cutover.yml's directory).
    pub ssh_key_file: Option<PathBuf>,
    /// ssh: the parameter-store secret (`/<app>/secrets/<name>`) holding a private key.
    pub ssh_key_secret: Option<String>,
    /// Bound on one fetch (connect, each request, the whole fetch). Default 60 s.
    #[serde(serialize_with = "ser_duration")]
    pub fetch_timeout: Duration,
    /// The parameter-store secret (`/<app>/secrets/<name>`) push webhooks are signed with.
    pub webhook_secret: Option<String>,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            token_secret: None,
            token_user: "x-access-token".to_owned(),
            ssh_key_file: None,
            ssh_key_secret: None,
            fetch_timeout: Duration::from_secs(60),
            webhook_secret: None,
        }
    }
}

/// The application part of a configuration (see [`super::APPLICATION_KEYS`]): what one commit
/// deploys. The platform part (environments, router, registry, ...) stays in [`Config`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppDefinition {
    pub services: BTreeMap<ServiceName, Service>,
    pub hooks: Hooks,
    pub scheduler: Scheduler,
    pub rabbitmq: Option<RabbitMq>,
    pub task_service: Option<ServiceName>,
}

impl AppDefinition {
    /// What changed from `older` to this definition, one line each: services added, removed or
    /// changed (naming the changed keys), hooks, scheduler jobs, the broker section and the task
    /// service. Empty when nothing did.
    pub fn changes_from(&self, older: &AppDefinition) -> Vec<String> {
        fn fields<T: Serialize>(v: &T) -> serde_json::Map<String, serde_json::Value> {
            match serde_json::to_value(v) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            }
        }
        fn changed_keys<T: Serialize>(old: &T, new: &T) -> Vec<String> {
            let (old, new) = (fields(old), fields(new));
            let mut keys: Vec<String> = old.keys().chain(new.keys()).cloned().collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().filter(|k| old.get(k) != new.get(k)).collect()
        }
        let mut out = Vec::new();
        for (name, svc) in &self.services {
            match older.services.get(name) {
                None => out.push(format!(
                    "service {name} added ({}, {} replica(s))",
                    if svc.public { "public" } else { "not public" },
                    svc.replicas
                )),
                Some(old) if old != svc => out.push(format!(
                    "service {name} changed: {}",
                    changed_keys(old, svc).join(", ")
                )),
                Some(_) => {}
            }
        }
        for name in older.services.keys().filter(|n| !self.services.contains_key(*n)) {
            out.push(format!("service {name} removed"));
        }
        let hooks = changed_keys(&older.hooks, &self.hooks);
        if !hooks.is_empty() {
            out.push(format!("hooks changed: {}", hooks.join(", ")));
        }
        for (name, job) in &self.scheduler.jobs {
            match older.scheduler.jobs.get(name) {
                None => out.push(format!("job {name} added ({})", job.schedule)),
                Some(old) if old != job => out.push(format!(
                    "job {name} changed: {}",
                    changed_keys(old, job).join(", ")
                )),
                Some(_) => {}
            }
        }
        for name in older
            .scheduler
            .jobs
            .keys()
            .filter(|n| !self.scheduler.jobs.contains_key(*n))
        {
            out.push(format!("job {name} removed"));
        }
        if older.rabbitmq != self.rabbitmq {
            out.push("rabbitmq declarations changed".to_owned());
        }
        if older.task_service != self.task_service {
            out.push("task_service changed".to_owned());
        }
        out
    }
}

impl Config {
    /// This configuration's application part.
    pub fn definition(&self) -> AppDefinition {
        AppDefinition {
            services: self.services.clone(),
            hooks: self.hooks.clone(),
            scheduler: self.scheduler.clone(),
            rabbitmq: self.rabbitmq.clone(),
            task_service: self.task_service.clone(),
        }
    }
}

/// One webhook: a URL and the events it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub url: String,
    pub events: Vec<WebhookEvent>,
    /// For https: trust only the certificate authorities in this PEM file (a private CA or
    /// a self-signed receiver) instead of the platform's roots. Relative to cutover.yml.
    pub ca_file: Option<PathBuf>,
    /// The name of the server's environment variable holding the key that signs each body
    /// (`X-Cutover-Timestamp` and `X-Cutover-Signature: sha256=<hex HMAC-SHA256 of
    /// "<timestamp>.<body>">`); the key never appears in the file.
    pub secret_env: Option<String>,
}

/// `run`: a run was queued, started or ended; `stage`: a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    Run,
    Stage,
}

/// Where the application's git repository is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RepoSource {
    /// A local path: `raw` as written, `path` absolute (resolved against the
    /// config file's directory, normalised lexically).
    Path { raw: String, path: PathBuf },
    /// A remote URL (`https://…`, `ssh://…`, `git@host:org/repo`). Cloning is
    /// the caller's concern.
    Url { url: String },
}

impl fmt::Display for RepoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path { raw, .. } => f.write_str(raw),
            Self::Url { url } => f.write_str(url),
        }
    }
}

/// One service of the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Build command, run in the checked-out release at the version's SHA.
    pub build: Option<String>,
    /// Command that runs one replica; `PORT` and `CUTOVER_*` are set. Empty
    /// when `run:` is absent: the image's own CMD/ENTRYPOINT runs (accepted
    /// only when no environment uses the process runtime).
    pub run: String,
    /// HTTP path (starting with `/`) that answers 2xx when ready.
    pub health: Option<String>,
    /// How long a new instance may take to answer `health` with 2xx before
    /// the rollout fails. Default 60s.
    #[serde(serialize_with = "ser_duration")]
    pub health_timeout: Duration,
    /// Default replica count (environments may override or autoscale). At least 1.
    pub replicas: u32,
    /// Served through the router. Default false.
    pub public: bool,
    /// Port the service listens on inside a container (docker/swarm runtimes).
    pub port: Option<u16>,
    /// Dockerfile for the docker/swarm runtimes, relative to the repository.
    pub dockerfile: Option<String>,
    /// Where Swarm may place the replicas (swarm runtime only; empty: any node).
    #[serde(skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
}

/// Swarm placement of a service's replicas, passed to Swarm as they are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Swarm constraints, e.g. `node.labels.zone==eu-1` or `node.role!=manager`.
    pub constraints: Vec<String>,
    /// Spread preferences, e.g. `spread=node.labels.zone`; Cutover adds `spread=node.id` last.
    pub preferences: Vec<String>,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.preferences.is_empty()
    }
}

/// Shell commands run in the new release's directory. Empty strings in the
/// file mean "not configured" and are `None` here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hooks {
    pub pre_deploy: Option<String>,
    pub install: Option<String>,
    pub destructive_install: Option<String>,
    pub post_deploy: Option<String>,
    /// Expand / contract: runs after the switch, once the previous version has drained and
    /// stopped (a release that runs it keeps no warm release: the old code may not run against
    /// what this hook changes), for the destructive half of a schema change.
    pub post_switch: Option<String>,
    /// Runs before Install in a rollback run, in the release being restored, with
    /// `CUTOVER_VERSION` the version restored and `CUTOVER_PREVIOUS_VERSION` the one left, so
    /// migrations can be reversed.
    pub rollback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scheduler {
    pub jobs: BTreeMap<JobName, Job>,
    /// How long a suspend waits for running jobs. Default 15m.
    #[serde(serialize_with = "ser_duration")]
    pub suspend_timeout: Duration,
    /// What a pipeline's suspend does with jobs still running after
    /// `suspend_timeout`. Default: fail the stage, naming them.
    pub on_suspend_timeout: SuspendTimeoutAction,
}

/// `scheduler.on_suspend_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspendTimeoutAction {
    /// Fail the Pre-deploy hook stage, naming the jobs; the run stops.
    #[default]
    Fail,
    /// Terminate the jobs (SIGTERM, then SIGKILL) and go on.
    Terminate,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self {
            jobs: BTreeMap::new(),
            suspend_timeout: Duration::from_secs(15 * 60),
            on_suspend_timeout: SuspendTimeoutAction::Fail,
        }
    }
}

/// A cron-style job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// A validated 5-field cron expression (or `@daily`-style nickname).
    pub schedule: String,
    /// The IANA time zone the schedule is read in (canonical spelling); None = UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub run: String,
    /// Start a run even while the previous one still runs. Default false:
    /// that minute's run is skipped, and the skip recorded.
    pub overlap: bool,
}

/// Declared RabbitMQ vhosts, users and permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RabbitMq {
    /// Management API URL, e.g. `http://127.0.0.1:15672`.
    pub url: String,
    /// Management API user (default: the broker's own default).
    pub admin_user: Option<String>,
    /// Parameter-store secret holding the management API password.
    pub admin_password_secret: Option<String>,
    pub vhosts: Vec<Vhost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vhost {
    pub name: String,
    pub users: Vec<RabbitUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RabbitUser {
    pub name: String,
    /// Name of the secret in the parameter store that holds the password.
    pub password_secret: String,
    /// Permission regexes, as RabbitMQ takes them.
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// The built-in router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouterConfig {
    /// Port to listen on; `None` lets the control plane choose; 0 = any free port.
    pub port: Option<u16>,
    /// Address ranges of proxies in front of the router (canonical `ADDRESS/PREFIX`): their
    /// forwarding headers are appended to; everyone else's are replaced.
    pub trusted_proxies: Vec<String>,
    /// The access log; `None`: off.
    pub access_log: Option<AccessLog>,
    /// HTTPS termination; `None`: plain HTTP only.
    pub tls: Option<RouterTls>,
}

/// `router.tls`: an HTTPS listener with certificates per host name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterTls {
    /// Its port on 127.0.0.1 (0: any free one).
    pub port: u16,
    /// The certificates (at least one unless `acme` is given).
    pub certificates: Vec<Certificate>,
    /// Send `Strict-Transport-Security: max-age=31536000` on every HTTPS answer.
    pub hsts: bool,
    /// Certificates got automatically from an ACME server.
    pub acme: Option<Acme>,
}

/// `router.tls.acme`: automatic certificates (HTTP-01 on the router's plain port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acme {
    /// The ACME directory URL (`https://`).
    pub directory: String,
    /// Account contact URIs (`mailto:`).
    pub contact: Vec<String>,
    /// A PEM CA certificate trusted for the directory's TLS (a private ACME server).
    pub ca_file: Option<std::path::PathBuf>,
    /// Host names to get a certificate for (no wildcards).
    pub hosts: Vec<String>,
    /// Answer plain-HTTP requests for these hosts with a 308 to HTTPS (challenges excepted).
    pub redirect: bool,
}

/// One certificate of `router.tls.certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Certificate {
    /// Host names it is picked for (SNI).
    pub hosts: Vec<String>,
    /// Absolute path of the PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// Absolute path of the PEM private key.
    pub key: std::path::PathBuf,
    /// Answer plain-HTTP requests for these hosts with a 308 to HTTPS.
    pub redirect: bool,
}

/// `router.access_log`: one JSON line per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    /// Where the lines go.
    pub target: AccessLogTarget,
    /// A file is rotated before it passes this many bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogTarget {
    /// The data plane's standard output.
    Stdout,
    /// An absolute file path.
    File(std::path::PathBuf),
}

/// An image registry (the optional top-level `registry:` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registry {
    /// `host[:port][/path-prefix]` without a scheme, e.g. `127.0.0.1:5000`
    /// or `registry.example.com/team`; no trailing `/`. Images are pushed
    /// as `<url>/<app>-<env>-<service>:<sha>`. Reached over plain http
    /// when checking for existing tags.
    pub url: String,
    /// With `password_secret`: the account pushes (and tag checks) authenticate as.
    pub username: Option<String>,
    /// The parameter-store secret `/<app>/secrets/<name>` holding that account's password.
    pub password_secret: Option<String>,
}

/// What an environment is for; decides defaults and policies (SPEC §4).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Dev,
    Stage,
    ProdLike,
    Prod,
    Integration,
}

impl Tier {
    pub const ALL: [Tier; 5] = [
        Tier::Dev,
        Tier::Stage,
        Tier::ProdLike,
        Tier::Prod,
        Tier::Integration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Dev => "dev",
            Tier::Stage => "stage",
            Tier::ProdLike => "prod-like",
            Tier::Prod => "prod",
            Tier::Integration => "integration",
        }
    }

    /// Only `prod` is production: destructive pipelines are refused, approval
    /// is required by default and the starter of a run cannot approve it.
    pub fn is_production(self) -> bool {
        self == Tier::Prod
    }

    /// Dev and integration deploy any branch; stage, prod and prod-like only
    /// their accepted branch.
    pub fn accepts_any_branch(self) -> bool {
        matches!(self, Tier::Dev | Tier::Integration)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            format!("unknown tier {s:?}; expected one of dev, stage, prod-like, prod, integration")
        })
    }
}

/// How a new version replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the whole new version, switch traffic atomically, drain the old.
    BlueGreen,
    /// Replace instance by instance.
    Rolling,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Rolling => "rolling",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the install step (migrations) runs relative to the traffic switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Migrations {
    /// Install runs while the old version serves, then the new version takes the traffic.
    Switch,
    /// Start the new version healthy, hold requests at the router, drain the old version, run
    /// install, switch, release the held requests.
    Hold,
    /// Hold and drain first, run install, then start the new version, switch, release: for a
    /// version that cannot start against the old schema.
    HoldBeforeStart,
}

impl Migrations {
    pub fn as_str(self) -> &'static str {
        match self {
            Migrations::Switch => "switch",
            Migrations::Hold => "hold",
            Migrations::HoldBeforeStart => "hold-before-start",
        }
    }

    /// Whether the router holds requests around the install step.
    pub fn holds(self) -> bool {
        self != Migrations::Switch
    }
}

/// What a run does when a hold outlasts `hold_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnHoldTimeout {
    /// The router answers 503 until the install step ends; then the run switches and releases.
    Continue,
    /// The run fails at the bound: the install step is stopped, the old version serves again.
    Fail,
}

impl OnHoldTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnHoldTimeout::Continue => "continue",
            OnHoldTimeout::Fail => "fail",
        }
    }
}

/// Where an environment's services run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    Process,
    Docker,
    Swarm,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Swarm => "swarm",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Autoscaling bounds: `1 <= min <= max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Requests per second one replica should handle; scaling target.
    pub target_rps_per_replica: Option<u32>,
}

/// One environment, with every default applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    pub tier: Tier,
    /// As written. For stage/prod the accepted branch (see
    /// `Config::accepted_branch`); for dev the branch auto-deploy follows.
    pub branch: Option<String>,
    /// Runs wait for approval. Default: true on `prod`, false elsewhere.
    pub approval: bool,
    /// Rollbacks wait for approval too. Default: same as `approval`.
    pub approval_for_rollback: bool,
    /// Deploy every new build automatically. Default false.
    pub auto_deploy: bool,
    /// Default blue-green (a prod-like copy inherits its target's).
    pub strategy: Strategy,
    /// Default process (a prod-like copy inherits its target's).
    pub runtime: RuntimeKind,
    /// Lifetime of a temporary environment: prod-like (default 72h) and
    /// integration (default none).
    #[serde(serialize_with = "ser_opt_duration")]
    pub ttl: Option<Duration>,
    /// For prod-like: the production environment it copies.
    pub like: Option<EnvName>,
    /// For integration: how many may be active at once (default 8).
    pub max_active: Option<u32>,
    /// Autoscaling (prod and prod-like; prod-like inherits its target's).
    pub autoscale: Option<Autoscale>,
    /// Per-service replica counts overriding the service defaults.
    pub replicas: BTreeMap<ServiceName, u32>,
    /// Fixed router ports (on 127.0.0.1) per public service, besides the host-routed port.
    pub ports: BTreeMap<ServiceName, u16>,
    /// Public host names per public service (lower-case; `*.example.com` wildcards).
    pub hosts: BTreeMap<ServiceName, Vec<String>>,
    /// Longest a hook may run. Default 30m.
    #[serde(serialize_with = "ser_duration")]
    pub hook_timeout: Duration,
    /// Longest a run waits for approval before it is rejected. Default 7d.
    #[serde(serialize_with = "ser_duration")]
    pub approval_timeout: Duration,
    /// Environments a version must have succeeded on before a run here may
    /// deploy it (checked when the run is requested). Default: on a prod
    /// environment, every stage environment; elsewhere none; `[]` turns it off.
    pub requires: Vec<EnvName>,
    /// When the install step runs relative to the switch. Default `switch`.
    pub migrations: Migrations,
    /// Longest the router holds requests during a `hold` deploy. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub hold_timeout: Duration,
    /// What a run does past `hold_timeout`. Default `continue`.
    pub on_hold_timeout: OnHoldTimeout,
    /// The page answered with 503 past a hold's bound and in maintenance mode (an HTML file,
    /// relative to the configuration file). Default: a short built-in page.
    pub maintenance_page: Option<std::path::PathBuf>,
}

impl Environment {
    /// Replica count of `service` here: the override, else the service default.
    pub fn replicas_of(&self, service: &ServiceName, default: &Service) -> u32 {
        self.replicas.get(service).copied().unwrap_or(default.replicas)
    }
}
