//! `jepsen`: Starling's partition-testing harness.
//!
//! - `jepsen test`: one run (exit code 0 valid, 1 invalid, 2 unknown; a run
//!   the harness could not carry out is unknown too).
//! - `jepsen cleanup`: removes whatever crashed runs left behind.
//! - `jepsen check`: judges a stored `history.jsonl` again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use jepsen::checker::{Validity, delete, register, set};
use jepsen::nemesis::Spec;
use jepsen::run::{TestOptions, run};
use jepsen::workload::Kind;

#[derive(Debug, Parser)]
#[command(
    name = "jepsen",
    about = "Partition tests of Starling: real nodes in network namespaces, nemeses, checkers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one test (needs root: namespaces and nftables).
    Test(Box<TestArgs>),
    /// Remove namespaces, bridges, nftables tables and processes of runs
    /// whose harness is gone.
    Cleanup {
        /// Also runs whose harness is still alive.
        #[arg(long)]
        all: bool,
    },
    /// Judge a stored history again (convergence needs a live cluster and
    /// is not re-judged).
    Check {
        /// The `history.jsonl`.
        history: PathBuf,
        /// Its workload.
        #[arg(long, default_value = "set")]
        workload: String,
    },
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// `set`, `register`, `delete` or `convergence`.
    #[arg(long, default_value = "set")]
    workload: String,
    /// `none`, `mixed`, or a comma-separated list of `partition`, `halves`,
    /// `isolate`, `ring`, `bridge`, `one-way`, `loss`, `kill`, `pause`.
    #[arg(long, default_value = "none")]
    nemesis: String,
    /// Nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of workload and faults.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seed of the fault schedule and the clients' choices (default: from
    /// the clock, printed and recorded).
    #[arg(long)]
    seed: Option<u64>,
    /// Client threads (default: two per node).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Target operations per second over all clients (default: 10 per
    /// client).
    #[arg(long)]
    rate: Option<f64>,
    /// Keys written at a time (default: the workload's).
    #[arg(long, default_value_t = 0)]
    keys: usize,
    /// Set workload: elements added to each key before the clients move on
    /// to fresh keys (default 400).
    #[arg(long, default_value_t = 0)]
    elements_per_key: u64,
    /// Seconds at the end of the time limit without faults, the clients
    /// still running (the nemesis ends its last fault before).
    #[arg(long, default_value_t = 0)]
    quiet_tail: u64,
    /// The bucket's `allow_mult`: `false` is the last-write-wins canary,
    /// which must be judged invalid.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    allow_mult: bool,
    /// Seconds to wait for replicas to converge after the final heal.
    #[arg(long, default_value_t = 60)]
    convergence_wait: u64,
    /// Milliseconds before a client gives up on a request (then: info).
    #[arg(long, default_value_t = 5000)]
    client_timeout_ms: u64,
    /// The nodes' default request deadline, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    request_timeout_ms: u64,
    /// The `starling` binary (default: next to this one, then
    /// target/release, then PATH).
    #[arg(long, env = "STARLING_BIN")]
    starling: Option<PathBuf>,
    /// Where artifacts go.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// The test's name in the store (default from workload, nemesis and
    /// node count).
    #[arg(long)]
    name: Option<String>,
    /// Keep the nodes' data directories even when the run is valid.
    #[arg(long)]
    keep_data: bool,
    /// An extra `starling start` argument (repeatable), e.g.
    /// `--node-arg=--read-repair=false`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

fn find_starling(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(path) = explicit {
        return path;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for candidate in [dir.join("starling"), dir.join("../release/starling")] {
            if candidate.exists() {
                return candidate;
            }
        }
    }
    let local = Path::new("target/release/starling");
    if local.exists() {
        return local.to_owned();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("starling").exists() {
                return dir.join("starling");
            }
        }
    }
    PathBuf::from("starling")
}

/// Catches SIGINT and SIGTERM: the run stops, heals and tears down.
fn catch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if !stop.swap(true, Ordering::SeqCst) {
                    eprintln!("jepsen: stopping: healing, then tearing everything down");
                }
            }
        });
    });
    // Registered before the run creates anything, so a signal can never
    // kill the harness with namespaces left behind.
    anyhow::ensure!(
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or(false),
        "could not install signal handlers"
    );
    Ok(())
}

fn test(args: TestArgs) -> anyhow::Result<Validity> {
    if let Err(why) = jepsen::net::available() {
        anyhow::bail!("this machine cannot run the harness: {why}");
    }
    let workload = Kind::parse(&args.workload)?;
    let nemesis = Spec::parse(&args.nemesis)?;
    let concurrency = args.concurrency.unwrap_or(2 * args.nodes).max(1);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000)
    });
    let starling = find_starling(args.starling);
    let starling = std::fs::canonicalize(&starling)
        .with_context(|| format!("no starling binary at {}", starling.display()))?;
    let options = TestOptions {
        workload,
        nemesis_text: args.nemesis,
        nemesis,
        nodes: args.nodes,
        time_limit: Duration::from_secs(args.time_limit),
        seed,
        concurrency,
        rate: args.rate.unwrap_or(10.0 * concurrency as f64),
        keys: args.keys,
        elements_per_key: args.elements_per_key,
        quiet_tail: Duration::from_secs(args.quiet_tail),
        allow_mult: args.allow_mult,
        starling,
        store: args.store,
        name: args.name,
        convergence_wait: Duration::from_secs(args.convergence_wait),
        client_timeout: Duration::from_millis(args.client_timeout_ms),
        request_timeout_ms: args.request_timeout_ms,
        keep_data: args.keep_data,
        node_args: args.node_args,
    };
    let stop = Arc::new(AtomicBool::new(false));
    catch_signals(stop.clone())?;
    let outcome = run(&options, stop)?;
    println!(
        "jepsen: {} (run {}); artifacts in {}",
        outcome.validity,
        outcome.run_id,
        outcome.dir.display()
    );
    Ok(outcome.validity)
}

fn check(history: &Path, workload: &str) -> anyhow::Result<Validity> {
    let ops = jepsen::history::read_jsonl(history)?;
    let (valid, report) = match Kind::parse(workload)? {
        Kind::Set | Kind::Convergence => {
            let r = set::check(&ops)?;
            (r.valid, serde_json::to_value(r)?)
        }
        Kind::Register => {
            let r = register::check(&ops)?;
            (r.valid, serde_json::to_value(r)?)
        }
        Kind::Delete => {
            let r = delete::check(&ops)?;
            (r.valid, serde_json::to_value(r)?)
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(valid)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test(*args),
        Command::Check { history, workload } => check(&history, &workload),
        Command::Cleanup { all } => {
            let report = jepsen::net::cleanup(all);
            for run in &report.removed_runs {
                println!("removed run {run}");
            }
            for run in &report.live_runs {
                println!("left run {run} alone: its harness is alive (use --all)");
            }
            for problem in &report.problems {
                eprintln!("problem: {problem}");
            }
            if report.problems.is_empty() {
                Ok(Validity::Valid)
            } else {
                Ok(Validity::Unknown)
            }
        }
    };
    match result {
        Ok(validity) => ExitCode::from(validity.exit_code() as u8),
        Err(err) => {
            eprintln!("jepsen: {err:#}");
            eprintln!("jepsen: no verdict: unknown (exit code 2)");
            ExitCode::from(2)
        }
    }
}
