//! The autoscaler (SPEC §4: production is "autoscaled between min and max"): every interval it
//! reads, for each public service of a `prod` or `prod-like` environment with `autoscale:`, how
//! many requests the router admitted since the last look, and moves the replica count towards
//! `ceil(rate / target_rps_per_replica)`, clamped to `min..max`, through the same scale change
//! a person makes (recorded, audited, blue-green), as the actor `cutover`.
//!
//! Up at once; down only after the rate has asked for fewer for `DOWN_AFTER` looks in a row
//! (to the highest count asked for in that streak), so a short lull does not shed capacity.
//! Without `target_rps_per_replica` it only keeps the count within `min..max`. A look is
//! skipped while a run is active on the environment, and a look across a route switch
//! (another generation) only takes a new baseline. Non-public services have no router
//! traffic to measure: they keep their count. Rejected: CPU or latency signals (the process
//! runtime has no cgroup of its own to read; request rate is what the router knows exactly).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cutover_core::config::Tier;
use cutover_core::{Actor, EnvName, ServiceName};

use crate::{Engine, SYSTEM_ACTOR};

/// Looks in a row that must ask for fewer replicas before scaling down.
const DOWN_AFTER: u32 = 3;

/// What the autoscaler remembers of one service between looks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    generation: u64,
    admitted: u64,
    at: Option<Instant>,
    /// Consecutive looks that wanted fewer replicas, and the most any of them wanted.
    low_streak: u32,
    low_max: u32,
}

/// The count a look asks for: `ceil(rate / target)` within `min..=max`; without a target,
/// the current count within `min..=max`.
pub(crate) fn wanted(rate: f64, target: Option<u32>, current: u32, min: u32, max: u32) -> u32 {
    let raw = match target {
        Some(t) if t > 0 => (rate / f64::from(t)).ceil().max(0.0) as u32,
        _ => current,
    };
    raw.clamp(min, max)
}

/// Whether to change now, given the count wanted and the streak so far; updates the streak.
pub(crate) fn decide(sample: &mut Sample, current: u32, want: u32) -> Option<u32> {
    if want > current {
        sample.low_streak = 0;
        return Some(want);
    }
    if want < current {
        sample.low_streak += 1;
        sample.low_max = if sample.low_streak == 1 {
            want
        } else {
            sample.low_max.max(want)
        };
        if sample.low_streak >= DOWN_AFTER {
            sample.low_streak = 0;
            return Some(sample.low_max);
        }
        return None;
    }
    sample.low_streak = 0;
    None
}

impl Engine {
    /// Starts the autoscaler when some environment has `autoscale:` (interval: 15 s, or
    /// `CUTOVER_AUTOSCALE_INTERVAL`).
    pub(crate) fn spawn_autoscaler(&self) {
        if !self.config().environments.values().any(|e| e.autoscale.is_some()) {
            return;
        }
        let interval = std::env::var("CUTOVER_AUTOSCALE_INTERVAL")
            .ok()
            .and_then(|t| cutover_core::config::parse_duration(&t).ok())
            .unwrap_or(Duration::from_secs(15));
        let engine = self.clone();
        tokio::spawn(async move {
            let mut samples: HashMap<(EnvName, ServiceName), Sample> = HashMap::new();
            loop {
                tokio::time::sleep(interval).await;
                engine.autoscale_once(&mut samples).await;
            }
        });
    }

    async fn autoscale_once(&self, samples: &mut HashMap<(EnvName, ServiceName), Sample>) {
        let config = self.config();
        let Ok(actor) = Actor::parse(SYSTEM_ACTOR) else {
            return;
        };
        for (env, env_cfg) in &config.environments {
            let Some(auto) = env_cfg
                .autoscale
                .as_ref()
                .filter(|_| matches!(env_cfg.tier, Tier::Prod | Tier::ProdLike))
            else {
                continue;
            };
            if self.serving_version(env).is_none() || !self.active_runs(env).await.is_ok_and(|r| r.is_empty())
            {
                continue;
            }
            let counts = self.replica_counts(env).await;
            let def = self.app(env);
            for (name, _) in def.services.iter().filter(|(_, s)| s.public) {
                let Ok(route) = self.route(env, name) else {
                    continue;
                };
                let Some(generation) = self.data_plane().route_state(&route).await else {
                    continue;
                };
                let now = Instant::now();
                let sample = samples.entry((env.clone(), name.clone())).or_default();
                let (id, admitted) = (generation.generation, generation.admitted);
                let rate = match sample.at {
                    Some(at) if sample.generation == id => {
                        let secs = now.duration_since(at).as_secs_f64().max(0.001);
                        Some(admitted.saturating_sub(sample.admitted) as f64 / secs)
                    }
                    _ => None,
                };
                sample.generation = id;
                sample.admitted = admitted;
                sample.at = Some(now);
                let Some(rate) = rate else {
                    continue;
                };
                let current = counts[name];
                let want = wanted(rate, auto.target_rps_per_replica, current, auto.min, auto.max);
                let Some(to) = decide(sample, current, want) else {
                    continue;
                };
                let why = match auto.target_rps_per_replica {
                    Some(t) => format!(
                        "autoscale: {rate:.1} req/s, target {t} per replica, within {}..{}",
                        auto.min, auto.max
                    ),
                    None => format!("autoscale: keeping within {}..{}", auto.min, auto.max),
                };
                tracing::info!(env = %env, service = %name, from = current, to, "{why}");
                if let Err(e) = self.autoscale_to(env, name, current, to, why, &actor).await {
                    tracing::warn!(env = %env, service = %name, error = %e, "autoscaling did not apply");
                }
                // The switch made a new generation: start a fresh baseline.
                samples.remove(&(env.clone(), name.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_follows_the_rate_within_bounds() {
        assert_eq!(wanted(0.0, Some(20), 3, 1, 5), 1);
        assert_eq!(wanted(41.0, Some(20), 1, 1, 5), 3);
        assert_eq!(wanted(1000.0, Some(20), 1, 1, 5), 5);
        assert_eq!(wanted(10.0, None, 7, 1, 5), 5, "no target: only the bounds");
        assert_eq!(wanted(10.0, None, 3, 1, 5), 3);
    }

    #[test]
    fn up_at_once_down_after_a_streak_to_the_most_it_asked_for() {
        let mut s = Sample::default();
        assert_eq!(decide(&mut s, 1, 3), Some(3));
        assert_eq!(decide(&mut s, 3, 1), None);
        assert_eq!(decide(&mut s, 3, 2), None);
        assert_eq!(decide(&mut s, 3, 1), Some(2), "the highest of the streak");
        // A busy look in between resets the streak.
        assert_eq!(decide(&mut s, 2, 1), None);
        assert_eq!(decide(&mut s, 2, 2), None);
        assert_eq!(decide(&mut s, 2, 1), None);
        assert_eq!(decide(&mut s, 2, 1), None);
        assert_eq!(decide(&mut s, 2, 1), Some(1));
    }
}
