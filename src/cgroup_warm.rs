//! Keeps the kernel's cgroup attach lock ready while a task is being created.
//!
//! Creating a task moves the container's first process into its cgroups: the container
//! runtime writes its pid to `cgroup.procs`. The kernel guards every such move with one lock
//! for the whole node (`cgroup_threadgroup_rwsem`, a per-CPU reader/writer lock that keeps
//! forks and exits cheap). A writer that finds it in its reader-friendly state waits for an RCU
//! grace period to switch it over, 10–16 ms on a small VM, a third of a task's creation; after
//! the last writer, the lock stays switched for one more grace period.
//!
//! So while any task is being created, a thread of the engine writes the engine's own pid to
//! the `cgroup.procs` of a cgroup it is already in (a move to where it is: nothing moves) every
//! [`PERIOD`]. The first write pays the grace period alongside the deploy's other stages, and
//! the runtime's moves then find the lock switched. The kernel's `favordynmods` cgroup mount
//! option keeps the lock switched for good; this needs no change to the node, and costs forks
//! and exits on the node the lock's slower read side only while tasks are being created.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Time between writes: well under a grace period.
const PERIOD: Duration = Duration::from_millis(2);

struct Keeper {
    /// Holders of [`Warm`] guards.
    holders: Mutex<usize>,
    wake: Condvar,
}

fn keeper() -> &'static Keeper {
    static KEEPER: OnceLock<&'static Keeper> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let k: &'static Keeper = Box::leak(Box::new(Keeper {
            holders: Mutex::new(0),
            wake: Condvar::new(),
        }));
        let started = std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || run(k));
        if let Err(e) = started {
            tracing::warn!("cannot start the cgroup-warm thread: {e}");
        }
        k
    })
}

/// While held (by any caller), the attach lock is kept ready.
pub struct Warm(());

/// Keeps the attach lock ready until the guard is dropped.
pub fn hold() -> Warm {
    let k = keeper();
    *k.holders.lock().unwrap() += 1;
    k.wake.notify_one();
    Warm(())
}

impl Drop for Warm {
    fn drop(&mut self) {
        *keeper().holders.lock().unwrap() -= 1;
    }
}

fn run(k: &'static Keeper) {
    let Some(file) = own_procs_file() else {
        tracing::debug!("cgroup-warm: no cgroup.procs of the engine's own cgroup to write; off");
        return;
    };
    let pid = std::process::id().to_string();
    tracing::debug!("cgroup-warm: writing to {}", file.display());
    loop {
        {
            let mut n = k.holders.lock().unwrap();
            while *n == 0 {
                n = k.wake.wait(n).unwrap();
            }
        }
        if let Err(e) = std::fs::write(&file, &pid) {
            tracing::debug!("cgroup-warm: {}: {e}; off", file.display());
            return;
        }
        std::thread::sleep(PERIOD);
    }
}

/// The `cgroup.procs` of a cgroup this process is in, one that lists it (so a write of its
/// pid moves nothing), if any is writable here.
pub fn own_procs_file() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let pid = std::process::id().to_string();
    candidates(&own, Path::new("/sys/fs/cgroup"))
        .into_iter()
        .find(|f| {
            std::fs::read_to_string(f).is_ok_and(|procs| procs.lines().any(|l| l == pid))
                && std::fs::OpenOptions::new().write(true).open(f).is_ok()
        })
}

/// Where `/proc/self/cgroup`'s lines (`id:controllers:path`) put this process's
/// `cgroup.procs` files under `root`: v1 hierarchies by controller name, v2 at the root or
/// under `unified`.
fn candidates(proc_cgroup: &str, root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            out.push(root.join(rel).join("cgroup.procs"));
            out.push(root.join("unified").join(rel).join("cgroup.procs"));
        } else {
            for c in controllers.split(',') {
                let dir = c.strip_prefix("name=").unwrap_or(c);
                out.push(root.join(dir).join(rel).join("cgroup.procs"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_v1_and_v2_layouts() {
        let v1 = "9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/\n0::/\n";
        let got = candidates(v1, Path::new("/cg"));
        let want = [
            "/cg/systemd/cgroup.procs",
            "/cg/memory/a/b/cgroup.procs",
            "/cg/cpu/cgroup.procs",
            "/cg/cpuacct/cgroup.procs",
            "/cg/cgroup.procs",
            "/cg/unified/cgroup.procs",
        ];
        assert_eq!(got, want.map(PathBuf::from));
        let v2 = "0::/system.slice/x.service\n";
        assert_eq!(
            candidates(v2, Path::new("/cg"))[0],
            PathBuf::from("/cg/system.slice/x.service/cgroup.procs")
        );
    }

    #[test]
    fn the_write_moves_this_process_nowhere() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        let Some(file) = own_procs_file() else {
            // Without root or a cgroup file system the keeper stays off.
            assert!(!root || !Path::new("/sys/fs/cgroup").exists());
            return;
        };
        std::fs::write(&file, std::process::id().to_string()).unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }
}
