//! Prometheus metrics for `GET /metrics`, encoded by `prometheus-client` in the Prometheus
//! text format (version 0.0.4, the `text/plain` every scraper accepts).
//!
//! Counters of ended runs and the histograms of run and stage durations are kept in memory
//! since this server started (as Prometheus counters are: a restart resets them, `rate()`
//! copes); gauges (active runs, instances, scheduler) are read at scrape time from the engine
//! and the runtimes into a registry built for that scrape. Rejected: the `metrics` crate's
//! global recorder, which would make two engines in one process (tests) share counters, and
//! the hand-written exposition this replaced (a mean per environment instead of histograms,
//! its own label escaping).

use std::sync::atomic::AtomicU64;

use cutover_core::Stage;
use cutover_store::RunRecord;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Engine;

/// A metric's labels, in the order they are printed.
type Labels = Vec<(&'static str, String)>;

/// Bucket bounds (seconds) of the duration histograms: a skipped hook takes milliseconds,
/// a build or a migration minutes, an approval wait hours.
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// What lives as long as the server: ended runs by env, kind and state; run durations by
/// env; stage durations by env and stage.
pub(crate) struct Metrics {
    runs: Family<Labels, Counter>,
    run_durations: Family<Labels, Histogram, fn() -> Histogram>,
    stage_durations: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            runs: Family::default(),
            run_durations: Family::new_with_constructor(duration_histogram),
            stage_durations: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl Metrics {
    pub(crate) fn run_ended(&self, run: &RunRecord) {
        self.runs
            .get_or_create(&vec![
                ("env", run.env.clone()),
                ("kind", run.kind.as_str().to_owned()),
                ("state", run.state.as_str().to_owned()),
            ])
            .inc();
        if let (Some(start), Some(end)) = (run.started_at_ms, run.ended_at_ms) {
            self.run_durations
                .get_or_create(&vec![("env", run.env.clone())])
                .observe((end - start).max(0) as f64 / 1000.0);
        }
    }

    /// Registers what lives as long as the server in a scrape's registry.
    fn register(&self, reg: &mut Registry) {
        // Counters are registered without `_total`: the encoder adds it.
        reg.register(
            "cutover_runs",
            "Pipeline runs that ended, by environment, kind and final state",
            self.runs.clone(),
        );
        reg.register(
            "cutover_run_duration_seconds",
            "Time from a run's start to its end, by environment",
            self.run_durations.clone(),
        );
        reg.register(
            "cutover_stage_duration_seconds",
            "Time a stage took, by environment and stage (stages that ran: succeeded or failed, \
             not skipped)",
            self.stage_durations.clone(),
        );
    }

    /// A stage that ran (succeeded or failed; skipped stages are not observed).
    pub(crate) fn stage_ended(&self, env: &str, stage: Stage, seconds: f64) {
        let stage = serde_json::to_value(stage)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.stage_durations
            .get_or_create(&vec![("env", env.to_owned()), ("stage", stage)])
            .observe(seconds);
    }
}

/// One gauge per label set, filled at scrape time.
fn gauges(values: impl IntoIterator<Item = (Labels, i64)>) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    family
}

/// One counter per label set, with a value read at scrape time.
fn counters(values: impl IntoIterator<Item = (Labels, u64)>) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    family
}

/// A gauge without labels.
fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

/// A counter without labels, with a value read at scrape time.
fn counter(v: u64) -> Counter<u64, AtomicU64> {
    let c = Counter::default();
    c.inc_by(v);
    c
}

impl Engine {
    /// The whole exposition, ready to serve as `text/plain; version=0.0.4`.
    pub async fn metrics_text(&self) -> String {
        let mut reg = Registry::default();
        let m = self.metrics();
        m.register(&mut reg);
        self.notifier().register(&mut reg);
        let active = self
            .shared()
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        reg.register(
            "cutover_runs_active",
            "Runs executing now (all environments)",
            gauge(active as i64),
        );
        self.plane_metrics(&mut reg);
        let mut instances = Vec::new();
        let mut suspended = Vec::new();
        let mut replicas = Vec::new();
        let mut requests = Vec::new();
        let config = self.config();
        for env in config.environments.keys() {
            let mut counts: std::collections::BTreeMap<(String, String, String), i64> =
                std::collections::BTreeMap::new();
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
                let labels = vec![
                    ("env", env.to_string()),
                    ("service", service),
                    ("version", version),
                    ("healthy", healthy),
                ];
                instances.push((labels, n));
            }
            if let Ok(Some(state)) = self.store().scheduler_get(env.as_str()).await {
                suspended.push((vec![("env", env.to_string())], i64::from(state.suspended)));
            }
            for (service, n) in self.replica_counts(env).await {
                let labels = vec![("env", env.to_string()), ("service", service.to_string())];
                replicas.push((labels.clone(), i64::from(n)));
                let generation = match self.route(env, &service) {
                    Ok(r) => self.data_plane().route_state(&r).await,
                    Err(_) => None,
                };
                if let Some(g) = generation {
                    requests.push((labels, g.admitted));
                }
            }
        }
        reg.register(
            "cutover_instances",
            "Running instances by service, version (read from the runtime) and health",
            gauges(instances),
        );
        reg.register(
            "cutover_scheduler_suspended",
            "1 when the environment's scheduler is suspended",
            gauges(suspended),
        );
        reg.register(
            "cutover_replicas",
            "The replica count in force per service (a scale change's, else cutover.yml's)",
            gauges(replicas),
        );
        reg.register(
            "cutover_router_requests",
            "Requests the router admitted for a public service; resets when traffic switches \
             to a new set of instances (a deploy, rollback or scale)",
            counters(requests),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &reg);
        out
    }
}

impl Engine {
    /// Control plane and data plane: up, since when, restarts; instances adopted at start.
    fn plane_metrics(&self, reg: &mut Registry) {
        use std::sync::atomic::Ordering::Relaxed;
        let health = self.data_plane_health();
        let embedded = matches!(self.data_plane(), crate::DataPlane::Embedded(_));
        reg.register(
            "cutover_control_plane_up",
            "1 while this control plane (cutover serve) answers",
            gauge(1),
        );
        reg.register(
            "cutover_control_plane_start_time_seconds",
            "When this control plane started (unix seconds)",
            gauge((self.started_at_ms() / 1000) as i64),
        );
        reg.register(
            "cutover_instances_adopted",
            "Instances a previous control plane left running that this one adopted at start",
            counter(self.adopted_count()),
        );
        reg.register(
            "cutover_data_plane_up",
            "1 when the data plane (the router process) answered its last check; the embedded \
             router is always up",
            gauge(i64::from(embedded || health.up.load(Relaxed))),
        );
        reg.register(
            "cutover_data_plane_restarts",
            "Data planes this control plane started because the previous one had died",
            counter(health.restarts.load(Relaxed)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_durations_are_histograms_with_buckets() {
        let m = Metrics::default();
        m.stage_ended("prod", Stage::DeployServices, 0.3);
        m.stage_ended("prod", Stage::DeployServices, 42.0);
        m.stage_ended("prod", Stage::Install, 7.0);
        let mut reg = Registry::default();
        m.register(&mut reg);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &reg).unwrap();
        let has = |line: &str| out.lines().any(|l| l == line);
        for line in [
            "# TYPE cutover_stage_duration_seconds histogram",
            "cutover_stage_duration_seconds_bucket{env=\"prod\",stage=\"deploy_services\",le=\"0.1\"} 0",
            "cutover_stage_duration_seconds_bucket{env=\"prod\",stage=\"deploy_services\",le=\"0.5\"} 1",
            "cutover_stage_duration_seconds_bucket{env=\"prod\",stage=\"deploy_services\",le=\"60\"} 2",
            "cutover_stage_duration_seconds_sum{env=\"prod\",stage=\"deploy_services\"} 42.3",
            "cutover_stage_duration_seconds_count{env=\"prod\",stage=\"install\"} 1",
        ] {
            assert!(has(line), "{line} missing from:\n{out}");
        }
        assert!(
            !out.contains("# EOF"),
            "the Prometheus text format has no EOF marker:\n{out}"
        );
    }
}
