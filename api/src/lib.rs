//! The wire, written once: everything the engine, the shim, the tests and clients must agree
//! on.
//!
//! - [`rest`]: request and response bodies of the REST API (`/function/deploy`, `invoke`, …).
//! - [`function`]: a deployed function's configuration (kind, export, limits, socket) and how
//!   it travels to the shim: as environment variables of the container's process, because
//!   containerd-shim-wasm hands the shim the process env and nothing else of the spec.
//! - [`invoke`]: the engine↔shim invocation protocol spoken on each function's unix socket;
//!   [`http1`] its HTTP/1.1 framing, for both ends.
//! - [`group`]: the same protocol for a group container, which serves many functions.
//! - [`image`]: OCI images for a `.wasm` file, in the classic layout (one tar layer) and as a
//!   Wasm OCI artifact, with OCI or Docker schema-2 media types, written as an OCI layout.

pub mod function;
pub mod group;
pub mod http1;
pub mod image;
pub mod invoke;
pub mod rest;

/// The containerd runtime name of our shim (binary `containerd-shim-wasmengine-v1`).
pub const RUNTIME_NAME: &str = "io.containerd.wasmengine.v1";
