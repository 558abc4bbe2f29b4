//! Command line of berthd. Every flag can also be given as a `BERTH_*` environment variable.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

#[derive(Debug, Parser)]
#[command(name = "berthd", version, about = "berth: a Kubernetes CRI container runtime")]
pub struct Cli {
    /// Configuration file (TOML). Missing is fine at the default path; elsewhere it must exist.
    #[arg(long, env = "BERTH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for persistent data (images, layers, metadata).
    #[arg(long, env = "BERTH_ROOT", global = true)]
    pub root: Option<PathBuf>,
    /// Directory for runtime state.
    #[arg(long, env = "BERTH_STATE", global = true)]
    pub state: Option<PathBuf>,
    /// CRI socket path.
    #[arg(long, env = "BERTH_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Log level or tracing filter.
    #[arg(long, env = "BERTH_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the default configuration, commented.
    Config,
}

impl Cli {
    /// The effective configuration: defaults, file, drop-ins, then flags; validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut c = Config::load(&path, required)?;
        if let Some(v) = &self.root {
            c.root = v.clone();
        }
        if let Some(v) = &self.state {
            c.state = v.clone();
        }
        if let Some(v) = &self.socket {
            c.socket = v.clone();
        }
        if let Some(v) = &self.log_level {
            c.log_level = v.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "root = \"/from-file\"\nstate = \"/state-file\"\n").unwrap();
        let cli = Cli::try_parse_from(["berthd", "--config", f.to_str().unwrap(), "--root", "/from-flag"]).unwrap();
        let c = cli.config().unwrap();
        assert_eq!(c.root, PathBuf::from("/from-flag"));
        assert_eq!(c.state, PathBuf::from("/state-file"));
        let cli = Cli::try_parse_from(["berthd", "--config", "/nonexistent/berth.toml"]).unwrap();
        assert!(cli.config().is_err(), "an explicit --config must exist");
        let cli = Cli::try_parse_from(["berthd", "config"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Config)));
    }
}
