//! Command-line flags and the validated plan of a benchmark.
//!
//! Flags are parsed by clap into [`LoadArgs`] and [`ClusterArgs`], then
//! checked once into a [`Plan`] whose fields can be trusted by the driver:
//! a plan always has a way to stop (a duration or an operation count), at
//! least one connection, at least one key and a sane read fraction.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::{Args, ValueEnum};
use serde::Serialize;

/// What each operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Blind `PUT`s without a causal context (what Riak's basho_bench `put` does).
    Write,
    /// `GET`s.
    Read,
    /// `GET`s and blind `PUT`s, `--read-fraction` of them reads.
    Mixed,
    /// `GET`, then `PUT` with the `X-Riak-Vclock` the `GET` returned; one
    /// operation is the pair.
    Rmw,
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf's law over the key ranks with exponent `--zipf-exponent`.
    Zipfian,
}

/// Flags shared by `bench run` and `bench ceiling`: the shape of the load.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// What each operation does.
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// HTTP/1.1 keep-alive connections, each carrying one request at a time.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,
    /// Open loop: operations per second across all connections, scheduled
    /// in advance; latency is measured from each operation's intended send
    /// time, so a stall is charged to every operation it delayed. Without
    /// it the loop is closed (each connection sends as soon as it can).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured duration in seconds (after the warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration_s: f64,
    /// Stop after this many measured operations instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Unmeasured warm-up in seconds before each measured run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Size of every written value.
    #[arg(long, default_value_t = 100)]
    pub value_size_bytes: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_dist: KeyDist,
    /// Exponent of the zipfian distribution (YCSB uses 0.99).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Share of reads in the `mixed` workload.
    #[arg(long, default_value_t = 0.5)]
    pub read_fraction: f64,
    /// Client timeout of one operation in milliseconds: the operation is
    /// abandoned and counted as a timeout after it. Default: slightly above
    /// the server's default request timeout (10 s).
    #[arg(long, default_value_t = 11_000)]
    pub timeout_ms: u64,
    /// Operations slower than this (timeouts included) are counted as
    /// "over deadline". Default: the server's request timeout.
    #[arg(long, default_value_t = 10_000)]
    pub deadline_ms: u64,
    /// Print a progress line every this many seconds (0: none).
    #[arg(long, default_value_t = 5)]
    pub progress_s: u64,
    /// Async runtime worker threads in the bench process.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the key and operation choice (default: fixed, for repeatable
    /// runs). Round `r` of `--repeat` draws with `seed + r - 1` and a
    /// warm-up with its run's seed inverted, so no run replays the keys of
    /// another (with `allow_mult`, a replayed blind write is a sibling).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the full report (every run, its timeline and samples) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Flags of `bench run`: where the cluster is and how to use it.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Nodes to load, `host:port` separated by commas; connections are
    /// spread over them round-robin.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:8098,127.0.0.1:8099,127.0.0.1:8100"
    )]
    pub targets: Vec<String>,
    /// Bucket the keys live in.
    #[arg(long, default_value = "bench")]
    pub bucket: String,
    /// Set the bucket's `n_val` before the run (`PUT /buckets/{b}/props`).
    #[arg(long)]
    pub n_val: Option<u32>,
    /// Read quorum sent as `?r=` (`one`, `quorum`, `all` or a number).
    #[arg(long)]
    pub r: Option<String>,
    /// Write quorum sent as `?w=`.
    #[arg(long)]
    pub w: Option<String>,
    /// Write every key once before measuring (for read workloads).
    #[arg(long)]
    pub preload: bool,
    /// Skip the same-run ceiling.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Alternate ceiling and cluster runs this many times and report medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Sample the resident memory (VmRSS) of these process ids every second,
    /// and report their CPU time per operation over each cluster run.
    #[arg(long, value_delimiter = ',')]
    pub watch_pid: Vec<u32>,
    /// On a connect failure, move that connection to the next target
    /// (as a client with a node pool would); off: keep retrying the same one.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub failover: bool,
}

/// When a run stops.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// After this long.
    Duration(#[serde(serialize_with = "seconds")] Duration),
    /// After this many operations have been started.
    Ops(u64),
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The shape of the load, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub workload: Workload,
    pub connections: usize,
    /// Operations per second in open loop; `None` is closed loop.
    pub rate_ops_s: Option<u64>,
    pub stop: Stop,
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    pub value_size_bytes: usize,
    pub keys: u64,
    pub key_dist: KeyDist,
    pub zipf_exponent: f64,
    pub read_fraction: f64,
    #[serde(serialize_with = "seconds")]
    pub timeout: Duration,
    #[serde(serialize_with = "seconds")]
    pub deadline: Duration,
    pub progress_s: u64,
    pub seed: u64,
}

/// Where `bench run` sends the load, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub targets: Vec<SocketAddr>,
    pub bucket: String,
    pub n_val: Option<u32>,
    pub r: Option<String>,
    pub w: Option<String>,
    pub preload: bool,
    pub ceiling: bool,
    pub repeat: u32,
    pub watch_pids: Vec<u32>,
    pub failover: bool,
}

/// Upper bound on connections: each is a task and a socket.
const CONNECTIONS_MAX: usize = 10_000;
/// Upper bound on a run's duration, which also bounds the timeline.
pub const DURATION_S_MAX: f64 = 24.0 * 3600.0;

impl LoadArgs {
    /// Checks the flags into a [`Load`].
    pub fn validate(&self) -> anyhow::Result<Load> {
        ensure!(
            (1..=CONNECTIONS_MAX).contains(&self.connections),
            "--connections must be between 1 and {CONNECTIONS_MAX}"
        );
        ensure!(self.keys >= 1, "--keys must be at least 1");
        ensure!(
            (0.0..=1.0).contains(&self.read_fraction),
            "--read-fraction must be between 0 and 1"
        );
        ensure!(
            self.zipf_exponent > 0.0 && self.zipf_exponent.is_finite(),
            "--zipf-exponent must be positive"
        );
        ensure!(self.timeout_ms >= 1, "--timeout-ms must be at least 1");
        ensure!(self.threads >= 1, "--threads must be at least 1");
        ensure!(
            (0.0..=DURATION_S_MAX).contains(&self.warmup_s),
            "--warmup-s must be between 0 and {DURATION_S_MAX}"
        );
        if let Some(rate) = self.rate {
            ensure!(rate >= 1, "--rate must be at least 1 operation per second");
        }
        let stop = match self.ops {
            Some(0) => bail!("--ops must be at least 1"),
            Some(ops) => Stop::Ops(ops),
            None => {
                ensure!(
                    self.duration_s > 0.0 && self.duration_s <= DURATION_S_MAX,
                    "--duration-s must be between 0 and {DURATION_S_MAX}"
                );
                Stop::Duration(Duration::from_secs_f64(self.duration_s))
            }
        };
        Ok(Load {
            workload: self.workload,
            connections: self.connections,
            rate_ops_s: self.rate,
            stop,
            warmup: Duration::from_secs_f64(self.warmup_s),
            value_size_bytes: self.value_size_bytes,
            keys: self.keys,
            key_dist: self.key_dist,
            zipf_exponent: self.zipf_exponent,
            read_fraction: self.read_fraction,
            timeout: Duration::from_millis(self.timeout_ms),
            deadline: Duration::from_millis(self.deadline_ms),
            progress_s: self.progress_s,
            seed: self.seed,
        })
    }
}

impl ClusterArgs {
    /// Checks the flags into a [`Cluster`], resolving target names once.
    pub fn validate(&self) -> anyhow::Result<Cluster> {
        let mut targets = Vec::new();
        for target in &self.targets {
            let addr = target
                .to_socket_addrs()
                .with_context(|| format!("resolving target {target}"))?
                .next()
                .with_context(|| format!("target {target} resolves to no address"))?;
            targets.push(addr);
        }
        ensure!(!targets.is_empty(), "--targets must name at least one node");
        ensure!(
            !self.bucket.is_empty() && !self.bucket.contains(['/', '?', '#', '%', ' ']),
            "--bucket must be non-empty and need no percent-encoding"
        );
        ensure!(
            (1..=100).contains(&self.repeat),
            "--repeat must be between 1 and 100"
        );
        for (name, value) in [("--r", &self.r), ("--w", &self.w)] {
            if let Some(value) = value {
                ensure!(
                    value.bytes().all(|b| b.is_ascii_alphanumeric()),
                    "{name} must be one, quorum, all or a number"
                );
            }
        }
        Ok(Cluster {
            targets,
            bucket: self.bucket.clone(),
            n_val: self.n_val,
            r: self.r.clone(),
            w: self.w.clone(),
            preload: self.preload,
            ceiling: !self.no_ceiling,
            repeat: self.repeat,
            watch_pids: self.watch_pid.clone(),
            failover: self.failover,
        })
    }
}
