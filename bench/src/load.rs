//! The load driver: workers, the open- and closed-loop schedules, and the
//! measurements of one run.
//!
//! Each of `connections` workers owns one connection and loops: claim a
//! ticket, wait for its intended send time (open loop only), send, record.
//! Tickets come from one shared counter, so an operation count is exact and
//! the open-loop schedule is global: ticket `i` is due at `start + i/rate`.
//! Latency is measured from that intended time, not from when the request
//! went out, so a server stall is charged to every operation it delayed
//! (coordinated omission, as wrk2 corrects it). In closed loop the two are
//! the same instant.
//!
//! Every loop is bounded: by the stop time or the operation count, and each
//! iteration by the operation timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{Answer, Connection};
use crate::plan::{DURATION_S_MAX, Load, Stop};
use crate::workload::{Generator, Kind, Op};

/// Histogram range: 1 µs to 100 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 100_000_000;
/// Pause after a failed connect, so a dead node does not turn a worker into
/// a spin loop of refused connects (which would also flood the error counts).
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// What a run is pointed at and how it behaves.
#[derive(Debug, Clone)]
pub struct Run {
    /// Shown in progress lines and the report.
    pub label: String,
    pub targets: Vec<SocketAddr>,
    pub failover: bool,
    pub load: Load,
    pub generator: Generator,
    /// Preload: write every key once, in order, closed loop.
    pub preload: bool,
    /// Processes whose VmRSS is sampled every second.
    pub watch_pids: Vec<u32>,
    /// Print progress lines.
    pub progress: bool,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds since the measured start (the end of this second).
    pub t_s: u64,
    pub ok: u64,
    pub errors: u64,
    /// The slowest operation that finished in this second.
    pub max_latency_us: u64,
    /// VmRSS of each watched process, in KiB (absent: could not be read).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rss_kib: BTreeMap<u32, u64>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub elapsed_s: f64,
    pub ok: u64,
    pub errors: u64,
    /// Successful operations per second over the measured time.
    pub throughput_ops_s: f64,
    /// Latency from the intended send time (the figure to quote).
    pub latency: Percentiles,
    /// Latency from the actual send time (equal to `latency` in closed loop).
    pub service: Percentiles,
    /// Latency of each step kind (`read`, `write`), from its own send time.
    pub by_kind: BTreeMap<String, Percentiles>,
    /// Every status code seen, successful or not.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures by kind: `status:NNN`, `timeout`, `connect`, `io`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Operations slower than the deadline, timeouts included.
    pub over_deadline: u64,
    pub connects: u64,
    /// CPU time (user and system) of each watched process over the run,
    /// in microseconds per successful operation.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_us_per_op: BTreeMap<u32, f64>,
    /// The same for this process: the generator, and the ceiling server
    /// when it runs.
    pub generator_cpu_us_per_op: Option<f64>,
    pub timeline: Vec<Second>,
}

/// Per-second counters shared by the workers.
#[derive(Debug)]
struct Bucket {
    ok: AtomicU64,
    errors: AtomicU64,
    max_latency_us: AtomicU64,
}

/// State shared by the workers of one run.
#[derive(Debug)]
struct Shared {
    next_ticket: AtomicU64,
    start: Instant,
    /// Open loop: nanoseconds between two tickets.
    period_ns: Option<u64>,
    stop_at: Option<Instant>,
    ops_max: Option<u64>,
    timeline: Vec<Bucket>,
}

impl Shared {
    fn second(&self, at: Instant) -> Option<&Bucket> {
        let s = at.saturating_duration_since(self.start).as_secs();
        self.timeline.get(usize::try_from(s).ok()?)
    }
}

/// What one worker measured.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    read: Histogram<u64>,
    write: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
    failed: u64,
    over_deadline: u64,
    connects: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            read: histogram(),
            write: histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            ok: 0,
            failed: 0,
            over_deadline: 0,
            connects: 0,
        }
    }

    fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        let _ = self.read.add(&other.read);
        let _ = self.write.add(&other.write);
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.ok += other.ok;
        self.failed += other.failed;
        self.over_deadline += other.over_deadline;
        self.connects += other.connects;
    }
}

/// Whether `status` is a success for a step of `kind`. A read of a key that
/// was never written (404) is a correct answer, and so are siblings (300).
fn success(kind: Kind, status: http::StatusCode) -> bool {
    status.is_success() || (kind == Kind::Read && matches!(status.as_u16(), 300 | 404))
}

/// Runs one measured load (or a preload) to its end.
pub async fn run(spec: &Run) -> anyhow::Result<RunResult> {
    let load = &spec.load;
    let start = Instant::now();
    let (stop_at, ops_max) = match (spec.preload, load.stop) {
        (true, _) => (None, Some(load.keys)),
        (false, Stop::Duration(d)) => (Some(start + d), None),
        (false, Stop::Ops(n)) => (None, Some(n)),
    };
    let period_ns = match (spec.preload, load.rate_ops_s) {
        (false, Some(rate)) => Some(1_000_000_000 / rate.max(1)),
        _ => None,
    };
    // One bucket per second of the longest possible run, plus slack for the
    // operations that finish after the stop time.
    let seconds = match load.stop {
        Stop::Duration(d) if !spec.preload => d.as_secs() + 2 + load.timeout.as_secs(),
        _ => DURATION_S_MAX as u64,
    };
    let seconds = seconds.min(DURATION_S_MAX as u64);
    let shared = Arc::new(Shared {
        next_ticket: AtomicU64::new(0),
        start,
        period_ns,
        stop_at,
        ops_max,
        timeline: (0..seconds)
            .map(|_| Bucket {
                ok: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                max_latency_us: AtomicU64::new(0),
            })
            .collect(),
    });

    let cpu_before = CpuTimes::sample(&spec.watch_pids);
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..load.connections {
        let shared = Arc::clone(&shared);
        let spec = spec.clone();
        workers.spawn(async move { worker(id, &spec, &shared).await });
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reporter = tokio::spawn(report(
        Arc::clone(&shared),
        spec.label.clone(),
        spec.watch_pids.clone(),
        spec.progress.then_some(load.progress_s).filter(|s| *s > 0),
        done_rx,
    ));
    let mut tally = Tally::new();
    while let Some(joined) = workers.join_next().await {
        tally.merge(&joined??);
    }
    let elapsed = start.elapsed();
    let cpu_after = CpuTimes::sample(&spec.watch_pids);
    let _ = done_tx.send(());
    let rss = reporter.await?;

    let measured_s = match stop_at {
        // The operations in flight at the stop time finish after it; count
        // the time to the stop, as every other generator does.
        Some(stop) => (stop - start).as_secs_f64(),
        None => elapsed.as_secs_f64(),
    };
    let used = usize::try_from(elapsed.as_secs() + 1).unwrap_or(usize::MAX);
    let timeline = shared
        .timeline
        .iter()
        .take(used)
        .enumerate()
        .map(|(i, b)| Second {
            t_s: i as u64 + 1,
            ok: b.ok.load(Ordering::Relaxed),
            errors: b.errors.load(Ordering::Relaxed),
            max_latency_us: b.max_latency_us.load(Ordering::Relaxed),
            rss_kib: rss.get(i).cloned().unwrap_or_default(),
        })
        .collect();
    let mut by_kind = BTreeMap::new();
    for (kind, h) in [(Kind::Read, &tally.read), (Kind::Write, &tally.write)] {
        if !h.is_empty() {
            by_kind.insert(kind.name().to_owned(), Percentiles::of(h));
        }
    }
    Ok(RunResult {
        label: spec.label.clone(),
        elapsed_s: measured_s,
        ok: tally.ok,
        errors: tally.failed,
        throughput_ops_s: tally.ok as f64 / measured_s.max(1e-9),
        latency: Percentiles::of(&tally.latency),
        service: Percentiles::of(&tally.service),
        by_kind,
        statuses: tally.statuses,
        errors_by_kind: tally.errors,
        over_deadline: tally.over_deadline,
        connects: tally.connects,
        cpu_us_per_op: cpu_before.per_op(&cpu_after, tally.ok),
        generator_cpu_us_per_op: cpu_before.generator_per_op(&cpu_after, tally.ok),
        timeline,
    })
}

/// One connection's loop.
async fn worker(id: usize, spec: &Run, shared: &Shared) -> anyhow::Result<Tally> {
    let load = &spec.load;
    let mut rng =
        SmallRng::seed_from_u64(load.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id as u64);
    let mut conn = Connection::new(spec.targets.clone(), id, spec.failover);
    let mut tally = Tally::new();
    loop {
        let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        if shared.ops_max.is_some_and(|max| ticket >= max) {
            break;
        }
        let intended = match shared.period_ns {
            Some(period) => shared.start + Duration::from_nanos(ticket.saturating_mul(period)),
            None => Instant::now(),
        };
        if shared.stop_at.is_some_and(|stop| intended >= stop) {
            break;
        }
        if shared.period_ns.is_some() {
            tokio::time::sleep_until(intended).await;
        }
        let op = if spec.preload {
            spec.generator.preload(ticket)
        } else {
            spec.generator.next(&mut rng)
        };
        let sent = Instant::now();
        let outcome =
            tokio::time::timeout(load.timeout, execute(&mut conn, spec, op, &mut tally)).await;
        let done = Instant::now();
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(kind)) => Some(kind),
            Err(_) => {
                conn.reset();
                Some("timeout".to_owned())
            }
        };
        let latency = done - intended;
        let latency_us = micros(latency);
        tally.latency.saturating_record(latency_us);
        tally.service.saturating_record(micros(done - sent));
        if latency >= load.deadline {
            tally.over_deadline += 1;
        }
        let bucket = shared.second(done);
        match error {
            None => {
                tally.ok += 1;
                if let Some(b) = bucket {
                    b.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(kind) => {
                tally.failed += 1;
                if kind == "connect" {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
                *tally.errors.entry(kind).or_default() += 1;
                if let Some(b) = bucket {
                    b.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(b) = bucket {
            b.max_latency_us.fetch_max(latency_us, Ordering::Relaxed);
        }
    }
    tally.connects = conn.connects;
    Ok(tally)
}

/// Runs the steps of `op`; the error is the failure kind to count.
async fn execute(
    conn: &mut Connection,
    spec: &Run,
    op: Op,
    tally: &mut Tally,
) -> Result<(), String> {
    let g = &spec.generator;
    match op {
        Op::Read(key) => step(conn, Kind::Read, g.read(key), tally).await.map(|_| ()),
        Op::Write(key) => step(conn, Kind::Write, g.write(key, None), tally)
            .await
            .map(|_| ()),
        Op::ReadModifyWrite(key) => {
            let answer = step(conn, Kind::Read, g.read(key), tally).await?;
            step(
                conn,
                Kind::Write,
                g.write(key, answer.context.as_ref()),
                tally,
            )
            .await
            .map(|_| ())
        }
    }
}

/// Sends one request and records its status and service time.
async fn step(
    conn: &mut Connection,
    kind: Kind,
    request: anyhow::Result<http::Request<http_body_util::Full<bytes::Bytes>>>,
    tally: &mut Tally,
) -> Result<Answer, String> {
    let request = request.map_err(|_| "request".to_owned())?;
    let sent = Instant::now();
    let result = conn.send(request).await;
    let h = match kind {
        Kind::Read => &mut tally.read,
        Kind::Write => &mut tally.write,
    };
    h.saturating_record(micros(sent.elapsed()));
    match result {
        Ok(answer) => {
            *tally.statuses.entry(answer.status.as_u16()).or_default() += 1;
            if success(kind, answer.status) {
                Ok(answer)
            } else {
                Err(format!("status:{}", answer.status.as_u16()))
            }
        }
        Err(failure) => Err(failure.name().to_owned()),
    }
}

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the
/// kernel's `USER_HZ`, which Linux keeps at 100 for user space on every
/// architecture Starling builds for, whatever its own tick rate.
const CLOCK_TICKS_PER_S: u64 = 100;

/// A process's CPU time (user and system) in clock ticks, from
/// `/proc/<pid>/stat` (`None`: this process).
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    parse_cpu_ticks(&stat)
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces and parentheses itself, so the
/// fields are counted from the last `)`: the state is field 3, `utime`
/// field 14 and `stime` field 15.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU times of the watched processes and of this one at one moment.
#[derive(Debug)]
struct CpuTimes {
    watched: BTreeMap<u32, u64>,
    generator: Option<u64>,
}

impl CpuTimes {
    fn sample(pids: &[u32]) -> CpuTimes {
        CpuTimes {
            watched: pids
                .iter()
                .filter_map(|&p| Some((p, cpu_ticks(Some(p))?)))
                .collect(),
            generator: cpu_ticks(None),
        }
    }

    /// Microseconds of CPU per operation between `self` and `later`, for
    /// each watched process read both times.
    fn per_op(&self, later: &CpuTimes, ops: u64) -> BTreeMap<u32, f64> {
        self.watched
            .iter()
            .filter_map(|(pid, before)| {
                let after = later.watched.get(pid)?;
                Some((*pid, us_per_op(after.checked_sub(*before)?, ops)?))
            })
            .collect()
    }

    fn generator_per_op(&self, later: &CpuTimes, ops: u64) -> Option<f64> {
        us_per_op(later.generator?.checked_sub(self.generator?)?, ops)
    }
}

fn us_per_op(ticks: u64, ops: u64) -> Option<f64> {
    if ops == 0 {
        return None;
    }
    Some(ticks as f64 * 1e6 / CLOCK_TICKS_PER_S as f64 / ops as f64)
}

/// Reads a process's resident memory in KiB from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every second: sample memory; every `progress_s`: print a progress line.
/// Returns the memory samples, one map per second.
async fn report(
    shared: Arc<Shared>,
    label: String,
    pids: Vec<u32>,
    progress_s: Option<u64>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Vec<BTreeMap<u32, u64>> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(
        shared.start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for second in 1..=shared.timeline.len() as u64 {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut done => break,
        }
        samples.push(
            pids.iter()
                .filter_map(|&p| Some((p, rss_kib(p)?)))
                .collect::<BTreeMap<_, _>>(),
        );
        let Some(every) = progress_s else { continue };
        if second % every != 0 {
            continue;
        }
        let from = usize::try_from(second - every).unwrap_or(0);
        let to = usize::try_from(second)
            .unwrap_or(0)
            .min(shared.timeline.len());
        let window = &shared.timeline[from..to];
        let ok: u64 = window.iter().map(|b| b.ok.load(Ordering::Relaxed)).sum();
        let errors: u64 = window
            .iter()
            .map(|b| b.errors.load(Ordering::Relaxed))
            .sum();
        let max_us = window
            .iter()
            .map(|b| b.max_latency_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let rss = samples
            .last()
            .map(|m: &BTreeMap<u32, u64>| {
                m.iter()
                    .map(|(p, k)| format!(" rss[{p}]={}MiB", k / 1024))
                    .collect::<String>()
            })
            .unwrap_or_default();
        eprintln!(
            "[{label} {second:>5}s] {:>9.0} ops/s  errors {:>6}  max {:>8.2} ms{rss}",
            ok as f64 / every as f64,
            errors,
            max_us as f64 / 1000.0,
        );
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 99";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
        assert_eq!(parse_cpu_ticks("4242 (cut short) S 1 2"), None);
        assert!(cpu_ticks(None).is_some());
        assert!(cpu_ticks(Some(std::process::id())).is_some());
    }

    #[test]
    fn cpu_per_op_covers_the_processes_read_both_times() {
        let before = CpuTimes {
            watched: BTreeMap::from([(1, 100), (2, 50)]),
            generator: Some(10),
        };
        let after = CpuTimes {
            watched: BTreeMap::from([(1, 300)]),
            generator: Some(20),
        };
        // 200 ticks of 10 ms over 1,000 operations: 2,000 µs each.
        assert_eq!(before.per_op(&after, 1_000), BTreeMap::from([(1, 2_000.0)]));
        assert_eq!(before.generator_per_op(&after, 1_000), Some(100.0));
        assert_eq!(before.generator_per_op(&after, 0), None);
    }
}
