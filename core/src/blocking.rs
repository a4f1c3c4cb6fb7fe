//! Host calls that wait, bounded by the call's limits.
//!
//! A WASI preview 1 `poll_oneoff` on clocks is how a module sleeps (`sleep`, `nanosleep`,
//! `usleep` in wasi-libc; `std::thread::sleep` in Rust). wasmtime-wasi waits for it in the host
//! (`std::thread::sleep` or a blocking wait on its tokio runtime), where neither the epoch
//! deadline nor the runtime's interrupt can reach: a module asking for an hour held its slot
//! for an hour. This module replaces `poll_oneoff` in the linker: a wait on clocks happens
//! here, in slices, and ends at the earliest of the clock, the call's deadline (a timeout
//! trap) and the runtime's interrupt (SIGTERM). A subscription on a file descriptor is
//! reported ready at once: in a function call every descriptor is (stdin is empty, stdout and
//! stderr are memory pipes, files are always ready); a command container reading an
//! inherited stdin then waits in `fd_read`, as a plain read would.
//!
//! The guest's monotonic clock is [`GuestClock`], whose origin the call's state knows, so
//! absolute monotonic deadlines are read in the guest's terms.
//!
//! A WASI preview 2 component waits through `wasi:io/poll` (`poll`, `pollable.block`) on
//! pollables: a clock's `subscribe-duration`/`subscribe-instant`, or a stream's readiness.
//! wasmtime-wasi's synchronous bindings run those waits to completion on its tokio runtime.
//! [`bound_component_waits`] shadows both calls with the same waits raced against the call's
//! deadline and the runtime's interrupt, so whatever a pollable stands for, the wait ends with
//! the call's limits.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::future::Future;

use wasmtime::component::Resource;
use wasmtime::{Caller, Linker, Memory, StoreContextMut};
use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::ResourceTable;

use crate::function::{CallState, ComponentState, Guard, InterruptHit, TimeoutHit};

const MODULE: &str = "wasi_snapshot_preview1";
/// The instance wasmtime-wasi's preview 2 linker defines `poll` in (a component importing any
/// 0.2.x version is linked to it).
const POLL_INSTANCE: &str = "wasi:io/poll@0.2.12";

/// Longest single sleep: how late a wait notices the runtime's interrupt.
const SLICE: Duration = Duration::from_millis(10);

const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const TAG_CLOCK: u8 = 0;
const TAG_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBCLOCK_ABSTIME: u16 = 1;
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// Replaces `poll_oneoff` in a linker that already has wasmtime-wasi's preview 1.
pub(crate) fn bound_waits(linker: &mut Linker<CallState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |mut caller: Caller<'_, CallState>,
         subs: i32,
         events: i32,
         n: i32,
         nevents: i32|
         -> wasmtime::Result<i32> {
            let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
                return Ok(ERRNO_FAULT);
            };
            let subs = match read_subscriptions(&memory, &caller, subs as u32, n as u32) {
                Ok(subs) => subs,
                Err(errno) => return Ok(errno),
            };
            let now = Instant::now();
            let guest_now = caller.data().guest_monotonic_now();
            let mut wakes = Vec::with_capacity(subs.len());
            for sub in &subs {
                let wait = match sub.wait(guest_now) {
                    Ok(w) => w,
                    Err(errno) => return Ok(errno),
                };
                // Outer `None`: a descriptor; inner `None`: too far to name an instant.
                wakes.push(wait.map(|w| now.checked_add(w)));
            }
            // A ready descriptor answers at once; otherwise wait for the first clock.
            let fd_ready = wakes
                .iter()
                .any(|w| matches!(w, Some(Some(w)) if *w <= now))
                || subs.iter().any(|s| s.tag != TAG_CLOCK);
            if !fd_ready {
                let first = wakes.iter().flatten().flatten().min().copied();
                wait_until(&caller, first)?;
            }
            let now = Instant::now();
            let mut out = Vec::new();
            for (sub, wake) in subs.iter().zip(&wakes) {
                let due = match wake {
                    None => true,
                    Some(w) => w.is_some_and(|w| w <= now),
                };
                if due {
                    out.extend_from_slice(&sub.event());
                }
            }
            let count = (out.len() / EVENT_SIZE) as u32;
            let data = memory.data_mut(&mut caller);
            if !write(data, events as u32, &out)
                || !write(data, nevents as u32, &count.to_le_bytes())
            {
                return Ok(ERRNO_FAULT);
            }
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Replaces `wasi:io/poll`'s blocking calls in a linker that already has wasmtime-wasi's
/// preview 2.
pub(crate) fn bound_component_waits(
    linker: &mut wasmtime::component::Linker<ComponentState>,
) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INSTANCE)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, ComponentState>, (list,): (Vec<Resource<DynPollable>>,)| {
            let (table, guard) = store.data_mut().table_and_guard();
            let ready = bounded(guard, ResourceTable::poll(table, list))?;
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, ComponentState>, (pollable,): (Resource<DynPollable>,)| {
            let (table, guard) = store.data_mut().table_and_guard();
            bounded(guard, ResourceTable::block(table, pollable))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs a wait to its end, or fails at the call's deadline or the runtime's interrupt.
fn bounded<T>(
    guard: &Guard,
    wait: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    wasmtime_wasi::runtime::in_tokio(async {
        tokio::select! {
            done = wait => done,
            stop = stopped(guard) => Err(stop),
        }
    })
}

/// Resolves when the call must stop, with the error that says why.
async fn stopped(guard: &Guard) -> wasmtime::Error {
    loop {
        if guard.is_interrupted() {
            return InterruptHit.into();
        }
        let now = Instant::now();
        if guard.deadline.is_some_and(|d| now >= d) {
            return TimeoutHit.into();
        }
        let nap = guard
            .deadline
            .map_or(SLICE, |d| SLICE.min(d.saturating_duration_since(now)));
        tokio::time::sleep(nap).await;
    }
}

struct Subscription {
    userdata: u64,
    tag: u8,
    clock_id: u32,
    timeout: u64,
    absolute: bool,
}

impl Subscription {
    /// How long from now a clock waits; `None` for a descriptor, which is always ready.
    fn wait(&self, guest_now: u64) -> Result<Option<Duration>, i32> {
        if self.tag != TAG_CLOCK {
            return Ok(None);
        }
        if !self.absolute {
            return Ok(Some(Duration::from_nanos(self.timeout)));
        }
        let now = match self.clock_id {
            CLOCK_REALTIME => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            CLOCK_MONOTONIC => guest_now,
            _ => return Err(ERRNO_INVAL),
        };
        Ok(Some(Duration::from_nanos(self.timeout.saturating_sub(now))))
    }

    /// The event that reports this subscription: userdata, error 0, its type; a descriptor
    /// gets one byte ready.
    fn event(&self) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[..8].copy_from_slice(&self.userdata.to_le_bytes());
        e[10] = self.tag;
        if self.tag != TAG_CLOCK {
            e[16..24].copy_from_slice(&1u64.to_le_bytes());
        }
        e
    }
}

/// The subscriptions, or an errno for a bad buffer or request.
fn read_subscriptions(
    memory: &Memory,
    caller: &Caller<'_, CallState>,
    subs: u32,
    n: u32,
) -> Result<Vec<Subscription>, i32> {
    if n == 0 {
        // As wasmtime-wasi: preview 1 has no way to wait for nothing.
        return Err(ERRNO_INVAL);
    }
    let start = subs as usize;
    let len = (n as usize)
        .checked_mul(SUBSCRIPTION_SIZE)
        .ok_or(ERRNO_FAULT)?;
    let bytes = memory
        .data(caller)
        .get(start..start.checked_add(len).ok_or(ERRNO_FAULT)?)
        .ok_or(ERRNO_FAULT)?;
    let mut out = Vec::with_capacity(n as usize);
    for sub in bytes.chunks_exact(SUBSCRIPTION_SIZE) {
        let tag = sub[8];
        if tag > TAG_FD_WRITE {
            return Err(ERRNO_INVAL);
        }
        let u64_at = |i: usize| u64::from_le_bytes(sub[i..i + 8].try_into().unwrap());
        out.push(Subscription {
            userdata: u64_at(0),
            tag,
            clock_id: u32::from_le_bytes(sub[16..20].try_into().unwrap()),
            timeout: u64_at(24),
            absolute: u16::from_le_bytes(sub[40..42].try_into().unwrap()) & SUBCLOCK_ABSTIME != 0,
        });
    }
    Ok(out)
}

/// Sleeps until `wake` (`None`: a wait too long to name an instant), or fails at the call's
/// deadline or the runtime's interrupt, whichever comes first.
fn wait_until(caller: &Caller<'_, CallState>, wake: Option<Instant>) -> wasmtime::Result<()> {
    let guard = caller.data().guard();
    loop {
        if guard.is_interrupted() {
            return Err(InterruptHit.into());
        }
        let now = Instant::now();
        if wake.is_some_and(|w| now >= w) {
            return Ok(());
        }
        if guard.deadline.is_some_and(|d| now >= d) {
            return Err(TimeoutHit.into());
        }
        let mut nap = SLICE;
        for until in [wake, guard.deadline].into_iter().flatten() {
            nap = nap.min(until.saturating_duration_since(now));
        }
        std::thread::sleep(nap);
    }
}

fn write(data: &mut [u8], at: u32, bytes: &[u8]) -> bool {
    let start = at as usize;
    match data.get_mut(start..start + bytes.len()) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// The monotonic clock a call's WASI context shows the guest: nanoseconds since `origin`.
pub(crate) struct GuestClock(pub(crate) Instant);

impl wasmtime_wasi::HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}
