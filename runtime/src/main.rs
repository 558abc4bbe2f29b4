//! berthd: parse flags, set up logging, serve until SIGTERM or SIGINT.

use anyhow::Context as _;
use berth_runtime::cli::{Cli, Command};
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Config) = cli.command {
        print!("{}", berth_runtime::config::Config::commented_default());
        return Ok(());
    }
    let config = cli.config().context("configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log level {:?}", config.log_level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("berthd")
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    rt.block_on(berth_runtime::run(config, shutdown_signal()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; berthd will stop only when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
