//! The process's one wasmtime `Engine`, its linker and its epoch ticker, and loading modules
//! into [`Function`]s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
};

use wasmtime::component::Component;
use wasmtime_wasi::p2::bindings::sync::CommandPre;

use crate::cache::{Compiled, LoadSource, ModuleCache};
use crate::config::{EngineConfig, Limits};
use crate::error::LoadError;
use crate::function::{CallState, Code, ComponentState, Exports, Function, FunctionSpec};
use crate::kind::{self, Entry, Kind};
use crate::stateless::WarmPool;

pub use crate::ticker::on_tick;

pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    component_linker: wasmtime::component::Linker<ComponentState>,
    cache: ModuleCache,
    config: EngineConfig,
    pooled: bool,
    interrupted: Arc<AtomicBool>,
}

/// Stops every running and future call of a runtime's functions. Only an atomic store and an
/// atomic add: safe to use from a signal handler.
#[derive(Clone)]
pub struct InterruptHandle {
    engine: Engine,
    interrupted: Arc<AtomicBool>,
}

impl InterruptHandle {
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.engine.increment_epoch();
    }
}

impl Runtime {
    pub fn new(config: EngineConfig) -> anyhow::Result<Runtime> {
        let (engine, pooled) = build_engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, CallState::wasi)?;
        crate::blocking::bound_waits(&mut linker)?;
        crate::callout::add_to_linker(&mut linker)?;
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut component_linker)?;
        crate::blocking::bound_component_waits(&mut component_linker)?;
        crate::ticker::spawn(engine.weak(), config.epoch_tick);
        let cache = ModuleCache::new(&engine, config.cache_dir.clone());
        Ok(Runtime {
            engine,
            linker,
            component_linker,
            cache,
            config,
            pooled,
            interrupted: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether instances come from the pooling allocator (false after a fallback).
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            engine: self.engine.clone(),
            interrupted: self.interrupted.clone(),
        }
    }

    /// Compiles (or fetches from cache) `wasm`, finds the entry point the spec asks for and
    /// prepares instantiation. Everything that can be checked before a call is checked here.
    pub fn load(&self, wasm: &[u8], spec: &FunctionSpec) -> Result<Function, LoadError> {
        let limits = self.limits_for(spec)?;
        let (module, source) = self.cache.load(&self.engine, wasm)?;
        let stateless = crate::stateless::is_stateless(wasm);
        self.prepare(
            module,
            source,
            crate::cache::digest(wasm),
            spec,
            limits,
            stateless,
        )
    }

    /// Like [`Runtime::load`], for an artifact made by [`Runtime::precompile_artifact`] of an
    /// engine with the same [`Runtime::compatibility_key`] (wasmtime checks this too).
    ///
    /// # Safety
    /// The bytes are machine code that will be run: they must come from a trusted
    /// precompilation (e.g. containerd's content store, written by our own shim), never
    /// from a user.
    pub unsafe fn load_precompiled(
        &self,
        artifact: &[u8],
        spec: &FunctionSpec,
    ) -> Result<Function, LoadError> {
        let limits = self.limits_for(spec)?;
        let module = unsafe { Compiled::deserialize(&self.engine, artifact) }
            .map_err(|e| LoadError::Compile(format!("precompiled module is unusable: {e:#}")))?;
        self.prepare(
            module,
            LoadSource::Disk,
            crate::cache::digest(artifact),
            spec,
            limits,
            false,
        )
    }

    fn limits_for(&self, spec: &FunctionSpec) -> Result<Limits, LoadError> {
        let limits = spec
            .limits
            .clone()
            .unwrap_or_else(|| self.config.default_limits.clone());
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(LoadError::Config(format!(
                "memory limit {} bytes is over the engine's maximum of {} bytes",
                limits.memory_bytes, self.config.max_memory_bytes
            )));
        }
        if limits.fuel.is_some() && !self.config.fuel {
            return Err(LoadError::Config(
                "a fuel limit needs fuel metering, which this engine was started without".into(),
            ));
        }
        Ok(limits)
    }

    fn prepare(
        &self,
        compiled: Compiled,
        source: LoadSource,
        digest: String,
        spec: &FunctionSpec,
        limits: Limits,
        stateless: bool,
    ) -> Result<Function, LoadError> {
        let module = match compiled {
            Compiled::Module(module) => module,
            Compiled::Component(component) => {
                return self.prepare_component(component, source, digest, spec, limits)
            }
        };
        let export = spec.export.as_deref().unwrap_or(&spec.name);
        let entry = kind::detect(&module, spec.wasi, export)?;
        let needs_wasi = module.imports().any(|i| i.module().starts_with("wasi"));
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let exports = Exports {
            entry: module
                .get_export_index(&entry.export)
                .expect("detect found the export"),
            memory: module.get_export_index("memory"),
            heap_base: module.get_export_index("__heap_base"),
        };
        tracing::debug!(function = %spec.name, kind = %entry.kind, ?source, "loaded");
        let params = entry.ty.params().collect();
        let entry_kind = entry.kind;
        let signature = crate::kind::signature(&entry.ty);
        Ok(Function {
            name: spec.name.clone(),
            params,
            signature,
            entry,
            code: Code::Module { pre, exports },
            limits,
            env: spec.env.clone(),
            needs_wasi,
            fuel_metered: self.config.fuel,
            interrupted: self.interrupted.clone(),
            digest,
            source,
            warm: (stateless && entry_kind == Kind::Numeric).then(WarmPool::default),
        })
    }

    /// A WASI preview 2 component runs as a WASI command: it must export `wasi:cli/run`.
    fn prepare_component(
        &self,
        component: Component,
        source: LoadSource,
        digest: String,
        spec: &FunctionSpec,
        limits: Limits,
    ) -> Result<Function, LoadError> {
        if spec.wasi == Some(false) || spec.export.is_some() {
            return Err(LoadError::Kind(
                "a component runs as a WASI command through `wasi:cli/run`; no export of it is \
                 called (deploy it with wasi_cap true and no export; run it without #export)"
                    .into(),
            ));
        }
        let pre = self
            .component_linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = CommandPre::new(pre).map_err(|e| {
            LoadError::Kind(format!(
                "a component must be a WASI command exporting `wasi:cli/run`: {e:#}"
            ))
        })?;
        tracing::debug!(function = %spec.name, ?source, "loaded a component");
        let ty = wasmtime::FuncType::new(&self.engine, [], []);
        Ok(Function {
            name: spec.name.clone(),
            params: Vec::new(),
            signature: kind::signature(&ty),
            entry: Entry {
                kind: Kind::Command,
                export: "wasi:cli/run".into(),
                ty,
            },
            code: Code::Component(pre),
            limits,
            env: spec.env.clone(),
            needs_wasi: true,
            fuel_metered: self.config.fuel,
            interrupted: self.interrupted.clone(),
            digest,
            source,
            warm: None,
        })
    }

    /// Compiles `wasm` into the caches without making a function (for warming a cache).
    pub fn precompile(&self, wasm: &[u8]) -> Result<LoadSource, LoadError> {
        self.cache.load(&self.engine, wasm).map(|(_, s)| s)
    }

    /// A precompiled artifact of `wasm` for [`Runtime::load_precompiled`].
    pub fn precompile_artifact(&self, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
        if crate::cache::is_component(wasm) {
            self.engine.precompile_component(wasm)
        } else {
            self.engine.precompile_module(wasm)
        }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    /// Which precompiled artifacts this runtime can load: equal keys, compatible artifacts.
    pub fn compatibility_key(&self) -> &str {
        self.cache.engine_key()
    }
}

/// The wasmtime engine for `config`: pooled if asked and possible, else on demand. Returns
/// whether it is pooled.
pub fn build_engine(config: &EngineConfig) -> anyhow::Result<(Engine, bool)> {
    if config.pooling {
        match Engine::new(&wasmtime_config(config, true)) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => {
                tracing::warn!("pooling allocator unavailable, allocating on demand: {e:#}")
            }
        }
    }
    Ok((Engine::new(&wasmtime_config(config, false))?, false))
}

/// Pool slots one call may take: a core module takes one instance, memory and table; a
/// component takes several core instances (a WASI preview 1 program wrapped with wasmtime's
/// adapter: four). A component over these counts is refused at load, not at each call.
/// Instance and table slots cost little; memory slots reserve address space for
/// `max_memory_bytes` each, so they are kept few.
const CORE_INSTANCES_PER_CALL: u32 = 16;
const MEMORIES_PER_CALL: u32 = 2;

fn wasmtime_config(config: &EngineConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .consume_fuel(config.fuel)
        .memory_init_cow(true)
        .cranelift_opt_level(OptLevel::Speed);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        let calls = config.pool_instances;
        pool.total_component_instances(calls)
            .total_core_instances(calls.saturating_mul(CORE_INSTANCES_PER_CALL))
            .total_memories(calls.saturating_mul(MEMORIES_PER_CALL))
            .total_tables(calls.saturating_mul(CORE_INSTANCES_PER_CALL))
            .max_core_instances_per_component(CORE_INSTANCES_PER_CALL)
            .max_memories_per_component(MEMORIES_PER_CALL)
            .max_tables_per_component(CORE_INSTANCES_PER_CALL)
            .max_memory_size(config.max_memory_bytes as usize)
            // At most one stack and one GC heap per call. The defaults (1,000 each) cost
            // about 1,000 mprotect calls, 1.7 ms, at every start of a function's process.
            .total_stacks(calls)
            .total_gc_heaps(calls)
            // Reset the first pages of a slot in place rather than madvise: no syscall per
            // call. With PAGEMAP_SCAN only the pages the call dirtied are reset.
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(config.keep_resident_bytes)
            .pagemap_scan(if config.pagemap_scan {
                Enabled::Auto
            } else {
                Enabled::No
            });
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}
