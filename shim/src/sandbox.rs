//! `run_wasi`: what runs in the container's init process (PID 1 of its namespaces, in its
//! cgroup, with `/` the rootfs and fds 0–2 the container's stdio).
//!
//! The module runs on a thread of its own (synchronous WASI cannot run on the library's tokio
//! runtime, and a panic must become an exit status rather than wedge the container), while
//! `run_wasi` waits for it or for SIGTERM/SIGINT. A signal interrupts the engine (every
//! running call traps at its next epoch check) and the container exits with 128 + signal.
//!
//! Exit statuses of a command container: the module's own (`proc_exit`, or 0 when `_start`
//! returns; a component's `wasi:cli/run` gives 0 or 1); 124 when `WASMENGINE_TIMEOUT_MS` ran out; 126 when the module cannot be loaded;
//! 134 for a trap or another limit; 143/130 after SIGTERM/SIGINT; 137 after SIGKILL.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use wasmengine_api::function::ERROR_FILE_NAME;
use wasmengine_api::function::{FunctionConfig, FunctionLimits};
use wasmengine_api::group::GroupConfig;
use wasmengine_core::{CallError, Function, FunctionSpec, InterruptHandle, Runtime};

use crate::server;
use crate::settings::{self, DEFAULT_CONCURRENCY};
use crate::source::{self, Module};

pub const EXIT_TIMEOUT: i32 = 124;
pub const EXIT_CANNOT_LOAD: i32 = 126;
pub const EXIT_TRAP: i32 = 134;
/// How long in-flight work may take to notice an interrupt before the process exits.
const SIGNAL_GRACE: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct WasmEngineSandbox;

impl Sandbox for WasmEngineSandbox {
    async fn can_handle(&self, ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        // A group container has no module of its own: the engine loads them over its socket.
        if GroupConfig::from_env(ctx.envs())?.is_some() {
            return Ok(());
        }
        source::check(&ctx.entrypoint(), ctx.args(), Path::new("/"))
    }

    /// A function container of the engine (serve mode) runs Wasm only: an image whose entry is
    /// native code is refused at creation. Plain `ctr`/CRI containers keep the library's rule
    /// (a native entry runs as a Linux container, as a pod's sandbox container needs).
    fn allows_native(&self, ctx: &impl RuntimeContext) -> bool {
        matches!(FunctionConfig::from_env(ctx.envs()), Ok(None))
            && matches!(GroupConfig::from_env(ctx.envs()), Ok(None))
    }

    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        close_inherited_sockets();
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let entry = ctx.entrypoint();
        let group = GroupConfig::from_env(ctx.envs()).ok().flatten();
        let job = Job {
            module: match group {
                Some(_) => Err(anyhow::anyhow!(
                    "a group container has no module of its own"
                )),
                None => source::locate(&entry, ctx.args(), Path::new("/")),
            },
            group,
            name: entry.name.clone().unwrap_or_else(|| "module".into()),
            func: entry.func.clone(),
            env: ctx.envs().to_vec(),
        };
        let (handle_tx, mut handle_rx) = oneshot::channel::<InterruptHandle>();
        let (done_tx, mut done_rx) = oneshot::channel::<i32>();
        std::thread::Builder::new()
            .name("wasm-main".into())
            .spawn(move || {
                let status = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(handle_tx)))
                    .unwrap_or_else(|_| {
                        log::error!("the module's thread panicked");
                        EXIT_TRAP
                    });
                let _ = done_tx.send(status);
            })?;
        let mut handle: Option<InterruptHandle> = None;
        let signo = loop {
            tokio::select! {
                status = &mut done_rx => return Ok(status.unwrap_or(EXIT_TRAP)),
                h = &mut handle_rx, if handle.is_none() => {
                    match h {
                        Ok(h) => handle = Some(h),
                        // The job ended before it had a runtime; its status follows.
                        Err(_) => return Ok((&mut done_rx).await.unwrap_or(EXIT_TRAP)),
                    }
                }
                _ = sigterm.recv() => break libc::SIGTERM,
                _ = sigint.recv() => break libc::SIGINT,
            }
        };
        log::info!("signal {signo}: interrupting the module");
        if let Some(h) = &handle {
            h.interrupt();
        }
        // Let interrupted calls finish their replies, then exit as killed by the signal.
        let _ = tokio::time::timeout(SIGNAL_GRACE, &mut done_rx).await;
        Ok(128 + signo)
    }
}

/// What the module's thread does.
struct Job {
    module: anyhow::Result<Module>,
    group: Option<GroupConfig>,
    name: String,
    func: String,
    env: Vec<String>,
}

impl Job {
    fn run(self, handle_tx: oneshot::Sender<InterruptHandle>) -> i32 {
        own_proc_entries();
        if let Some(group) = &self.group {
            return crate::group::serve(group, &self.env, handle_tx);
        }
        let config = FunctionConfig::from_env(&self.env);
        let module = match self.module {
            Ok(m) => m,
            Err(e) => {
                if let Ok(Some(config)) = &config {
                    report_to_engine(config, &format!("{e:#}"));
                }
                return cannot_load(format_args!("{e:#}"));
            }
        };
        match config {
            Ok(Some(config)) => serve(module, &config, &self.env, handle_tx),
            Ok(None) => command(module, &self.name, &self.func, &self.env, handle_tx),
            Err(e) => cannot_load(format_args!("{e}")),
        }
    }
}

/// Leaves why a serving function could not start next to its socket, where the engine that
/// waits for it reads it (the shim log is containerd's, out of the engine's reach).
fn report_to_engine(config: &FunctionConfig, why: &str) {
    // A TCP function (a pod's) has no engine waiting for it: its log says why.
    let Some(socket) = &config.socket else {
        return;
    };
    let path = Path::new(socket).with_file_name(ERROR_FILE_NAME);
    if let Err(e) = std::fs::write(&path, why) {
        log::warn!("write {}: {e}", path.display());
    }
}

fn cannot_load(why: std::fmt::Arguments) -> i32 {
    log::error!("cannot run the module: {why}");
    eprintln!("wasmengine: cannot run the module: {why}");
    EXIT_CANNOT_LOAD
}

/// Makes the runtime and function, and hands the interrupt handle to `run_wasi`.
fn load(
    module: &Module,
    spec: &FunctionSpec,
    instances: u32,
    cache_dir: Option<&str>,
    handle_tx: oneshot::Sender<InterruptHandle>,
) -> Result<Function, String> {
    let fuel = spec.limits.as_ref().is_some_and(|l| l.fuel.is_some());
    let mut config = settings::engine_config(fuel, instances);
    config.cache_dir = cache_dir.map(std::path::PathBuf::from);
    let runtime = Runtime::new(config).map_err(|e| format!("cannot create the engine: {e:#}"))?;
    let _ = handle_tx.send(runtime.interrupt_handle());
    // A fuel limit needs code compiled with fuel metering, which the precompiled form lacks:
    // then the module itself is compiled (once, where a cache directory is given).
    let precompiled = module.precompiled.as_deref().filter(|_| !fuel);
    let function = match precompiled {
        // SAFETY: precompiled layers come from containerd's content store, written there
        // by this shim's compiler (the library labels them with our compatibility key).
        Some(artifact) => unsafe { runtime.load_precompiled(artifact, spec) },
        None => runtime.load(&module.wasm, spec),
    }
    .map_err(|e| e.to_string())?;
    log::info!(
        "loaded {} from {} as a {} {} ({})",
        spec.name,
        module.origin,
        function.kind(),
        if function.is_component() {
            "component"
        } else {
            "function"
        },
        match function.load_source() {
            _ if precompiled.is_some() => "precompiled",
            wasmengine_core::LoadSource::Compiled => "compiled now",
            _ => "from the module cache",
        }
    );
    Ok(function)
}

/// Command mode: run `_start` once (or call the entrypoint's `#export` with the remaining
/// args) with the container's stdio.
fn command(
    module: Module,
    name: &str,
    func: &str,
    env: &[String],
    handle_tx: oneshot::Sender<InterruptHandle>,
) -> i32 {
    let limits = match FunctionLimits::from_env(env) {
        Ok(l) => settings::limits(&l, settings::command_base_limits()),
        Err(e) => return cannot_load(format_args!("{e}")),
    };
    let is_start = func == "_start";
    let spec = FunctionSpec {
        name: name.to_string(),
        wasi: Some(is_start),
        export: (!is_start).then(|| func.to_string()),
        limits: Some(limits),
        env: settings::module_env(env),
    };
    let function = match load(&module, &spec, 1, None, handle_tx) {
        Ok(f) => f,
        Err(e) => return cannot_load(format_args!("{e}")),
    };
    if is_start {
        match function.run_command(&module.argv, Some(Path::new("/"))) {
            Ok(status) => status,
            Err(e) => failed(&e),
        }
    } else {
        match function.call(&export_args(&module.argv[1..])) {
            Ok(result) => {
                println!("{result}");
                0
            }
            Err(e) => {
                eprintln!("{e}");
                failed(&e)
            }
        }
    }
}

/// Args for `#export` from the command line: one JSON object or array as it is, otherwise
/// the words as positional values.
fn export_args(rest: &[String]) -> Value {
    if let [one] = rest {
        if let Ok(v @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str::<Value>(one) {
            return v;
        }
    }
    Value::Array(rest.iter().cloned().map(Value::String).collect())
}

fn failed(e: &CallError) -> i32 {
    log::error!("module failed: {e}");
    match e {
        CallError::Timeout(_) => EXIT_TIMEOUT,
        CallError::Interrupted => 128 + libc::SIGTERM,
        _ => EXIT_TRAP,
    }
}

/// Serve mode: answer invocations on the configured socket until killed.
fn serve(
    module: Module,
    config: &FunctionConfig,
    env: &[String],
    handle_tx: oneshot::Sender<InterruptHandle>,
) -> i32 {
    let concurrency = config.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    let spec = settings::serve_spec(config, env);
    let function = match load(
        &module,
        &spec,
        concurrency,
        config.cache_dir.as_deref(),
        handle_tx,
    ) {
        Ok(f) => f,
        Err(e) => {
            report_to_engine(config, &e.to_string());
            return cannot_load(format_args!("{e}"));
        }
    };
    let listener = match (&config.listen, &config.socket) {
        (Some(addr), _) => server::Listener::tcp(addr),
        (None, Some(socket)) => server::Listener::unix(Path::new(socket)),
        (None, None) => unreachable!("FunctionConfig::from_env requires a socket or an address"),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            report_to_engine(config, &format!("{e:#}"));
            return cannot_load(format_args!("{e:#}"));
        }
    };
    let logs = crate::logs::Logs::new(settings::log_lines(env));
    match server::serve(
        Arc::new(server::Single { function, logs }),
        listener,
        concurrency as usize,
        settings::busy_poll(env),
    ) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("function server failed: {e:#}");
            EXIT_CANNOT_LOAD
        }
    }
}

/// Makes the process's `/proc/self` entries its own again. Changing uid (a function container
/// runs as an unprivileged user) leaves the process non-dumpable, with `/proc/self` owned by
/// root, so wasmtime could not open `/proc/self/pagemap` and reset pooled memories by
/// scanning for dirtied pages: every call paid a `memset` of the kept memory instead (3× the
/// per-call cost of a module with rustc's layout). Nothing in the container can use this:
/// it holds no other process, and `ptrace` and `process_vm_*` are refused by its seccomp
/// profile.
fn own_proc_entries() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes a plain integer and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        log::warn!(
            "prctl(PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Closes the zygote's control sockets the container process inherits (fds 3–6 are those
/// and the shim's log pipe): the zygote runs as root in the host's namespaces and nothing in
/// the container should hold a line to it. Only sockets in that range: the log pipe stays, and
/// descriptors of the library's runtime are above it.
fn close_inherited_sockets() {
    for fd in 3..=6 {
        // fstat, not /proc/self/fd: a container running as another uid may not read its own
        // /proc entries once it dropped root.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `st`; an invalid fd only returns an error.
        let is_socket = unsafe { libc::fstat(fd, &mut st) } == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK;
        if is_socket {
            // SAFETY: nothing in this process uses these descriptors.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_args_take_json_or_words() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            export_args(&words(&["12", "18"])),
            serde_json::json!(["12", "18"])
        );
        assert_eq!(
            export_args(&words(&[r#"{"a":1}"#])),
            serde_json::json!({"a": 1})
        );
        assert_eq!(export_args(&words(&["7"])), serde_json::json!(["7"]));
    }
}
