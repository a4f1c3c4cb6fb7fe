//! A function's task over its life after deploy: brought back when found dead (on a call,
//! or for every function when the engine starts), with the directories it owns; and its
//! delete (task stopped, container and snapshot deleted).

use std::path::Path;
use std::time::Instant;

use super::*;
use crate::invoker::CallFailure;

/// Functions brought back at once at engine start.
const RESTORE_PARALLEL: usize = 4;

impl Functions {
    /// Brings back every function whose task is not running (after a crash or a reboot),
    /// a few at a time. Calls that arrive meanwhile wait for the same restart.
    pub async fn restore_all(self: Arc<Self>) {
        let containers = match self.ctd.containers_with_label(LABEL_FUNCTION).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("restore: cannot list functions: {e}");
                return;
            }
        };
        let start = Instant::now();
        let names: Vec<String> = containers.into_iter().map(|c| c.id).collect();
        let total = names.len();
        let queue = Arc::new(Mutex::new(names));
        let mut workers = Vec::new();
        for _ in 0..RESTORE_PARALLEL {
            let (this, queue) = (self.clone(), queue.clone());
            workers.push(tokio::spawn(async move {
                let mut restored = 0usize;
                loop {
                    let Some(name) = queue.lock().unwrap().pop() else {
                        return restored;
                    };
                    match this.restore(&name).await {
                        Ok(true) => restored += 1,
                        Ok(false) => {}
                        Err(e) => tracing::warn!("restore {name}: {e}"),
                    }
                }
            }));
        }
        let mut restored = 0;
        for w in workers {
            restored += w.await.unwrap_or(0);
        }
        if restored > 0 {
            tracing::info!(
                "restored {restored} of {total} functions in {:?}",
                start.elapsed()
            );
        }
    }

    /// Starts `name`'s task if it is not running; whether it did.
    async fn restore(&self, name: &str) -> ApiResult<bool> {
        // Stopped for being idle: its next call starts it.
        if self.is_idle(name) {
            return Ok(false);
        }
        let handle = self.handle(name).await?;
        if let Some(group) = &handle.group {
            // Its group's task, and the function loaded in it, so that its first call after
            // a reboot does not wait for either.
            let _guard = handle.restart.lock().await;
            self.ensure_group(group).await?;
            if self.group_holds(name, group).await {
                return Ok(false);
            }
            self.load_into_group(name, group).await?;
            return Ok(true);
        }
        if self.ctd.task_state(name).await? == TaskState::Running {
            return Ok(false);
        }
        let _guard = handle.restart.lock().await;
        if self.ctd.task_state(name).await? == TaskState::Running {
            return Ok(false);
        }
        handle.invoker.reset();
        self.restart_task(name, "restore at start").await?;
        Ok(true)
    }

    /// After a failed call: if the task is not running, restart it (once, whoever gets here
    /// first); if it is running, the call failure stands.
    pub(super) async fn revive(
        &self,
        name: &str,
        handle: &Handle,
        failure: &CallFailure,
    ) -> ApiResult<()> {
        let _guard = handle.restart.lock().await;
        if let Some(group) = &handle.group {
            return self.revive_grouped(name, group, failure).await;
        }
        handle.invoker.reset();
        if handle.invoker.ready().await {
            return Ok(()); // someone else restarted it meanwhile
        }
        let state = self.ctd.task_state(name).await?;
        if state == TaskState::Running {
            return Err(ApiError::unavailable(format!(
                "function {name} is running but not answering: {failure}"
            )));
        }
        if self.is_idle(name) {
            return self.restart_task(name, "start after idle").await;
        }
        tracing::warn!(
            "function {name}: task {} ({failure}); restarting it",
            state.as_str()
        );
        self.restart_task(name, "restart").await
    }

    /// After a failed call of a grouped function: its group started again if its task is
    /// gone, the function loaded again if the group does not hold it.
    async fn revive_grouped(
        &self,
        name: &str,
        group: &str,
        failure: &CallFailure,
    ) -> ApiResult<()> {
        let start = Instant::now();
        let woke = self.is_idle(name);
        // Not idle from here: its group is not stopped for being idle while it comes back.
        if woke {
            self.clear_idle(name);
        }
        if !matches!(failure, CallFailure::NotLoaded) {
            tracing::warn!("function {name}: {failure}; making sure {group} runs");
            self.ensure_group(group).await?;
        }
        if self.group_holds(name, group).await {
            return Ok(()); // someone else loaded it meanwhile
        }
        self.load_into_group(name, group).await?;
        if woke {
            self.metrics.woke(name, start.elapsed());
        } else {
            self.metrics.restarted(name, start.elapsed());
        }
        tracing::info!(
            "function {name}: loaded into {group} again in {:?}",
            start.elapsed()
        );
        Ok(())
    }

    /// Replaces `name`'s task with a new one and waits until it answers.
    async fn restart_task(&self, name: &str, why: &str) -> ApiResult<()> {
        let container = self
            .ctd
            .container(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("function {name} is not deployed")))?;
        let start = Instant::now();
        let woke = self.is_idle(name);
        self.ctd.stop_task(name, STOP_GRACE).await?;
        for d in [&self.socket_dir(name), &self.function_cache_dir(name)] {
            function_owned_dir(d)?;
        }
        let mounts = self.ctd.snapshot_mounts(&container.snapshot_key).await?;
        let stages = self.start_new_task(name, mounts).await?;
        tracing::debug!("{name}: {why}: {stages}");
        if woke {
            self.metrics.woke(name, start.elapsed());
        } else {
            self.metrics.restarted(name, start.elapsed());
        }
        tracing::info!("function {name}: {why} took {:?}", start.elapsed());
        Ok(())
    }
}

impl Functions {
    pub async fn delete(&self, name: &str) -> ApiResult<()> {
        validate_name(name)?;
        let Some(container) = self.ctd.container(name).await? else {
            return Err(ApiError::not_found(format!(
                "function {name} is not deployed"
            )));
        };
        if !container.labels.contains_key(LABEL_FUNCTION) {
            return Err(ApiError::not_found(format!(
                "container {name} is not a function of this engine"
            )));
        }
        // A restart or an idle stop of this function in progress ends first: both stop its
        // task too, and a container cannot be deleted while its task is being torn down.
        let handle = self.handles.read().unwrap().get(name).cloned();
        let _lifecycle = match &handle {
            Some(h) => Some(h.restart.lock().await),
            None => None,
        };
        let group = container.labels.get(groups::LABEL_GROUP);
        match group {
            Some(group) => self.unload_from_group(name, group, true).await,
            None => self.ctd.stop_task(name, STOP_GRACE).await?,
        }
        self.ctd.delete_container(name).await?;
        if !container.snapshot_key.is_empty() {
            self.ctd.remove_snapshot(&container.snapshot_key).await?;
        }
        let _ = std::fs::remove_dir_all(self.socket_dir(name));
        let _ = std::fs::remove_dir_all(self.function_cache_dir(name));
        self.handles.write().unwrap().remove(name);
        if let Some(group) = group {
            self.leave_group(name, group).await;
        }
        tracing::info!("deleted {name}");
        Ok(())
    }

    /// Starts a task for container `id` whose old task was stopped, and waits until it
    /// answers. A task that containerd is still tearing down (an engine killed mid-stop, a
    /// dead shim being cleaned up) makes the create fail with 409: it is deleted for good and
    /// the start tried once more.
    pub(super) async fn start_new_task(
        &self,
        id: &str,
        mounts: Vec<containerd_client::types::Mount>,
    ) -> ApiResult<Stages> {
        let mut stages = Stages::new();
        if let Err(e) = self.start_task(id, mounts.clone(), &mut stages).await {
            if e.status != 409 {
                return Err(e);
            }
            tracing::info!("{id}: {e}; removing the old task and starting again");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            self.ctd.stop_task(id, STOP_GRACE).await?;
            stages = Stages::new();
            self.start_task(id, mounts, &mut stages).await?;
        }
        Ok(stages)
    }
}

/// Makes `dir` (and its parents) and gives it to the function's uid, mode 0700: the one
/// place on the host a function's container may write.
pub(super) fn function_owned_dir(dir: &Path) -> ApiResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| ApiError::internal(format!("prepare {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    // Not through a symlink: the directory is the container's to write.
    if std::fs::symlink_metadata(dir)
        .map_err(fail)?
        .file_type()
        .is_symlink()
    {
        return Err(fail(std::io::Error::other("is a symlink")));
    }
    std::os::unix::fs::chown(dir, Some(FUNCTION_UID), Some(FUNCTION_UID)).map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}
