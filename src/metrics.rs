//! Prometheus text metrics: invocations, errors by kind, latency, deploys and cold starts,
//! per function.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the invocation latency histogram.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    functions: BTreeMap<String, PerFunction>,
    deploys_failed: u64,
}

#[derive(Default)]
struct PerFunction {
    invocations: u64,
    errors: BTreeMap<String, u64>,
    buckets: Vec<u64>,
    latency_sum: f64,
    deploys: u64,
    cold_starts: u64,
    cold_start_seconds: f64,
    restarts: u64,
    idle_stops: u64,
}

impl Metrics {
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut PerFunction) -> T) -> T {
        let mut inner = self.inner.lock().unwrap();
        let entry = inner.functions.entry(name.to_string()).or_default();
        if entry.buckets.is_empty() {
            entry.buckets = vec![0; BUCKETS.len()];
        }
        f(entry)
    }

    /// One invocation and how long it took; `error` names its failure kind.
    pub fn invocation(&self, name: &str, took: Duration, error: Option<&str>) {
        let secs = took.as_secs_f64();
        self.with(name, |f| {
            f.invocations += 1;
            f.latency_sum += secs;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    f.buckets[i] += 1;
                }
            }
            if let Some(kind) = error {
                *f.errors.entry(kind.to_string()).or_default() += 1;
            }
        });
    }

    /// A successful deploy; `took` is deploy request to ready (the cold start).
    pub fn deployed(&self, name: &str, took: Duration) {
        self.with(name, |f| {
            f.deploys += 1;
            f.cold_starts += 1;
            f.cold_start_seconds += took.as_secs_f64();
        });
    }

    pub fn deploy_failed(&self) {
        self.inner.lock().unwrap().deploys_failed += 1;
    }

    /// A task started again for a call after it was stopped for being idle.
    pub fn woke(&self, name: &str, took: Duration) {
        self.with(name, |f| {
            f.cold_starts += 1;
            f.cold_start_seconds += took.as_secs_f64();
        });
    }

    /// A task stopped for being idle.
    pub fn scaled_to_zero(&self, name: &str) {
        self.with(name, |f| f.idle_stops += 1);
    }

    /// A task restarted behind a call (a cold start too).
    pub fn restarted(&self, name: &str, took: Duration) {
        self.with(name, |f| {
            f.restarts += 1;
            f.cold_starts += 1;
            f.cold_start_seconds += took.as_secs_f64();
        });
    }

    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "wasmengine_invocations_total",
            "counter",
            "Invocations answered, per function.",
        );
        family(
            "wasmengine_invocation_errors_total",
            "counter",
            "Failed invocations, per function and kind.",
        );
        family(
            "wasmengine_invocation_seconds",
            "histogram",
            "Invocation latency at the engine.",
        );
        family("wasmengine_deploys_total", "counter", "Successful deploys.");
        family(
            "wasmengine_deploys_failed_total",
            "counter",
            "Deploys that failed.",
        );
        family(
            "wasmengine_cold_starts_total",
            "counter",
            "Tasks started (deploys and restarts), per function.",
        );
        family(
            "wasmengine_cold_start_seconds_total",
            "counter",
            "Time from task creation to ready, summed.",
        );
        family(
            "wasmengine_task_restarts_total",
            "counter",
            "Tasks found dead and restarted on invoke.",
        );
        family(
            "wasmengine_idle_stops_total",
            "counter",
            "Tasks stopped after their function's idle period (scaled to zero).",
        );
        let _ = writeln!(
            out,
            "wasmengine_deploys_failed_total {}",
            inner.deploys_failed
        );
        for (name, f) in &inner.functions {
            let l = format!("function=\"{name}\"");
            let _ = writeln!(out, "wasmengine_invocations_total{{{l}}} {}", f.invocations);
            for (kind, n) in &f.errors {
                let _ = writeln!(
                    out,
                    "wasmengine_invocation_errors_total{{{l},kind=\"{kind}\"}} {n}"
                );
            }
            for (bound, n) in BUCKETS.iter().zip(&f.buckets) {
                let _ = writeln!(
                    out,
                    "wasmengine_invocation_seconds_bucket{{{l},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "wasmengine_invocation_seconds_bucket{{{l},le=\"+Inf\"}} {}\nwasmengine_invocation_seconds_sum{{{l}}} {}\nwasmengine_invocation_seconds_count{{{l}}} {}",
                f.invocations, f.latency_sum, f.invocations
            );
            let _ = writeln!(out, "wasmengine_deploys_total{{{l}}} {}", f.deploys);
            let _ = writeln!(out, "wasmengine_cold_starts_total{{{l}}} {}", f.cold_starts);
            let _ = writeln!(
                out,
                "wasmengine_cold_start_seconds_total{{{l}}} {}",
                f.cold_start_seconds
            );
            let _ = writeln!(out, "wasmengine_task_restarts_total{{{l}}} {}", f.restarts);
            let _ = writeln!(out, "wasmengine_idle_stops_total{{{l}}} {}", f.idle_stops);
        }
        out
    }
}
