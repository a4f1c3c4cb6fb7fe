//! Prometheus metrics (OpenMetrics text, `prometheus-client`): invocations, errors by kind,
//! latency, deploys and cold starts, per function.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the invocation latency histogram.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Function {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    function: String,
    kind: String,
}

type Seconds = Counter<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// The engine's metrics. Each series is an atomic behind its family's read lock: concurrent
/// calls of functions that have their series do not queue here.
pub struct Metrics {
    registry: Registry,
    invocations: Family<Function, Counter>,
    errors: Family<Failure, Counter>,
    latency: Family<Function, Histogram, fn() -> Histogram>,
    deploys: Family<Function, Counter>,
    deploys_failed: Counter,
    cold_starts: Family<Function, Counter>,
    cold_start_seconds: Family<Function, Seconds>,
    restarts: Family<Function, Counter>,
    idle_stops: Family<Function, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            invocations: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            deploys: Family::default(),
            deploys_failed: Counter::default(),
            cold_starts: Family::default(),
            cold_start_seconds: Family::default(),
            restarts: Family::default(),
            idle_stops: Family::default(),
        };
        let mut registry = Registry::default();
        // Counters are named without `_total`: the encoder adds it.
        registry.register(
            "wasmengine_invocations",
            "Invocations answered, per function",
            m.invocations.clone(),
        );
        registry.register(
            "wasmengine_invocation_errors",
            "Failed invocations, per function and kind",
            m.errors.clone(),
        );
        registry.register(
            "wasmengine_invocation_seconds",
            "Invocation latency at the engine",
            m.latency.clone(),
        );
        registry.register(
            "wasmengine_deploys",
            "Successful deploys",
            m.deploys.clone(),
        );
        registry.register(
            "wasmengine_deploys_failed",
            "Deploys that failed",
            m.deploys_failed.clone(),
        );
        registry.register(
            "wasmengine_cold_starts",
            "Tasks started (deploys and restarts), per function",
            m.cold_starts.clone(),
        );
        registry.register(
            "wasmengine_cold_start_seconds",
            "Time from task creation to ready, summed",
            m.cold_start_seconds.clone(),
        );
        registry.register(
            "wasmengine_task_restarts",
            "Tasks found dead and restarted on invoke",
            m.restarts.clone(),
        );
        registry.register(
            "wasmengine_idle_stops",
            "Tasks stopped after their function's idle period (scaled to zero)",
            m.idle_stops.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn function(name: &str) -> Function {
    Function {
        function: name.to_string(),
    }
}

/// One function's invocation series, looked up once and kept with its handle: a call then
/// counts itself without a look-up by name (series are never removed, so the two stay one).
#[derive(Clone)]
pub struct Invocations {
    function: String,
    count: Counter,
    latency: Histogram,
}

impl Metrics {
    /// One invocation and how long it took; `error` names its failure kind.
    pub fn invocation(&self, name: &str, took: Duration, error: Option<&str>) {
        self.invocations_of(name).record(self, took, error);
    }

    /// `name`'s invocation series.
    pub fn invocations_of(&self, name: &str) -> Invocations {
        let labels = function(name);
        Invocations {
            count: self.invocations.get_or_create(&labels).clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            function: labels.function,
        }
    }

    fn cold_start(&self, labels: &Function, took: Duration) {
        self.cold_starts.get_or_create(labels).inc();
        self.cold_start_seconds
            .get_or_create(labels)
            .inc_by(took.as_secs_f64());
    }

    /// A successful deploy; `took` is deploy request to ready (the cold start).
    pub fn deployed(&self, name: &str, took: Duration) {
        let labels = function(name);
        self.deploys.get_or_create(&labels).inc();
        self.cold_start(&labels, took);
    }

    pub fn deploy_failed(&self) {
        self.deploys_failed.inc();
    }

    /// A task started again (or a function loaded again) for a call after it was idle.
    pub fn woke(&self, name: &str, took: Duration) {
        self.cold_start(&function(name), took);
    }

    /// A task stopped (or a function unloaded) for being idle.
    pub fn scaled_to_zero(&self, name: &str) {
        self.idle_stops.get_or_create(&function(name)).inc();
    }

    /// A task restarted behind a call (a cold start too).
    pub fn restarted(&self, name: &str, took: Duration) {
        let labels = function(name);
        self.restarts.get_or_create(&labels).inc();
        self.cold_start(&labels, took);
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

impl Invocations {
    /// One invocation of this function (see [`Metrics::invocation`]).
    pub fn record(&self, metrics: &Metrics, took: Duration, error: Option<&str>) {
        self.count.inc();
        self.latency.observe(took.as_secs_f64());
        if let Some(kind) = error {
            let failure = Failure {
                function: self.function.clone(),
                kind: kind.to_string(),
            };
            metrics.errors.get_or_create(&failure).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_series_counts_into_the_same_lines() {
        let m = Metrics::default();
        let kept = m.invocations_of("g");
        kept.record(&m, Duration::from_micros(30), None);
        m.invocation("g", Duration::from_micros(30), None);
        kept.record(&m, Duration::from_millis(3), Some("busy"));
        let text = m.render();
        for line in [
            r#"wasmengine_invocations_total{function="g"} 3"#,
            r#"wasmengine_invocation_seconds_count{function="g"} 3"#,
            r#"wasmengine_invocation_errors_total{function="g",kind="busy"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn buckets_are_cumulative_and_count_every_call() {
        let m = Metrics::default();
        m.invocation("f", Duration::from_micros(30), None);
        m.invocation("f", Duration::from_millis(3), Some("timeout"));
        m.invocation("f", Duration::from_secs(60), None);
        let text = m.render();
        for line in [
            r#"wasmengine_invocations_total{function="f"} 3"#,
            r#"wasmengine_invocation_seconds_bucket{le="0.00005",function="f"} 1"#,
            r#"wasmengine_invocation_seconds_bucket{le="0.001",function="f"} 1"#,
            r#"wasmengine_invocation_seconds_bucket{le="0.005",function="f"} 2"#,
            r#"wasmengine_invocation_seconds_bucket{le="10.0",function="f"} 2"#,
            r#"wasmengine_invocation_seconds_bucket{le="+Inf",function="f"} 3"#,
            r#"wasmengine_invocation_seconds_count{function="f"} 3"#,
            r#"wasmengine_invocation_errors_total{function="f",kind="timeout"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
