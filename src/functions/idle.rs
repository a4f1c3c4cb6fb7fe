//! Functions scaled to zero: a function not called for its idle period has its task stopped
//! (its container, snapshot and module cache stay), and its next call starts the task again
//! and waits for it, as after a crash. A marker file next to the socket says the task was
//! stopped on purpose, so that the engine's start does not bring it back and `query` says
//! `idle`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use super::*;

/// Name of the marker file in a function's socket directory.
const IDLE_MARKER: &str = "idle";
/// How often idle functions are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A function's last activity: set by every call (an atomic store, no lock), read by the
/// idle sweep.
#[derive(Debug)]
pub(super) struct Clock(AtomicU64);

/// What clocks count from: microseconds since the engine's first look at a clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock {
    fn new(at: Instant) -> Clock {
        let clock = Clock(AtomicU64::new(0));
        clock.set(at);
        clock
    }

    pub(super) fn set(&self, at: Instant) {
        let since = at.saturating_duration_since(*EPOCH).as_micros() as u64;
        self.0.fetch_max(since, Ordering::Relaxed);
    }

    fn get(&self) -> Instant {
        *EPOCH + Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

impl Functions {
    /// `name`'s clock, started now if the engine had none for it.
    pub(super) fn clock(&self, name: &str) -> Arc<Clock> {
        let mut activity = self.activity.lock().unwrap();
        match activity.get(name) {
            Some(clock) => clock.clone(),
            None => {
                let clock = Arc::new(Clock::new(Instant::now()));
                activity.insert(name.to_string(), clock.clone());
                clock
            }
        }
    }

    /// Notes a call (or a deploy) of `name` now.
    pub(super) fn touch(&self, name: &str) {
        self.clock(name).set(Instant::now());
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.socket_dir(name).join(IDLE_MARKER)
    }

    /// Whether `name`'s task was stopped for being idle (and not started since).
    pub(super) fn is_idle(&self, name: &str) -> bool {
        self.marker(name).exists()
    }

    /// After a task start: the function is no longer idle.
    pub(super) fn clear_idle(&self, name: &str) {
        let _ = std::fs::remove_file(self.marker(name));
    }

    /// `name`'s idle period: its deploy's, else the engine's; `None` if it never idles.
    fn idle_period(&self, labels: &HashMap<String, String>) -> Option<Duration> {
        let period = labels
            .get(LABEL_IDLE_TIMEOUT)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(self.defaults.idle_timeout);
        (!period.is_zero()).then_some(period)
    }

    /// Runs for the engine's life: stops the task of every function idle for its period.
    pub async fn scale_idle_to_zero(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            if let Err(e) = self.sweep().await {
                tracing::debug!("idle sweep: {e}");
            }
        }
    }

    async fn sweep(&self) -> ApiResult<()> {
        let containers = self.ctd.containers_with_label(LABEL_FUNCTION).await?;
        let now = Instant::now();
        for c in containers {
            let Some(period) = self.idle_period(&c.labels) else {
                continue;
            };
            // A function this engine has not seen called counts from when it first saw it.
            let last = self.clock(&c.id).get();
            if now.duration_since(last) < period || self.is_idle(&c.id) {
                continue;
            }
            if let Err(e) = self.stop_idle(&c.id, period).await {
                tracing::warn!("function {}: cannot scale to zero: {e}", c.id);
            }
        }
        Ok(())
    }

    /// Stops `name`'s task unless a call is running or waiting, or came in meanwhile.
    async fn stop_idle(&self, name: &str, period: Duration) -> ApiResult<()> {
        let handle = self.handle(name).await?;
        let _guard = handle.restart.lock().await;
        // Every slot held: no call runs while the task stops, and calls that come meanwhile
        // wait, then start the task again.
        let Some(_slots) = handle.invoker.hold_all() else {
            return Ok(());
        };
        let last = self.activity.lock().unwrap().get(name).map(|c| c.get());
        if last.is_some_and(|l| l.elapsed() < period) {
            return Ok(());
        }
        if let Some(group) = &handle.group {
            std::fs::write(self.marker(name), b"")
                .map_err(|e| ApiError::internal(format!("mark {name} idle: {e}")))?;
            // Counted as soon as it shows as idle (the unload is best effort and takes a
            // request to the group).
            self.metrics.scaled_to_zero(name);
            self.unload_from_group(name, group, false).await;
            tracing::info!("function {name}: no call for {period:?}, unloaded from {group}");
            drop(_slots);
            drop(_guard);
            return self.stop_group_if_idle(group).await;
        }
        if self.ctd.task_state(name).await? != TaskState::Running {
            return Ok(());
        }
        // The marker first: a crash between the two leaves an idle function, not a lost one.
        std::fs::write(self.marker(name), b"")
            .map_err(|e| ApiError::internal(format!("mark {name} idle: {e}")))?;
        self.ctd.stop_task(name, STOP_GRACE).await?;
        handle.invoker.reset();
        self.metrics.scaled_to_zero(name);
        tracing::info!("function {name}: no call for {period:?}, task stopped until the next one");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_keeps_the_latest_activity() {
        let start = Instant::now();
        let clock = Clock::new(start);
        let later = start + Duration::from_millis(1500);
        clock.set(later);
        // A call that started earlier but finished after does not move the clock back.
        clock.set(start + Duration::from_millis(20));
        let got = clock.get();
        assert!(
            got >= later - Duration::from_micros(1) && got <= later,
            "{got:?} {later:?}"
        );
    }
}
