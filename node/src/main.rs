//! The `starling` binary: one entry point for running a node, a local
//! development cluster, and (later) administering a cluster.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use node::config::{Config, RawConfig};

// mimalloc: the request path allocates many small, short-lived buffers;
// glibc's malloc spent about a tenth of a write's CPU time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "starling",
    version,
    about = "A leaderless, eventually consistent key-value database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node from a config file, flags and STARLING_* environment.
    Start {
        /// TOML config file; flags and environment override it.
        #[arg(long, short, env = "STARLING_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        raw: Box<RawConfig>,
    },
    /// Administer a cluster through any node's HTTP API.
    Admin {
        /// Base URL of a node.
        #[arg(long, env = "STARLING_NODE", default_value = "http://127.0.0.1:8098")]
        node: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: node::admin::AdminCommand,
    },
    /// Start a local node on loopback for a first try (HTTP on 127.0.0.1:8098).
    Dev {
        /// Directory for the dev cluster's data; created if missing.
        #[arg(long, default_value = "starling-dev")]
        dir: PathBuf,
        /// HTTP port of the first node.
        #[arg(long, default_value_t = node::config::DEFAULT_HTTP_PORT)]
        http_port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Admin {
        node,
        json,
        command,
    } = &cli.command
    {
        return node::admin::run(node, command, *json);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("starling")
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Start { config, raw } => {
            let file = match config {
                Some(path) => RawConfig::from_file(&path)?,
                None => RawConfig::default(),
            };
            let config = Config::from_raw(file.layered(*raw))?;
            node::logging::init(config.log_format);
            runtime.block_on(node::server::run(config, node::server::shutdown_signal()))
        }
        Command::Dev { dir, http_port } => {
            node::logging::init(node::config::LogFormat::Text);
            runtime.block_on(node::dev::run(dir, http_port))
        }
        Command::Admin { .. } => unreachable!("handled before the runtime starts"),
    }
}
