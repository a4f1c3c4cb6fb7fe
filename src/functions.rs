//! Functions as containerd containers of our runtime.
//!
//! - deploy: validate → image (already in containerd, or pulled) → unpack → container with
//!   our labels, a socket directory bind-mounted at `/run/wasmengine`, the function's
//!   configuration as env vars → task → wait for the socket to answer.
//! - invoke: one call over the function's socket; a task found dead is restarted once.
//! - list / query: read back from containerd's containers and our labels (containerd is the
//!   only store: nothing here survives a restart, nothing needs to).
//! - delete: stop the task (SIGTERM, grace, SIGKILL), delete it, the container, its snapshot.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use wasmengine_api::function::{FunctionLimits, ERROR_FILE_NAME, SOCKET_NAME};
use wasmengine_api::invoke::{ErrorCode, InvokeError};
use wasmengine_api::rest::DeployRequest;

use crate::containerd::{Containerd, TaskState};
use crate::error::{ApiError, ApiResult};
use crate::image;
use crate::invoker::Invoker;
use crate::layers::SizeCaps;
use crate::metrics::Metrics;
use crate::reference::Reference;
use crate::registry::Registries;

mod groups;
mod idle;
mod invoke;
mod lifecycle;
mod spec;

use lifecycle::function_owned_dir;
use spec::labels;
pub use spec::FUNCTION_UID;

pub const LABEL_FUNCTION: &str = "io.wasmengine.function";
pub const LABEL_IMAGE: &str = "io.wasmengine.image";
pub const LABEL_IMAGE_DIGEST: &str = "io.wasmengine.image.digest";
pub const LABEL_WASI: &str = "io.wasmengine.wasi";
pub const LABEL_EXPORT: &str = "io.wasmengine.export";
pub const LABEL_LIMITS: &str = "io.wasmengine.limits";
pub const LABEL_SOCKET: &str = "io.wasmengine.socket";
pub const LABEL_IDLE_TIMEOUT: &str = "io.wasmengine.idle-timeout-secs";

/// How long a new task may take to answer its first ping.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM → SIGKILL grace when deleting a function.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// A pull and unpack must finish within this lease's lifetime.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// Default function timeout (the core's), used to bound a call at the engine.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MEMORY_MB: u64 = 256;
const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// Environment names that carry a function's configuration to the shim.
const RESERVED_ENV_PREFIX: &str = "WASMENGINE_";

/// Settings of every function this engine deploys.
#[derive(Debug, Clone)]
pub struct FunctionDefaults {
    /// Calls one function runs at once (more wait their turn in the shim).
    pub concurrency: u32,
    /// How large an image may be.
    pub image_caps: SizeCaps,
    /// Time without calls after which a function's task is stopped (zero: never), unless
    /// its deploy says otherwise.
    pub idle_timeout: Duration,
    /// Tasks created at once, by deploys and restarts together.
    pub parallel_starts: usize,
    /// Functions per group container (0: a container per function).
    pub group_size: usize,
    /// Calls a group runs at once, all its functions together.
    pub group_concurrency: u32,
}

pub struct Functions {
    pub ctd: Containerd,
    registries: Registries,
    socket_root: PathBuf,
    /// Precompiled modules shared by all functions (mounted into each container).
    cache_dir: PathBuf,
    defaults: FunctionDefaults,
    pub metrics: Arc<Metrics>,
    handles: Mutex<HashMap<String, Arc<Handle>>>,
    deploying: Mutex<HashSet<String>>,
    /// One lock per image being pulled: deploys of the same image share one pull.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bounds the tasks being created at once (containerd and the node start each shim).
    task_starts: tokio::sync::Semaphore,
    /// When each function was last called (or deployed, or first seen by this engine).
    activity: Mutex<HashMap<String, Instant>>,
    groups: groups::Groups,
}

/// What invoke needs of a deployed function, cached after the first look-up.
struct Handle {
    invoker: Invoker,
    /// Bound on one call at the engine: the function's timeout plus slack.
    call_timeout: Duration,
    /// The function's own timeout: the longest a call waits for one of its slots.
    timeout: Duration,
    restart: tokio::sync::Mutex<()>,
    /// The group that serves the function, if it is grouped.
    group: Option<String>,
}

/// A deployed function, as containerd describes it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub wasi: bool,
    pub export: Option<String>,
    pub limits: FunctionLimits,
    pub created: Option<SystemTime>,
    pub state: TaskState,
    /// Its task was stopped for being idle; the next call starts it.
    pub idle: bool,
    /// Its idle period from the deploy, in seconds (absent: the engine's).
    pub idle_timeout_secs: Option<u64>,
}

impl FunctionInfo {
    /// The original list fields.
    pub fn summary(&self) -> Value {
        json!({"func_name": self.name, "func_image_name": self.image, "wasi_cap": self.wasi})
    }

    /// The query fields: the original ones and what containerd knows.
    pub fn detail(&self) -> Value {
        let mut v = self.summary();
        v["image_digest"] = json!(self.image_digest);
        v["export"] = json!(self.export);
        v["limits"] = json!(self.limits);
        v["status"] = if self.idle && self.state != TaskState::Running {
            json!("idle")
        } else {
            json!(self.state.as_str())
        };
        if let Some(secs) = self.idle_timeout_secs {
            v["idle_timeout_secs"] = json!(secs);
        }
        if let TaskState::Stopped(code) = self.state {
            v["exit_status"] = json!(code);
        }
        v["created"] = json!(self.created.map(crate::containerd::humantime_rfc3339));
        v
    }
}

/// How long each stage of a deploy (or a task start) took, for the debug log.
pub(crate) struct Stages {
    last: Instant,
    parts: Vec<(&'static str, Duration)>,
}

impl Stages {
    pub(crate) fn new() -> Stages {
        Stages {
            last: Instant::now(),
            parts: Vec::new(),
        }
    }

    /// Ends the stage called `name` now.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, took)) in self.parts.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.1} ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// Removes a name from the in-flight deploys when the deploy ends, however it ends.
struct DeployClaim<'a>(&'a Functions, String);

impl Drop for DeployClaim<'_> {
    fn drop(&mut self) {
        self.0.deploying.lock().unwrap().remove(&self.1);
    }
}

pub fn validate_name(name: &str) -> ApiResult<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid function_name {name:?}: 1 to 63 characters of [a-z0-9_-], starting with a letter or digit"
        )))
    }
}

impl Functions {
    pub fn new(
        ctd: Containerd,
        registries: Registries,
        data_dir: &Path,
        defaults: FunctionDefaults,
        metrics: Arc<Metrics>,
    ) -> Functions {
        Functions {
            ctd,
            registries,
            socket_root: data_dir.join("fn"),
            cache_dir: data_dir.join("cache"),
            metrics,
            handles: Mutex::new(HashMap::new()),
            deploying: Mutex::new(HashSet::new()),
            pulls: Mutex::new(HashMap::new()),
            task_starts: tokio::sync::Semaphore::new(defaults.parallel_starts.max(1)),
            defaults,
            activity: Mutex::new(HashMap::new()),
            groups: groups::Groups::default(),
        }
    }

    fn socket_dir(&self, name: &str) -> PathBuf {
        self.socket_root.join(name)
    }

    /// A function's own module cache: written by its container alone, so that no function
    /// can plant code another one loads.
    fn function_cache_dir(&self, name: &str) -> PathBuf {
        self.cache_dir.join(name)
    }

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

    async fn deploy_inner(&self, req: &DeployRequest) -> ApiResult<()> {
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
        self.ctd.delete_lease(&lease).await;
        result
    }

    async fn deploy_leased(
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
            self.handles.lock().unwrap().remove(name);
            tracing::debug!("deploy {name}: {stages}");
            return Ok(());
        }
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
        self.handles.lock().unwrap().remove(name);
        tracing::debug!("deploy {name}: {stages}");
        Ok(())
    }

    /// The image record for `reference`: one containerd already has (as written, or
    /// normalised), else pulled from the registry. Concurrent deploys of one image wait for
    /// the first one's pull and then find its record.
    async fn find_or_pull(
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

    async fn find_image(
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

    async fn pull(
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
    async fn start_task(
        &self,
        name: &str,
        mounts: Vec<containerd_client::types::Mount>,
        stages: &mut Stages,
    ) -> ApiResult<()> {
        let start = Instant::now();
        {
            let _slot = self.task_starts.acquire().await.expect("never closed");
            stages.mark("queued");
            self.ctd.create_task(name, mounts).await?;
            stages.mark("task create");
            self.ctd.start_task(name).await?;
            stages.mark("task start");
        }
        let invoker = Invoker::new(&self.socket_dir(name).join(SOCKET_NAME), 0, 1);
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
            tokio::time::sleep(Duration::from_millis(if polls < 200 { 2 } else { 20 })).await;
        }
    }

    /// Best-effort removal of what a function consists of.
    async fn remove(&self, name: &str, snapshot_key: &str) {
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
        self.handles.lock().unwrap().remove(name);
        self.activity.lock().unwrap().remove(name);
    }

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
        let handle = self.handles.lock().unwrap().get(name).cloned();
        let _lifecycle = match &handle {
            Some(h) => Some(h.restart.lock().await),
            None => None,
        };
        let group = container.labels.get(groups::LABEL_GROUP);
        match group {
            Some(group) => self.unload_from_group(name, group).await,
            None => self.ctd.stop_task(name, STOP_GRACE).await?,
        }
        self.ctd.delete_container(name).await?;
        if !container.snapshot_key.is_empty() {
            self.ctd.remove_snapshot(&container.snapshot_key).await?;
        }
        let _ = std::fs::remove_dir_all(self.socket_dir(name));
        let _ = std::fs::remove_dir_all(self.function_cache_dir(name));
        self.handles.lock().unwrap().remove(name);
        if let Some(group) = group {
            self.leave_group(name, group).await;
        }
        tracing::info!("deleted {name}");
        Ok(())
    }

    pub async fn list(&self) -> ApiResult<Vec<FunctionInfo>> {
        let containers = self.ctd.containers_with_label(LABEL_FUNCTION).await?;
        let mut out = Vec::new();
        for c in containers {
            out.push(self.info(c, false).await?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn query(&self, name: &str) -> ApiResult<FunctionInfo> {
        validate_name(name)?;
        match self.ctd.container(name).await? {
            Some(c) if c.labels.contains_key(LABEL_FUNCTION) => self.info(c, true).await,
            _ => Err(ApiError::not_found(format!(
                "function {name} is not deployed"
            ))),
        }
    }

    async fn info(
        &self,
        c: containerd_client::services::v1::Container,
        with_state: bool,
    ) -> ApiResult<FunctionInfo> {
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let state = if with_state {
            // A grouped function runs while its group does and holds it.
            match c.labels.get(groups::LABEL_GROUP) {
                Some(_) if self.is_idle(&c.id) => TaskState::Other,
                Some(group) => self.ctd.task_state(group).await?,
                None => self.ctd.task_state(&c.id).await?,
            }
        } else {
            TaskState::Other
        };
        Ok(FunctionInfo {
            name: c.id.clone(),
            image: label(LABEL_IMAGE),
            image_digest: label(LABEL_IMAGE_DIGEST),
            wasi: label(LABEL_WASI) == "true",
            export: c.labels.get(LABEL_EXPORT).cloned(),
            limits: serde_json::from_str(&label(LABEL_LIMITS)).unwrap_or_default(),
            created: c.created_at.and_then(|t| SystemTime::try_from(t).ok()),
            state,
            idle: self.is_idle(&c.id),
            idle_timeout_secs: c
                .labels
                .get(LABEL_IDLE_TIMEOUT)
                .and_then(|v| v.parse().ok()),
        })
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
    fn names() {
        for good in ["a", "gcd", "echo-string", "fn_1", "0x", &"a".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a/b", "a b", &"a".repeat(64)] {
            assert_eq!(validate_name(bad).unwrap_err().status, 400, "{bad}");
        }
    }

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
