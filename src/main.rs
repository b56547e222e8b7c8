//! The `quicmatch` server binary.

use clap::Parser;
use quicmatch::config::{Config, LogFormat};
use quicmatch::server::Server;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut runtime = match config.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = threads {
                builder.worker_threads(usize::from(threads));
            }
            builder
        }
    };
    runtime.enable_all().build()?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(config.log_format);
    let server = Server::start(config).await?;
    tokio::select! {
        result = serve_signals(&server) => result?,
        _ = return_memory_after_crowds(&server) => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Logs to stderr, filtered by RUST_LOG (default `info`), as text or JSON.
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Each line carries the current span and its parents (session, match).
        LogFormat::Json => logs.json().with_span_list(true).init(),
    }
}

/// glibc keeps the memory of freed sessions for reuse; after most of a
/// crowd has left, hand it back to the system so RSS falls again.
async fn return_memory_after_crowds(server: &Server) {
    const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    /// Sessions that must have left before trimming is worth its cost.
    const WORTH_TRIMMING: usize = 500;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let peak = server.take_session_peak();
        let now = server.hub().node_stats().active_users;
        if peak.saturating_sub(now) >= WORTH_TRIMMING && now * 2 <= peak {
            quicmatch::frontdoor::budget::trim_heap();
        }
    }
}

/// Reloads the certificate on each SIGHUP; resolves on SIGINT or SIGTERM.
async fn serve_signals(server: &Server) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => return Ok(result?),
            _ = term.recv() => return Ok(()),
            _ = hangup.recv() => {
                if let Err(error) = server.reload_certificate().await {
                    tracing::warn!(%error, "SIGHUP: the certificate could not be reloaded; keeping the current one");
                }
            }
        }
    }
}
