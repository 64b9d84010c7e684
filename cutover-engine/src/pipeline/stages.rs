//! The bodies of the 13 stages. Each returns `Done`, `Skipped(reason)` or an
//! error; the executor records the outcome. A stage with nothing configured
//! is skipped with the reason, never silently "succeeded".

use std::time::Duration;

use cutover_core::{RunKind, RunState, Stage, Version};
use cutover_store::{Decision, RunUpdate};

use super::SYSTEM_ACTOR;
use super::executor::{RunCtx, StageError, StageOutcome};
use super::logs::StageLog;
use crate::WellKnownKey;

type StageResult = Result<StageOutcome, StageError>;

pub(crate) async fn run_stage(ctx: &mut RunCtx, stage: Stage, log: &StageLog) -> StageResult {
    if ctx.kind() == RunKind::FastRollback
        && !matches!(
            stage,
            Stage::Source
                | Stage::VersionInfo
                | Stage::Approval
                | Stage::DeployServices
                | Stage::UpdateDeployedVersion
        )
    {
        return Ok(StageOutcome::Skipped("fast rollback: traffic switch only".into()));
    }
    match stage {
        Stage::Source => source(ctx, log).await,
        Stage::VersionInfo => version_info(ctx, log).await,
        Stage::Approval => approval(ctx, log).await,
        Stage::Build => build(ctx, log).await,
        Stage::MessageBroker => message_broker(ctx, log).await,
        Stage::PreDeployHook => pre_deploy(ctx, log).await,
        Stage::PreDeployConfig => pre_deploy_config(ctx, log).await,
        Stage::DeployScheduler => deploy_scheduler(ctx, log).await,
        Stage::Install => install(ctx, log).await,
        Stage::DeployServices => deploy_services(ctx, log).await,
        Stage::UpdateDeployedVersion => update_deployed(ctx, log).await,
        Stage::PostDeployConfig => post_deploy_config(ctx, log).await,
        Stage::PostDeployHook => post_deploy_hooks(ctx, log).await,
    }
}

/// Checks the SHA fixed when the run was requested: the commit exists and,
/// where the tier demands it, is on the accepted branch. desired_version is
/// not read again: changing it never changes a queued or waiting run.
async fn source(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let engine = ctx.engine.clone();
    let env = ctx.env.clone();
    let previous = engine.well_known(&env, WellKnownKey::LastDeployedVersion).await?;
    let Some(target) = &ctx.run.target_version else {
        return Err(StageError::Failed(format!(
            "run {} has no version fixed at request time (it was queued by an older Cutover, which resolved \
             desired_version only when a run started); request it again: cutover release {env}",
            ctx.run.id
        )));
    };
    let version = Version::parse(target)?;
    if let Some(url) = engine.remote_url() {
        log.line(format!("fetching {url}")).await;
        match engine.fetch_source(&format!("run {}", ctx.run.id)).await {
            Ok(Some(o)) => {
                log.line(format!("fetched: {} refs, {} updated", o.refs, o.updated))
                    .await
            }
            Ok(None) => {}
            Err(e) => return Err(StageError::Failed(e.chain())),
        }
    }
    log.line(format!(
        "version fixed when run {} was requested by {}: {version} (chosen by {})",
        ctx.run.id,
        ctx.run.requested_by,
        ctx.run.version_chosen_by.as_deref().unwrap_or("unknown")
    ))
    .await;
    let branch = engine.config().accepted_branch(&env).map(str::to_owned);
    let tier = engine.config().environments[&env].tier;
    let v = version.clone();
    let (commit, on_branch) = engine
        .with_repo(move |repo| {
            let commit = repo
                .commit(&v)
                .map_err(|e| crate::EngineError::Refused(e.to_string()))?;
            let on_branch = match branch.filter(|_| !tier.accepts_any_branch()) {
                Some(b) => Some((
                    repo.branch_contains(&b, &v)
                        .map_err(|e| crate::EngineError::Refused(e.to_string()))?,
                    b,
                )),
                None => None,
            };
            Ok((commit, on_branch))
        })
        .await?;
    log.line(format!(
        "version {} — {} ({})",
        version, commit.subject, commit.author
    ))
    .await;
    if let Some((ok, branch)) = on_branch {
        if !ok {
            return Err(StageError::Failed(format!(
                "{} is not on branch {branch:?}, the only branch {env} (tier {tier}) accepts",
                version.short()
            )));
        }
        log.line(format!("on branch {branch}: yes")).await;
    }
    // The application definition this commit deploys: its own, validated before anything
    // changes (an invalid one fails the run here, naming file@sha, line and column).
    let (def, source) = engine.definition_at(&version).await.map_err(|e| match e {
        crate::EngineError::Refused(message) => StageError::Failed(message),
        other => StageError::from(other),
    })?;
    log.line(format!(
        "application definition: {source}: {} services ({})",
        def.services.len(),
        def.services
            .keys()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await;
    ctx.def = Some(def);
    ctx.previous = previous.as_deref().map(Version::parse).transpose()?;
    ctx.version = Some(version.clone());
    let update = RunUpdate {
        version: Some(version.to_string()),
        previous_version: previous.clone(),
        ..RunUpdate::default()
    };
    engine.store().run_update(ctx.run.id, update).await?;
    Ok(StageOutcome::Done(Some(format!("version {}", version.short()))))
}

async fn version_info(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let version = ctx.version()?.clone();
    log.line(format!(
        "deployment version: {version} (fixed at request by {}, chosen by {})",
        ctx.run.requested_by,
        ctx.run.version_chosen_by.as_deref().unwrap_or("unknown")
    ))
    .await;
    let Some(previous) = ctx.previous.clone() else {
        log.line("latest deployed version: none (first deployment)").await;
        return Ok(StageOutcome::Done(None));
    };
    log.line(format!("latest deployed version: {previous}")).await;
    if previous == version {
        log.line("same version as deployed: this run redeploys it").await;
        return Ok(StageOutcome::Done(None));
    }
    let (v, p) = (version.clone(), previous.clone());
    let (forward, backward) = ctx
        .engine
        .with_repo(move |repo| {
            let f = repo
                .commits_between(Some(&p), &v, 50)
                .map_err(|e| crate::EngineError::Refused(e.to_string()))?;
            let b = repo
                .commits_between(Some(&v), &p, 50)
                .map_err(|e| crate::EngineError::Refused(e.to_string()))?;
            Ok((f, b))
        })
        .await?;
    if !forward.is_empty() {
        log.line(format!("commits being deployed ({}):", forward.len()))
            .await;
        for c in &forward {
            log.line(format!("  + {} {} — {}", c.version.short(), c.author, c.subject))
                .await;
        }
    }
    if !backward.is_empty() {
        log.line(format!(
            "commits being removed ({}), this is a rollback:",
            backward.len()
        ))
        .await;
        for c in &backward {
            log.line(format!("  - {} {} — {}", c.version.short(), c.author, c.subject))
                .await;
        }
    }
    // What the application definition changes (services, hooks, jobs), next to the commits.
    match ctx.engine.definition_at(&previous).await {
        Ok((old, _)) => {
            let changes = ctx.def().changes_from(&old);
            if changes.is_empty() {
                log.line("application definition: unchanged").await;
            } else {
                log.line(format!("application definition changes ({}):", changes.len()))
                    .await;
                for change in changes {
                    log.line(format!("  * {change}")).await;
                }
            }
        }
        Err(e) => {
            log.line(format!(
                "application definition of {}: cannot be read ({e})",
                previous.short()
            ))
            .await
        }
    }
    Ok(StageOutcome::Done(Some(format!(
        "+{} -{} commits",
        forward.len(),
        backward.len()
    ))))
}

async fn approval(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let env_cfg = &ctx.engine.config().environments[&ctx.env];
    let rollback = matches!(ctx.kind(), RunKind::Rollback | RunKind::FastRollback);
    let required = if rollback {
        env_cfg.approval_for_rollback
    } else {
        env_cfg.approval
    };
    if !required {
        return Ok(StageOutcome::Skipped(format!(
            "{} does not require approval",
            ctx.env
        )));
    }
    let timeout = env_cfg.approval_timeout;
    let id = ctx.run.id;
    let waiting = ctx
        .engine
        .store()
        .run_transition(
            id,
            &[RunState::Running],
            RunState::AwaitingApproval,
            RunUpdate::default(),
        )
        .await?;
    ctx.engine
        .notify_people(crate::notify::Trigger::AwaitingApproval, &waiting);
    let version = ctx.version()?.clone();
    log.line(format!(
        "waiting for approval of version {version} (requested by {}, chosen by {}; neither may approve it on a \
         production tier), expires in {}: cutover approve {id}  /  cutover reject {id} --comment WHY",
        ctx.run.requested_by,
        ctx.run.version_chosen_by.as_deref().unwrap_or("unknown"),
        cutover_core::config::format_duration(timeout)
    ))
    .await;
    let decision = tokio::select! {
        d = ctx.decisions.recv() => d,
        () = ctx.cancel.cancelled() => return Err(StageError::Cancelled),
        () = tokio::time::sleep(timeout) => None,
    };
    let decision = match decision {
        Some(d) => d,
        None => {
            // Expired: claim the state so a late approval cannot race us.
            let claimed = ctx
                .engine
                .store()
                .run_transition(
                    id,
                    &[RunState::AwaitingApproval],
                    RunState::Running,
                    RunUpdate::default(),
                )
                .await;
            match claimed {
                Ok(_) => {
                    return Err(StageError::Failed(format!(
                        "approval expired after {}",
                        cutover_core::config::format_duration(timeout)
                    )));
                }
                Err(_) => ctx
                    .decisions
                    .recv()
                    .await
                    .ok_or(StageError::Failed("approval channel closed".into()))?,
            }
        }
    };
    let comment = decision
        .comment
        .clone()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    match decision.decision {
        Decision::Approve => {
            log.line(format!("approved by {}{comment}", decision.actor)).await;
            log.line(format!("approved version: {version}")).await;
            Ok(StageOutcome::Done(Some(format!(
                "approved by {}",
                decision.actor
            ))))
        }
        Decision::Reject => Err(StageError::Failed(format!(
            "rejected by {}{comment}",
            decision.actor
        ))),
    }
}

async fn build(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let version = ctx.version()?.clone();
    let dir = ctx
        .engine
        .prepare_release(&ctx.env, &version, log, &ctx.cancel, &ctx.base_env())
        .await?;
    ctx.release_dir = Some(dir);
    let key = ctx.engine.key(&ctx.env, WellKnownKey::LastBuildVersion);
    ctx.engine
        .store()
        .param_put(&key, version.as_str(), SYSTEM_ACTOR, None)
        .await?;
    log.line(format!("last_build_version = {version}")).await;
    Ok(StageOutcome::Done(None))
}

async fn message_broker(ctx: &RunCtx, log: &StageLog) -> StageResult {
    match &ctx.def().rabbitmq {
        None => Ok(StageOutcome::Skipped("no rabbitmq section in cutover.yml".into())),
        Some(rabbit) => crate::broker::apply(&ctx.engine, &ctx.env, rabbit, log).await,
    }
}

async fn pre_deploy(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let hook = ctx.def().hooks.pre_deploy.clone();
    let ran_hook = match hook.filter(|h| !h.trim().is_empty()) {
        Some(cmd) => {
            ctx.run_hook(log, "pre_deploy", &cmd).await?;
            true
        }
        None => false,
    };
    let touch = ctx
        .engine
        .scheduler_suspend_for_run(&ctx.env, ctx.run.id, log, &ctx.cancel)
        .await?;
    ctx.scheduler_touch = touch;
    match (ran_hook, touch) {
        (false, None) => Ok(StageOutcome::Skipped(
            "no pre_deploy hook and no scheduler jobs".into(),
        )),
        _ => Ok(StageOutcome::Done(None)),
    }
}

/// Renders the settings of `/<app>-<env>/env/NAME` parameters into the
/// environment of hooks and instances. Values are masked in every log.
async fn pre_deploy_config(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let prefix = format!("{}/env", ctx.engine.config().param_prefix(&ctx.env));
    let params = ctx.engine.store().param_list(&prefix).await?;
    if params.is_empty() {
        return Ok(StageOutcome::Skipped(format!("no settings under {prefix}/")));
    }
    let mut settings = Vec::new();
    for p in params {
        let name = p.key.rsplit('/').next().unwrap_or_default().to_owned();
        let value = ctx.engine.setting_value(&p.value)?;
        // Written before this version refused such names (or straight into the store): the
        // run fails rather than hand it to a shell.
        if let Some(why) = cutover_core::settings::refused_setting_name(&name) {
            if value.is_empty() {
                log.line(format!("ignored {}: refused name, emptied", p.key))
                    .await;
                continue;
            }
            return Err(StageError::Failed(format!(
                "{} cannot be rendered: {why}. It was stored before such names were refused; empty it \
                 (`cutover param put {} ''`), put its value under another name, and release again",
                p.key, p.key
            )));
        }
        log.line(format!("{name} = **** (version {} by {})", p.version, p.actor))
            .await;
        settings.push((name, value));
    }
    // The settings as read now (a change since the run started counts too).
    ctx.masker = ctx.engine.log_masker(&ctx.env).await;
    let n = settings.len();
    ctx.settings = settings;
    Ok(StageOutcome::Done(Some(format!("{n} settings"))))
}

async fn deploy_scheduler(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    if ctx.def().scheduler.jobs.is_empty() {
        return Ok(StageOutcome::Skipped("no scheduler jobs in cutover.yml".into()));
    }
    let version = ctx.version()?.clone();
    ctx.engine.scheduler_install(&ctx.env, &version, log).await?;
    Ok(StageOutcome::Done(None))
}

/// Whether this run's install step runs inside Deploy services, under a router hold.
fn held_install(ctx: &RunCtx) -> bool {
    ctx.engine.config().environments[&ctx.env].migrations.holds()
        && !matches!(ctx.kind(), RunKind::FastRollback)
}

/// The install step's hooks (rollback, then install or destructive_install), in order.
fn install_hooks(ctx: &RunCtx) -> Vec<(&'static str, String)> {
    let def = ctx.def();
    let hooks = &def.hooks;
    let mut out = Vec::new();
    if ctx.kind() == RunKind::Rollback
        && let Some(cmd) = hooks.rollback.clone().filter(|c| !c.trim().is_empty())
    {
        out.push(("rollback", cmd));
    }
    let (name, cmd) = if ctx.kind() == RunKind::Destructive {
        ("destructive_install", hooks.destructive_install.clone())
    } else {
        ("install", hooks.install.clone())
    };
    if let Some(cmd) = cmd.filter(|c| !c.trim().is_empty()) {
        out.push((name, cmd));
    }
    out
}

async fn install(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let def = ctx.def();
    let hooks = &def.hooks;
    if held_install(ctx) {
        let hooks = install_hooks(ctx);
        let names: Vec<_> = hooks.iter().map(|(n, _)| *n).collect();
        if let Some(touch) = ctx.scheduler_touch {
            let version = ctx.version()?.clone();
            ctx.engine.scheduler_activate(&ctx.env, &version, touch).await?;
        }
        if hooks.is_empty() {
            return Ok(StageOutcome::Skipped("no install hook".into()));
        }
        log.line(format!(
            "{} runs in Deploy services, while the router holds requests (migrations: {})",
            names.join(", "),
            ctx.engine.config().environments[&ctx.env].migrations.as_str()
        ))
        .await;
        return Ok(StageOutcome::Done(Some(format!(
            "{} deferred under the hold",
            names.join(", ")
        ))));
    }
    // A rollback run first reverses what the version it leaves migrated (in the release being
    // restored; CUTOVER_PREVIOUS_VERSION names the version left).
    let rollback = hooks
        .rollback
        .clone()
        .filter(|c| !c.trim().is_empty() && ctx.kind() == RunKind::Rollback);
    if let Some(cmd) = &rollback {
        ctx.run_hook(log, "rollback", cmd).await?;
    }
    let (name, cmd) = if ctx.kind() == RunKind::Destructive {
        ("destructive_install", hooks.destructive_install.clone())
    } else {
        ("install", hooks.install.clone())
    };
    let cmd = cmd.filter(|c| !c.trim().is_empty());
    if let Some(cmd) = &cmd {
        ctx.run_hook(log, name, cmd).await?;
    }
    if ctx.kind() == RunKind::Destructive {
        let n = ctx.engine.store().job_history_reset(ctx.env.as_str()).await?;
        log.line(format!("scheduler reset: {n} job runs and their logs deleted"))
            .await;
    }
    if let Some(touch) = ctx.scheduler_touch {
        let version = ctx.version()?.clone();
        ctx.engine.scheduler_activate(&ctx.env, &version, touch).await?;
        if touch.was_suspended {
            log.line(format!(
                "jobs of {} active; scheduler stays suspended as a person left it",
                version.short()
            ))
            .await;
        } else {
            log.line(format!("scheduler resumed with the jobs of {}", version.short()))
                .await;
        }
    }
    match (cmd, ctx.kind()) {
        (None, RunKind::Destructive) => Ok(StageOutcome::Done(Some("no destructive_install hook".into()))),
        (None, _) if rollback.is_some() => Ok(StageOutcome::Done(Some("rollback hook".into()))),
        (None, _) => Ok(StageOutcome::Skipped("no install hook".into())),
        _ => Ok(StageOutcome::Done(None)),
    }
}

/// After the new version serves: `post_switch` (expand/contract) once the previous version is
/// stopped — the warm release too, since its code may not run against what the hook changes —
/// then `post_deploy`.
async fn post_deploy_hooks(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let def = ctx.def();
    let switch = def.hooks.post_switch.clone().filter(|c| !c.trim().is_empty());
    if let Some(cmd) = &switch {
        ctx.engine.drop_warm(&ctx.env, log).await;
        ctx.run_hook(log, "post_switch", cmd).await?;
    }
    let outcome = hook_stage(ctx, log, "post_deploy", def.hooks.post_deploy.clone()).await?;
    match (switch, outcome) {
        (Some(_), StageOutcome::Skipped(_)) => Ok(StageOutcome::Done(Some("post_switch hook".into()))),
        (_, outcome) => Ok(outcome),
    }
}

async fn deploy_services(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let version = ctx.version()?.clone();
    if ctx.kind() == RunKind::FastRollback {
        let rollout = ctx.engine.switch_to_warm(&ctx.env, &version, log).await?;
        ctx.rollout = Some(rollout);
        return Ok(StageOutcome::Done(Some("switched to the warm release".into())));
    }
    let dir = ctx
        .release_dir
        .clone()
        .ok_or_else(|| StageError::Failed("no release directory (Build did not run)".into()))?;
    // The same environment as every other start of this version (reconciliation, adoption,
    // scale, an undo): nothing that belongs to this run, so Swarm sees an unchanged service spec
    // and an adopted instance restarts as it was started.
    let env_vars = ctx.engine.instance_env_for(&ctx.env, &version).await;
    let def = ctx.def();
    let l = crate::deploy::Launch {
        env: &ctx.env,
        version: &version,
        release_dir: &dir,
        env_vars: &env_vars,
        log,
        cancel: &ctx.cancel,
        def: &def,
    };
    let mut slot = ctx.rollout.take();
    let result = if held_install(ctx) {
        let hooks = install_hooks(ctx);
        let stop = ctx.cancel.child_token();
        let migrate = async {
            for (name, cmd) in &hooks {
                ctx.run_hook_with(log, name, cmd, &stop).await?;
            }
            Ok(())
        };
        ctx.engine.roll_out_held(&l, &mut slot, migrate, &stop).await
    } else {
        ctx.engine.roll_out(&l, &mut slot).await
    };
    ctx.rollout = slot;
    let rollout = result?;
    Ok(StageOutcome::Done(Some(rollout)))
}

async fn update_deployed(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let version = ctx.version()?.clone();
    let key = ctx.engine.key(&ctx.env, WellKnownKey::LastDeployedVersion);
    ctx.engine
        .store()
        .param_put(&key, version.as_str(), SYSTEM_ACTOR, None)
        .await?;
    log.line(format!("last_deployed_version = {version}")).await;
    ctx.wrote_deployed = true;
    if let Err(e) = ctx.engine.note_deployed(&ctx.env).await {
        log.line(format!(
            "could not record the environment's activity (its ttl): {e}"
        ))
        .await;
    }
    Ok(StageOutcome::Done(None))
}

async fn post_deploy_config(ctx: &mut RunCtx, log: &StageLog) -> StageResult {
    let removed = ctx.engine.clean_up(&ctx.env, log).await?;
    Ok(StageOutcome::Done(Some(removed)))
}

async fn hook_stage(ctx: &mut RunCtx, log: &StageLog, name: &str, cmd: Option<String>) -> StageResult {
    match cmd.filter(|c| !c.trim().is_empty()) {
        None => Ok(StageOutcome::Skipped(format!("no {name} hook"))),
        Some(cmd) => {
            ctx.run_hook(log, name, &cmd).await?;
            Ok(StageOutcome::Done(None))
        }
    }
}

/// How long a hook may run: the environment's `hook_timeout`.
pub(crate) fn hook_timeout(ctx: &RunCtx) -> Duration {
    ctx.engine.config().environments[&ctx.env].hook_timeout
}
