//! Deploy: validate → image (already in containerd, or pulled; pulls of one image shared) →
//! unpack → container with our labels and spec → task → wait until the function answers. A
//! grouped function goes into its group instead (`groups.rs`).

use super::*;

/// Removes a name from the in-flight deploys when the deploy ends, however it ends.
struct DeployClaim<'a>(&'a Functions, String);

impl Drop for DeployClaim<'_> {
    fn drop(&mut self) {
        self.0.deploying.lock().unwrap().remove(&self.1);
    }
}

impl Functions {
    pub async fn deploy(&self, req: &DeployRequest) -> ApiResult<()> {
        let start = Instant::now();
        let r = self.deploy_inner(req).await;
        match &r {
            Ok(()) => {
                self.metrics.deployed(&req.function_name, start.elapsed());
                tracing::info!(
                    "deployed {} from {} in {:?}",
                    req.function_name,
                    req.function_image,
                    start.elapsed()
                );
            }
            Err(e) => {
                self.metrics.deploy_failed();
                tracing::warn!("deploy {} failed: {e}", req.function_name);
            }
        }
        r
    }

    pub(super) async fn deploy_inner(&self, req: &DeployRequest) -> ApiResult<()> {
        let name = req.function_name.as_str();
        validate_name(name)?;
        let reference = Reference::parse(&req.function_image).map_err(ApiError::bad_request)?;
        if let Some(bad) = req
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.starts_with(RESERVED_ENV_PREFIX))
        {
            return Err(ApiError::bad_request(format!(
                "invalid env name {bad:?} (empty, has '=', or reserved WASMENGINE_ prefix)"
            )));
        }
        if req.limits.timeout_ms == Some(0) || req.limits.memory_limit_mb == Some(0) {
            return Err(ApiError::bad_request(
                "timeout_ms and memory_limit_mb must be positive",
            ));
        }
        if req.export.as_deref().is_some_and(str::is_empty) {
            return Err(ApiError::bad_request("export must not be empty"));
        }
        if req.calls.len() > MAX_CALLEES {
            return Err(ApiError::bad_request(format!(
                "calls names {} functions, at most {MAX_CALLEES}",
                req.calls.len()
            )));
        }
        for callee in &req.calls {
            validate_name(callee)
                .map_err(|e| ApiError::bad_request(format!("calls: {}", e.message)))?;
        }

        if !self.deploying.lock().unwrap().insert(name.to_string()) {
            return Err(ApiError::conflict(format!(
                "function {name} is being deployed by another request"
            )));
        }
        let _claim = DeployClaim(self, name.to_string());
        if self.ctd.container(name).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "function {name} is already deployed"
            )));
        }

        let lease = self.ctd.create_lease(LEASE_TTL).await?;
        let result = self.deploy_leased(req, &reference, &lease).await;
        // What the lease kept from the garbage collector is the container's now (or was
        // removed): ending it is cleanup, a write to containerd's database (a disk flush) that
        // the deploy's answer need not wait for. Should the engine stop first, its TTL ends it.
        let ctd = self.ctd.clone();
        tokio::spawn(async move { ctd.delete_lease(&lease).await });
        result
    }

    pub(super) async fn deploy_leased(
        &self,
        req: &DeployRequest,
        reference: &Reference,
        lease: &str,
    ) -> ApiResult<()> {
        let name = req.function_name.as_str();
        let mut stages = Stages::new();
        let (image_name, target) = self
            .find_or_pull(reference, &req.function_image, lease)
            .await?;
        stages.mark("image");
        let image = image::resolve(&self.ctd, &target, self.defaults.image_caps).await?;
        stages.mark("check");
        if self.grouped(req) {
            self.deploy_grouped(req, &image_name, &image, &mut stages)
                .await?;
            self.handles.write().unwrap().remove(name);
            tracing::debug!("deploy {name}: {stages}");
            return Ok(());
        }
        // A task follows: its cgroup attach finds the kernel's lock ready (see cgroup_warm).
        let _warm = crate::cgroup_warm::hold();
        image::unpack(&self.ctd, &image, lease).await?;
        stages.mark("unpack");

        let dir = self.socket_dir(name);
        for d in [&dir, &self.function_cache_dir(name)] {
            function_owned_dir(d)?;
        }
        let _ = std::fs::remove_file(dir.join(SOCKET_NAME));
        let _ = std::fs::remove_file(dir.join(ERROR_FILE_NAME));

        let snapshot_key = format!("wasmengine-{name}-{}", crate::containerd::unique());
        let mounts = self
            .ctd
            .prepare_snapshot(&snapshot_key, &image.top_chain_id(), Some(lease))
            .await?;
        stages.mark("snapshot");
        let spec = self.spec(req, &image, &dir);
        let mut labels = labels(req, &image);
        labels.insert(
            LABEL_SOCKET.to_string(),
            dir.join(SOCKET_NAME).display().to_string(),
        );
        if let Err(e) = self
            .ctd
            .create_container(name, &image_name, labels, &spec, &snapshot_key)
            .await
        {
            let _ = self.ctd.remove_snapshot(&snapshot_key).await;
            return Err(e);
        }
        stages.mark("container");
        let started = self.start_task(name, mounts, &mut stages).await;
        if let Err(e) = started {
            self.remove(name, &snapshot_key).await;
            return Err(e);
        }
        self.handles.write().unwrap().remove(name);
        tracing::debug!("deploy {name}: {stages}");
        Ok(())
    }

    /// The image record for `reference`: one containerd already has (as written, or
    /// normalised), else pulled from the registry. Concurrent deploys of one image wait for
    /// the first one's pull and then find its record.
    pub(super) async fn find_or_pull(
        &self,
        reference: &Reference,
        as_written: &str,
        lease: &str,
    ) -> ApiResult<(String, containerd_client::types::Descriptor)> {
        let normalised = reference.to_string();
        if let Some(found) = self.find_image(as_written, &normalised).await? {
            return Ok(found);
        }
        let lock = self
            .pulls
            .lock()
            .unwrap()
            .entry(normalised.clone())
            .or_default()
            .clone();
        let _pulling = lock.lock().await;
        let found = self.find_image(as_written, &normalised).await;
        let pulled = match found {
            Ok(Some(found)) => Ok(found),
            Ok(None) => self.pull(reference, &normalised, lease).await,
            Err(e) => Err(e),
        };
        // The last one out removes the lock (a later deploy finds the image, or pulls anew).
        let mut pulls = self.pulls.lock().unwrap();
        if Arc::strong_count(&lock) == 2 {
            pulls.remove(&normalised);
        }
        pulled
    }

    pub(super) async fn find_image(
        &self,
        as_written: &str,
        normalised: &str,
    ) -> ApiResult<Option<(String, containerd_client::types::Descriptor)>> {
        for name in [as_written, normalised] {
            if let Some(img) = self.ctd.image(name).await? {
                if let Some(target) = img.target {
                    return Ok(Some((name.to_string(), target)));
                }
            }
        }
        Ok(None)
    }

    pub(super) async fn pull(
        &self,
        reference: &Reference,
        normalised: &str,
        lease: &str,
    ) -> ApiResult<(String, containerd_client::types::Descriptor)> {
        let normalised = normalised.to_string();
        tracing::info!("pulling {normalised}");
        let target = self
            .registries
            .pull(
                &self.ctd,
                reference,
                &normalised,
                lease,
                self.defaults.image_caps,
            )
            .await?;
        Ok((normalised, target))
    }

    /// Creates and starts the task, then waits for the function to answer.
    pub(super) async fn start_task(
        &self,
        name: &str,
        mounts: Vec<containerd_client::types::Mount>,
        stages: &mut Stages,
    ) -> ApiResult<()> {
        let start = Instant::now();
        // Watched from before the task exists: its socket's creation is the moment to look.
        let socket_dir = self.socket_dir(name);
        let watch = dir_watch::DirWatch::new(&socket_dir)
            .inspect_err(|e| tracing::debug!("watch {}: {e}", socket_dir.display()))
            .ok();
        {
            let _warm = crate::cgroup_warm::hold();
            let _slot = self.task_starts.acquire().await.expect("never closed");
            stages.mark("queued");
            self.ctd.create_task(name, mounts).await?;
            stages.mark("task create");
            self.ctd.start_task(name).await?;
            stages.mark("task start");
        }
        let invoker = Invoker::new(&socket_dir.join(SOCKET_NAME), 0, 1);
        let mut polls = 0u32;
        loop {
            if invoker.ready().await {
                stages.mark("ready");
                self.clear_idle(name);
                self.touch(name);
                return Ok(());
            }
            polls += 1;
            if polls.is_multiple_of(20) {
                if let TaskState::Stopped(code) = self.ctd.task_state(name).await? {
                    let why = read_error_file(&self.socket_dir(name));
                    return Err(exited_before_ready(name, code, why.trim()));
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(ApiError::new(
                    504,
                    format!("function {name} did not become ready within {READY_TIMEOUT:?}"),
                ));
            }
            // Look again when an entry appears in the socket directory, or at the next poll
            // (a socket created but not yet listening is seen by the poll).
            let poll = Duration::from_millis(if polls < 200 { 2 } else { 20 });
            match &watch {
                Some(w) => {
                    w.appeared(poll).await;
                }
                None => tokio::time::sleep(poll).await,
            }
        }
    }

    /// Best-effort removal of what a function consists of.
    pub(super) async fn remove(&self, name: &str, snapshot_key: &str) {
        if let Err(e) = self.ctd.stop_task(name, STOP_GRACE).await {
            tracing::warn!("stop task {name}: {e}");
        }
        if let Err(e) = self.ctd.delete_container(name).await {
            tracing::warn!("delete container {name}: {e}");
        }
        if let Err(e) = self.ctd.remove_snapshot(snapshot_key).await {
            tracing::warn!("remove snapshot {snapshot_key}: {e}");
        }
        let _ = std::fs::remove_dir_all(self.socket_dir(name));
        let _ = std::fs::remove_dir_all(self.function_cache_dir(name));
        self.handles.write().unwrap().remove(name);
        self.activity.lock().unwrap().remove(name);
    }
}

/// Why a function could not start, as its shim left it: read without following a link the
/// container may have put there, and no more than a screenful.
fn read_error_file(dir: &Path) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(ERROR_FILE_NAME))
    {
        if f.metadata().is_ok_and(|m| m.is_file()) {
            let _ = f.take(4096).read_to_string(&mut text);
        }
    }
    text
}

/// A task that stopped before answering: the shim's exit codes say why.
fn exited_before_ready(name: &str, code: u32, why: &str) -> ApiError {
    let why = if why.is_empty() {
        "wrong kind, missing export, or not Wasm".to_string()
    } else {
        why.to_string()
    };
    match code {
        126 => ApiError::unprocessable(format!(
            "function {name}: the image holds no module the runtime can run as this function: {why}"
        )),
        _ => ApiError::internal(format!(
            "function {name} exited with status {code} before it was ready"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_file_is_read_bounded_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "host secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join(ERROR_FILE_NAME))
            .unwrap();
        assert_eq!(read_error_file(dir.path()), "");
        std::fs::remove_file(dir.path().join(ERROR_FILE_NAME)).unwrap();
        std::fs::write(dir.path().join(ERROR_FILE_NAME), "x".repeat(1 << 20)).unwrap();
        assert_eq!(read_error_file(dir.path()).len(), 4096);
    }
}
