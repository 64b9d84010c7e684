//! Prometheus metrics, in the text exposition format, for `GET /metrics`.
//!
//! Counters of ended runs are kept in memory since this server started (as
//! Prometheus counters are: a restart resets them, `rate()` copes); gauges
//! (active runs, instances, scheduler) are read at scrape time from the
//! engine and the runtimes. Rejected: the `metrics` crate's global recorder,
//! which would make two engines in one process (tests) share counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use cutover_store::RunRecord;

use crate::Engine;

/// (env, kind, state) → count; env → (sum of seconds, count).
#[derive(Default)]
pub(crate) struct Metrics {
    runs: Mutex<BTreeMap<(String, String, String), u64>>,
    durations: Mutex<BTreeMap<String, (f64, u64)>>,
}

impl Metrics {
    pub(crate) fn run_ended(&self, run: &RunRecord) {
        let key = (
            run.env.clone(),
            run.kind.as_str().to_owned(),
            run.state.as_str().to_owned(),
        );
        *self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
        if let (Some(start), Some(end)) = (run.started_at_ms, run.ended_at_ms) {
            let mut d = self.durations.lock().unwrap_or_else(|e| e.into_inner());
            let entry = d.entry(run.env.clone()).or_default();
            entry.0 += (end - start).max(0) as f64 / 1000.0;
            entry.1 += 1;
        }
    }
}

/// A label value escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Engine {
    /// The whole exposition, ready to serve as `text/plain; version=0.0.4`.
    pub async fn metrics_text(&self) -> String {
        let mut out = String::new();
        let m = self.metrics();
        out.push_str(
            "# HELP cutover_runs_total Pipeline runs that ended, by environment, kind and final state.\n",
        );
        out.push_str("# TYPE cutover_runs_total counter\n");
        for ((env, kind, state), n) in m.runs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "cutover_runs_total{{env=\"{}\",kind=\"{}\",state=\"{}\"}} {n}",
                label(env),
                label(kind),
                label(state)
            );
        }
        out.push_str("# HELP cutover_run_duration_seconds Time from a run's start to its end.\n");
        out.push_str("# TYPE cutover_run_duration_seconds summary\n");
        for (env, (sum, count)) in m.durations.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "cutover_run_duration_seconds_sum{{env=\"{}\"}} {sum}",
                label(env)
            );
            let _ = writeln!(
                out,
                "cutover_run_duration_seconds_count{{env=\"{}\"}} {count}",
                label(env)
            );
        }
        let active = self
            .shared()
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        out.push_str("# HELP cutover_runs_active Runs executing now (all environments).\n");
        out.push_str("# TYPE cutover_runs_active gauge\n");
        let _ = writeln!(out, "cutover_runs_active {active}");
        self.plane_metrics(&mut out);
        // Each family's lines stay together (the exposition format asks for one group per
        // metric), so the per-environment loop fills one buffer per family.
        let mut instances = String::new();
        let mut suspended = String::new();
        let mut replicas = String::new();
        let mut requests = String::new();
        let config = self.config();
        for env in config.environments.keys() {
            let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
            if let Ok(all) = self.runtime_for(env).status_of(&config.app, env).await {
                for st in &all {
                    let version = st
                        .version
                        .as_ref()
                        .map(|v| v.short().to_owned())
                        .unwrap_or_else(|| "unknown".into());
                    let healthy = match st.healthy {
                        Some(true) => "true",
                        Some(false) => "false",
                        None => "unknown",
                    };
                    *counts
                        .entry((st.service.to_string(), version, healthy.to_owned()))
                        .or_default() += 1;
                }
            }
            for ((service, version, healthy), n) in counts {
                let _ = writeln!(
                    instances,
                    "cutover_instances{{env=\"{}\",service=\"{}\",version=\"{}\",healthy=\"{healthy}\"}} {n}",
                    label(env.as_str()),
                    label(&service),
                    label(&version)
                );
            }
            if let Ok(Some(state)) = self.store().scheduler_get(env.as_str()).await {
                let _ = writeln!(
                    suspended,
                    "cutover_scheduler_suspended{{env=\"{}\"}} {}",
                    label(env.as_str()),
                    u8::from(state.suspended)
                );
            }
            for (service, n) in self.replica_counts(env).await {
                let _ = writeln!(
                    replicas,
                    "cutover_replicas{{env=\"{}\",service=\"{}\"}} {n}",
                    label(env.as_str()),
                    label(service.as_str())
                );
                let generation = match self.route(env, &service) {
                    Ok(r) => self.data_plane().route_state(&r).await,
                    Err(_) => None,
                };
                if let Some(g) = generation {
                    let _ = writeln!(
                        requests,
                        "cutover_router_requests_total{{env=\"{}\",service=\"{}\"}} {}",
                        label(env.as_str()),
                        label(service.as_str()),
                        g.admitted
                    );
                }
            }
        }
        for (name, kind, help, lines) in [
            (
                "cutover_instances",
                "gauge",
                "Running instances by service, version (read from the runtime) and health.",
                instances,
            ),
            (
                "cutover_scheduler_suspended",
                "gauge",
                "1 when the environment's scheduler is suspended.",
                suspended,
            ),
            (
                "cutover_replicas",
                "gauge",
                "The replica count in force per service (a scale change's, else cutover.yml's).",
                replicas,
            ),
            (
                "cutover_router_requests_total",
                "counter",
                "Requests the router admitted for a public service; resets when traffic switches \
                 to a new set of instances (a deploy, rollback or scale).",
                requests,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&lines);
        }
        out
    }
}

impl Engine {
    /// Control plane and data plane: up, since when, restarts; instances adopted at start.
    fn plane_metrics(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        let health = self.data_plane_health();
        let embedded = matches!(self.data_plane(), crate::DataPlane::Embedded(_));
        let lines = [
            (
                "cutover_control_plane_up",
                "gauge",
                "1 while this control plane (cutover serve) answers.",
                "1".to_owned(),
            ),
            (
                "cutover_control_plane_start_time_seconds",
                "gauge",
                "When this control plane started (unix seconds).",
                (self.started_at_ms() / 1000).to_string(),
            ),
            (
                "cutover_instances_adopted_total",
                "counter",
                "Instances a previous control plane left running that this one adopted at start.",
                self.adopted_count().to_string(),
            ),
            (
                "cutover_data_plane_up",
                "gauge",
                "1 when the data plane (the router process) answered its last check; the embedded router is always up.",
                u8::from(embedded || health.up.load(Relaxed)).to_string(),
            ),
            (
                "cutover_data_plane_restarts_total",
                "counter",
                "Data planes this control plane started because the previous one had died.",
                health.restarts.load(Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}
