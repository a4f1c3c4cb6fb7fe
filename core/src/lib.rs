//! WasmEngine's execution core: runs one Wasm function per call, in a fresh instance, under
//! per-call limits. It knows nothing of containerd; the shim (and tests, benchmarks and the
//! `wasmengine-run` CLI) drive it directly.
//!
//! The parts:
//! - [`config`]: engine-wide settings ([`EngineConfig`]) and per-call [`Limits`].
//! - [`runtime`]: [`Runtime`], the one wasmtime `Engine` of a process (pooling allocator,
//!   copy-on-write memory images, epoch interruption), its WASI linker and the epoch ticker;
//!   [`Runtime::load`] turns module bytes into a ready [`Function`].
//! - [`ticker`]: the epoch tickers, which run while calls do and sleep when none has run
//!   for a while.
//! - [`cache`]: compiled modules and components, in memory and on disk as precompiled artifacts keyed by
//!   module digest and engine compatibility hash, so a new process does not compile again.
//! - [`kind`]: which of the three function kinds a module is (WASI command, string ABI,
//!   numeric export), found from its imports and exports. A WASI preview 2 component is a
//!   WASI command run through `wasi:cli/run`.
//! - [`function`]: [`Function::call`], one invocation: a `Store` from the cached
//!   `InstancePre`, limits armed, arguments passed the kind's way, the result read back.
//! - `blocking`: WASI's `poll_oneoff` on clocks (a module's sleep), bounded by the call's
//!   deadline and the runtime's interrupt like running code is.
//! - [`callout`]: the `wasmengine.call` import, a function's calls to other functions,
//!   routed by whoever runs it ([`Callout`]).
//! - [`args`]: turning invoke arguments (a JSON object or array) into argv or typed values,
//!   and results into text.
//! - [`tail`]: [`tail::TailPipe`], where a command's stderr goes: writes never fail, the last
//!   bytes are kept for the error of a non-zero exit.
//! - [`error`]: [`LoadError`] and [`CallError`], the typed failures callers match on.

pub mod args;
mod blocking;
pub mod cache;
pub mod callout;
pub mod config;
pub mod error;
pub mod function;
pub mod kind;
pub mod runtime;
mod stateless;
pub mod tail;
pub mod ticker;

pub use cache::LoadSource;
pub use callout::{CallOptions, Callout};
pub use config::{EngineConfig, Limits};
pub use error::{CallError, LoadError};
pub use function::{Function, FunctionSpec};
pub use kind::Kind;
pub use runtime::{build_engine, InterruptHandle, Runtime};
