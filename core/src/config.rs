//! Engine-wide configuration and per-call limits.

use std::path::PathBuf;
use std::time::Duration;

/// Limits applied to every call of a function. Each has an engine-wide default
/// ([`Limits::default`]) and may be overridden per function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take, enforced by epoch interruption.
    pub timeout: Duration,
    /// Largest linear memory one instance may grow to, in bytes.
    pub memory_bytes: u64,
    /// Fuel (roughly: Wasm instructions) one call may burn; `None` means unmetered.
    /// Needs [`EngineConfig::fuel`].
    pub fuel: Option<u64>,
    /// Largest result (stdout of a WASI command, or the returned string) in bytes.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            memory_bytes: 256 << 20,
            fuel: None,
            max_output_bytes: 1 << 20,
        }
    }
}

/// Bytes of a pooled slot kept resident by default: the first 1 MiB. With `PAGEMAP_SCAN`
/// only the pages a call dirtied are reset, so more could stay resident cheaply; without it
/// every kept byte is reset by `memset` on every call. The README's bench table has the
/// measurements behind this choice.
pub const DEFAULT_KEEP_RESIDENT: usize = 1 << 20;

/// How the process-wide wasmtime engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Use the pooling instance allocator (fast instantiation, memory reserved up front).
    /// If the pool cannot be reserved the runtime falls back to on-demand allocation.
    pub pooling: bool,
    /// Instances (and memories, tables) the pool holds: the bound on concurrent calls.
    pub pool_instances: u32,
    /// Largest linear memory any instance may have; per-function caps must not exceed it.
    pub max_memory_bytes: u64,
    /// Compile fuel metering in, so functions may set [`Limits::fuel`]. Costs a little speed
    /// for every function, so it is off unless asked for.
    pub fuel: bool,
    /// Where precompiled modules are kept between processes; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: the granularity of timeouts.
    pub epoch_tick: Duration,
    /// Limits for functions that do not set their own.
    pub default_limits: Limits,
    /// Reset a pooled memory after a call by scanning for the pages the call dirtied
    /// (Linux's `PAGEMAP_SCAN`, kernel 6.7 and later; ignored where it is missing) instead of
    /// a `memset` of its first [`EngineConfig::keep_resident_bytes`].
    pub pagemap_scan: bool,
    /// Bytes of each pooled memory and table kept resident between calls and reset in place;
    /// beyond them a slot is given back to the kernel (`madvise`) after each call.
    pub keep_resident_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pooling: true,
            pool_instances: 1000,
            max_memory_bytes: 4 << 30,
            fuel: false,
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
            default_limits: Limits::default(),
            pagemap_scan: true,
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT,
        }
    }
}
