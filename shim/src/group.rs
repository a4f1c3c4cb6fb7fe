//! Group mode: one container serving many functions (`wasmengine_api::group`).
//!
//! All functions of a group share this process and one wasmtime engine: its pooling
//! allocator, its epoch thread and its in-memory module cache (functions of one module are
//! compiled once). Each call still gets a fresh instance from the pool, with its own
//! function's limits (timeout, memory, output); a function cannot name another one's memory,
//! globals or tables, and no call sees state an earlier call left. What the functions of a
//! group share is the container: its cgroup, its seccomp profile and its uid, so a group is
//! one tenant's set of functions, or functions whose isolation from each other is Wasm's own.
//!
//! Modules arrive from the engine in load requests; nothing is read from the container's
//! rootfs (which is empty). A fuel limit needs code compiled with fuel metering, which this
//! engine does not have: such a function is refused here (the engine runs it in a container
//! of its own).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use wasmengine_api::function::FunctionConfig;
use wasmengine_api::group::{
    decode_load, GroupConfig, MAX_LOAD_BYTES, PATH_FUNCTIONS, PATH_INVOKE, PATH_LOGS,
};
use wasmengine_api::invoke::{ErrorCode, PATH_READY};
use wasmengine_core::{Callout, Function, Runtime};

use crate::logs::Logs;
use crate::server::{self, Request, Service, Slots};
use crate::settings::{self, DEFAULT_CONCURRENCY};

pub struct Group {
    runtime: Runtime,
    functions: RwLock<HashMap<String, Arc<Function>>>,
    /// Each function's log: kept while the function is unloaded for being idle, dropped
    /// when the engine deletes it.
    logs: RwLock<HashMap<String, Arc<Logs>>>,
    log_lines: usize,
}

/// A group server on its configured socket, until the process ends; `handle_tx` gets the
/// engine's interrupt handle. The exit status.
pub fn serve(
    config: &GroupConfig,
    env: &[String],
    handle_tx: tokio::sync::oneshot::Sender<wasmengine_core::InterruptHandle>,
) -> i32 {
    let concurrency = config.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    let runtime = match Runtime::new(settings::engine_config(false, concurrency)) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot create the engine: {e:#}");
            return crate::sandbox::EXIT_CANNOT_LOAD;
        }
    };
    let _ = handle_tx.send(runtime.interrupt_handle());
    let listener = match server::Listener::unix(std::path::Path::new(&config.socket)) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{e:#}");
            return crate::sandbox::EXIT_CANNOT_LOAD;
        }
    };
    let group = Arc::new(Group {
        runtime,
        functions: RwLock::new(HashMap::new()),
        logs: RwLock::new(HashMap::new()),
        log_lines: settings::log_lines(env),
    });
    match server::serve(
        group,
        listener,
        concurrency as usize,
        settings::busy_poll(env),
    ) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("group server failed: {e:#}");
            crate::sandbox::EXIT_CANNOT_LOAD
        }
    }
}

impl Group {
    fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.functions.read().unwrap().get(name).cloned()
    }

    fn logs(&self, name: &str) -> Arc<Logs> {
        if let Some(l) = self.logs.read().unwrap().get(name) {
            return l.clone();
        }
        self.logs
            .write()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Logs::new(self.log_lines)))
            .clone()
    }

    /// Compiles (or finds in the module cache) and prepares `name` from a load body.
    fn load(&self, name: &str, body: &[u8]) -> Result<(), String> {
        let (env, wasm) = decode_load(body)?;
        let config = match FunctionConfig::from_env(&env) {
            Ok(Some(c)) => c,
            Ok(None) => return Err("the load's configuration is not a serving function's".into()),
            Err(e) => return Err(e.to_string()),
        };
        if config.name != name {
            return Err(format!(
                "the load for {name} configures function {}",
                config.name
            ));
        }
        if config.limits.fuel.is_some() {
            return Err("a group does not run fuel-limited functions".into());
        }
        let spec = settings::serve_spec(&config, &env);
        let function = self.runtime.load(wasm, &spec).map_err(|e| e.to_string())?;
        log::info!(
            "loaded {name} as a {} ({:?})",
            function.kind(),
            function.load_source()
        );
        self.functions
            .write()
            .unwrap()
            .insert(name.to_string(), Arc::new(function));
        Ok(())
    }
}

fn ok() -> (u16, &'static str, Vec<u8>) {
    (200, "text/plain", b"ok".to_vec())
}

impl Service for Group {
    fn describe(&self) -> String {
        "a group of functions".into()
    }

    fn max_body(&self) -> usize {
        MAX_LOAD_BYTES
    }

    fn respond(
        &self,
        req: &Request,
        slots: &Slots,
        link: Option<Arc<dyn Callout>>,
    ) -> (u16, &'static str, Vec<u8>) {
        let method = req.method.as_str();
        if req.path == PATH_READY {
            return match method {
                "GET" => (200, "text/plain", b"ready".to_vec()),
                _ => (405, "text/plain", b"method not allowed".to_vec()),
            };
        }
        if let Some(name) = req.path.strip_prefix(PATH_INVOKE) {
            if method != "POST" {
                return (405, "text/plain", b"method not allowed".to_vec());
            }
            // Args beyond what a call takes are refused as a single function's server would.
            if req.body.len() > server::MAX_BODY {
                return server::error(ErrorCode::BadArgs, "args too large".into());
            }
            return match self.get(name) {
                Some(f) => server::call(&f, req, slots, &self.logs(name), link),
                None => server::error(
                    ErrorCode::NotLoaded,
                    format!("function {name} is not loaded in this group"),
                ),
            };
        }
        if let Some(rest) = req.path.strip_prefix(PATH_LOGS) {
            let name = rest.split('?').next().unwrap_or_default();
            return match method {
                "GET" => self.logs(name).answer(&req.path),
                _ => (405, "text/plain", b"method not allowed".to_vec()),
            };
        }
        if let Some(rest) = req.path.strip_prefix(PATH_FUNCTIONS) {
            let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
            return match method {
                "PUT" => match self.load(name, &req.body) {
                    Ok(()) => ok(),
                    Err(e) => {
                        log::warn!("load {name}: {e}");
                        server::error(ErrorCode::BadArgs, e)
                    }
                },
                "GET" if self.get(name).is_some() => ok(),
                "GET" => (404, "text/plain", b"not loaded".to_vec()),
                "DELETE" => {
                    self.functions.write().unwrap().remove(name);
                    // A delete (not an idle unload) forgets the log too.
                    if query == "forget" {
                        self.logs.write().unwrap().remove(name);
                    }
                    ok()
                }
                _ => (405, "text/plain", b"method not allowed".to_vec()),
            };
        }
        (404, "text/plain", b"not found".to_vec())
    }
}
