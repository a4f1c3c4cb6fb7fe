//! The embedded default: a private containerd (the system binary) under the engine's data
//! directory, with our runtime's shim on its `PATH`.
//!
//! It is found again after an engine crash (its socket still answers), and stopped when the
//! engine shuts down; function tasks live on in their shims and are picked up by the next
//! containerd started on the same state.
//!
//! Its root (images, snapshots, containers) is under the data directory and survives a
//! reboot; its state (task bundles, shim sockets) is under `/run/wasmengine/`, which a reboot
//! clears as it clears the system containerd's `/run/containerd`. After a reboot the new
//! containerd has no dead tasks to clean up, and the engine starts every function's task
//! again on its first call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::containerd::Containerd;

pub const SYSTEM_SOCKET: &str = "/run/containerd/containerd.sock";

pub struct Embedded {
    pub address: PathBuf,
    pid: i32,
}

/// Whether a containerd answers at `address`.
pub async fn answers(address: &Path) -> bool {
    if !address.exists() {
        return false;
    }
    let Ok(c) = Containerd::new(address, "default") else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), c.version()).await,
        Ok(Ok(_))
    )
}

/// A private containerd's `config.toml` (version 2): its own root, state and sockets; the
/// CRI plugin off (the engine and `ctr` speak to containerd directly).
pub fn config_toml(root: &Path, state: &Path, socket: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "info"
"#,
        root = root.display(),
        state = state.display(),
        sock = socket.display(),
    )
}

/// Where the private containerd of `data_dir` keeps its state: on `/run` (cleared by a
/// reboot), named after the data directory so that two engines' containerds stay apart.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    PathBuf::from("/run/wasmengine").join(format!("containerd-{:08x}", path_hash(&abs)))
}

/// FNV-1a of a path's bytes, cut to 32 bits: how names under `/run` are keyed by a directory
/// (the private containerd's state here; the shim keys its runtime state the same way).
pub fn path_hash(path: &Path) -> u32 {
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
    hash as u32
}

impl Embedded {
    /// Starts (or finds, if one from an earlier run still answers) the private containerd.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Embedded> {
        let dir = data_dir.join("containerd");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let address = dir.join("containerd.sock");
        let pid_file = dir.join("containerd.pid");
        if answers(&address).await {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            tracing::info!(
                "using the private containerd still running at {}",
                address.display()
            );
            return Ok(Embedded { address, pid });
        }
        let config = dir.join("config.toml");
        let state = state_dir(data_dir);
        std::fs::write(&config, config_toml(&dir.join("root"), &state, &address))?;
        // Our shim sits next to this binary (a build tree or an install prefix).
        let exe_dir = std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            exe_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("containerd");
        // Functions run at the nice value the engine started with, not the engine's own.
        crate::priority::start_child_at_start_value(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            // Classic images' modules the shim precompiles stay in the engine's data dir.
            .env("WASMENGINE_SHIM_CACHE_DIR", dir.join("shim-cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start containerd (apt-get install containerd runc)")?;
        let pid = child.id() as i32;
        std::fs::write(&pid_file, pid.to_string())?;
        let start = Instant::now();
        while !answers(&address).await {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "private containerd did not answer within 30 s; see {}",
                    dir.join("containerd.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(
            "started a private containerd (pid {pid}) at {}",
            address.display()
        );
        // Reap it when it exits so it does not linger as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(Embedded { address, pid })
    }

    /// Stops the private containerd (SIGTERM; its shims and tasks keep running).
    pub async fn stop(&self) {
        if self.pid <= 0 {
            return;
        }
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if unsafe { libc::kill(self.pid, 0) } != 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("stopped the private containerd (pid {})", self.pid);
    }
}
