//! Waiting for a connection's next request by looking for it before sleeping.
//!
//! A thread that blocks on a socket sleeps, and a sleeping thread costs its waker a wake-up:
//! on a virtual machine whose idle vCPU halts, that is tens of microseconds, more than a
//! whole call. So a connection's reading thread, when the next request is not there yet,
//! first looks for it without blocking for a short window, and sleeps only when the window
//! passes. The window adapts, as the kernel's halt polling does: it grows while requests
//! come within [`MAX_WINDOW`] of the wait's start and shrinks to nothing when they do not, so
//! a function that gets a call now and then never polls, and one at most [`MAX_WINDOW`] of
//! CPU per wait.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// The read side of a connection: a socket.
pub trait Socket: Read + AsRawFd + Send {}
impl<T: Read + AsRawFd + Send> Socket for T {}

/// The longest a reading thread looks for input before it sleeps, unless configured.
pub const MAX_WINDOW: Duration = Duration::from_micros(100);
/// The most that can be configured instead of [`MAX_WINDOW`].
pub const WINDOW_BOUND: Duration = Duration::from_millis(1);
/// The window a connection starts with once a request came soon after a wait began.
const FIRST_WINDOW: Duration = Duration::from_micros(10);

/// A connection's polling window, adapted to how soon its requests come.
#[derive(Debug)]
pub struct Window {
    now: Duration,
    /// The longest it grows to (zero: it never polls).
    max: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Window::up_to(MAX_WINDOW)
    }
}

impl Window {
    /// A window that grows to at most `max` (bounded by [`WINDOW_BOUND`]).
    pub fn up_to(max: Duration) -> Window {
        Window {
            now: Duration::ZERO,
            max: max.min(WINDOW_BOUND),
        }
    }

    /// How long the next wait looks for input before it sleeps.
    pub fn get(&self) -> Duration {
        self.now
    }

    /// After a wait that took `waited` until input came: within its largest window, the
    /// window grows (doubles, up to that); past it, it halves (and is gone below
    /// [`FIRST_WINDOW`]).
    pub fn waited(&mut self, waited: Duration) {
        self.now = if self.max.is_zero() {
            Duration::ZERO
        } else if waited <= self.max {
            (self.now * 2).clamp(FIRST_WINDOW.min(self.max), self.max)
        } else if self.now / 2 < FIRST_WINDOW {
            Duration::ZERO
        } else {
            self.now / 2
        };
    }
}

/// Waits until `fd` has input (or an end or an error, for the read that follows to find),
/// looking for it without blocking for `window` first, and adapts the window to the wait.
pub fn wait_for_input(fd: RawFd, window: &mut Window) {
    let start = Instant::now();
    let polling = window.get();
    if !polling.is_zero() {
        loop {
            match peek(fd, false) {
                Peek::Ready => return window.waited(start.elapsed()),
                // Whatever else is ready to run on this CPU goes first.
                Peek::Empty if start.elapsed() < polling => {
                    // SAFETY: no arguments, no memory.
                    unsafe { libc::sched_yield() };
                }
                Peek::Empty => break,
            }
        }
    }
    // Sleep until input comes; how long that took tells the window what to be next time.
    let _ = peek(fd, true);
    window.waited(start.elapsed());
}

enum Peek {
    /// Input, the end of the stream, or an error: the read that follows sees which.
    Ready,
    Empty,
}

/// Looks at `fd` for a byte without taking it; `block`: wait for one.
fn peek(fd: RawFd, block: bool) -> Peek {
    let mut byte = 0u8;
    let flags = libc::MSG_PEEK | if block { 0 } else { libc::MSG_DONTWAIT };
    loop {
        // SAFETY: a one-byte buffer we own; `fd` is an open socket for as long as its
        // connection's reader exists, and the caller holds that reader.
        let n = unsafe { libc::recv(fd, (&raw mut byte).cast(), 1, flags) };
        if n >= 0 {
            return Peek::Ready;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Peek::Empty,
            _ => return Peek::Ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_window_grows_while_requests_come_soon_and_goes_when_they_do_not() {
        let mut w = Window::default();
        assert_eq!(w.get(), Duration::ZERO, "a new connection does not poll");
        w.waited(Duration::from_micros(20));
        assert_eq!(w.get(), FIRST_WINDOW);
        for _ in 0..10 {
            w.waited(Duration::from_micros(5));
        }
        assert_eq!(w.get(), MAX_WINDOW, "grows up to the bound, no further");
        w.waited(Duration::from_millis(3));
        assert_eq!(w.get(), MAX_WINDOW / 2);
        for _ in 0..3 {
            w.waited(Duration::from_secs(1));
        }
        assert_eq!(w.get(), Duration::ZERO, "an idle connection stops polling");
    }

    #[test]
    fn a_configured_window_bounds_the_polling_and_zero_turns_it_off() {
        let mut off = Window::up_to(Duration::ZERO);
        let mut wide = Window::up_to(Duration::from_micros(400));
        let mut huge = Window::up_to(Duration::from_secs(1));
        for _ in 0..20 {
            for w in [&mut off, &mut wide, &mut huge] {
                w.waited(Duration::from_micros(5));
            }
        }
        assert_eq!(off.get(), Duration::ZERO, "never polls");
        assert_eq!(wide.get(), Duration::from_micros(400));
        assert_eq!(huge.get(), WINDOW_BOUND, "bounded whatever is asked");
        // A wait past the configured window (but within the default one) shrinks it.
        let mut narrow = Window::up_to(Duration::from_micros(20));
        narrow.waited(Duration::from_micros(5));
        assert_eq!(narrow.get(), FIRST_WINDOW);
        narrow.waited(Duration::from_micros(50));
        assert_eq!(narrow.get(), Duration::ZERO);
    }

    #[test]
    fn a_wait_ends_at_input_or_at_the_end_and_takes_nothing() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut w = Window::default();
        w.waited(Duration::ZERO);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            a.write_all(b"x").unwrap();
            a
        });
        let start = Instant::now();
        wait_for_input(b.as_raw_fd(), &mut w);
        assert!(
            start.elapsed() >= Duration::from_millis(25),
            "returned before input came"
        );
        assert_eq!(
            w.get(),
            Duration::ZERO,
            "a long wait halves the window, to nothing here"
        );
        let mut buf = [0u8; 4];
        let n = std::io::Read::read(&mut &b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"x", "the byte looked at is still there to read");
        drop(writer.join().unwrap());
        wait_for_input(b.as_raw_fd(), &mut w);
        assert_eq!(
            std::io::Read::read(&mut &b, &mut buf).unwrap(),
            0,
            "the end is seen"
        );
    }
}
