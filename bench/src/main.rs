//! `bench`: Starling's load generator, with a ceiling measured in the same run.
//!
//! `bench run` loads a cluster over its Riak HTTP API with a fixed number of
//! keep-alive connections, closed loop or open loop at a target rate, and
//! before each measured run measures the *ceiling*: the same generator
//! against a bare hyper server inside this process (`ceiling`). Results are
//! throughput, latency percentiles from an HDR histogram, errors by kind,
//! a per-second timeline and, optionally, the memory of watched processes;
//! every throughput is also given as a percentage of the ceiling, which is
//! the figure that stays comparable on a noisy or different machine.
//! `bench ceiling` measures the ceiling alone.
//!
//! It does not start or stop the cluster; scripts around it do (see
//! `docs/performance.md`).

mod ceiling;
mod client;
mod load;
mod plan;
mod workload;

use std::path::Path;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::load::{Run, RunResult};
use crate::plan::{Cluster, Load, LoadArgs, Stop};
use crate::workload::Generator;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    version,
    about = "Load generator for Starling, with a same-run ceiling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a cluster; measure the ceiling in the same run.
    Run {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        cluster: plan::ClusterArgs,
    },
    /// Measure only the ceiling: this generator against a bare in-process
    /// hyper server answering a fixed 100-byte body.
    Ceiling {
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// Facts about the machine the figures came from.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: Option<String>,
    kernel: Option<String>,
    /// 1-minute load average when the bench started: other work on the machine.
    loadavg_1m_at_start: Option<f64>,
}

impl Machine {
    fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            loadavg_1m_at_start: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        }
    }
}

/// Medians over the repeated runs.
#[derive(Debug, Serialize)]
struct Summary {
    ceiling_ops_s: Option<f64>,
    cluster_ops_s: Option<f64>,
    /// Median cluster throughput as a percentage of the median ceiling.
    percent_of_ceiling: Option<f64>,
    /// Median over the cluster runs of their p99 latency.
    cluster_p99_us: Option<u64>,
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    load: Load,
    cluster: Option<Cluster>,
    /// Every measured run in order, ceiling and cluster alternating.
    runs: Vec<Labeled>,
    summary: Summary,
}

#[derive(Debug, Serialize)]
struct Labeled {
    /// `ceiling` or `cluster`.
    target: &'static str,
    /// Percentage of the ceiling measured just before this run.
    percent_of_ceiling: Option<f64>,
    #[serde(flatten)]
    result: RunResult,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (load_args, cluster) = match &cli.command {
        Command::Run { load, cluster } => (load, Some(cluster.validate()?)),
        Command::Ceiling { load } => (load, None),
    };
    let load = load_args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load_args.threads)
        .enable_all()
        .thread_name("bench")
        .build()
        .context("starting the async runtime")?;
    let machine = Machine::probe();
    eprintln!(
        "bench: {} CPUs ({}), load average {:?} at start; {:?}, {} connections, {}",
        machine.cpus,
        machine.cpu_model.as_deref().unwrap_or("?"),
        machine.loadavg_1m_at_start,
        load.workload,
        load.connections,
        match load.rate_ops_s {
            Some(rate) => format!("open loop at {rate} ops/s"),
            None => "closed loop".to_owned(),
        }
    );
    let runs = runtime.block_on(measure(&load, cluster.as_ref()))?;
    let summary = summarize(&runs);
    print_table(&runs, &summary);
    if let Some(path) = &load_args.json {
        write_json(
            path,
            &Report {
                machine,
                load,
                cluster,
                runs,
                summary,
            },
        )?;
    }
    Ok(())
}

/// Runs the preload, then the ceiling and cluster runs alternately.
async fn measure(load: &Load, cluster: Option<&Cluster>) -> anyhow::Result<Vec<Labeled>> {
    let ceiling = ceiling::start().await?;
    let mut runs = Vec::new();
    let Some(cluster) = cluster else {
        let generator = Generator::new(load, "bench", None, None, "bench")?;
        let spec = spec(
            "ceiling".into(),
            vec![ceiling.addr],
            true,
            closed(load),
            generator,
        );
        runs.push(Labeled {
            target: "ceiling",
            percent_of_ceiling: Some(100.0),
            result: measured(&spec).await?,
        });
        return Ok(runs);
    };
    let generator = Generator::new(
        load,
        &cluster.bucket,
        cluster.r.as_deref(),
        cluster.w.as_deref(),
        "bench",
    )?;
    if let Some(n_val) = cluster.n_val {
        set_n_val(cluster, n_val).await?;
    }
    if cluster.preload {
        eprintln!("bench: preloading {} keys", load.keys);
        let mut spec = spec(
            "preload".into(),
            cluster.targets.clone(),
            cluster.failover,
            closed(load),
            generator.clone(),
        );
        spec.preload = true;
        let result = load::run(&spec).await?;
        eprintln!(
            "bench: preloaded {} keys in {:.1} s ({} errors)",
            result.ok, result.elapsed_s, result.errors
        );
        if result.errors > 0 {
            bail!("preload failed: {:?}", result.errors_by_kind);
        }
    }
    for round in 1..=cluster.repeat {
        let mut percent = None;
        let mut ceiling_ops_s = None;
        if cluster.ceiling {
            let spec = spec(
                format!("ceiling#{round}"),
                vec![ceiling.addr],
                true,
                closed(load),
                generator.clone(),
            );
            let result = measured(&spec).await?;
            ceiling_ops_s = Some(result.throughput_ops_s);
            runs.push(Labeled {
                target: "ceiling",
                percent_of_ceiling: Some(100.0),
                result,
            });
        }
        let mut spec = spec(
            format!("cluster#{round}"),
            cluster.targets.clone(),
            cluster.failover,
            round_load(load, round),
            generator.clone(),
        );
        spec.watch_pids = cluster.watch_pids.clone();
        let result = measured(&spec).await?;
        if let Some(c) = ceiling_ops_s {
            percent = Some(100.0 * result.throughput_ops_s / c.max(1e-9));
        }
        runs.push(Labeled {
            target: "cluster",
            percent_of_ceiling: percent,
            result,
        });
    }
    Ok(runs)
}

/// The load of round `round` (from 1) of `--repeat`: its own seed, so a
/// round draws other keys than the rounds before it instead of replaying
/// them (a replayed blind write would overwrite, or with `allow_mult` add
/// a sibling to, every key the round before wrote).
fn round_load(load: &Load, round: u32) -> Load {
    Load {
        seed: load.seed.wrapping_add(u64::from(round) - 1),
        ..load.clone()
    }
}

/// The seed of a warm-up before a run drawing with `seed`: another one, so
/// the run does not begin by rewriting the keys its warm-up wrote.
fn warmup_seed(seed: u64) -> u64 {
    !seed
}

/// The load of a ceiling run: closed loop whatever the cluster run does,
/// since the ceiling is the most the generator can do.
fn closed(load: &Load) -> Load {
    Load {
        rate_ops_s: None,
        ..load.clone()
    }
}

fn spec(
    label: String,
    targets: Vec<std::net::SocketAddr>,
    failover: bool,
    load: Load,
    generator: Generator,
) -> Run {
    Run {
        label,
        targets,
        failover,
        load,
        generator,
        preload: false,
        watch_pids: Vec::new(),
        progress: true,
    }
}

/// A warm-up (unmeasured), then the measured run.
async fn measured(spec: &Run) -> anyhow::Result<RunResult> {
    if !spec.load.warmup.is_zero() {
        let mut warmup = spec.clone();
        warmup.label = format!("{} warm-up", spec.label);
        warmup.load.seed = warmup_seed(spec.load.seed);
        warmup.load.stop = Stop::Duration(spec.load.warmup);
        warmup.progress = false;
        warmup.watch_pids.clear();
        load::run(&warmup).await?;
    }
    let result = load::run(spec).await?;
    eprintln!(
        "[{}] {:.0} ops/s, p99 {:.2} ms, {} errors",
        spec.label,
        result.throughput_ops_s,
        result.latency.p99_us as f64 / 1000.0,
        result.errors
    );
    Ok(result)
}

/// Sets the bucket's `n_val` through the first target that answers.
async fn set_n_val(cluster: &Cluster, n_val: u32) -> anyhow::Result<()> {
    let body = format!(r#"{{"props":{{"n_val":{n_val}}}}}"#);
    let mut last = None;
    for (i, target) in cluster.targets.iter().enumerate() {
        let request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(format!("/buckets/{}/props", cluster.bucket))
            .header(http::header::HOST, "bench")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))?;
        let mut conn = client::Connection::new(vec![*target], i, false);
        match conn.send(request).await {
            Ok(answer) if answer.status.is_success() => {
                eprintln!("bench: bucket {} has n_val={n_val}", cluster.bucket);
                return Ok(());
            }
            Ok(answer) => last = Some(format!("{target} answered {}", answer.status)),
            Err(failure) => last = Some(format!("{target}: {}", failure.name())),
        }
    }
    bail!(
        "could not set n_val on bucket {}: {}",
        cluster.bucket,
        last.unwrap_or_default()
    )
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    })
}

fn summarize(runs: &[Labeled]) -> Summary {
    let of = |target: &str| -> Vec<&RunResult> {
        runs.iter()
            .filter(|r| r.target == target)
            .map(|r| &r.result)
            .collect()
    };
    let ceiling = median(of("ceiling").iter().map(|r| r.throughput_ops_s).collect());
    let cluster_runs = of("cluster");
    let cluster = median(cluster_runs.iter().map(|r| r.throughput_ops_s).collect());
    // Latencies in µs are far below 2^53: the f64 round trip is exact.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let p99 = median(
        cluster_runs
            .iter()
            .map(|r| r.latency.p99_us as f64)
            .collect(),
    )
    .map(|v| v as u64);
    Summary {
        ceiling_ops_s: ceiling,
        cluster_ops_s: cluster,
        percent_of_ceiling: ceiling.zip(cluster).map(|(c, x)| 100.0 * x / c.max(1e-9)),
        cluster_p99_us: p99,
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_table(runs: &[Labeled], summary: &Summary) {
    println!(
        "\n{:<12} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "run",
        "ops/s",
        "%ceil",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        ">deadl."
    );
    for run in runs {
        let r = &run.result;
        println!(
            "{:<12} {:>10.0} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.label,
            r.throughput_ops_s,
            run.percent_of_ceiling
                .map_or("-".to_owned(), |p| format!("{p:.1}")),
            ms(r.latency.p50_us),
            ms(r.latency.p90_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            ms(r.latency.max_us),
            r.errors,
            r.over_deadline,
        );
        if !r.errors_by_kind.is_empty() {
            println!("{:<12} errors by kind: {:?}", "", r.errors_by_kind);
        }
        if let Some(own) = r.generator_cpu_us_per_op {
            // This process is the generator, and the ceiling server too in
            // a ceiling run.
            let watched: String = r
                .cpu_us_per_op
                .iter()
                .map(|(pid, us)| format!(" pid {pid} {us:.1} µs,"))
                .collect();
            println!("{:<12} CPU per op:{watched} bench {own:.1} µs", "");
        }
        for (kind, p) in &r.by_kind {
            if r.by_kind.len() > 1 {
                println!(
                    "{:<12} {kind:>6} steps: p50 {} ms, p99 {} ms, p99.9 {} ms",
                    "",
                    ms(p.p50_us),
                    ms(p.p99_us),
                    ms(p.p999_us)
                );
            }
        }
    }
    if let (Some(c), Some(x)) = (summary.ceiling_ops_s, summary.cluster_ops_s) {
        println!(
            "\nmedian: cluster {x:.0} ops/s = {:.1}% of ceiling {c:.0} ops/s; cluster p99 {} ms",
            summary.percent_of_ceiling.unwrap_or(0.0),
            summary.cluster_p99_us.map_or("-".to_owned(), ms),
        );
    }
}

fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Load {
        let cli = Cli::try_parse_from(["bench", "run"].iter().chain(args)).expect("arguments");
        match cli.command {
            Command::Run { load, .. } => load.validate().expect("a valid load"),
            Command::Ceiling { .. } => unreachable!("parsed a run"),
        }
    }

    #[test]
    fn each_round_and_warm_up_draws_with_a_seed_of_its_own() {
        let load = load(&["--seed", "7", "--repeat", "3"]);
        let seeds: Vec<u64> = (1..=3).map(|round| round_load(&load, round).seed).collect();
        // The first round is what a single run with the same seed draws.
        assert_eq!(seeds, [7, 8, 9]);
        for &seed in &seeds {
            assert!(!seeds.contains(&warmup_seed(seed)));
        }
        assert_eq!(round_load(&load, 2).keys, load.keys);
    }
}
