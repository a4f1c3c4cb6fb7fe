//! Compiled modules and components. A module is compiled once per process (kept in memory) and once per
//! machine (kept on disk as a precompiled artifact). The disk key is the module's SHA-256
//! together with the engine's compatibility hash, which covers the wasmtime version and every
//! code-generation setting, so an artifact is only ever loaded by an engine that could have
//! produced it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::error::LoadError;

/// Where a loaded module came from: what a cold start cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already compiled in this process.
    Memory,
    /// Read from the on-disk precompiled cache (no compilation).
    Disk,
    /// Compiled now.
    Compiled,
}

pub struct ModuleCache {
    dir: Option<PathBuf>,
    engine_key: String,
    modules: Mutex<HashMap<String, Compiled>>,
}

/// A compiled core module or component.
#[derive(Clone)]
pub enum Compiled {
    Module(Module),
    Component(Component),
}

/// Whether `bytes` are a component (binary layer 1) rather than a core module.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm") && bytes.get(6..8) == Some(&[1, 0])
}

impl Compiled {
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        Ok(if is_component(bytes) {
            Compiled::Component(Component::new(engine, bytes)?)
        } else {
            Compiled::Module(Module::new(engine, bytes)?)
        })
    }

    /// # Safety
    /// `bytes` must be a precompiled artifact from a trusted compilation.
    pub(crate) unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        Ok(match Engine::detect_precompiled(bytes) {
            Some(wasmtime::Precompiled::Component) => {
                Compiled::Component(unsafe { Component::deserialize(engine, bytes)? })
            }
            _ => Compiled::Module(unsafe { Module::deserialize(engine, bytes)? }),
        })
    }

    /// # Safety
    /// As [`Compiled::deserialize`], for a file.
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Compiled> {
        Ok(match Engine::detect_precompiled_file(path)? {
            Some(wasmtime::Precompiled::Component) => {
                Compiled::Component(unsafe { Component::deserialize_file(engine, path)? })
            }
            _ => Compiled::Module(unsafe { Module::deserialize_file(engine, path)? }),
        })
    }

    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
    }
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash gives the same key in
/// every process (std's hashers are not stable across runs or builds).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex SHA-256 of module bytes: the same value as an OCI layer digest of the module.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ModuleCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex(&h.0.finalize()[..8]);
        ModuleCache {
            dir,
            engine_key,
            modules: Mutex::new(HashMap::new()),
        }
    }

    /// The compiled module for `bytes`, compiling only if neither cache has it.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<(Compiled, LoadSource), LoadError> {
        let digest = digest(bytes);
        if let Some(m) = self.modules.lock().unwrap().get(&digest) {
            return Ok((m.clone(), LoadSource::Memory));
        }
        let path = self.path_for(&digest);
        let (module, source) = match path.as_deref().and_then(|p| read_artifact(engine, p)) {
            Some(m) => (m, LoadSource::Disk),
            None => {
                let m = Compiled::compile(engine, bytes)
                    .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
                if let Some(p) = &path {
                    if let Err(e) = write_artifact(&m, p) {
                        tracing::warn!(path = %p.display(), "cannot write precompiled module: {e:#}");
                    }
                }
                (m, LoadSource::Compiled)
            }
        };
        self.modules.lock().unwrap().insert(digest, module.clone());
        Ok((module, source))
    }

    pub fn engine_key(&self) -> &str {
        &self.engine_key
    }

    fn path_for(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }
}

fn read_artifact(engine: &Engine, path: &Path) -> Option<Compiled> {
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `write_artifact` of an engine with the same
    // compatibility hash (it is in the file name), into a directory we own; wasmtime checks
    // the header again. A corrupt file is recompiled and overwritten.
    match unsafe { Compiled::deserialize_file(engine, path) } {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), "discarding unusable precompiled module: {e:#}");
            None
        }
    }
}

fn write_artifact(module: &Compiled, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache path has a directory");
    std::fs::create_dir_all(dir)?;
    // Unique per writer: processes in different containers can share a cache directory and
    // all be PID 1.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.{:?}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, module.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
