//! The engine's threads run at a higher CPU priority (a lower nice value) than the functions'
//! processes: every call and every answer passes through the engine, so on a busy node a
//! function's process that wakes up must not push the engine off its core, and a function
//! that spins cannot starve the API that every other function is reached through.
//!
//! Linux keeps a nice value per thread: the engine sets it on each of its own threads as they
//! start, and a process the engine starts (its private containerd, and through it the shims
//! and the functions' processes) gets back the value the engine itself started with.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The nice value the engine's threads take by default (`--nice`).
pub const DEFAULT_NICE: i32 = -10;

/// The nice value the process started with (read by [`remember_start`]).
static START: AtomicI32 = AtomicI32::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// The calling thread's nice value.
fn current() -> i32 {
    // getpriority may return -1 as a value: errno tells an error apart.
    unsafe {
        *libc::__errno_location() = 0;
        let v = libc::getpriority(libc::PRIO_PROCESS, 0);
        if v == -1 && *libc::__errno_location() != 0 {
            return 0;
        }
        v
    }
}

/// Remembers the nice value the engine started with; call before any thread changes its own.
pub fn remember_start() {
    START.store(current(), Ordering::Relaxed);
}

/// The nice value the engine started with.
pub fn at_start() -> i32 {
    START.load(Ordering::Relaxed)
}

/// Sets the calling thread's nice value. Lowering it needs CAP_SYS_NICE: without it the
/// thread keeps its value, and the first refusal is logged.
pub fn set_this_thread(nice: i32) {
    // PRIO_PROCESS with 0 names the calling thread on Linux (nice is per thread).
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot set the engine's threads to nice {nice}: {} (needs CAP_SYS_NICE); they keep \
             nice {}",
            std::io::Error::last_os_error(),
            current()
        );
    }
}

/// Makes `cmd`'s process start at the engine's starting nice value, whatever the thread that
/// spawns it runs at (best effort: where that is refused, it keeps the spawning thread's).
pub fn start_child_at_start_value(cmd: &mut Command) -> &mut Command {
    let nice = at_start();
    // Only a syscall between fork and exec (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_starts_at_the_engines_starting_value_not_its_spawning_threads() {
        remember_start();
        let start = at_start();
        // A thread of its own, raised to a larger nice value (always allowed), spawns.
        let out = std::thread::spawn(move || {
            set_this_thread((start + 5).min(19));
            assert_eq!(current(), (start + 5).min(19));
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "cut -d' ' -f19 /proc/self/stat"]);
            start_child_at_start_value(&mut cmd).output().unwrap()
        })
        .join()
        .unwrap();
        let child: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(child, start);
        // This thread was not touched.
        assert_eq!(current(), start);
    }
}
