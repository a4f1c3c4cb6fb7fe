//! The epoch tickers: a thread per runtime that advances its engine's epoch every tick, so
//! every running store checks its deadline and the runtime's interrupt, and runs the
//! [`on_tick`] hooks.
//!
//! A ticker runs only while calls do. Every call holds a [`Busy`] for as long as it runs; a
//! ticker that saw no call for [`LINGER_TICKS`] ticks sleeps until the next call starts. An
//! idle function server then wakes for nothing: with tickers always running, each of a
//! container's three tickers (its init process has one, its shim process two) woke about 400
//! times a second, and most of a node's functions are idle.
//!
//! The handshake between a call starting and a ticker going to sleep is two sequentially
//! consistent atomics: a call counts itself in [`ACTIVE`] and then looks at [`PARKED`]; a
//! ticker counts itself in [`PARKED`] and then looks at [`ACTIVE`], under the lock it waits
//! with. One of the two always sees the other, so a ticker never sleeps through a call.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wasmtime::EngineWeak;

/// Ticks without a call before a ticker sleeps: calls that come more often than this keep it
/// running and never pay a wake-up.
pub const LINGER_TICKS: u32 = 20;

/// How long a sleeping ticker waits before it checks that its engine still exists.
const RECHECK: Duration = Duration::from_secs(5);

/// Calls running in this process.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// A call started since the tickers last looked (a call shorter than a tick is still seen).
static RECENT: AtomicBool = AtomicBool::new(false);
/// Tickers asleep, or going to sleep.
static PARKED: AtomicUsize = AtomicUsize::new(0);
static SLEEP: Mutex<()> = Mutex::new(());
static WAKE: Condvar = Condvar::new();

type TickHook = Box<dyn Fn() + Send + Sync>;

/// What the epoch tickers run on each tick besides advancing the epoch.
static TICK_HOOKS: Mutex<Vec<TickHook>> = Mutex::new(Vec::new());

/// Runs `hook` on every epoch tick of every runtime of the process (a function server has
/// one) while calls run: a clock for watchdogs of running calls that costs no thread and no
/// wake-up of its own. The hook must be quick; it is kept for as long as the process runs.
pub fn on_tick(hook: impl Fn() + Send + Sync + 'static) {
    TICK_HOOKS.lock().unwrap().push(Box::new(hook));
}

/// A running call: the tickers tick while one exists.
pub struct Busy(());

/// Marks a call as running until the guard is dropped, waking the tickers if they sleep.
/// Every call of a [`crate::Function`] holds one; a server holds one too around other work
/// its [`on_tick`] watchdogs must see (a module's compile on a thread that also reads
/// requests).
pub fn busy() -> Busy {
    ACTIVE.fetch_add(1, SeqCst);
    RECENT.store(true, SeqCst);
    if PARKED.load(SeqCst) > 0 {
        let _held = SLEEP.lock().unwrap();
        WAKE.notify_all();
    }
    Busy(())
}

impl Drop for Busy {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, SeqCst);
    }
}

/// Whether some ticker of the process is asleep (for tests).
pub fn sleeping() -> bool {
    PARKED.load(SeqCst) > 0
}

/// Advances the epoch every `tick` for as long as the engine exists and calls run (see the
/// module's notes); every store's deadline callback runs on these ticks, and so do the
/// [`on_tick`] hooks.
pub(crate) fn spawn(engine: EngineWeak, tick: Duration) {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            let mut idle = 0;
            loop {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
                for hook in TICK_HOOKS.lock().unwrap().iter() {
                    hook();
                }
                if ACTIVE.load(SeqCst) > 0 || RECENT.swap(false, SeqCst) {
                    idle = 0;
                    continue;
                }
                idle += 1;
                if idle >= LINGER_TICKS {
                    if !sleep_until_busy(&engine) {
                        return;
                    }
                    idle = 0;
                }
            }
        })
        .expect("spawn epoch ticker thread");
}

/// Sleeps until a call runs; false when the engine went away meanwhile.
fn sleep_until_busy(engine: &EngineWeak) -> bool {
    let mut held = SLEEP.lock().unwrap();
    PARKED.fetch_add(1, SeqCst);
    let mut alive = true;
    while ACTIVE.load(SeqCst) == 0 {
        let (h, waited) = WAKE.wait_timeout(held, RECHECK).unwrap();
        held = h;
        if waited.timed_out() && engine.upgrade().is_none() {
            alive = false;
            break;
        }
    }
    PARKED.fetch_sub(1, SeqCst);
    alive
}
