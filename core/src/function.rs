//! One loaded function and its calls. Every call gets a fresh `Store` and instance from the
//! cached `InstancePre`, so nothing survives from one call to the next; the store is where the
//! call's limits are armed (memory limiter, fuel, epoch deadline). A WASI preview 2 command
//! component is a WASI command too: it runs through `wasi:cli/run` with the same stdio,
//! argv and limits.
//!
//! The one exception: a numeric function whose module has no state at all (no memory, table,
//! mutable global or import) keeps its instances, which have nothing to reset
//! ([`crate::stateless`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use wasmtime::component::ResourceTable;
use wasmtime::{
    Instance, InstancePre, ModuleExport, ResourceLimiter, Store, Trap, UpdateDeadline, Val,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::args;
use crate::blocking::GuestClock;
use crate::cache::LoadSource;
use crate::callout::{CallOptions, Callout};
use crate::config::Limits;
use crate::error::CallError;
use crate::kind::{Entry, Kind};
use crate::stateless::{Warm, WarmPool};
use crate::tail::TailPipe;

/// What to load: the deploy-time description of a function.
#[derive(Debug, Clone, Default)]
pub struct FunctionSpec {
    /// The function's name; also the export called for the non-WASI kinds unless `export`
    /// names another.
    pub name: String,
    /// The deploy's `wasi_cap`: `Some(true)` runs `_start`, `Some(false)` calls an export,
    /// `None` decides from the module.
    pub wasi: Option<bool>,
    pub export: Option<String>,
    /// `None`: the runtime's defaults.
    pub limits: Option<Limits>,
    /// Environment of WASI commands.
    pub env: Vec<(String, String)>,
}

/// The per-call state a module's store carries.
pub(crate) struct CallState {
    pub(crate) wasi: Option<WasiP1Ctx>,
    guard: Guard,
    /// Origin of the guest's monotonic clock ([`crate::blocking::GuestClock`]).
    clock_origin: Instant,
    /// Where the call's own calls to other functions go ([`crate::callout`]).
    callout: Option<Arc<dyn Callout>>,
}

/// The per-call state a component's store carries.
pub(crate) struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    guard: Guard,
}

impl ComponentState {
    /// The resource table and the call's guard, borrowed together for a bounded wait.
    pub(crate) fn table_and_guard(&mut self) -> (&mut ResourceTable, &Guard) {
        (&mut self.table, &self.guard)
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// What stops a call: its memory cap, its deadline and the runtime's interrupt.
pub(crate) struct Guard {
    limiter: CallLimiter,
    /// `None`: no timeout (the limit is too far away to name an instant).
    pub(crate) deadline: Option<Instant>,
    interrupted: Arc<AtomicBool>,
}

impl Guard {
    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

impl CallState {
    pub(crate) fn wasi(&mut self) -> &mut WasiP1Ctx {
        // Only modules that import WASI are linked against it, and their stores always get a
        // context (`Function::needs_wasi`).
        self.wasi
            .as_mut()
            .expect("a WASI-importing module has a WASI context")
    }

    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    pub(crate) fn callout(&self) -> Option<&Arc<dyn Callout>> {
        self.callout.as_ref()
    }

    /// The guest's monotonic clock now, in nanoseconds.
    pub(crate) fn guest_monotonic_now(&self) -> u64 {
        self.clock_origin.elapsed().as_nanos() as u64
    }
}

struct CallLimiter {
    memory_cap: u64,
    /// Bytes of every linear memory of the call together (a component has several).
    memory_used: u64,
}

/// Raised from inside wasmtime to stop a call; told apart from traps by downcasting.
#[derive(Debug, thiserror::Error)]
#[error("memory limit reached ({requested} bytes requested)")]
struct MemoryLimitHit {
    requested: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("call deadline passed")]
pub(crate) struct TimeoutHit;

#[derive(Debug, thiserror::Error)]
#[error("runtime interrupted")]
pub(crate) struct InterruptHit;

impl ResourceLimiter for CallLimiter {
    /// Also called when a memory is created (`current` 0), so `memory_used` counts every
    /// memory of the call.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self.memory_used + (desired - current) as u64;
        if requested > self.memory_cap {
            return Err(MemoryLimitHit { requested }.into());
        }
        self.memory_used = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// A function ready to call, from any number of threads at once.
pub struct Function {
    pub(crate) name: String,
    pub(crate) entry: Entry,
    pub(crate) code: Code,
    pub(crate) limits: Limits,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) needs_wasi: bool,
    pub(crate) fuel_metered: bool,
    pub(crate) interrupted: Arc<AtomicBool>,
    pub(crate) digest: String,
    pub(crate) source: LoadSource,
    /// Parameter types and the printed signature of the entry, made once at load (a numeric
    /// call would otherwise build both per call).
    pub(crate) params: Vec<wasmtime::ValType>,
    pub(crate) signature: String,
    /// Kept instances, for a numeric function whose module has no state at all
    /// ([`crate::stateless`]); `None` for every other function.
    pub(crate) warm: Option<WarmPool>,
}

/// What is instantiated per call.
pub(crate) enum Code {
    Module {
        pre: InstancePre<CallState>,
        exports: Exports,
    },
    /// A WASI preview 2 command (exports `wasi:cli/run`).
    Component(CommandPre<ComponentState>),
}

/// Export indices resolved once at load, so a call does no name lookups.
pub(crate) struct Exports {
    pub(crate) entry: ModuleExport,
    pub(crate) memory: Option<ModuleExport>,
    pub(crate) heap_base: Option<ModuleExport>,
}

/// Where a WASI command's stdio goes.
enum Io {
    /// Into buffers: stdout is the result.
    Capture {
        stdout: MemoryOutputPipe,
        stderr: TailPipe,
    },
    /// The process's own stdio (a container's FIFOs in the shim's command mode).
    Inherit,
}

const STDERR_KEEP: usize = 64 << 10;
const STDERR_TAIL: usize = 2048;

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> Kind {
        self.entry.kind
    }
    /// The export that is called (`_start` for WASI commands).
    pub fn export(&self) -> &str {
        &self.entry.export
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    /// Hex SHA-256 of the module bytes (of the artifact, when loaded precompiled).
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// How this function's module was obtained at load (compiled, or from a cache).
    pub fn load_source(&self) -> LoadSource {
        self.source
    }
    /// Whether the function is a WASI preview 2 component rather than a core module.
    pub fn is_component(&self) -> bool {
        matches!(self.code, Code::Component(_))
    }

    /// One invocation: `args` is a JSON object (named) or array (positional). Returns the
    /// result text: a command's stdout (one trailing newline stripped), the string a
    /// string-ABI export returned, or a numeric export's results.
    pub fn call(&self, args: &Value) -> Result<String, CallError> {
        self.call_capturing(args).0
    }

    /// [`Function::call`], and what a WASI command wrote to stderr (its last 64 KiB; empty
    /// for the other kinds), for the function's log.
    pub fn call_capturing(&self, args: &Value) -> (Result<String, CallError>, Vec<u8>) {
        self.call_with(args, &CallOptions::default())
    }

    /// [`Function::call_capturing`] with a shorter deadline and a route for the function's
    /// calls to other functions ([`CallOptions`]).
    pub fn call_with(
        &self,
        args: &Value,
        opts: &CallOptions,
    ) -> (Result<String, CallError>, Vec<u8>) {
        let _running = crate::ticker::busy();
        let (result, stderr) = match self.entry.kind {
            Kind::Command => {
                let stderr = TailPipe::new(STDERR_KEEP);
                let result = self.call_command(args, &stderr, opts);
                (result, stderr.contents())
            }
            Kind::StringAbi => (
                self.string_call(args::json_input(args).as_bytes(), opts),
                Vec::new(),
            ),
            Kind::Numeric => (self.call_numeric(args, opts), Vec::new()),
        };
        (shorter_deadline(result, opts), stderr)
    }

    /// [`Function::call_with`] on args as JSON text (blank: none). A string-ABI export gets
    /// the text as it came, checked to be JSON but not rebuilt (`null` and blank become
    /// `{}`); the other kinds get the parsed value.
    pub fn call_json(
        &self,
        args: &[u8],
        opts: &CallOptions,
    ) -> (Result<String, CallError>, Vec<u8>) {
        let blank = args.iter().all(u8::is_ascii_whitespace);
        if self.entry.kind != Kind::StringAbi {
            return match blank {
                true => self.call_with(&Value::Null, opts),
                false => match serde_json::from_slice::<Value>(args) {
                    Ok(v) => self.call_with(&v, opts),
                    Err(e) => (Err(args::not_json(e)), Vec::new()),
                },
            };
        }
        let text: &[u8] = if blank || args.trim_ascii() == b"null" {
            b"{}"
        } else if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(args) {
            return (Err(args::not_json(e)), Vec::new());
        } else {
            args
        };
        let _running = crate::ticker::busy();
        (
            shorter_deadline(self.string_call(text, opts), opts),
            Vec::new(),
        )
    }

    fn call_command(
        &self,
        args: &Value,
        stderr: &TailPipe,
        opts: &CallOptions,
    ) -> Result<String, CallError> {
        let cap = self.limits.max_output_bytes;
        let stdout = MemoryOutputPipe::new(cap.saturating_add(1));
        let io = Io::Capture {
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        };
        let status = self.run_start(&args::argv(args), io, None, opts);
        let err_text = stderr.contents();
        if !err_text.is_empty() {
            tracing::info!(function = %self.name, "stderr: {}", String::from_utf8_lossy(&err_text).trim_end());
        }
        let out = stdout.contents();
        if out.len() > cap {
            return Err(CallError::OutputTooLarge { limit: cap });
        }
        match status? {
            0 => {}
            status => {
                return Err(CallError::Exit {
                    status,
                    stderr: tail(&err_text),
                })
            }
        }
        let out = out.strip_suffix(b"\n").unwrap_or(&out);
        Ok(String::from_utf8_lossy(out).into_owned())
    }

    /// Runs a WASI command the way a container does: `argv` as given, stdio inherited from the
    /// process, `root` (if any) preopened as `/`. Returns the exit status; a trap or a limit is
    /// an error.
    pub fn run_command(&self, argv: &[String], root: Option<&Path>) -> Result<i32, CallError> {
        if self.entry.kind != Kind::Command {
            return Err(CallError::BadArgs(format!(
                "`{}` is a {} function, not a WASI command",
                self.name, self.entry.kind
            )));
        }
        let _running = crate::ticker::busy();
        self.run_start(argv, Io::Inherit, root, &CallOptions::default())
    }

    /// Calls a string-ABI export with raw input bytes.
    pub fn call_string(&self, input: &[u8]) -> Result<String, CallError> {
        let _running = crate::ticker::busy();
        self.string_call(input, &CallOptions::default())
    }

    fn string_call(&self, input: &[u8], opts: &CallOptions) -> Result<String, CallError> {
        let (mut store, instance) = self.instantiate(self.quiet_wasi(), opts)?;
        let memory = self
            .module_exports()?
            .memory
            .as_ref()
            .and_then(|e| instance.get_module_export(&mut store, e))
            .and_then(|e| e.into_memory())
            .ok_or_else(|| CallError::BadOutput("module exports no memory".into()))?;
        let heap_base = self
            .module_exports()?
            .heap_base
            .as_ref()
            .and_then(|e| instance.get_module_export(&mut store, e))
            .and_then(|e| e.into_global())
            .and_then(|g| g.get(&mut store).i32())
            .ok_or_else(|| CallError::BadOutput("module exports no i32 __heap_base".into()))?
            as u32 as usize;
        let end = heap_base + input.len();
        let size = memory.data_size(&store);
        if end > size {
            let pages = (end - size).div_ceil(65536) as u64;
            memory
                .grow(&mut store, pages)
                .map_err(|e| self.classify(e))?;
        }
        memory.data_mut(&mut store)[heap_base..end].copy_from_slice(input);
        let func = self
            .entry_func(&mut store, &instance)?
            .typed::<(i32, i32), (i32, i32)>(&store)
            .map_err(|e| CallError::Trap(e.to_string()))?;
        let (ptr, len) = func
            .call(&mut store, (heap_base as i32, input.len() as i32))
            .map_err(|e| self.classify(e))?;
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        if len > self.limits.max_output_bytes {
            return Err(CallError::OutputTooLarge {
                limit: self.limits.max_output_bytes,
            });
        }
        let bytes = memory.data(&store).get(ptr..ptr + len).ok_or_else(|| {
            CallError::BadOutput(format!(
                "returned span {ptr}+{len} is outside linear memory ({} bytes)",
                memory.data_size(&store)
            ))
        })?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| CallError::BadOutput(format!("result is not UTF-8: {e}")))
    }

    fn call_numeric(&self, args: &Value, opts: &CallOptions) -> Result<String, CallError> {
        let values = args::numeric_params(args, &self.params, &self.entry.export, &self.signature)?;
        if let Some(pool) = &self.warm {
            return self.call_warm(pool, &values, opts);
        }
        let (mut store, instance) = self.instantiate(self.quiet_wasi(), opts)?;
        let func = self.entry_func(&mut store, &instance)?;
        // The common shape `(i32, i32) -> i32` (gcd and friends) through a typed call, which
        // skips the dynamic type checks and boxing of an untyped one.
        if let [Val::I32(a), Val::I32(b)] = values[..] {
            if let Ok(typed) = func.typed::<(i32, i32), i32>(&store) {
                let r = typed
                    .call(&mut store, (a, b))
                    .map_err(|e| self.classify(e))?;
                return Ok(r.to_string());
            }
        }
        let mut results = vec![Val::I32(0); self.entry.ty.results().len()];
        func.call(&mut store, &values, &mut results)
            .map_err(|e| self.classify(e))?;
        Ok(args::render_results(&results))
    }

    /// A numeric call of a stateless module on a kept instance (or a new one, kept after).
    fn call_warm(
        &self,
        pool: &WarmPool,
        values: &[Val],
        opts: &CallOptions,
    ) -> Result<String, CallError> {
        let mut warm = match pool.take() {
            Some(w) => w,
            None => {
                let (mut store, instance) = self.instantiate(None, &CallOptions::default())?;
                let func = self.entry_func(&mut store, &instance)?;
                let typed = func.typed::<(i32, i32), i32>(&store).ok();
                Warm {
                    store,
                    func,
                    typed,
                    instance,
                }
            }
        };
        // The call's own limits, as a new store would have them.
        let guard = &mut warm.store.data_mut().guard;
        if guard.is_interrupted() {
            return Err(self.classify(InterruptHit.into()));
        }
        guard.deadline = Instant::now().checked_add(self.timeout(opts));
        warm.store.set_epoch_deadline(1);
        if self.fuel_metered {
            warm.store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| self.classify(e))?;
        }
        let out = match (&warm.typed, values) {
            (Some(typed), [Val::I32(a), Val::I32(b)]) => {
                typed.call(&mut warm.store, (*a, *b)).map(|r| r.to_string())
            }
            _ => {
                let mut results = vec![Val::I32(0); self.entry.ty.results().len()];
                warm.func
                    .call(&mut warm.store, values, &mut results)
                    .map(|()| args::render_results(&results))
            }
        };
        // A trap leaves nothing behind either: the instance serves the next call.
        pool.put(warm);
        out.map_err(|e| self.classify(e))
    }

    fn run_start(
        &self,
        argv: &[String],
        io: Io,
        root: Option<&Path>,
        opts: &CallOptions,
    ) -> Result<i32, CallError> {
        let (mut b, origin) = self.wasi_builder();
        b.args(argv);
        match io {
            Io::Capture { stdout, stderr } => {
                b.stdout(stdout).stderr(stderr);
            }
            Io::Inherit => {
                b.inherit_stdio();
            }
        }
        if let Some(root) = root {
            b.preopened_dir(root, "/", FsPerms::ReadWrite)
                .map_err(|e| {
                    CallError::Instantiate(format!("cannot preopen {}: {e}", root.display()))
                })?;
        }
        if let Code::Component(pre) = &self.code {
            return self.run_component(pre, b.build(), opts);
        }
        let (mut store, instance) = self.instantiate(Some((b.build_p1(), origin)), opts)?;
        let start = self
            .entry_func(&mut store, &instance)?
            .typed::<(), ()>(&store)
            .map_err(|e| CallError::Trap(e.to_string()))?;
        self.exit_status(start.call(&mut store, ()).map(|()| 0))
    }

    /// Runs a component's `wasi:cli/run`: status 1 when it returns an error, as wasmtime's
    /// own CLI does (preview 2 has no numeric exit status).
    fn run_component(
        &self,
        pre: &CommandPre<ComponentState>,
        ctx: WasiCtx,
        opts: &CallOptions,
    ) -> Result<i32, CallError> {
        let state = ComponentState {
            ctx,
            table: ResourceTable::new(),
            guard: self.guard(opts),
        };
        let mut store = Store::new(pre.engine(), state);
        self.arm(&mut store, |s| &mut s.guard)
            .map_err(|e| self.classify(e))?;
        let command = pre
            .instantiate(&mut store)
            .map_err(|e| self.instantiate_error(e))?;
        let ran = command.wasi_cli_run().call_run(&mut store);
        self.exit_status(ran.map(|r| if r.is_ok() { 0 } else { 1 }))
    }

    /// A command's exit status: its own, or from `proc_exit`/`exit`; other errors classified.
    fn exit_status(&self, ran: wasmtime::Result<i32>) -> Result<i32, CallError> {
        ran.or_else(|e| match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(self.classify(e)),
        })
    }

    /// A WASI context for kinds that do not use argv or stdout, only for modules that import
    /// WASI at all (building one costs more than the rest of a small call).
    fn quiet_wasi(&self) -> Option<(WasiP1Ctx, Instant)> {
        self.needs_wasi.then(|| {
            let (mut b, origin) = self.wasi_builder();
            (b.build_p1(), origin)
        })
    }

    /// A WASI context builder with the function's env, and the guest clock's origin.
    fn wasi_builder(&self) -> (WasiCtxBuilder, Instant) {
        let origin = Instant::now();
        let mut b = WasiCtxBuilder::new();
        b.envs(&self.env)
            .allow_blocking_current_thread(true)
            .monotonic_clock(GuestClock(origin));
        (b, origin)
    }

    fn instantiate(
        &self,
        wasi: Option<(WasiP1Ctx, Instant)>,
        opts: &CallOptions,
    ) -> Result<(Store<CallState>, Instance), CallError> {
        let Code::Module { pre, .. } = &self.code else {
            return Err(self.not_a_module());
        };
        let (wasi, clock_origin) = match wasi {
            Some((w, o)) => (Some(w), o),
            None => (None, Instant::now()),
        };
        let state = CallState {
            wasi,
            guard: self.guard(opts),
            clock_origin,
            callout: opts.callout.clone(),
        };
        let mut store = Store::new(pre.module().engine(), state);
        self.arm(&mut store, |s| &mut s.guard)
            .map_err(|e| self.classify(e))?;
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| self.instantiate_error(e))?;
        Ok((store, instance))
    }

    /// A failed instantiation: out of pool slots, a start function's trap, or a limit.
    fn instantiate_error(&self, e: wasmtime::Error) -> CallError {
        match self.classify(e) {
            CallError::Trap(msg) => CallError::Instantiate(msg),
            other => other,
        }
    }

    /// The call's timeout: the function's own, or a shorter one the call brought.
    fn timeout(&self, opts: &CallOptions) -> std::time::Duration {
        match opts.timeout {
            Some(t) => t.min(self.limits.timeout),
            None => self.limits.timeout,
        }
    }

    fn guard(&self, opts: &CallOptions) -> Guard {
        Guard {
            limiter: CallLimiter {
                memory_cap: self.limits.memory_bytes,
                memory_used: 0,
            },
            deadline: Instant::now().checked_add(self.timeout(opts)),
            interrupted: self.interrupted.clone(),
        }
    }

    /// Arms a new store's limits: memory cap, fuel, and the epoch callback that enforces the
    /// deadline and the runtime's interrupt.
    fn arm<T: 'static>(
        &self,
        store: &mut Store<T>,
        guard: fn(&mut T) -> &mut Guard,
    ) -> wasmtime::Result<()> {
        if guard(store.data_mut()).interrupted.load(Ordering::Relaxed) {
            return Err(InterruptHit.into());
        }
        store.limiter(move |s| &mut guard(s).limiter);
        if self.fuel_metered {
            store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX))?;
        }
        // Wake at every epoch tick and decide there: a deadline check per tick is cheap and
        // lets one ticker serve every timeout and the shutdown interrupt.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let g = guard(ctx.data_mut());
            if g.interrupted.load(Ordering::Relaxed) {
                return Err(InterruptHit.into());
            }
            if g.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TimeoutHit.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        Ok(())
    }

    fn module_exports(&self) -> Result<&Exports, CallError> {
        match &self.code {
            Code::Module { exports, .. } => Ok(exports),
            Code::Component(_) => Err(self.not_a_module()),
        }
    }

    fn not_a_module(&self) -> CallError {
        CallError::BadArgs(format!(
            "`{}` is a component: it runs as a WASI command only",
            self.name
        ))
    }

    fn entry_func(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
    ) -> Result<wasmtime::Func, CallError> {
        instance
            .get_module_export(&mut *store, &self.module_exports()?.entry)
            .and_then(|e| e.into_func())
            .ok_or_else(|| CallError::Trap(format!("export `{}` is missing", self.entry.export)))
    }

    /// Names the limit or fault behind a wasmtime error.
    fn classify(&self, err: wasmtime::Error) -> CallError {
        if err.is::<TimeoutHit>() {
            return CallError::Timeout(self.limits.timeout);
        }
        if let Some(hit) = err.downcast_ref::<MemoryLimitHit>() {
            return CallError::MemoryLimit {
                limit: self.limits.memory_bytes,
                requested: hit.requested,
            };
        }
        if err.is::<InterruptHit>() {
            return CallError::Interrupted;
        }
        if let Some(exit) = err.downcast_ref::<I32Exit>() {
            return CallError::Exit {
                status: exit.0,
                stderr: String::new(),
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallError::FuelExhausted(self.limits.fuel.unwrap_or(u64::MAX)),
            Some(trap) => {
                tracing::debug!(function = %self.name, "trap: {err:?}");
                CallError::Trap(trap.to_string())
            }
            None => CallError::Trap(format!("{err:#}")),
        }
    }
}

/// The end of a command's stderr, for error messages.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    match text.char_indices().rev().nth(STDERR_TAIL) {
        Some((i, _)) => format!("…{}", &text[i..]),
        None => text.to_string(),
    }
}

/// A deadline shorter than the function's own is the one a timeout names.
fn shorter_deadline(
    result: Result<String, CallError>,
    opts: &CallOptions,
) -> Result<String, CallError> {
    match (result, opts.timeout) {
        (Err(CallError::Timeout(own)), Some(t)) if t < own => Err(CallError::Timeout(t)),
        (r, _) => r,
    }
}
