//! WasmEngine patch: a task's runtime state, keyed so that it cannot collide between two
//! containerds, and the cleanup of a task whose shim died.
//!
//! The library kept a container's runtime state (youki's) at
//! `/run/containerd/<runtime>/<namespace>/<id>` whatever containerd's own state directory.
//! Two containerds with one namespace and id then collided, and a shim killed with SIGKILL
//! left the directory behind, so the next create of that id failed. The state now lives
//! under `<namespace>-<hash of the bundle's parent>`: the bundle's parent is containerd's
//! per-namespace task directory, which differs between containerds. At create, state left
//! for the same id is stale (containerd never creates a live id twice) and is removed.
//!
//! `delete` (what containerd runs for a dead shim, at its start too) kills whatever is left
//! in the task's cgroup, removes the cgroup and the runtime state, and never waits long: every
//! wait has a deadline, and what could not be cleaned is logged, not returned as a failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sys::DEFAULT_CONTAINER_ROOT_DIR;

/// How long `delete` waits for killed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

static RUNTIME_NAME: OnceLock<String> = OnceLock::new();

/// Records the runtime's name (`wasmengine`), which names its state directory.
pub(crate) fn set_runtime_name(name: &str) {
    let _ = RUNTIME_NAME.set(name.to_string());
}

fn runtime_name() -> &'static str {
    RUNTIME_NAME.get().map(String::as_str).unwrap_or("runwasi")
}

/// FNV-1a: stable across builds, so a new shim binary finds an old one's state.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The default runtime root of the tasks of `namespace` whose bundle is `bundle`.
pub(crate) fn default_root(runtime: &str, namespace: &str, bundle: &Path) -> PathBuf {
    let key = bundle.parent().unwrap_or(bundle).as_os_str().as_encoded_bytes();
    DEFAULT_CONTAINER_ROOT_DIR
        .join(runtime)
        .join(format!("{namespace}-{:08x}", fnv1a(key) as u32))
}

/// The runtime root for a task, as `determine_rootdir` gives it (an `options.json` root, or
/// the default).
fn root_for(namespace: &str, bundle: &Path) -> PathBuf {
    #[derive(serde::Deserialize)]
    struct Options {
        root: Option<PathBuf>,
    }
    std::fs::read(bundle.join("options.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Options>(&b).ok())
        .and_then(|o| o.root)
        .map(|r| r.join(namespace))
        .unwrap_or_else(|| default_root(runtime_name(), namespace, bundle))
}

/// Removes runtime state that an earlier task of this id left behind (its shim was killed).
pub(crate) fn remove_stale_state(namespace: &str, bundle: &Path, id: &str) {
    let dir = root_for(namespace, bundle).join(id);
    if dir.exists() {
        log::warn!("removing stale runtime state {}", dir.display());
        kill_leftovers(bundle);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            log::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

/// Cleans up after a task whose shim is gone: kills what is left of it, removes its cgroup
/// and its runtime state. Bounded in time; failures are logged.
pub(crate) fn dead_task(namespace: &str, bundle: &Path, id: &str) {
    let dir = root_for(namespace, bundle).join(id);
    kill_leftovers(bundle);
    if dir.exists() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => log::info!("removed runtime state {}", dir.display()),
            Err(e) => log::warn!("cannot remove {}: {e}", dir.display()),
        }
    }
}

/// The shim group a container belongs to: its CRI sandbox, or itself.
pub(crate) fn grouping(bundle: &Path, id: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Spec {
        annotations: Option<std::collections::HashMap<String, String>>,
    }
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Spec>(&b).ok())
        .and_then(|s| s.annotations)
        .and_then(|mut a| a.remove("io.kubernetes.cri.sandbox-id"))
        .unwrap_or_else(|| id.to_string())
}

/// Removes the socket of `grouping`'s shim if a dead shim left it (nothing accepts on it).
/// Left in place, the next start of that shim waits a second for it before replacing it. A
/// live shim's socket (other containers of its group) stays.
pub(crate) fn remove_dead_socket(containerd_address: &str, namespace: &str, grouping: &str) {
    use std::os::unix::fs::FileTypeExt;
    let address = containerd_shim::socket_address(containerd_address, namespace, grouping);
    let path = address.strip_prefix("unix://").unwrap_or(&address);
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    if let Err(e) = std::os::unix::net::UnixStream::connect(path) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            match std::fs::remove_file(path) {
                Ok(()) => log::info!("removed the dead shim socket {path}"),
                Err(e) => log::warn!("cannot remove the dead shim socket {path}: {e}"),
            }
        }
    }
}

/// The cgroup directories of a task (every v1 hierarchy, or the v2 one), from its spec.
fn cgroup_dirs(bundle: &Path) -> Vec<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Spec {
        linux: Option<Linux>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Linux {
        cgroups_path: Option<String>,
    }
    let Some(path) = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Spec>(&b).ok())
        .and_then(|s| s.linux)
        .and_then(|l| l.cgroups_path)
    else {
        return vec![];
    };
    // A systemd path (`slice:prefix:name`) is the systemd manager's to clean.
    if path.contains(':') || path.trim_matches('/').is_empty() {
        return vec![];
    }
    let rel = path.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.join(rel)];
    }
    std::fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join(rel))
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn procs(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the task's cgroup, waits (bounded) for them to go, and removes
/// the cgroup directories.
fn kill_leftovers(bundle: &Path) {
    let dirs = cgroup_dirs(bundle);
    let pids = procs(&dirs);
    let own = std::process::id() as i32;
    for pid in pids.iter().copied().filter(|p| *p > 1 && *p != own) {
        log::info!("killing leftover process {pid} of a dead task");
        // SAFETY: kill(2) has no memory effects.
        unsafe { nix::libc::kill(pid, nix::libc::SIGKILL) };
    }
    let start = Instant::now();
    while !procs(&dirs).is_empty() {
        if start.elapsed() > KILL_WAIT {
            log::warn!("processes of a dead task still there after {KILL_WAIT:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for dir in &dirs {
        if let Err(e) = std::fs::remove_dir(dir) {
            log::warn!("cannot remove cgroup {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_differ_between_containerds() {
        let a = default_root("x", "ns", Path::new("/run/a/io.containerd.runtime.v2.task/ns/id"));
        let b = default_root("x", "ns", Path::new("/run/b/io.containerd.runtime.v2.task/ns/id"));
        let a2 = default_root("x", "ns", Path::new("/run/a/io.containerd.runtime.v2.task/ns/other"));
        assert_ne!(a, b);
        assert_eq!(a, a2);
        assert!(a.starts_with("/run/containerd/x"));
    }
}
