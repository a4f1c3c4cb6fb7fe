//! `wasm_engine`: the WasmEngine REST function API over containerd.
//!
//! - [`config`]: the command line (every flag also an env var).
//! - [`embedded`]: a private containerd started when none is configured or running.
//! - [`containerd`]: a thin, namespaced client for containerd's gRPC services.
//! - [`reference`] and [`registry`]: image references and a client-side pull through the
//!   registry protocol into containerd's content store.
//! - [`image`]: reading an image back from containerd (manifest, config, module) and unpacking
//!   its layers into snapshots; [`layers`] what a classic image's rootfs holds after every
//!   layer (whiteouts applied), and what it unpacks to.
//! - [`functions`]: deploy, invoke, list, query, delete — functions as containers of our
//!   runtime, with containerd as the only store of their state.
//! - [`invoker`]: the engine side of the invocation protocol (slots and queue per function);
//!   [`streams`] the one connection per function socket that carries every call in flight.
//! - [`server`]: the axum router, response forms, auth and status codes; [`metrics`] the
//!   Prometheus counters it serves; [`openapi`] the OpenAPI document of it all.
//! - [`priority`]: the engine's threads at a higher CPU priority than the functions';
//!   [`cgroup_warm`] the kernel's cgroup attach lock kept ready while tasks are created.
//! - [`image_cmd`]: `wasm_engine image build|push`; [`fn_cmd`]: `wasm_engine fn …`, a command
//!   line for a running engine.

pub mod cgroup_warm;
pub mod config;
pub mod containerd;
pub mod embedded;
pub mod error;
pub mod fn_cmd;
pub mod functions;
pub mod image;
pub mod image_cmd;
pub mod invoker;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod priority;
pub mod reference;
pub mod registry;
pub mod server;
pub mod streams;
