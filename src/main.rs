//! `wasm_engine`: serves the WasmEngine REST API (see the crate docs in `lib.rs` for the map),
//! packages images (`wasm_engine image …`), or drives a running engine (`wasm_engine fn …`).

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use wasm_engine::config::{Cli, Command, ServeArgs};
use wasm_engine::containerd::Containerd;
use wasm_engine::embedded::{self, Embedded};
use wasm_engine::functions::{FunctionDefaults, Functions};
use wasm_engine::layers::SizeCaps;
use wasm_engine::metrics::Metrics;
use wasm_engine::priority;
use wasm_engine::registry::Registries;
use wasm_engine::server::{router, AppState};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "wasm_engine=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match cli.command {
        None => {
            // The engine's threads run ahead of the functions' processes (see `priority`).
            priority::remember_start();
            let nice = cli.serve.nice;
            priority::set_this_thread(nice);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cli.serve.worker_threads())
                .on_thread_start(move || priority::set_this_thread(nice))
                .enable_all()
                .build()?
        }
        Some(_) => tokio::runtime::Runtime::new()?,
    };
    match cli.command {
        Some(Command::Image(cmd)) => rt.block_on(wasm_engine::image_cmd::run(cmd)),
        Some(Command::Fn(args)) => {
            let status = rt.block_on(wasm_engine::fn_cmd::run(args));
            drop(rt);
            std::process::exit(status)
        }
        None => rt.block_on(serve(cli.serve)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.data_dir)?;

    let system = args.system_containerd_address.as_path();
    let (address, private) = match &args.containerd_address {
        Some(a) => (a.clone(), None),
        None if !args.embedded_containerd && embedded::answers(system).await => {
            tracing::info!("using the system containerd at {}", system.display());
            (system.to_path_buf(), None)
        }
        None => {
            let e = Embedded::start(&args.data_dir).await?;
            (e.address.clone(), Some(e))
        }
    };
    let ctd = Containerd::new(&address, &args.namespace)?;
    match ctd.version().await {
        Ok(v) => tracing::info!("containerd {v} at {}", address.display()),
        Err(e) => tracing::warn!("{e}; serving anyway, calls fail with 503 until it answers"),
    }

    let functions = Functions::new(
        ctd,
        Registries::new(args.insecure_registries.clone()),
        &args.data_dir,
        FunctionDefaults {
            concurrency: args.function_concurrency,
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout_secs),
            parallel_starts: args.parallel_starts,
            group_size: args.group_size,
            spare_group: args.spare_group,
            log_lines: args.function_log_lines,
            busy_poll_us: args.function_busy_poll_us,
            max_call_depth: args.max_call_depth,
            group_concurrency: args.group_concurrency.max(1),
            image_caps: SizeCaps {
                compressed: args.max_image_bytes,
                unpacked: args.max_image_unpacked_bytes,
            },
        },
        Arc::new(Metrics::default()),
    );
    let functions = Arc::new(functions);
    // After a crash or a reboot the functions' tasks are gone: bring them back now rather
    // than on each one's first call.
    tokio::spawn(functions.clone().restore_all());
    tokio::spawn(functions.clone().scale_idle_to_zero());
    tokio::spawn(functions.clone().start_groups());
    let state = Arc::new(AppState {
        functions,
        auth_token: args.auth_token.clone(),
        max_body_bytes: args.max_body_bytes,
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!("WasmEngine listening on http://{}", listener.local_addr()?);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        r = &mut server => { r??; }
        _ = term.recv() => shutdown(&stop_tx, &mut server, args.shutdown_grace_secs).await,
        _ = int.recv() => shutdown(&stop_tx, &mut server, args.shutdown_grace_secs).await,
    }
    if let Some(e) = private {
        e.stop().await;
    }
    Ok(())
}

/// Stops accepting, lets in-flight requests finish (bounded); function containers stay up.
async fn shutdown(
    stop: &tokio::sync::watch::Sender<bool>,
    server: &mut tokio::task::JoinHandle<std::io::Result<()>>,
    grace_secs: u64,
) {
    tracing::info!("shutting down: finishing in-flight requests (at most {grace_secs} s)");
    let _ = stop.send(true);
    if tokio::time::timeout(Duration::from_secs(grace_secs), server)
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {grace_secs} s");
    }
}
