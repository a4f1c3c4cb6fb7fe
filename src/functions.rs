//! Functions as containerd containers of our runtime. This file holds the state and the
//! types; each job is a file of its own:
//!
//! - `deploy`: validate → image (already in containerd, or pulled) → unpack → container with
//!   our labels, a socket directory bind-mounted at `/run/wasmengine`, the function's
//!   configuration as env vars → task → wait for the socket to answer.
//! - `groups`: with `--group-size`, functions share group containers instead (one shim, one
//!   process, one wasmtime engine per group).
//! - `invoke`: one call over the function's socket (or its group's); a task found dead is
//!   restarted once.
//! - `nested`: a function's calls to other functions, checked and run as invokes.
//! - `lifecycle`: restarts (on a call, or for every function at engine start) and delete.
//! - `idle`: functions not called for their idle period are scaled to zero.
//! - `logs`: a function's log, read from its task (or its group's).
//! - `info`: list / query, read back from containerd's containers and our labels (containerd
//!   is the only store: nothing here survives a restart, nothing needs to).
//! - `spec`: the OCI runtime spec and labels of a function's (or a group's) container.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
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

mod deploy;
mod dir_watch;
mod groups;
mod idle;
mod info;
mod invoke;
mod lifecycle;
mod logs;
mod nested;
mod spec;

pub use info::FunctionInfo;

use lifecycle::function_owned_dir;
use nested::calls_of;
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
/// The functions a function may call (`calls` of its deploy), comma-separated.
pub const LABEL_CALLS: &str = "io.wasmengine.calls";

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
/// Most functions one deploy may list in `calls`.
const MAX_CALLEES: usize = 64;
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
    /// Keep a group with room started ahead of deploys.
    pub spare_group: bool,
    /// Calls a group runs at once, all its functions together.
    pub group_concurrency: u32,
    /// Log lines each function keeps (in its task).
    pub log_lines: u32,
    /// How long a function's process polls for its next request, in microseconds.
    pub busy_poll_us: u32,
    /// How deep calls between functions may nest.
    pub max_call_depth: u32,
}

pub struct Functions {
    pub ctd: Containerd,
    registries: Registries,
    socket_root: PathBuf,
    /// Precompiled modules shared by all functions (mounted into each container).
    cache_dir: PathBuf,
    defaults: FunctionDefaults,
    pub metrics: Arc<Metrics>,
    /// Read on every call, written when a function's handle is made or dropped.
    handles: RwLock<HashMap<String, Arc<Handle>>>,
    deploying: Mutex<HashSet<String>>,
    /// One lock per image being pulled: deploys of the same image share one pull.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bounds the tasks being created at once (containerd and the node start each shim).
    task_starts: tokio::sync::Semaphore,
    /// When each function was last called (or deployed, or first seen by this engine); a
    /// function's handle holds its clock too, so a call sets it without this lock.
    activity: Mutex<HashMap<String, Arc<idle::Clock>>>,
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
    /// The functions it may call.
    calls: Vec<String>,
    /// Its invocation metrics.
    invocations: crate::metrics::Invocations,
    /// When it was last called (its clock in `activity`).
    activity: Arc<idle::Clock>,
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
            handles: RwLock::new(HashMap::new()),
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
}
