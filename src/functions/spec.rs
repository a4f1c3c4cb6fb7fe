//! The container a function runs in: its OCI runtime spec and labels. The spec is the
//! engine's alone: the image gives the module, its args and its plain environment, never a
//! limit, a privilege or the function's configuration.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Value};
use wasmengine_api::function::{
    FunctionConfig, FunctionLimits, CACHE_DIR_IN_CONTAINER, SOCKET_DIR_IN_CONTAINER, SOCKET_NAME,
};
use wasmengine_api::rest::DeployRequest;

use super::*;
use crate::image::ResolvedImage;

impl Functions {
    /// The OCI runtime spec of a function's container.
    pub(super) fn spec(
        &self,
        req: &DeployRequest,
        image: &ResolvedImage,
        socket_dir: &Path,
    ) -> Value {
        // Every limit is written, defaults included, so nothing is left for the image to set.
        let limits = FunctionLimits {
            timeout_ms: Some(req.limits.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            memory_limit_mb: Some(req.limits.memory_limit_mb.unwrap_or(DEFAULT_MEMORY_MB)),
            fuel: req.limits.fuel,
            max_output_bytes: Some(
                req.limits
                    .max_output_bytes
                    .unwrap_or(DEFAULT_MAX_OUTPUT_BYTES),
            ),
        };
        let config = FunctionConfig {
            name: req.function_name.clone(),
            wasi: Some(req.wasi_cap),
            export: req.export.clone(),
            socket: Some(format!("{SOCKET_DIR_IN_CONTAINER}/{SOCKET_NAME}")),
            listen: None,
            limits,
            concurrency: Some(self.defaults.concurrency),
            cache_dir: Some(CACHE_DIR_IN_CONTAINER.to_string()),
        };
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        // The image's environment reaches the module, but none of its reserved keys: the
        // function's configuration (mode, limits, socket, cache) is the deploy's alone.
        let image_env = image.env.iter().filter(|e| {
            let reserved = e.starts_with(RESERVED_ENV_PREFIX);
            if reserved {
                tracing::warn!(
                    "{}: ignoring the image's {}",
                    req.function_name,
                    e.split('=').next().unwrap_or_default()
                );
            }
            !reserved
        });
        let entries = image_env.cloned().chain(
            req.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(config.to_env()),
        );
        for e in entries {
            if let Some((k, v)) = e.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env.insert(
            wasmengine_api::function::ENV_LOG_LINES.into(),
            self.defaults.log_lines.to_string(),
        );
        env.insert(
            wasmengine_api::function::ENV_BUSY_POLL_US.into(),
            self.defaults.busy_poll_us.to_string(),
        );
        if image.wasm_layer.is_none() {
            env.insert(
                wasmengine_api::function::ENV_IMAGE_LAYERS.into(),
                wasmengine_api::function::IMAGE_LAYERS_NONE.into(),
            );
        }
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let per_call = req.limits.memory_limit_mb.unwrap_or(DEFAULT_MEMORY_MB);
        let cgroup_memory = (per_call * u64::from(self.defaults.concurrency) + 128) * 1024 * 1024;
        let cache = json!({"destination": CACHE_DIR_IN_CONTAINER, "type": "bind",
            "source": self.function_cache_dir(&req.function_name).display().to_string(),
            "options": ["rbind", "rw", "nosuid", "nodev"]});
        container_spec(
            &req.function_name,
            &self.ctd.namespace,
            json!(image.args),
            env,
            // For people and tools reading the spec; the shim itself reads the env above.
            json!({
                LABEL_FUNCTION: req.function_name,
                LABEL_IMAGE: req.function_image,
                LABEL_WASI: req.wasi_cap.to_string(),
                LABEL_LIMITS: serde_json::to_string(&req.limits).unwrap_or_default(),
            }),
            socket_dir,
            Some(cache),
            cgroup_memory,
        )
    }

    /// The OCI runtime spec of a group's container: no module, no rootfs content, the group's
    /// socket directory; its cgroup bounds all its functions' calls together.
    pub(super) fn group_spec(&self, group: &str, socket_dir: &Path) -> Value {
        let concurrency = self.defaults.group_concurrency;
        let config = wasmengine_api::group::GroupConfig {
            socket: format!("{SOCKET_DIR_IN_CONTAINER}/{SOCKET_NAME}"),
            concurrency: Some(concurrency),
        };
        let cgroup_memory = (DEFAULT_MEMORY_MB * u64::from(concurrency) + 256) * 1024 * 1024;
        container_spec(
            group,
            &self.ctd.namespace,
            // Not a path: the shim finds no module file to precompile for it.
            json!(["wasmengine-group"]),
            config
                .to_env()
                .into_iter()
                .chain([
                    format!(
                        "{}={}",
                        wasmengine_api::function::ENV_LOG_LINES,
                        self.defaults.log_lines
                    ),
                    format!(
                        "{}={}",
                        wasmengine_api::function::ENV_BUSY_POLL_US,
                        self.defaults.busy_poll_us
                    ),
                    format!(
                        "{}={}",
                        wasmengine_api::function::ENV_IMAGE_LAYERS,
                        wasmengine_api::function::IMAGE_LAYERS_NONE
                    ),
                ])
                .collect(),
            json!({ groups::LABEL_GROUP_SERVER: group }),
            socket_dir,
            None,
            cgroup_memory,
        )
    }
}

/// What every container of the engine is: no root, no capabilities, seccomp, a read-only
/// rootfs, and the one host directory it may write (`socket_dir`, plus `extra`).
#[allow(clippy::too_many_arguments)]
fn container_spec(
    id: &str,
    namespace: &str,
    args: Value,
    env: Vec<String>,
    annotations: Value,
    socket_dir: &Path,
    extra: Option<Value>,
    cgroup_memory: u64,
) -> Value {
    // Only what the function's process uses: its own /proc entries (`subset=pid`: no
    // /proc/sys, /proc/kcore or the like to read or to mask), the devices the runtime
    // creates in /dev, and its socket directory; no /sys, /run, /dev/shm, /dev/mqueue or
    // /dev/pts to reach.
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev", "subset=pid"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=64k"]}),
        json!({"destination": SOCKET_DIR_IN_CONTAINER, "type": "bind",
         "source": socket_dir.display().to_string(), "options": ["rbind", "rw"]}),
    ];
    mounts.extend(extra);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": FUNCTION_UID, "gid": FUNCTION_UID},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": [], "effective": [], "permitted": [], "inheritable": [],
                "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "annotations": annotations,
        "hostname": id,
        "mounts": mounts,
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": cgroup_memory}
            },
            "cgroupsPath": format!("/{namespace}/{id}"),
            "seccomp": seccomp(),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// The uid and gid a function's container runs as: not root, and owner of nothing but its
/// function's socket and cache directories.
pub const FUNCTION_UID: u32 = 65532;

/// Syscalls a function's process never needs, refused with EPERM. `execve` first: the process
/// is the shim's Wasm runtime, and nothing else may run in a function's container, even if
/// its image holds a native program. The others would reach the kernel's global state.
const DENIED_SYSCALLS: &[&str] = &[
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "syslog",
    "userfaultfd",
    "fanotify_init",
    "iopl",
    "ioperm",
    "move_pages",
    "migrate_pages",
    "vhangup",
];

fn seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    })
}

pub(super) fn labels(req: &DeployRequest, image: &ResolvedImage) -> HashMap<String, String> {
    let mut l = HashMap::new();
    l.insert(LABEL_FUNCTION.to_string(), req.function_name.clone());
    l.insert(LABEL_IMAGE.to_string(), req.function_image.clone());
    l.insert(
        LABEL_IMAGE_DIGEST.to_string(),
        image.manifest_digest.clone(),
    );
    l.insert(LABEL_WASI.to_string(), req.wasi_cap.to_string());
    if let Some(e) = &req.export {
        l.insert(LABEL_EXPORT.to_string(), e.clone());
    }
    l.insert(
        LABEL_LIMITS.to_string(),
        serde_json::to_string(&req.limits).unwrap(),
    );
    if let Some(secs) = req.idle_timeout_secs {
        l.insert(LABEL_IDLE_TIMEOUT.to_string(), secs.to_string());
    }
    if !req.calls.is_empty() {
        l.insert(LABEL_CALLS.to_string(), req.calls.join(","));
    }
    l
}
