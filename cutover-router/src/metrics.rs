//! The router's Prometheus metrics, per application, environment and service (`prometheus-client`,
//! like the server's):
//!
//! * `cutover_router_requests_total{app,env,service,class}`: answered requests by status class
//!   (`1xx` ... `5xx`), counted when the response is over;
//! * `cutover_router_request_duration_seconds{app,env,service}`: from dispatch to the last byte
//!   of the response (a histogram, 1 ms to ~16 s);
//! * `cutover_router_in_flight{app,env,service}`: requests being served;
//! * `cutover_router_upstream_connect_errors_total{app,env,service}`: failed connects to an
//!   instance (each attempt; the request may still succeed on the next upstream);
//! * `cutover_router_response_bytes_total{app,env,service}`: response body bytes sent;
//! * `cutover_router_client_connections`: client connections open (all listeners), and
//!   `cutover_router_connection_limit_waits_total`: accepts that waited at the connection cap;
//! * `cutover_build_info{version,component="router"}`.
//!
//! Requests for no route count under empty labels (`app=""`): a client choosing arbitrary
//! `Host` values cannot grow the label sets. A route's handles are looked up once per switch
//! and kept in the routing table, so a request takes no lock and allocates nothing for them.
//!
//! The data plane returns [`Router::encode_metrics`] over its control socket and the control
//! plane's `/metrics` includes it: one scrape target, no new port to secure, and the same in the
//! embedded mode. Rejected: a metrics listener of the data plane (another port to bind, hand
//! over on upgrade and protect).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::{RouteKey, Router};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    app: String,
    env: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    app: String,
    env: String,
    service: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    component: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The metric families of one router.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<RouteLabels, Gauge>,
    connect_errors: Family<RouteLabels, Counter>,
    bytes: Family<RouteLabels, Counter>,
    pub(crate) client_connections: Gauge,
    pub(crate) connection_waits: Counter,
    /// Requests that matched no route.
    pub(crate) unrouted: std::sync::Arc<RouteMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One route's metric handles (clones share the values with the families).
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    /// By status class: index `status / 100 - 1`.
    requests: [Counter; 5],
    duration: Histogram,
    pub(crate) in_flight: Gauge,
    pub(crate) connect_errors: Counter,
    bytes: Counter,
}

impl RouteMetrics {
    /// Records a finished response.
    pub(crate) fn finished(&self, status: u16, seconds: f64, bytes: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(seconds);
        self.bytes.inc_by(bytes);
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let in_flight = Family::<RouteLabels, Gauge>::default();
        let connect_errors = Family::<RouteLabels, Counter>::default();
        let bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "cutover_router_requests",
            "Requests answered by the router, by status class",
            requests.clone(),
        );
        registry.register(
            "cutover_router_request_duration_seconds",
            "Time from dispatch to the last byte of the response",
            duration.clone(),
        );
        registry.register(
            "cutover_router_in_flight",
            "Requests the router is serving",
            in_flight.clone(),
        );
        registry.register(
            "cutover_router_upstream_connect_errors",
            "Failed connection attempts to instances",
            connect_errors.clone(),
        );
        registry.register(
            "cutover_router_response_bytes",
            "Response body bytes sent to clients",
            bytes.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "cutover_router_client_connections",
            "Client connections open",
            client_connections.clone(),
        );
        let connection_waits = Counter::default();
        registry.register(
            "cutover_router_connection_limit_waits",
            "Accepts that waited because max_client_connections were open",
            connection_waits.clone(),
        );
        registry.register(
            "cutover_build",
            "The running Cutover build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                component: "router",
            }),
        );
        let mut metrics = Self {
            registry,
            requests,
            duration,
            in_flight,
            connect_errors,
            bytes,
            client_connections,
            connection_waits,
            unrouted: std::sync::Arc::new(RouteMetrics::placeholder()),
        };
        metrics.unrouted =
            std::sync::Arc::new(metrics.route_labels(String::new(), String::new(), String::new()));
        metrics
    }

    /// The handles of `route` (created at zero on first use).
    pub(crate) fn route(&self, route: &RouteKey) -> RouteMetrics {
        self.route_labels(
            route.app().to_owned(),
            route.env().to_owned(),
            route.service().to_owned(),
        )
    }

    fn route_labels(&self, app: String, env: String, service: String) -> RouteMetrics {
        let labels = RouteLabels { app, env, service };
        let requests = CLASSES.map(|class| {
            self.requests.get_or_create_owned(&StatusLabels {
                app: labels.app.clone(),
                env: labels.env.clone(),
                service: labels.service.clone(),
                class,
            })
        });
        RouteMetrics {
            requests,
            duration: self.duration.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            connect_errors: self.connect_errors.get_or_create_owned(&labels),
            bytes: self.bytes.get_or_create_owned(&labels),
        }
    }
}

impl RouteMetrics {
    fn placeholder() -> Self {
        Self {
            requests: Default::default(),
            duration: histogram(),
            in_flight: Gauge::default(),
            connect_errors: Counter::default(),
            bytes: Counter::default(),
        }
    }
}

impl Router {
    /// The router's metrics in the Prometheus text format, without the OpenMetrics `# EOF` line
    /// (so it can be appended to another exposition).
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::text::encode_registry(&mut out, &self.inner.metrics.registry)
        {
            tracing::warn!(error = %e, "cannot encode the router's metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_share_the_families_and_encode() {
        let m = Metrics::new();
        let key = RouteKey::new("shop", "prod", "web").unwrap();
        let a = m.route(&key);
        let b = m.route(&key); // after a switch: the same series
        a.finished(200, 0.002, 10);
        b.finished(503, 0.5, 5);
        b.in_flight.inc();
        a.connect_errors.inc();
        m.unrouted.finished(404, 0.0001, 3);
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &m.registry).unwrap();
        for want in [
            "cutover_router_requests_total{app=\"shop\",env=\"prod\",service=\"web\",class=\"2xx\"} 1",
            "cutover_router_requests_total{app=\"shop\",env=\"prod\",service=\"web\",class=\"5xx\"} 1",
            "cutover_router_requests_total{app=\"\",env=\"\",service=\"\",class=\"4xx\"} 1",
            "cutover_router_response_bytes_total{app=\"shop\",env=\"prod\",service=\"web\"} 15",
            "cutover_router_in_flight{app=\"shop\",env=\"prod\",service=\"web\"} 1",
            "cutover_router_upstream_connect_errors_total{app=\"shop\",env=\"prod\",service=\"web\"} 1",
            "cutover_router_request_duration_seconds_count{app=\"shop\",env=\"prod\",service=\"web\"} 2",
            "cutover_build_info{version=\"",
        ] {
            assert!(out.contains(want), "{want} missing in:\n{out}");
        }
        assert!(!out.contains("# EOF"), "{out}");
    }
}
