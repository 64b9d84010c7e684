//! Gates in the data plane: an environment held during a migration-safe deploy, or in
//! maintenance, as the control protocol carries it and `routes.json` keeps it.
//!
//! A gate is persisted with the routes and handed over with them, so a data plane restarted
//! after a crash, or upgraded, keeps answering a maintenance page and keeps a hold (with its
//! wall-clock bound: a hold whose control plane died ends in 503s at its bound, never in
//! requests waiting forever or in the old version answering over a migrated schema).
//!
//! An environment's feature flags (the `Cutover-Flags` request header) travel the same way.
//!
//! Rejected: keeping gates only in the control plane and pushing them again (a data plane
//! restarted while its control plane is down would serve a maintenance environment).

use cutover_router::{Gate, GateMode, Router};
use serde::{Deserialize, Serialize};

/// One environment's gate, as persisted and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    pub app: String,
    pub env: String,
    /// `hold` or `maintenance`.
    pub mode: GateKind,
    /// For a hold: its bound (unix ms).
    #[serde(default)]
    pub until_ms: u64,
    pub retry_after_secs: u32,
    pub page: String,
}

/// What a gate does (see `cutover_router::GateMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    Hold,
    Maintenance,
}

impl GateRecord {
    /// The record of `gate` on `app`/`env`.
    pub fn new(app: &str, env: &str, gate: &Gate) -> Self {
        Self {
            app: app.to_owned(),
            env: env.to_owned(),
            mode: match gate.mode {
                GateMode::Hold => GateKind::Hold,
                GateMode::Maintenance => GateKind::Maintenance,
            },
            until_ms: gate.until_ms,
            retry_after_secs: gate.retry_after_secs,
            page: gate.page.clone(),
        }
    }

    /// The router's gate.
    pub fn gate(&self) -> Gate {
        Gate {
            mode: match self.mode {
                GateKind::Hold => GateMode::Hold,
                GateKind::Maintenance => GateMode::Maintenance,
            },
            until_ms: self.until_ms,
            retry_after_secs: self.retry_after_secs,
            page: self.page.clone(),
        }
    }
}

/// One environment's feature flags, sent to its instances in `Cutover-Flags`
/// (`cutover_router::FLAGS_HEADER`); persisted and handed over like a gate, so a restarted data
/// plane keeps sending them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagsRecord {
    pub app: String,
    pub env: String,
    /// Name → `on`, `off` or a percentage (`25%`).
    pub flags: std::collections::BTreeMap<String, String>,
}

/// Every environment's flags of `router`.
pub(crate) fn flag_records(router: &Router) -> Vec<FlagsRecord> {
    router
        .flags()
        .into_iter()
        .map(|(app, env, flags)| FlagsRecord { app, env, flags })
        .collect()
}

/// Sets the persisted or handed-over flags on a fresh router.
pub(crate) fn restore_flags(router: &Router, records: &[FlagsRecord]) {
    for r in records {
        if let Err(e) = router.set_flags(&r.app, &r.env, r.flags.clone()) {
            tracing::warn!(env = %r.env, error = %e, "skipping persisted flags");
        }
    }
}

/// Every gate of `router`.
pub(crate) fn records(router: &Router) -> Vec<GateRecord> {
    router
        .gates()
        .into_iter()
        .map(|(app, env, g)| GateRecord::new(&app, &env, &g))
        .collect()
}

/// Sets the persisted or handed-over gates on a fresh router.
pub(crate) fn restore(router: &Router, gates: &[GateRecord]) {
    for g in gates {
        router.set_gate(&g.app, &g.env, Some(g.gate()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_router::RouterConfig;

    #[test]
    fn gates_round_trip_through_records() {
        let router = Router::new(RouterConfig::default());
        router.set_gate("shop", "prod", Some(Gate::maintenance(60, "<p>later</p>")));
        router.set_gate(
            "shop",
            "stage",
            Some(Gate::hold(std::time::Duration::from_secs(30), 5, "p")),
        );
        let recs = records(&router);
        let json = serde_json::to_string(&recs).unwrap();
        let back: Vec<GateRecord> = serde_json::from_str(&json).unwrap();
        let fresh = Router::new(RouterConfig::default());
        restore(&fresh, &back);
        assert_eq!(fresh.gates(), router.gates());
        assert_eq!(back[0].mode, GateKind::Maintenance);
    }

    #[test]
    fn flags_round_trip_through_records() {
        let router = Router::new(RouterConfig::default());
        let flags = std::collections::BTreeMap::from([("beta".to_owned(), "25%".to_owned())]);
        router.set_flags("shop", "prod", flags.clone()).unwrap();
        let json = serde_json::to_string(&flag_records(&router)).unwrap();
        let back: Vec<FlagsRecord> = serde_json::from_str(&json).unwrap();
        let fresh = Router::new(RouterConfig::default());
        restore_flags(&fresh, &back);
        assert_eq!(fresh.flags(), vec![("shop".into(), "prod".into(), flags)]);
    }
}
