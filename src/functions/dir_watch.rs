//! Waiting for something to appear in a directory (inotify): a deploy that waits for its
//! function's socket looks again when the function creates it, not at its next poll.
//!
//! Closing an inotify descriptor waits for an RCU grace period in the kernel (its marks are
//! torn down), about 20 ms on a small VM: a watch is closed on a blocking thread, never on
//! the async runtime's (one of which would stall every request it serves meanwhile).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

pub(super) struct DirWatch {
    /// `None` only once dropped.
    fd: Option<AsyncFd<OwnedFd>>,
}

impl DirWatch {
    /// Watches `dir` for entries created in it or moved into it.
    pub(super) fn new(dir: &Path) -> io::Result<DirWatch> {
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: `fd` is an inotify descriptor and `path` a NUL-terminated string.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                path.as_ptr(),
                libc::IN_CREATE | libc::IN_MOVED_TO,
            )
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is owned by the `AsyncFd` and closed only when it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(DirWatch { fd: Some(fd) })
    }

    /// Waits at most `max` for an entry to appear (one since the last call counts too):
    /// whether one did.
    pub(super) async fn appeared(&self, max: Duration) -> bool {
        let Some(fd) = &self.fd else { return false };
        let wait = async {
            loop {
                let Ok(mut ready) = fd.readable().await else {
                    return false;
                };
                let mut events = [0u8; 4096];
                // SAFETY: reads into a buffer we own, of the length given.
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        events.as_mut_ptr().cast(),
                        events.len(),
                    )
                };
                if n > 0 {
                    return true;
                }
                ready.clear_ready();
            }
        };
        tokio::time::timeout(max, wait).await.unwrap_or(false)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let fd = fd.into_inner();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(fd))),
            Err(_) => drop(fd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_wait_ends_when_an_entry_appears_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        assert!(!watch.appeared(Duration::from_millis(30)).await);
        let path = dir.path().join("fn.sock");
        let maker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::os::unix::net::UnixListener::bind(&path).unwrap()
        });
        let start = Instant::now();
        assert!(watch.appeared(Duration::from_secs(10)).await);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(dir.path().join("fn.sock").exists());
        drop(maker.await.unwrap());
        // Consumed: nothing new since.
        assert!(!watch.appeared(Duration::from_millis(30)).await);
    }
}
