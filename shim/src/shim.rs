//! The library's `Shim` and `Compiler` traits, implemented for WasmEngine.

use std::hash::Hash;

use containerd_shim_wasm::sandbox::context::{WasmBinaryType, WasmLayer};
use containerd_shim_wasm::shim::{Compiler, Shim, Version};
use wasmengine_core::Runtime;

use crate::sandbox::WasmEngineSandbox;
use crate::settings;
use crate::source;

pub struct WasmEngineShim;

impl Shim for WasmEngineShim {
    fn name() -> &'static str {
        "wasmengine"
    }

    fn version() -> Version {
        Version {
            version: env!("CARGO_PKG_VERSION"),
            revision: option_env!("WASMENGINE_REVISION").unwrap_or("unknown"),
        }
    }

    type Sandbox = WasmEngineSandbox;

    fn file_module(bundle: &std::path::Path) -> Option<WasmLayer> {
        crate::precompile::file_module(bundle)
    }

    fn image_layers_unused(bundle: &std::path::Path) -> bool {
        crate::precompile::image_layers_unused(bundle)
    }

    #[allow(refining_impl_trait)]
    async fn compiler() -> Option<WasmEngineCompiler> {
        match Runtime::new(settings::compiler_engine_config()) {
            Ok(runtime) => Some(WasmEngineCompiler { runtime }),
            Err(e) => {
                log::warn!("no precompilation: cannot create an engine: {e:#}");
                None
            }
        }
    }
}

/// Precompiles Wasm layers in the shim process when a container is created; the library
/// stores the results in containerd's content store and hands them to the next container of
/// the same image instead of the layer. A result is a [`source::bundle`] that keeps the layer
/// too, for containers whose limits need another compilation.
pub struct WasmEngineCompiler {
    runtime: Runtime,
}

impl Compiler for WasmEngineCompiler {
    fn cache_key(&self) -> impl Hash {
        // The bundle's layout is part of what a stored result must match.
        format!("{}+bundle1", self.runtime.compatibility_key())
    }

    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        // One entry per layer, in order: `None` keeps a layer as it is.
        layers
            .iter()
            .map(|layer| match WasmBinaryType::from_bytes(&layer.layer) {
                Some(WasmBinaryType::Module | WasmBinaryType::Component) => {
                    let artifact = self.runtime.precompile_artifact(&layer.layer)?;
                    log::info!(
                        "precompiled {} ({} bytes → {} bytes)",
                        layer.config.digest(),
                        layer.layer.len(),
                        artifact.len()
                    );
                    Ok(Some(source::bundle(&artifact, &layer.layer)))
                }
                _ => Ok(None),
            })
            .collect()
    }
}
