use containerd_shim_wasm::shim::Cli;
use containerd_shim_wasmengine::WasmEngineShim;

fn main() {
    WasmEngineShim::run(None);
}
