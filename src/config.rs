//! The command line: `wasm_engine [serve flags]`, `wasm_engine image …` or `wasm_engine fn …`. Every serve flag
//! also reads an env var (`WASMENGINE_…`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wasm_engine",
    version,
    about = "WasmEngine: a WebAssembly function engine on containerd (REST API on :10000)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Package a .wasm file as an OCI image, push it, or import it into containerd.
    #[command(subcommand)]
    Image(crate::image_cmd::ImageCommand),
    /// Deploy, invoke, list, query and delete functions of a running engine.
    Fn(crate::fn_cmd::FnArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the REST API. A non-loopback address needs --auth-token or --insecure.
    #[arg(long, env = "WASMENGINE_LISTEN", default_value = "127.0.0.1:10000")]
    pub listen: SocketAddr,

    /// containerd's socket. Default: the system containerd (--system-containerd-address) when
    /// it answers, else a private containerd started under --data-dir (stopped on shutdown).
    #[arg(long, env = "WASMENGINE_CONTAINERD_ADDRESS")]
    pub containerd_address: Option<PathBuf>,

    /// Where the system containerd is looked for when --containerd-address is not given.
    #[arg(
        long,
        env = "WASMENGINE_SYSTEM_CONTAINERD_ADDRESS",
        default_value = crate::embedded::SYSTEM_SOCKET
    )]
    pub system_containerd_address: PathBuf,

    /// Always use a private containerd under --data-dir, even if the system one answers.
    #[arg(long, env = "WASMENGINE_EMBEDDED_CONTAINERD")]
    pub embedded_containerd: bool,

    /// containerd namespace of the engine's functions and images.
    #[arg(long, env = "WASMENGINE_NAMESPACE", default_value = "wasmengine")]
    pub namespace: String,

    /// The engine's own state: function sockets, the private containerd.
    #[arg(
        long,
        env = "WASMENGINE_DATA_DIR",
        default_value = "/var/lib/wasmengine"
    )]
    pub data_dir: PathBuf,

    /// A registry (HOST[:PORT]) reached over plain HTTP. Loopback registries always are.
    #[arg(
        long = "insecure-registry",
        env = "WASMENGINE_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// Requests must carry `Authorization: Bearer TOKEN`.
    #[arg(long, env = "WASMENGINE_AUTH_TOKEN")]
    pub auth_token: Option<String>,

    /// Allow a non-loopback --listen without --auth-token.
    #[arg(long, env = "WASMENGINE_INSECURE")]
    pub insecure: bool,

    /// Largest request body accepted (413 beyond).
    #[arg(long, env = "WASMENGINE_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Calls one function runs at once (further calls queue in its task).
    #[arg(long, env = "WASMENGINE_FUNCTION_CONCURRENCY", default_value_t = 16)]
    pub function_concurrency: u32,

    /// Largest image a deploy accepts, its layers as stored (compressed): 422 beyond.
    #[arg(long, env = "WASMENGINE_MAX_IMAGE_BYTES", default_value_t = 128 << 20)]
    pub max_image_bytes: u64,

    /// Largest image a deploy accepts, its layers unpacked: 422 beyond.
    #[arg(long, env = "WASMENGINE_MAX_IMAGE_UNPACKED_BYTES", default_value_t = 512 << 20)]
    pub max_image_unpacked_bytes: u64,

    /// Functions that share one group container (one shim, one process, one wasmtime
    /// engine); 0 gives each function a container of its own. Fuel-limited functions always
    /// get their own.
    #[arg(long, env = "WASMENGINE_GROUP_SIZE", default_value_t = 0)]
    pub group_size: usize,

    /// With groups on, keeps one group started ahead with room in it, so that no deploy
    /// waits for a task to be created (costs one idle group process).
    #[arg(long, env = "WASMENGINE_SPARE_GROUP")]
    pub spare_group: bool,

    /// Calls a group runs at once, all its functions together (its instance pool).
    #[arg(long, env = "WASMENGINE_GROUP_CONCURRENCY", default_value_t = 32)]
    pub group_concurrency: u32,

    /// Log lines each function keeps (its WASI calls' stderr and its failed calls' errors),
    /// read with `POST /function/logs`.
    #[arg(long, env = "WASMENGINE_FUNCTION_LOG_LINES", default_value_t = 1000)]
    pub function_log_lines: u32,

    /// Longest a function's process looks for the next request before its reading thread
    /// sleeps, in microseconds: lower latency for functions called back to back, paid in
    /// their CPU. 0 turns it off; the shim allows at most 1000.
    #[arg(long, env = "WASMENGINE_FUNCTION_BUSY_POLL_US", default_value_t = 100)]
    pub function_busy_poll_us: u32,

    /// How deep functions' calls to other functions may nest (a REST invoke is depth 0);
    /// a call beyond it answers 508 `call_depth` to its caller.
    #[arg(long, env = "WASMENGINE_MAX_CALL_DEPTH", default_value_t = wasmengine_api::invoke::DEFAULT_MAX_CALL_DEPTH)]
    pub max_call_depth: u32,

    /// Tasks created at once (deploys and restarts together); more wait their turn.
    #[arg(long, env = "WASMENGINE_PARALLEL_STARTS", default_value_t = 8)]
    pub parallel_starts: usize,

    /// Seconds without calls after which a function's task is stopped until its next call
    /// (0: never). A deploy's `idle_timeout_secs` overrides it.
    #[arg(long, env = "WASMENGINE_IDLE_TIMEOUT_SECS", default_value_t = 0)]
    pub idle_timeout_secs: u64,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "WASMENGINE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Threads the engine's async runtime runs on (0: half the node's cores, at least one;
    /// the functions' processes run on the rest).
    #[arg(long, env = "WASMENGINE_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Nice value of the engine's own threads (-20 to 19), ahead of the functions' processes,
    /// which keep the value the engine started with (needs CAP_SYS_NICE to go below it).
    #[arg(long, env = "WASMENGINE_NICE", default_value_t = crate::priority::DEFAULT_NICE,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
}

impl ServeArgs {
    /// The runtime's worker threads: [`ServeArgs::threads`], or half the cores.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.div_ceil(2)
    }

    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.auth_token.is_none() && !self.insecure {
            return Err(format!(
                "--listen {} is not a loopback address: give --auth-token TOKEN, or --insecure to serve it unauthenticated",
                self.listen
            ));
        }
        if self.auth_token.as_deref().is_some_and(str::is_empty) {
            return Err("--auth-token must not be empty".into());
        }
        // sun_path holds 108 bytes: data-dir/fn/<63-char name>/fn.sock must fit.
        let longest = self
            .data_dir
            .join("fn")
            .join("x".repeat(63))
            .join("fn.sock");
        if longest.as_os_str().len() > 107 {
            return Err(format!(
                "--data-dir {} is too long for function sockets (at most {} characters)",
                self.data_dir.display(),
                107 - (longest.as_os_str().len() - self.data_dir.as_os_str().len())
            ));
        }
        // containerd's rule for namespaces: a label of letters, digits, '-', '_' and '.'.
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 76
            && self
                .namespace
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ns_ok {
            return Err(format!(
                "--namespace {:?} is not a valid containerd namespace (letters, digits, '-', '_' \
                 and '.', starting with a letter or digit, at most 76 characters)",
                self.namespace
            ));
        }
        if self.function_concurrency == 0 {
            return Err("--function-concurrency must be at least 1".into());
        }
        Ok(())
    }
}
