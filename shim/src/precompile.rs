//! Classic images' modules, compiled once per node instead of once per container.
//!
//! A Wasm OCI artifact's layer is precompiled by the library (see `shim.rs`); a classic
//! image's module is a file in the rootfs, which every command container compiled again
//! (about 80 ms of a pod container's 180 ms here). Before a container is created, the shim
//! process (on the host, outside any container) reads the file the entry point names from the
//! mounted rootfs, and hands the container its precompiled form from a cache that only the
//! shim writes, keyed by the module's SHA-256 and the engine's compatibility key.
//!
//! The rootfs is the image's, so it is read with care: the path is resolved inside the rootfs
//! (`openat2` with `RESOLVE_IN_ROOT`: symlinks and `..` cannot leave it), only a regular file
//! is read (a FIFO or device would block or never end), and only up to [`MAX_MODULE`].
//! Anything unexpected leaves the container to read and compile the file itself, as before.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context};
use containerd_shim_wasm::sandbox::context::WasmLayer;
use sha2::{Digest, Sha256};
use wasmengine_api::function::{ENV_IMAGE_LAYERS, IMAGE_LAYERS_NONE};
use wasmengine_core::Runtime;

use crate::settings;
use crate::source;

/// Where precompiled modules are kept (root's, mode 0700), unless the shim's own environment
/// (containerd's, not a container's) names another directory in [`CACHE_DIR_ENV`].
const CACHE_DIR: &str = "/var/lib/containerd-shim-wasmengine/precompiled";
pub const CACHE_DIR_ENV: &str = "WASMENGINE_SHIM_CACHE_DIR";
/// Largest module file precompiled here.
const MAX_MODULE: u64 = 256 << 20;

/// The precompiled module for the container in `bundle`, if its entry is a Wasm file.
pub fn file_module(bundle: &Path) -> Option<WasmLayer> {
    let cache =
        std::env::var_os(CACHE_DIR_ENV).map_or_else(|| PathBuf::from(CACHE_DIR), PathBuf::from);
    match try_file_module(bundle, &cache) {
        Ok(layer) => layer,
        Err(e) => {
            log::info!("not precompiling the container's module file: {e:#}");
            None
        }
    }
}

/// Whether the container's env says its module is not in a Wasm layer of its image
/// ([`ENV_IMAGE_LAYERS`]` = none`, which the engine writes): its creation then need not ask
/// containerd for the image's layers. A spec that cannot be read says nothing.
pub fn image_layers_unused(bundle: &Path) -> bool {
    let Ok(bytes) = std::fs::read(bundle.join("config.json")) else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    let wanted = format!("{ENV_IMAGE_LAYERS}={IMAGE_LAYERS_NONE}");
    spec["process"]["env"]
        .as_array()
        .is_some_and(|env| env.iter().any(|e| e.as_str() == Some(&wanted)))
}

fn try_file_module(bundle: &Path, cache: &Path) -> anyhow::Result<Option<WasmLayer>> {
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("config.json")).context("read config.json")?,
    )?;
    let Some(arg0) = spec["process"]["args"][0].as_str() else {
        return Ok(None);
    };
    let path = arg0.split_once('#').map_or(arg0, |(p, _)| p);
    // Only an absolute path names a file without the container's PATH or cwd.
    if !path.starts_with('/') {
        return Ok(None);
    }
    let root = match spec["root"]["path"].as_str() {
        Some(r) if r.starts_with('/') => PathBuf::from(r),
        Some(r) => bundle.join(r),
        None => bundle.join("rootfs"),
    };
    let Some(wasm) = read_in_root(&root, path)? else {
        return Ok(None);
    };
    if !wasm.starts_with(b"\0asm") {
        return Ok(None);
    }
    let runtime = compiler()?;
    let digest = hex(&Sha256::digest(&wasm));
    let dir = cache.join(hex(&Sha256::digest(runtime.compatibility_key().as_bytes())));
    let file = dir.join(format!("{digest}.bundle"));
    let bundle_bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(_) => {
            let artifact = runtime
                .precompile_artifact(&wasm)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let b = source::bundle(&artifact, &wasm);
            store(&dir, &file, &b)?;
            log::info!("precompiled {path} (sha256:{digest}) into the shim's cache");
            b
        }
    };
    let config = serde_json::from_value(serde_json::json!({
        "mediaType": "application/wasm",
        "digest": format!("sha256:{digest}"),
        "size": wasm.len(),
    }))?;
    Ok(Some(WasmLayer {
        config,
        precompiled: true,
        layer: bundle_bytes,
    }))
}

/// The engine that compiles, made once per shim process.
fn compiler() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(settings::compiler_engine_config()).map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot create an engine: {e}"))
}

/// Reads `path` resolved inside `root`, if it is a regular file of at most [`MAX_MODULE`].
fn read_in_root(root: &Path, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let root_dir = File::open(root).with_context(|| format!("open {}", root.display()))?;
    let c_path = CString::new(path.trim_start_matches('/'))?;
    // SAFETY: `open_how` is plain integers, for which zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `c_path` and `how`, both valid for the call; the result is a new
    // descriptor that `File` then owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&root_dir),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: `fd` was just returned by openat2 and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_MODULE {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_MODULE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MODULE {
        bail!("{path} grew over {MAX_MODULE} bytes while read");
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `file` in `dir` whole or not at all (a temporary file, then a rename).
fn store(dir: &Path, file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}", std::process::id(), rand_suffix()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// A random number (each `RandomState` is seeded anew).
fn rand_suffix() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_env_entry_itself_says_the_image_layers_are_unused() {
        let dir = tempfile::tempdir().unwrap();
        let with = |env: serde_json::Value| {
            let spec = serde_json::json!({"process": {"args": ["/m.wasm"], "env": env}});
            std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
            image_layers_unused(dir.path())
        };
        assert!(with(serde_json::json!([
            "A=1",
            "WASMENGINE_IMAGE_LAYERS=none"
        ])));
        assert!(!with(serde_json::json!(["A=1"])));
        assert!(!with(serde_json::json!(["WASMENGINE_IMAGE_LAYERS=some"])));
        assert!(!with(serde_json::json!(["X=WASMENGINE_IMAGE_LAYERS=none"])));
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert!(!image_layers_unused(dir.path()));
        assert!(!image_layers_unused(&dir.path().join("missing")));
    }

    fn bundle_with(files: &[(&str, &[u8])], arg0: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        for (name, bytes) in files {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        let spec = serde_json::json!({"process": {"args": [arg0]}, "root": {"path": "rootfs"}});
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        dir
    }

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn a_module_file_is_compiled_once_then_read_from_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let b = bundle_with(&[("m.wasm", EMPTY_MODULE)], "/m.wasm#_start");
        let layer = try_file_module(b.path(), cache.path()).unwrap().unwrap();
        assert!(layer.precompiled);
        let (_, wasm) = source::unbundle(&layer.layer).unwrap();
        assert_eq!(wasm, EMPTY_MODULE);
        let stored: Vec<_> = walk(cache.path());
        assert_eq!(stored.len(), 1, "{stored:?}");
        let again = try_file_module(b.path(), cache.path()).unwrap().unwrap();
        assert_eq!(again.layer, layer.layer);
    }

    #[test]
    fn nothing_but_a_wasm_file_inside_the_rootfs_is_read() {
        let cache = tempfile::tempdir().unwrap();
        // Not Wasm, a relative path, a missing file.
        for (files, arg0) in [
            (&[("s.sh", &b"#!/bin/sh\n"[..])][..], "/s.sh"),
            (&[("m.wasm", EMPTY_MODULE)][..], "m.wasm"),
            (&[][..], "/none.wasm"),
        ] {
            let b = bundle_with(files, arg0);
            assert!(try_file_module(b.path(), cache.path()).unwrap().is_none());
        }
        // A symlink out of the rootfs resolves inside it instead (and finds nothing).
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("m.wasm"), EMPTY_MODULE).unwrap();
        let b = bundle_with(&[], "/link.wasm");
        std::os::unix::fs::symlink(
            outside.path().join("m.wasm"),
            b.path().join("rootfs/link.wasm"),
        )
        .unwrap();
        assert!(try_file_module(b.path(), cache.path()).unwrap().is_none());
        // A FIFO is not read (it would block).
        let b = bundle_with(&[], "/fifo.wasm");
        let fifo = CString::new(b.path().join("rootfs/fifo.wasm").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(try_file_module(b.path(), cache.path()).unwrap().is_none());
        assert!(walk(cache.path()).is_empty());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }
}
