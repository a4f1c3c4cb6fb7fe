//! `containerd-shim-wasmengine-v1`: WasmEngine's containerd shim (runtime
//! `io.containerd.wasmengine.v1`).
//!
//! The containerd-shim-wasm library does the containerd side (shim v2 lifecycle, OCI spec,
//! stdio, cgroups, native fallback, the precompiled-module cache in the content store); this
//! crate is what is ours:
//! - [`shim`]: the `Shim` and `Compiler` implementations (name, accepted layers, precompiling
//!   Wasm layers with an engine compatible with the one that runs them);
//! - [`sandbox`]: `run_wasi`, inside the container's init process: finds the module, then
//!   either runs it once as a command (`ctr run`) or serves invocations (what the engine
//!   deploys), turning SIGTERM into an epoch interrupt;
//! - [`source`]: where the module comes from (an OCI Wasm layer, a file in the rootfs, or the
//!   one `.wasm` at the rootfs root);
//! - [`precompile`]: a classic image's module file, compiled once per node into a cache only
//!   the shim writes;
//! - [`group`]: group mode, one container and one engine serving many functions that the
//!   engine loads into it;
//! - [`link`]: a function's calls to other functions, sent back to the engine over the
//!   connection the call came on;
//! - [`logs`]: a function's log, a ring of its calls' stderr lines and errors;
//! - [`server`]: the function server spoken to over a unix socket
//!   (`wasmengine_api::invoke`);
//! - [`settings`]: engine configuration and limits from the container's environment;
//! - [`streams`]: many calls in flight on one connection, run by the connection's workers;
//! - [`busy_poll`]: a connection's reading thread looks for the next request before it
//!   sleeps.

pub mod busy_poll;
pub mod group;
pub mod link;
pub mod logs;
pub mod precompile;
pub mod sandbox;
pub mod server;
pub mod settings;
pub mod shim;
pub mod source;
pub mod streams;

pub use shim::WasmEngineShim;
