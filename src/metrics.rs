//! Prometheus text metrics: invocations, errors by kind, latency, deploys and cold starts,
//! per function.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the invocation latency histogram.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Counters per function behind a read lock: a call of a function that has its series takes
/// no lock for writing and adds to atomics, so concurrent calls do not queue here.
#[derive(Default)]
pub struct Metrics {
    functions: RwLock<BTreeMap<String, Arc<PerFunction>>>,
    deploys_failed: AtomicU64,
}

#[derive(Default)]
struct PerFunction {
    /// Failures by kind: rare, so a mutex.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Calls per bucket (not cumulative: summed up when rendered); the last is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_nanos: AtomicU64,
    deploys: AtomicU64,
    cold_starts: AtomicU64,
    cold_start_nanos: AtomicU64,
    restarts: AtomicU64,
    idle_stops: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn secs(nanos: &AtomicU64) -> f64 {
    nanos.load(Relaxed) as f64 / 1e9
}

impl Metrics {
    fn function(&self, name: &str) -> Arc<PerFunction> {
        if let Some(f) = self.functions.read().unwrap().get(name) {
            return f.clone();
        }
        self.functions
            .write()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// One invocation and how long it took; `error` names its failure kind.
    pub fn invocation(&self, name: &str, took: Duration, error: Option<&str>) {
        let f = self.function(name);
        f.latency_nanos.fetch_add(nanos(took), Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        f.buckets[bucket].fetch_add(1, Relaxed);
        if let Some(kind) = error {
            *f.errors
                .lock()
                .unwrap()
                .entry(kind.to_string())
                .or_default() += 1;
        }
    }

    fn cold_start(f: &PerFunction, took: Duration) {
        f.cold_starts.fetch_add(1, Relaxed);
        f.cold_start_nanos.fetch_add(nanos(took), Relaxed);
    }

    /// A successful deploy; `took` is deploy request to ready (the cold start).
    pub fn deployed(&self, name: &str, took: Duration) {
        let f = self.function(name);
        f.deploys.fetch_add(1, Relaxed);
        Self::cold_start(&f, took);
    }

    pub fn deploy_failed(&self) {
        self.deploys_failed.fetch_add(1, Relaxed);
    }

    /// A task started again (or a function loaded again) for a call after it was idle.
    pub fn woke(&self, name: &str, took: Duration) {
        Self::cold_start(&self.function(name), took);
    }

    /// A task stopped (or a function unloaded) for being idle.
    pub fn scaled_to_zero(&self, name: &str) {
        self.function(name).idle_stops.fetch_add(1, Relaxed);
    }

    /// A task restarted behind a call (a cold start too).
    pub fn restarted(&self, name: &str, took: Duration) {
        let f = self.function(name);
        f.restarts.fetch_add(1, Relaxed);
        Self::cold_start(&f, took);
    }

    pub fn render(&self) -> String {
        let functions = self.functions.read().unwrap();
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
            self.deploys_failed.load(Relaxed)
        );
        for (name, f) in functions.iter() {
            let l = format!("function=\"{name}\"");
            // Read once: the count and the +Inf bucket agree even while calls come in.
            let counts: Vec<u64> = f.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let invocations: u64 = counts.iter().sum();
            let _ = writeln!(out, "wasmengine_invocations_total{{{l}}} {invocations}");
            for (kind, n) in f.errors.lock().unwrap().iter() {
                let _ = writeln!(
                    out,
                    "wasmengine_invocation_errors_total{{{l},kind=\"{kind}\"}} {n}"
                );
            }
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "wasmengine_invocation_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "wasmengine_invocation_seconds_bucket{{{l},le=\"+Inf\"}} {invocations}\nwasmengine_invocation_seconds_sum{{{l}}} {}\nwasmengine_invocation_seconds_count{{{l}}} {invocations}",
                secs(&f.latency_nanos)
            );
            let n = |c: &AtomicU64| c.load(Relaxed);
            let _ = writeln!(out, "wasmengine_deploys_total{{{l}}} {}", n(&f.deploys));
            let _ = writeln!(
                out,
                "wasmengine_cold_starts_total{{{l}}} {}",
                n(&f.cold_starts)
            );
            let _ = writeln!(
                out,
                "wasmengine_cold_start_seconds_total{{{l}}} {}",
                secs(&f.cold_start_nanos)
            );
            let _ = writeln!(
                out,
                "wasmengine_task_restarts_total{{{l}}} {}",
                n(&f.restarts)
            );
            let _ = writeln!(
                out,
                "wasmengine_idle_stops_total{{{l}}} {}",
                n(&f.idle_stops)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_every_call() {
        let m = Metrics::default();
        m.invocation("f", Duration::from_micros(30), None);
        m.invocation("f", Duration::from_millis(3), Some("timeout"));
        m.invocation("f", Duration::from_secs(60), None);
        let text = m.render();
        for line in [
            r#"wasmengine_invocations_total{function="f"} 3"#,
            r#"wasmengine_invocation_seconds_bucket{function="f",le="0.00005"} 1"#,
            r#"wasmengine_invocation_seconds_bucket{function="f",le="0.001"} 1"#,
            r#"wasmengine_invocation_seconds_bucket{function="f",le="0.005"} 2"#,
            r#"wasmengine_invocation_seconds_bucket{function="f",le="10"} 2"#,
            r#"wasmengine_invocation_seconds_bucket{function="f",le="+Inf"} 3"#,
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
