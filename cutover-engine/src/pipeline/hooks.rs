//! Hooks and the environment every process of a run sees.
//!
//! A hook is the operator's command from `cutover.yml`, run as `sh -c` in the
//! release directory through the runtime; everything that came from a user
//! (version, previous version, actor, settings) travels as environment
//! variables, never inside the command. Output is streamed line by line into
//! the stage log, where the store timestamps each line.

use cutover_runtime::{TaskExit, TaskSpec};
use tokio::sync::mpsc;

use super::executor::{RunCtx, StageError};
use super::logs::StageLog;

impl RunCtx {
    /// Variables every hook, build and job of this run gets (instances get
    /// `Engine::instance_env_for`: nothing that belongs to one run).
    pub fn base_env(&self) -> Vec<(String, String)> {
        let cfg = self.engine.config();
        let env_cfg = &cfg.environments[&self.env];
        let mut vars = vec![
            ("CUTOVER_APP".to_owned(), cfg.app.to_string()),
            ("CUTOVER_ENV".to_owned(), self.env.to_string()),
            ("CUTOVER_TIER".to_owned(), env_cfg.tier.to_string()),
            ("CUTOVER_RUN_ID".to_owned(), self.run.id.to_string()),
            ("CUTOVER_RUN_KIND".to_owned(), self.run.kind.as_str().to_owned()),
            ("CUTOVER_ACTOR".to_owned(), self.run.requested_by.clone()),
            (
                "CUTOVER_ENV_DIR".to_owned(),
                self.engine.env_dir(&self.env).display().to_string(),
            ),
            (
                "CUTOVER_DESTRUCTIVE".to_owned(),
                (self.run.kind == cutover_core::RunKind::Destructive).to_string(),
            ),
        ];
        if let Some(v) = &self.version {
            vars.push(("CUTOVER_VERSION".to_owned(), v.to_string()));
        }
        vars.push((
            "CUTOVER_PREVIOUS_VERSION".to_owned(),
            self.previous.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        ));
        if let Some(dir) = &self.release_dir {
            vars.push(("CUTOVER_RELEASE_DIR".to_owned(), dir.display().to_string()));
        }
        vars.extend(self.engine.service_urls(&self.env, &self.def()));
        vars
    }

    /// Runs a hook in the release directory; a non-zero exit or timeout fails the stage.
    pub async fn run_hook(&self, log: &StageLog, name: &str, command: &str) -> Result<(), StageError> {
        self.run_hook_with(log, name, command, &self.cancel).await
    }

    /// [`RunCtx::run_hook`] stopped by `cancel` (the run's token or a child of it).
    pub async fn run_hook_with(
        &self,
        log: &StageLog,
        name: &str,
        command: &str,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), StageError> {
        let dir = self.release_dir.clone().ok_or_else(|| {
            StageError::Failed(format!(
                "no release directory for the {name} hook (Build did not run)"
            ))
        })?;
        log.line(format!("$ {command}")).await;
        let mut env = self.settings.clone();
        env.extend(self.base_env());
        env.push(("CUTOVER_HOOK".to_owned(), name.to_owned()));
        let spec = TaskSpec {
            label: format!("{name} hook"),
            command: command.to_owned(),
            dir,
            env_vars: env,
            timeout: super::stages::hook_timeout(self),
        };
        let version = self.version()?.clone();
        self.engine
            .run_logged_task(&self.env, &version, spec, log, cancel)
            .await
    }
}

impl crate::Engine {
    /// Runs a one-shot task through the environment's runtime, streaming its
    /// output into `log`. On Docker it runs in a one-off container of the
    /// task service's image at `version`.
    pub(crate) async fn run_logged_task(
        &self,
        env: &cutover_core::EnvName,
        version: &cutover_core::Version,
        mut spec: TaskSpec,
        log: &StageLog,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), StageError> {
        if let Some(image) = self.task_image(env, version) {
            spec.env_vars
                .push((cutover_docker::TASK_IMAGE_VAR.to_owned(), image));
        }
        let label = spec.label.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<cutover_runtime::TaskLine>();
        let forward = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    log.line(&line.text).await;
                }
            })
        };
        let outcome = self.runtime_for(env).run_task(spec, tx, cancel.clone()).await;
        let _ = forward.await;
        let outcome = outcome.map_err(|e| StageError::Failed(format!("{label}: {e}")))?;
        let took = format!("{:.1}s", outcome.duration.as_secs_f64());
        match outcome.exit {
            TaskExit::Code(0) => {
                log.line(format!("{label} finished in {took}")).await;
                Ok(())
            }
            TaskExit::Code(c) => Err(StageError::Failed(format!(
                "{label} exited with status {c} after {took}"
            ))),
            TaskExit::Signal(s) => Err(StageError::Failed(format!(
                "{label} was killed by signal {s} after {took}"
            ))),
            TaskExit::TimedOut { after } => Err(StageError::Failed(format!(
                "{label} timed out after {}s and was stopped; raise hook_timeout for this environment if it needs longer",
                after.as_secs()
            ))),
            TaskExit::Cancelled => Err(StageError::Cancelled),
        }
    }
}

impl crate::Engine {
    /// On Docker and Swarm: the image hooks and jobs run in,
    /// `<app>-<env>-<service>:<sha>` of `task_service` from cutover.yml, else of
    /// the first non-public service (the back office runs the scheduler in the
    /// platform documents), else of the first service. None on processes.
    pub(crate) fn task_image(
        &self,
        env: &cutover_core::EnvName,
        version: &cutover_core::Version,
    ) -> Option<String> {
        if self.config().environments[env].runtime == cutover_core::config::RuntimeKind::Process {
            return None;
        }
        let def = self.def_for(env, version);
        let services = &def.services;
        let service = def.task_service.as_ref().or_else(|| {
            services
                .iter()
                .find(|(_, s)| !s.public)
                .or_else(|| services.iter().next())
                .map(|(n, _)| n)
        })?;
        Some(cutover_docker::image_tag(
            &self.config().app,
            env,
            service,
            version,
        ))
    }
}
