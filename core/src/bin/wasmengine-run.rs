//! `wasmengine-run`: call a Wasm function from the command line with the execution core, the
//! way the engine would, without containerd.
//!
//! ```text
//! wasmengine-run fibonacci.wasm '["30"]'
//! wasmengine-run --export gcd gcd.wasm '{"a": 12, "b": 18}'
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use wasmengine_core::{EngineConfig, FunctionSpec, Limits, Runtime};

#[derive(Parser)]
#[command(
    version,
    about = "Call a Wasm function (WASI command, string ABI or numeric export)"
)]
struct Cli {
    /// The module (.wasm or .wat).
    module: PathBuf,
    /// Arguments as JSON: an object (named) or an array (positional).
    #[arg(default_value = "{}")]
    args: String,
    /// Function name; the export called for non-WASI functions. Default: the file's stem.
    #[arg(long)]
    name: Option<String>,
    /// Export to call instead of the one named like the function.
    #[arg(long)]
    export: Option<String>,
    /// Run as a WASI command (`_start`).
    #[arg(long, conflicts_with = "no_wasi")]
    wasi: bool,
    /// Call an export (string ABI or numeric), never `_start`.
    #[arg(long)]
    no_wasi: bool,
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[arg(long, default_value_t = 256)]
    memory_mb: u64,
    /// Fuel per call (enables fuel metering).
    #[arg(long)]
    fuel: Option<u64>,
    #[arg(long, default_value_t = 1 << 20)]
    max_output_bytes: usize,
    /// Keep precompiled modules here between runs.
    #[arg(long, env = "WASMENGINE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print where the compiled module came from (compiled, disk, memory) on stderr.
    #[arg(long)]
    show_load: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&cli.module)?;
    let args: serde_json::Value = serde_json::from_str(&cli.args)?;
    let name = cli.name.clone().unwrap_or_else(|| {
        cli.module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let limits = Limits {
        timeout: Duration::from_millis(cli.timeout_ms),
        memory_bytes: cli.memory_mb << 20,
        fuel: cli.fuel,
        max_output_bytes: cli.max_output_bytes,
    };
    let runtime = Runtime::new(EngineConfig {
        fuel: cli.fuel.is_some(),
        cache_dir: cli.cache_dir.clone(),
        pool_instances: 16,
        ..EngineConfig::default()
    })?;
    let spec = FunctionSpec {
        name,
        wasi: if cli.wasi {
            Some(true)
        } else if cli.no_wasi {
            Some(false)
        } else {
            None
        },
        export: cli.export.clone(),
        limits: Some(limits),
        env: Vec::new(),
    };
    let function = runtime.load(&bytes, &spec)?;
    if cli.show_load {
        eprintln!("load: {:?}", function.load_source());
    }
    match function.call(&args) {
        Ok(result) => {
            println!("{result}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{} error: {e}", e.code());
            Ok(ExitCode::from(1))
        }
    }
}
