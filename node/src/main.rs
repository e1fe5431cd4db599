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

/// mimalloc's `mi_option_purge_delay` (v3's `mi_option_e`; the test below
/// checks the index against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's purge delay for "never": freed memory stays in the process.
const PURGE_NEVER: std::ffi::c_long = -1;

/// Keeps freed memory in the process instead of returning it to the OS a
/// second later (mimalloc's default), unless `MIMALLOC_PURGE_DELAY` says
/// otherwise. A node's largest allocations are its memtables: each is freed
/// when fjall has flushed it, while the next one fills with as much again.
/// With the default the freed pages went back to the OS before they were
/// reused, so under a sustained write load every memtable faulted its
/// memory in afresh (the kernel zeroing each page on the write path) and
/// the resident set fell and climbed with every flush. Kept, the pages are
/// reused, and a store that has taken a few hundred thousand writes keeps
/// more of its write throughput (change 29 in docs/performance.md).
///
/// The price: the resident set is the process's high-water mark, bounded
/// by what the node can hold at once (its memtables, active and sealed,
/// fjall's block cache, requests in flight); it does not shrink when the
/// load stops. A finite delay brings the saw-tooth back: mimalloc returns
/// a whole delay's worth of freed memory at once.
///
/// Returns whether freed memory stays in the process.
#[allow(unsafe_code)]
fn retain_freed_memory() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: `mi_option_set` takes an option index and a value, touches no
    // memory of ours, and may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_NEVER) };
    true
}

/// Faults in `bytes` of heap before the node starts (`node::memory`),
/// unless the allocator would return it to the OS again.
fn prefault_heap(bytes: u64, retained: bool) {
    if bytes == 0 {
        return;
    }
    if !retained {
        tracing::info!(
            "heap not prefaulted: with MIMALLOC_PURGE_DELAY set, freed memory goes back to the OS"
        );
        return;
    }
    let done = node::memory::prefault(bytes);
    let elapsed_ms = u64::try_from(done.elapsed.as_millis()).unwrap_or(u64::MAX);
    if done.bytes < bytes {
        tracing::warn!(
            bytes = done.bytes,
            requested = bytes,
            elapsed_ms,
            "heap prefaulted, capped at half the memory available to the node"
        );
    } else {
        tracing::info!(bytes = done.bytes, elapsed_ms, "heap prefaulted");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("starling")
        .build()
        .context("starting the async runtime")
}

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
        /// User to authenticate as (nodes with auth_users_file).
        #[arg(long, env = "STARLING_USER")]
        user: Option<String>,
        /// File holding the user's password (first line); or set
        /// STARLING_PASSWORD.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// PEM file of the CA that signed the node's HTTPS certificate.
        #[arg(long, env = "STARLING_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[command(subcommand)]
        command: node::admin::AdminCommand,
    },
    /// Hash a password for the users file: reads it from the first line of
    /// standard input, prints an argon2id PHC string.
    HashPassword,
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

/// The first line of `text`, without its line ending.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_owned()
}

fn main() -> anyhow::Result<()> {
    let retained = retain_freed_memory();
    let cli = Cli::parse();
    if let Command::Admin {
        node,
        json,
        user,
        password_file,
        ca_cert,
        command,
    } = &cli.command
    {
        let password = match password_file {
            Some(path) => Some(first_line(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            None => std::env::var("STARLING_PASSWORD").ok(),
        };
        let credentials = node::admin::Credentials {
            user: user.clone(),
            password,
            ca_cert: ca_cert.clone(),
        };
        return node::admin::run(node, &credentials, command, *json);
    }
    if let Command::HashPassword = &cli.command {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = first_line(&line);
        if password.is_empty() {
            anyhow::bail!("the password is empty");
        }
        println!("{}", http_api::auth::hash_password(&password));
        return Ok(());
    }
    match cli.command {
        Command::Start { config, raw } => {
            let file = match config {
                Some(path) => RawConfig::from_file(&path)?,
                None => RawConfig::default(),
            };
            let config = Config::from_raw(file.layered(*raw))?;
            node::logging::init(config.log_format);
            prefault_heap(config.memory_prefault_bytes, retained);
            // The signal listeners are made inside the runtime, before
            // the node starts.
            runtime()?.block_on(async {
                node::server::run(config, node::server::shutdown_signal()).await
            })
        }
        Command::Dev { dir, http_port } => {
            node::logging::init(node::config::LogFormat::Text);
            prefault_heap(node::dev::PREFAULT_BYTES, retained);
            runtime()?.block_on(node::dev::run(dir, http_port))
        }
        Command::Admin { .. } | Command::HashPassword => {
            unreachable!("handled before the runtime starts")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc v3's purge delay: its default is
    /// 1,000 ms, and `retain_freed_memory` sets it to never (-1).
    #[test]
    #[allow(unsafe_code)]
    fn retain_freed_memory_sets_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option; no memory of ours is touched.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1_000, "not mimalloc v3's purge delay");
        assert!(retain_freed_memory());
        assert_eq!(get(), PURGE_NEVER);
    }
}
