//! Where a container's module comes from:
//! - a Wasm OCI artifact: the library hands over the `application/wasm` layer, or what this
//!   shim's compiler made of it for an earlier container of the same image (a [`bundle`]: the
//!   precompiled module and the layer itself);
//! - a classic image: the file the entrypoint names, in the rootfs (`/` inside the
//!   container);
//! - a classic image without an entrypoint: the one `.wasm` file at the rootfs root.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use containerd_shim_wasm::sandbox::context::{Entrypoint, Source};

pub struct Module {
    pub wasm: Vec<u8>,
    /// The module precompiled by this shim's compiler, when the content store had it.
    pub precompiled: Option<Vec<u8>>,
    /// Where it came from, for messages.
    pub origin: String,
    /// argv for a WASI command: the module's path, then the arguments meant for it.
    pub argv: Vec<String>,
}

/// Finds and reads the module (`root` is the rootfs, `/` inside a container). `args` are the
/// container's process args.
pub fn locate(entry: &Entrypoint, args: &[String], root: &Path) -> anyhow::Result<Module> {
    match &entry.source {
        Source::Oci(layers) => {
            let bytes = entry.source.as_bytes()?;
            let (wasm, precompiled) = if entry.source.is_precompiled()? {
                let (precompiled, wasm) = unbundle(&bytes)?;
                (wasm.to_vec(), Some(precompiled.to_vec()))
            } else {
                (bytes.into_owned(), None)
            };
            let origin = layers
                .first()
                .map(|l| format!("OCI layer {}", l.config.digest()))
                .unwrap_or_default();
            let origin = match precompiled {
                Some(_) => format!("{origin} (with its precompiled form)"),
                None => origin,
            };
            let mut argv = args.to_vec();
            match argv.first_mut() {
                Some(first) if !strip_func(first).is_empty() => {
                    *first = strip_func(first).to_string()
                }
                Some(first) => {
                    *first = format!("{}.wasm", entry.name.as_deref().unwrap_or("module"))
                }
                None => argv.push("module.wasm".into()),
            }
            Ok(Module {
                wasm,
                precompiled,
                origin,
                argv,
            })
        }
        Source::File(path) => {
            let (file, rest) = resolve(path, args, root)?;
            let shown = Path::new("/").join(file.strip_prefix(root).unwrap_or(&file));
            read_file(&file, &shown, rest)
        }
    }
}

/// Reads a module file; `shown` is its path as the module sees it (argv[0]), `rest` the
/// arguments that follow.
fn read_file(file: &Path, shown: &Path, rest: &[String]) -> anyhow::Result<Module> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    check_magic(file, &bytes)?;
    let shown = shown.display().to_string();
    let mut argv = vec![shown.clone()];
    argv.extend_from_slice(rest);
    Ok(Module {
        wasm: bytes,
        precompiled: None,
        origin: shown,
        argv,
    })
}

/// Whether this shim can run the container: an OCI Wasm layer, or a Wasm file to read.
pub fn check(entry: &Entrypoint, args: &[String], root: &Path) -> anyhow::Result<()> {
    match &entry.source {
        Source::Oci(_) => Ok(()),
        Source::File(path) => {
            let (file, _) = resolve(path, args, root)?;
            let mut head = [0u8; 4];
            use std::io::Read;
            std::fs::File::open(&file)
                .and_then(|mut f| f.read_exact(&mut head))
                .with_context(|| format!("read {}", file.display()))?;
            check_magic(&file, &head)
        }
    }
}

const BUNDLE_MAGIC: &[u8; 8] = b"wemod\0\0\x01";

/// What the compiler stores in containerd for a Wasm layer: the precompiled module, and the
/// layer itself for containers the precompiled form cannot serve (a fuel limit needs code
/// compiled with fuel metering). Laid out as magic, the precompiled length (u64, little
/// endian), the precompiled bytes, the Wasm bytes.
pub fn bundle(precompiled: &[u8], wasm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + precompiled.len() + wasm.len());
    out.extend_from_slice(BUNDLE_MAGIC);
    out.extend_from_slice(&(precompiled.len() as u64).to_le_bytes());
    out.extend_from_slice(precompiled);
    out.extend_from_slice(wasm);
    out
}

/// The precompiled module and the Wasm of a [`bundle`].
pub fn unbundle(bytes: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    let rest = bytes
        .strip_prefix(BUNDLE_MAGIC)
        .context("the precompiled layer was not made by this shim's compiler")?;
    let (len, rest) = rest
        .split_first_chunk::<8>()
        .context("the precompiled layer is truncated")?;
    let len = usize::try_from(u64::from_le_bytes(*len))?;
    anyhow::ensure!(len <= rest.len(), "the precompiled layer is truncated");
    let (precompiled, wasm) = rest.split_at(len);
    check_magic(Path::new("the precompiled layer's module"), wasm)?;
    Ok((precompiled, wasm))
}

fn strip_func(arg0: &str) -> &str {
    arg0.split_once('#').map(|(p, _)| p).unwrap_or(arg0)
}

/// The module file and the args meant for it. If arg0 (`path`, without `#export`) names a file
/// in the rootfs, that is the module. Otherwise the image's one `.wasm` file at the root is,
/// and every arg is the module's (so `ctr run IMAGE ID 30` passes `30` to an image without an
/// entrypoint); an empty arg0 (`#export` alone) is dropped.
fn resolve<'a>(
    path: &Path,
    args: &'a [String],
    root: &Path,
) -> anyhow::Result<(PathBuf, &'a [String])> {
    let rest = args.get(1..).unwrap_or_default();
    if path.as_os_str().is_empty() {
        return Ok((single_wasm(root)?, rest));
    }
    let full = root.join(path.strip_prefix("/").unwrap_or(path));
    if full.is_file() {
        return Ok((full, rest));
    }
    let looks_like_module = path.extension().is_some_and(|x| x == "wasm") || path.is_absolute();
    if looks_like_module {
        bail!("module {} not found in the image", path.display());
    }
    Ok((single_wasm(root)?, args))
}

/// The one `.wasm` file at the root of `root`.
pub fn single_wasm(root: &Path) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("list {}", root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("the image has no entrypoint and no .wasm file at its root"),
        _ => bail!(
            "the image has no entrypoint and {} .wasm files at its root ({}): name one as the entrypoint",
            found.len(),
            found
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn check_magic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly module", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wasm_at_the_root_is_the_module() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fn.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(dir.path().join("README"), b"text").unwrap();
        assert_eq!(single_wasm(dir.path()).unwrap(), dir.path().join("fn.wasm"));
        std::fs::write(dir.path().join("other.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let err = single_wasm(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("2 .wasm files") && err.contains("fn.wasm, other.wasm"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(single_wasm(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no .wasm file"));
    }

    #[test]
    fn arg0_names_the_module_or_is_an_argument() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/fn.wasm"), b"\0asm").unwrap();
        let args: Vec<String> = ["/bin/fn.wasm", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (file, rest) = resolve(Path::new("/bin/fn.wasm"), &args, dir.path()).unwrap();
        assert_eq!((file, rest), (dir.path().join("bin/fn.wasm"), &args[1..]));
        assert!(resolve(Path::new("/nope.wasm"), &args, dir.path()).is_err());
        std::fs::write(dir.path().join("fib.wasm"), b"\0asm").unwrap();
        let args = vec!["30".to_string()];
        let (file, rest) = resolve(Path::new("30"), &args, dir.path()).unwrap();
        assert_eq!((file, rest), (dir.path().join("fib.wasm"), &args[..]));
        assert_eq!(strip_func("/fn.wasm#gcd"), "/fn.wasm");
    }

    #[test]
    fn bundles_keep_both_forms() {
        let packed = bundle(b"machine code", b"\0asm\x01\0\0\0");
        let (precompiled, wasm) = unbundle(&packed).unwrap();
        assert_eq!(precompiled, b"machine code");
        assert_eq!(wasm, b"\0asm\x01\0\0\0");
        let err = unbundle(b"machine code").unwrap_err().to_string();
        assert!(err.contains("not made by this shim"), "{err}");
        let err = unbundle(&packed[..20]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = format!("{:#}", unbundle(&bundle(b"x", b"text")).unwrap_err());
        assert!(err.contains("not a WebAssembly module"), "{err}");
    }
}
