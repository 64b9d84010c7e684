//! Releases on disk: one directory per application and SHA, checked out from
//! git and built once, shared by every environment that deploys that SHA.
//!
//! Layout under the data directory:
//! - `releases/<app>/<sha>/`: the tree at that commit (no `.git`);
//! - `releases/<app>/.built/<sha>/<service>`: marker of a finished build, so
//!   a build is skipped when its artifact (`<app>-<env>-<service>:<sha>`) exists;
//! - `envs/<env>/`: the environment's persistent directory (`CUTOVER_ENV_DIR`).
//!
//! A checkout is written beside its destination and renamed into place (see
//! `cutover-git`), and a build marker is written only after a zero exit, so a
//! crash never leaves a half release that later counts as built.
//!
//! With a top-level `registry:` (docker and swarm), each image is pushed as
//! `<registry>/<app>-<env>-<service>:<sha>` once built or found; the push is
//! skipped when the registry already holds the SHA (`registry.rs`: a manifest
//! HEAD, with the registry's basic or token authentication), and a failed push
//! fails the Build stage. When the registry cannot be asked, the push is tried anyway and
//! its own error decides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_core::{EnvName, Version};
use cutover_docker::DockerRuntime;
use cutover_runtime::TaskSpec;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::pipeline::executor::StageError;
use crate::pipeline::logs::StageLog;

/// Release directories kept beyond those serving or warm.
const KEEP_RELEASES: usize = 3;

impl Engine {
    pub fn release_dir(&self, version: &Version) -> PathBuf {
        self.data_dir()
            .join("releases")
            .join(self.config().app.as_str())
            .join(version.as_str())
    }

    fn built_marker(&self, version: &Version, service: &str) -> PathBuf {
        self.data_dir()
            .join("releases")
            .join(self.config().app.as_str())
            .join(".built")
            .join(version.as_str())
            .join(service)
    }

    /// The environment's persistent directory, created on first use.
    pub fn env_dir(&self, env: &EnvName) -> PathBuf {
        let dir = self.data_dir().join("envs").join(env.as_str());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the environment directory");
        }
        dir
    }

    /// Checks out `version` (once per SHA), then builds each service's
    /// artifact: on the process runtime its `build` command (once per service
    /// and SHA), on Docker its image `<app>-<env>-<service>:<sha>` from its
    /// `dockerfile` with the release directory as context (skipped when the
    /// tag exists). Returns the release directory.
    pub(crate) async fn prepare_release(
        &self,
        env: &EnvName,
        version: &Version,
        log: &StageLog,
        cancel: &CancellationToken,
        env_vars: &[(String, String)],
    ) -> Result<PathBuf, StageError> {
        let lock = self.build_lock(version);
        let _guard = lock.lock().await;
        let dir = self.release_dir(version);
        if dir.is_dir() {
            log.line(format!("release directory {} exists", dir.display()))
                .await;
        } else {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StageError::Failed(format!("cannot create {}: {e}", parent.display())))?;
            }
            let (v, d) = (version.clone(), dir.clone());
            let t0 = std::time::Instant::now();
            self.with_repo(move |repo| {
                repo.checkout(&v, &d)
                    .map_err(|e| crate::EngineError::Refused(e.to_string()))
            })
            .await?;
            log.line(format!(
                "checked out {} into {} in {} ms",
                version.short(),
                dir.display(),
                t0.elapsed().as_millis()
            ))
            .await;
        }
        match self.image_builder(env) {
            Some(docker) => self.build_images(docker, env, version, &dir, log).await?,
            None => {
                self.build_commands(env, version, &dir, log, cancel, env_vars)
                    .await?
            }
        }
        Ok(dir)
    }

    async fn build_commands(
        &self,
        env: &EnvName,
        version: &Version,
        dir: &Path,
        log: &StageLog,
        cancel: &CancellationToken,
        env_vars: &[(String, String)],
    ) -> Result<(), StageError> {
        let timeout = Duration::from_secs(30 * 60);
        let def = self.def_for(env, version);
        for (name, svc) in &def.services {
            let artifact = format!("{}-{env}-{name}:{}", self.config().app, version.short());
            let Some(cmd) = svc.build.clone().filter(|c| !c.trim().is_empty()) else {
                log.line(format!(
                    "{name}: no build command; the release directory is the artifact"
                ))
                .await;
                continue;
            };
            let marker = self.built_marker(version, name.as_str());
            if marker.exists() {
                log.line(format!("{artifact}: already built, build skipped"))
                    .await;
                continue;
            }
            log.line(format!("{name}: $ {cmd}")).await;
            let mut vars = env_vars.to_vec();
            vars.push(("CUTOVER_SERVICE".to_owned(), name.to_string()));
            vars.push(("CUTOVER_VERSION".to_owned(), version.to_string()));
            let spec = TaskSpec {
                label: format!("build of {name}"),
                command: cmd,
                dir: dir.to_owned(),
                env_vars: vars,
                timeout,
            };
            self.run_logged_task(env, version, spec, log, cancel).await?;
            if let Some(parent) = marker.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StageError::Failed(e.to_string()))?;
            }
            std::fs::write(&marker, crate::now_ms().to_string())
                .map_err(|e| StageError::Failed(e.to_string()))?;
            log.line(format!("{artifact}: built")).await;
        }
        Ok(())
    }

    async fn build_images(
        &self,
        docker: &DockerRuntime,
        env: &EnvName,
        version: &Version,
        dir: &Path,
        log: &StageLog,
    ) -> Result<(), StageError> {
        let def = self.def_for(env, version);
        for (name, svc) in &def.services {
            let tag = cutover_docker::image_tag(&self.config().app, env, name, version);
            let dockerfile = svc.dockerfile.clone().unwrap_or_else(|| "Dockerfile".to_owned());
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let forward = {
                let log = log.clone();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        log.line(line).await;
                    }
                })
            };
            let outcome = docker.build_image(dir, &dockerfile, &tag, tx).await;
            let _ = forward.await;
            match outcome {
                Ok(o) if o.skipped => log.line(format!("{tag}: image exists, build skipped")).await,
                Ok(_) => log.line(format!("{tag}: built from {dockerfile}")).await,
                Err(e) => return Err(StageError::Failed(format!("image {tag}: {}", error_chain(&e)))),
            }
            if let Some(registry) = &self.config().registry {
                let credentials = self.registry_credentials(registry).await?;
                self.push_image(docker, &tag, &registry.url, credentials, log)
                    .await?;
            }
        }
        Ok(())
    }

    /// `registry.username` and the password its `password_secret` names, if set; without
    /// `registry.username`, the account `docker login` saved for the registry's host
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, see `cutover_docker::auth`).
    async fn registry_credentials(
        &self,
        registry: &cutover_core::config::Registry,
    ) -> Result<Option<(String, String)>, StageError> {
        let host = registry.url.split('/').next().unwrap_or(&registry.url).to_owned();
        let (Some(user), Some(name)) = (&registry.username, &registry.password_secret) else {
            let account = cutover_docker::docker_login_account(&host)
                .await
                .map_err(|e| StageError::Failed(error_chain(&e)))?;
            if let Some(swarm) = self.swarm() {
                swarm.set_registry_auth(
                    account
                        .as_ref()
                        .map(|a| (host.clone(), a.username.clone(), a.password.clone())),
                );
            }
            return Ok(account.map(|a| (a.username, a.password)));
        };
        let key = cutover_store::ParamKey::parse(&format!("/{}/secrets/{name}", self.config().app))
            .map_err(|e| StageError::Failed(e.to_string()))?;
        match self.secret_value(&key).await? {
            Some(password) => {
                // The run's Deploy creates or updates Swarm services with this account.
                if let Some(swarm) = self.swarm() {
                    swarm.set_registry_auth(Some((host, user.clone(), password.clone())));
                }
                Ok(Some((user.clone(), password)))
            }
            None => Err(StageError::Failed(format!(
                "registry.password_secret names {key}, which is not set; set it (an admin) with \
                 `cutover param put {key} -` and release again"
            ))),
        }
    }

    /// Pushes `tag` to `registry` unless the registry lists it already.
    async fn push_image(
        &self,
        docker: &DockerRuntime,
        tag: &str,
        registry: &str,
        credentials: Option<(String, String)>,
        log: &StageLog,
    ) -> Result<(), StageError> {
        let reference = format!("{registry}/{tag}");
        match crate::registry::registry_has(registry, tag, credentials.as_ref()).await {
            Ok(true) => {
                log.line(format!("{reference}: the registry has this tag, push skipped"))
                    .await;
                return Ok(());
            }
            Ok(false) => {}
            Err(why) => {
                log.line(format!(
                    "could not ask the registry whether it has {reference} ({why}); pushing anyway"
                ))
                .await;
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    log.line(line).await;
                }
            })
        };
        let t0 = std::time::Instant::now();
        let outcome = docker.push_image(tag, registry, credentials, tx).await;
        let _ = forward.await;
        match outcome {
            Ok(pushed) => {
                log.line(format!("pushed {pushed} in {} ms", t0.elapsed().as_millis()))
                    .await;
                Ok(())
            }
            Err(e) => Err(StageError::Failed(format!("image {tag}: {}", error_chain(&e)))),
        }
    }

    fn build_lock(&self, version: &Version) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.build_locks().lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(version.clone()).or_default().clone()
    }

    /// Post-deployment clean-up: removes release directories that no
    /// environment serves or keeps warm, beyond the newest few.
    pub(crate) async fn clean_up(&self, env: &EnvName, log: &StageLog) -> Result<String, StageError> {
        let mut in_use = std::collections::BTreeSet::new();
        for e in self.config().environments.keys() {
            let s = self.env_services(e);
            in_use.extend(s.version.map(|v| v.to_string()));
            in_use.extend(s.warm_version.map(|v| v.to_string()));
        }
        let root = self.data_dir().join("releases").join(self.config().app.as_str());
        let mut candidates = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if Version::parse(&name).is_err() || in_use.contains(&name) {
                    continue;
                }
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                candidates.push((modified, name));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut removed = 0;
        for (_, name) in candidates.into_iter().skip(KEEP_RELEASES) {
            if std::fs::remove_dir_all(root.join(&name)).is_ok() {
                let _ = std::fs::remove_dir_all(root.join(".built").join(&name));
                removed += 1;
                log.line(format!("removed old release {}", &name[..12])).await;
            }
        }
        let s = self.env_services(env);
        let warm = s
            .warm_version
            .map(|v| format!("; warm: {}", v.short()))
            .unwrap_or_default();
        log.line(format!(
            "{removed} old releases removed; {} kept besides those in use{warm}",
            KEEP_RELEASES
        ))
        .await;
        Ok(format!("{removed} releases removed{warm}"))
    }
}

/// The error and its sources, `: `-joined.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
