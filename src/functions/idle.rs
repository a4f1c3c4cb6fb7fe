//! Functions scaled to zero: a function not called for its idle period has its task stopped
//! (its container, snapshot and module cache stay), and its next call starts the task again
//! and waits for it, as after a crash. A marker file next to the socket says the task was
//! stopped on purpose, so that the engine's start does not bring it back and `query` says
//! `idle`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Name of the marker file in a function's socket directory.
const IDLE_MARKER: &str = "idle";
/// How often idle functions are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

impl Functions {
    /// Notes a call (or a deploy) of `name` now.
    pub(super) fn touch(&self, name: &str) {
        let now = Instant::now();
        let mut activity = self.activity.lock().unwrap();
        // Every successful call lands here: no new key (an allocation) once the name is known.
        match activity.get_mut(name) {
            Some(last) => *last = now,
            None => {
                activity.insert(name.to_string(), now);
            }
        }
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
            let last = *self
                .activity
                .lock()
                .unwrap()
                .entry(c.id.clone())
                .or_insert(now);
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
        let last = self.activity.lock().unwrap().get(name).copied();
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
