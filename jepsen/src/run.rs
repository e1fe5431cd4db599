//! One test, start to finish.
//!
//! 1. Make the artifact directory `store/<test>/<time>/` and point the
//!    `latest` links at it; draw the nemesis schedule from the seed.
//! 2. Build the network ([`net::Topology`]), start one `starling` per node,
//!    wait until every node sees every other alive, set the bucket's
//!    properties (`allow_mult`) and check every node has them.
//! 3. Run the clients (paced to `--rate`) and the nemesis for the time
//!    limit, recording the history.
//! 4. Heal everything: drop every rule, resume paused nodes, restart
//!    stopped ones. Wait for the membership to recover.
//! 5. Convergence: poll every primary's own copy of every key until all
//!    agree or the wait ends (no client reads meanwhile).
//! 6. Final reads of every key (`r=all`), recorded in the history.
//! 7. Judge: the workload's checker, convergence, and the nodes' own
//!    health (a node that exits by itself, or cannot restart on its data
//!    directory, is invalid). Write `results.json`, plots and timeline.
//! 8. Tear down (also on error or panic, through `Drop`) and check that
//!    nothing of the run is left.
//!
//! Everything after step 2 runs on threads inside the harness namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::checker::convergence::{Convergence, LocalCopy, LocalSibling, ReplicaCopy, Round};
use crate::checker::{Validity, delete, register, set};
use crate::client::{CallError, Client};
use crate::db::{Node, NodeOptions};
use crate::history::{F, Op, OpType, Process, Recorder};
use crate::nemesis::{self, Fault, Spec, Step, Timing};
use crate::net::{self, NodeNet, Topology};
use crate::report;
use crate::workload::{Kind, Workload};

/// Everything a test run needs to know.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The workload.
    pub workload: Kind,
    /// The nemesis, as given.
    pub nemesis_text: String,
    /// The nemesis, parsed.
    pub nemesis: Spec,
    /// Node count.
    pub nodes: usize,
    /// How long clients and the nemesis run.
    pub time_limit: Duration,
    /// Seed of the schedule and of the clients' choices.
    pub seed: u64,
    /// Client threads.
    pub concurrency: usize,
    /// Target operations per second over all clients.
    pub rate: f64,
    /// Keys at a time (0: the workload's default).
    pub keys: usize,
    /// Set workload: elements per key before moving on (0: default).
    pub elements_per_key: u64,
    /// Fault-free time at the end of the time limit, clients still running.
    pub quiet_tail: Duration,
    /// The bucket's `allow_mult`; `false` is the last-write-wins canary.
    pub allow_mult: bool,
    /// The `starling` binary.
    pub starling: PathBuf,
    /// The artifact root.
    pub store: PathBuf,
    /// The test's name (default from workload, nemesis, nodes).
    pub name: Option<String>,
    /// How long to wait for replicas to converge after the heal.
    pub convergence_wait: Duration,
    /// When a client gives up on a request.
    pub client_timeout: Duration,
    /// The nodes' own request deadline.
    pub request_timeout_ms: u64,
    /// Keep the data directories even of a valid run.
    pub keep_data: bool,
    /// More `starling start` arguments.
    pub node_args: Vec<String>,
}

impl TestOptions {
    /// The test's name: `set-mixed-n5`, with `-lww` for the canary.
    pub fn test_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let nemesis: String = self
                .nemesis_text
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '+'
                    }
                })
                .collect();
            format!(
                "{}-{}-n{}{}",
                self.workload.name(),
                if nemesis.is_empty() {
                    "none".to_owned()
                } else {
                    nemesis
                },
                self.nodes,
                if self.allow_mult { "" } else { "-lww" }
            )
        })
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The overall verdict.
    pub validity: Validity,
    /// The artifact directory.
    pub dir: PathBuf,
    /// The run id.
    pub run_id: String,
}

/// Waits until `at`, in short slices so a stop request is seen; returns
/// `false` if stopped first. (Pacing to a schedule, not waiting for a
/// condition.)
fn pace_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(100)));
    }
}

/// Polls `condition` every `every` until it holds (`Ok`) or `deadline`
/// passes or a stop is requested (`Err` with the last reason).
fn wait_for(
    what: &str,
    deadline: Duration,
    every: Duration,
    stop: &AtomicBool,
    mut condition: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let reason = match condition() {
            Ok(()) => return Ok(start.elapsed()),
            Err(reason) => reason,
        };
        if stop.load(Ordering::Relaxed) {
            bail!("stopped while waiting for {what} ({reason})");
        }
        if start.elapsed() > deadline {
            bail!("{what}: not within {deadline:?} ({reason})");
        }
        std::thread::sleep(every);
    }
}

/// Runs one test. Returns the verdict; writes every artifact.
pub fn run(opts: &TestOptions, stop: Arc<AtomicBool>) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!(opts.nodes >= 1, "at least one node");
    anyhow::ensure!(opts.concurrency >= 1, "at least one client");
    anyhow::ensure!(opts.rate > 0.0, "a positive rate");
    anyhow::ensure!(
        opts.starling.exists(),
        "no starling binary at {} (build it with `cargo build --release -p node --bin starling`, or pass --starling)",
        opts.starling.display()
    );
    let name = opts.test_name();
    let test_dir = opts.store.join(&name);
    let stamp = report::utc_stamp(SystemTime::now());
    let mut dir = test_dir.join(&stamp);
    for n in 2.. {
        if !dir.exists() {
            break;
        }
        dir = test_dir.join(format!("{stamp}-{n}"));
    }
    std::fs::create_dir_all(dir.join("nodes"))?;
    std::fs::create_dir_all(dir.join("data"))?;
    let dir = std::fs::canonicalize(&dir)?;
    let dir_name = dir.file_name().context("artifact dir name")?.to_owned();
    report::relink(&test_dir.join("latest"), Path::new(&dir_name))?;
    report::relink(
        &opts.store.join("latest"),
        &Path::new(&name).join(&dir_name),
    )?;

    let run_id = net::new_run_id();
    let time_limit_ms = opts.time_limit.as_millis() as u64;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let steps = nemesis::schedule(
        &opts.nemesis,
        opts.nodes,
        time_limit_ms,
        Timing::default(),
        &mut rng,
    );
    let test_json = json!({
        "test": name,
        "run_id": run_id,
        "seed": opts.seed,
        "workload": opts.workload,
        "nemesis": opts.nemesis_text,
        "nodes": opts.nodes,
        "time_limit_s": opts.time_limit.as_secs_f64(),
        "quiet_tail_s": opts.quiet_tail.as_secs_f64(),
        "keys": opts.keys,
        "elements_per_key": opts.elements_per_key,
        "concurrency": opts.concurrency,
        "rate": opts.rate,
        "allow_mult": opts.allow_mult,
        "starling": opts.starling.display().to_string(),
        "schedule": steps.iter().map(|s| json!({
            "start_ms": s.start_ms,
            "duration_ms": s.duration_ms,
            "fault": s.fault,
            "description": s.fault.describe(),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("test.json"),
        serde_json::to_vec_pretty(&test_json)?,
    )?;
    eprintln!(
        "jepsen: run {run_id} ({name}, seed {}), artifacts in {}",
        opts.seed,
        dir.display()
    );
    for s in &steps {
        eprintln!(
            "  at {:>6.1} s for {:>4.1} s: {}",
            s.start_ms as f64 / 1e3,
            s.duration_ms as f64 / 1e3,
            s.fault.describe()
        );
    }

    let mut topology = Topology::create(&run_id, opts.nodes, &opts.store)?;
    let judged = std::thread::scope(|scope| {
        let handle = scope.spawn(|| -> anyhow::Result<Judged> {
            topology.enter_harness()?;
            execute(opts, &topology, &dir, &steps, &stop)
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => Err(anyhow::anyhow!(
                "the harness panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            )),
        }
    });
    let teardown = topology.teardown();
    drop(topology);
    if !teardown.is_empty() {
        eprintln!("jepsen: teardown left things behind:");
        for t in &teardown {
            eprintln!("  {t}");
        }
    }

    let (validity, mut results) = match judged {
        Ok(j) => (j.validity, j.results),
        Err(err) => {
            eprintln!("jepsen: the run could not be judged: {err:#}");
            (
                Validity::Unknown,
                json!({ "error": format!("{err:#}"), "checkers": {} }),
            )
        }
    };
    // Leftovers are a harness bug, not a database one: they make the run
    // unknown rather than hide.
    let validity = if teardown.is_empty() {
        validity
    } else {
        validity.max(Validity::Unknown)
    };
    if let Value::Object(map) = &mut results {
        map.insert("test".into(), name.clone().into());
        map.insert("run_id".into(), run_id.clone().into());
        map.insert("seed".into(), opts.seed.into());
        map.insert("valid".into(), validity.to_json());
        map.insert("exit_code".into(), validity.exit_code().into());
        map.insert("workload".into(), opts.workload.name().into());
        map.insert("nemesis".into(), opts.nemesis_text.clone().into());
        map.insert("nodes".into(), opts.nodes.into());
        map.insert("allow_mult".into(), opts.allow_mult.into());
        map.insert("time_limit_s".into(), opts.time_limit.as_secs_f64().into());
        map.insert("teardown_leftovers".into(), json!(teardown));
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    if validity == Validity::Valid && !opts.keep_data {
        let _ = std::fs::remove_dir_all(dir.join("data"));
    }
    Ok(RunOutcome {
        validity,
        dir,
        run_id,
    })
}

/// What `execute` hands back.
struct Judged {
    validity: Validity,
    results: Value,
}

/// Shared by the orchestrator, the clients and the nemesis.
struct Cluster<'a> {
    nets: Vec<NodeNet>,
    nodes: Mutex<Vec<Node>>,
    admin: Vec<Client>,
    options: NodeOptions,
    topology: &'a Topology,
    /// Things that happened to nodes that the harness did not cause.
    incidents: Mutex<Vec<String>>,
}

impl Cluster<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn incident(&self, text: String) {
        eprintln!("jepsen: {text}");
        self.incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    /// Notes nodes that exited without being killed.
    fn check_exits(&self) {
        let mut nodes = self.lock();
        for node in nodes.iter_mut() {
            if let Some(status) = node.exited() {
                let tail = node.log_tail(20);
                self.incident(format!(
                    "{} exited by itself ({status}); its log ends:\n{tail}",
                    node.net.name
                ));
            }
        }
    }

    fn start_node(&self, i: usize) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        nodes[i].start(&self.options)?;
        nodes[i].wait_ready(&self.admin[i], Duration::from_secs(30))
    }

    fn set_rules(&self, i: usize, drop_from: &[usize], loss: Option<u8>) -> anyhow::Result<()> {
        let addrs: Vec<_> = drop_from.iter().map(|&j| self.nets[j].addr).collect();
        let others: Vec<_> = (0..self.nets.len())
            .filter(|&j| j != i)
            .map(|j| self.nets[j].addr)
            .collect();
        let script =
            crate::nft::ruleset(&self.topology.table, &addrs, loss.map(|p| (p, &others[..])));
        net::nft(&self.nets[i].ns, &script)
    }

    fn heal_network(&self) -> anyhow::Result<()> {
        for i in 0..self.nets.len() {
            self.set_rules(i, &[], None)?;
        }
        Ok(())
    }

    fn apply(&self, fault: &Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Partition { grudge, .. } => {
                for (i, from) in grudge.iter().enumerate() {
                    self.set_rules(i, from, None)?;
                }
            }
            Fault::Loss { percent } => {
                for i in 0..self.nets.len() {
                    self.set_rules(i, &[], Some(*percent))?;
                }
            }
            Fault::Kill { nodes } => {
                let mut all = self.lock();
                for &i in nodes {
                    all[i].kill()?;
                }
            }
            Fault::Pause { nodes } => {
                let mut all = self.lock();
                for &i in nodes {
                    if all[i].is_running() {
                        all[i].pause()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn undo(&self, fault: &Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Partition { .. } | Fault::Loss { .. } => self.heal_network(),
            Fault::Kill { nodes } => {
                let mut errors = Vec::new();
                for &i in nodes {
                    // The guard must be gone before start_node locks again.
                    let running = self.lock()[i].is_running();
                    if running {
                        continue;
                    }
                    if let Err(e) = self.start_node(i) {
                        let text =
                            format!("restarting n{} on its data directory failed: {e:#}", i + 1);
                        self.incident(text.clone());
                        errors.push(text);
                    }
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    bail!("{}", errors.join("; "))
                }
            }
            Fault::Pause { nodes } => {
                let mut all = self.lock();
                for &i in nodes {
                    all[i].resume()?;
                }
                Ok(())
            }
        }
    }

    /// Heals everything, whatever the schedule did.
    fn heal_all(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.heal_network() {
            errors.push(format!("{e:#}"));
        }
        {
            let mut all = self.lock();
            for node in all.iter_mut().filter(|n| n.is_paused()) {
                if let Err(e) = node.resume() {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        self.check_exits();
        for i in 0..self.nets.len() {
            let running = self.lock()[i].is_running();
            if running {
                continue;
            }
            if let Err(e) = self.start_node(i) {
                let text = format!("restarting n{} on its data directory failed: {e:#}", i + 1);
                self.incident(text.clone());
                errors.push(text);
            }
        }
        errors
    }

    /// Whether every node sees every node alive; the reason if not.
    fn members_alive(&self) -> Result<(), String> {
        let want = self.nets.len();
        for client in &self.admin {
            let members = client
                .json("/admin/members")
                .map_err(|e| format!("{e:#}"))?;
            let alive = members["members"]
                .as_array()
                .map_or(0, |ms| ms.iter().filter(|m| m["state"] == "alive").count());
            if alive != want {
                return Err(format!("{} sees {alive} of {want} alive", client.node));
            }
        }
        Ok(())
    }
}

fn nemesis_thread(
    cluster: &Cluster<'_>,
    steps: &[Step],
    start: Instant,
    rec: &Recorder,
    stop: &AtomicBool,
) {
    for step in steps {
        if !pace_until(start + Duration::from_millis(step.start_ms), stop) {
            return;
        }
        cluster.check_exits();
        let description = step.fault.describe();
        eprintln!(
            "jepsen: {:>6.1} s: start: {description}",
            start.elapsed().as_secs_f64()
        );
        let invoke = rec.record(Op::invoke(Process::nemesis(), F::Start).fault(&description));
        let done = match cluster.apply(&step.fault) {
            Ok(()) => invoke.complete(OpType::Info),
            Err(e) => invoke.complete(OpType::Info).error(format!("{e:#}")),
        };
        rec.record(done);
        // Stopped early or not, the fault is undone here.
        pace_until(
            start + Duration::from_millis(step.start_ms + step.duration_ms),
            stop,
        );
        eprintln!(
            "jepsen: {:>6.1} s: stop: {description}",
            start.elapsed().as_secs_f64()
        );
        let invoke = rec.record(Op::invoke(Process::nemesis(), F::Stop).fault(&description));
        let done = match cluster.undo(&step.fault) {
            Ok(()) => invoke.complete(OpType::Info),
            Err(e) => invoke.complete(OpType::Info).error(format!("{e:#}")),
        };
        rec.record(done);
    }
}

fn client_thread(
    opts: &TestOptions,
    cluster: &Cluster<'_>,
    workload: &Workload,
    c: usize,
    start: Instant,
    rec: &Recorder,
    stop: &AtomicBool,
) {
    let node = &cluster.nets[c % cluster.nets.len()];
    let client = Client::new(&node.http_base(), &node.name, opts.client_timeout);
    let mut rng =
        StdRng::seed_from_u64(opts.seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let interval = Duration::from_secs_f64(opts.concurrency as f64 / opts.rate);
    let deadline = start + opts.time_limit;
    let mut process = c as u64;
    let mut next = start + interval.mul_f64(rng.random_range(0.0..1.0));
    loop {
        if !pace_until(next.min(deadline), stop) || Instant::now() >= deadline {
            return;
        }
        if workload.step(&client, process, &mut rng, rec) == OpType::Info {
            // The process may still have its operation in flight: a new
            // process takes over, as in Jepsen.
            process += opts.concurrency as u64;
        }
        // Random gaps (uniform, mean `interval`): clients overlap as
        // independent users would, instead of taking turns in lock step
        // (which would hide every race, including last-write-wins losses).
        next += interval.mul_f64(rng.random_range(0.0..2.0));
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// Every key's primaries and what each holds now.
fn poll_round(
    cluster: &Cluster<'_>,
    workload: &Workload,
    keys: &[String],
    preflists: &mut HashMap<String, Vec<usize>>,
    elapsed_ms: u64,
) -> Round {
    let mut round = Round {
        elapsed_ms,
        keys: BTreeMap::new(),
    };
    for key in keys {
        let replicas = match preflist(cluster, workload, key, preflists) {
            Err(e) => Err(e),
            Ok(indices) => Ok(indices
                .iter()
                .map(|&i| ReplicaCopy {
                    node: cluster.nets[i].name.clone(),
                    copy: local_copy(&cluster.admin[i], &workload.bucket, key),
                })
                .collect()),
        };
        round.keys.insert(key.clone(), replicas);
    }
    round
}

fn preflist(
    cluster: &Cluster<'_>,
    workload: &Workload,
    key: &str,
    cache: &mut HashMap<String, Vec<usize>>,
) -> Result<Vec<usize>, String> {
    if let Some(p) = cache.get(key) {
        return Ok(p.clone());
    }
    let path = format!(
        "/buckets/{}/keys/{}/preflist",
        crate::client::encode(&workload.bucket),
        crate::client::encode(key)
    );
    let value = cluster.admin[0].json(&path).map_err(|e| format!("{e:#}"))?;
    let entries = value["preflist"].as_array().cloned().unwrap_or_default();
    let mut indices = Vec::new();
    for entry in &entries {
        if entry["primary"] != true {
            return Err(format!("the preference list still has fallbacks: {value}"));
        }
        let node = entry["node"].as_str().unwrap_or("");
        let i = cluster
            .nets
            .iter()
            .position(|n| n.http_addr() == node)
            .ok_or_else(|| format!("unknown node {node:?} in the preference list"))?;
        indices.push(i);
    }
    if indices.is_empty() {
        return Err("an empty preference list".into());
    }
    // The ring is a function of the member set, which a test never changes.
    cache.insert(key.to_owned(), indices.clone());
    Ok(indices)
}

fn local_copy(client: &Client, bucket: &str, key: &str) -> Result<LocalCopy, String> {
    let path = format!(
        "/admin/local?bucket={}&key={}",
        crate::client::encode(bucket),
        crate::client::encode(key)
    );
    let response = client
        .get_path(&path)
        .map_err(|e: CallError| e.to_string())?;
    match response.status {
        404 => Ok(LocalCopy::Missing),
        200 => {
            let value: Value = serde_json::from_slice(&response.body).map_err(|e| e.to_string())?;
            let siblings = value["siblings"]
                .as_array()
                .ok_or("no siblings in /admin/local")?
                .iter()
                .map(|s| LocalSibling {
                    vtag: s["vtag"].as_str().unwrap_or("").to_owned(),
                    deleted: s["deleted"].as_bool().unwrap_or(false),
                    value: s["value"].as_str().unwrap_or("").to_owned(),
                })
                .collect();
            Ok(LocalCopy::held(
                siblings,
                value["actors"].as_u64().unwrap_or(0),
            ))
        }
        other => Err(format!("status {other}: {}", response.text())),
    }
}

fn execute(
    opts: &TestOptions,
    topology: &Topology,
    dir: &Path,
    steps: &[Step],
    stop: &AtomicBool,
) -> anyhow::Result<Judged> {
    let nets = topology.nodes.clone();
    let options = NodeOptions {
        starling: opts.starling.clone(),
        secret: format!("jepsen-{}-cluster-secret", topology.run_id),
        cluster_name: net::cluster_name(&topology.run_id),
        request_timeout_ms: opts.request_timeout_ms,
        extra_args: opts.node_args.clone(),
    };
    let nodes: Vec<Node> = nets
        .iter()
        .map(|n| {
            let others: Vec<NodeNet> = nets.iter().filter(|o| o.name != n.name).cloned().collect();
            Node::new(n.clone(), &dir.join("data"), &dir.join("nodes"), &others)
        })
        .collect();
    let cluster = Cluster {
        admin: nets
            .iter()
            .map(|n| Client::new(&n.http_base(), &n.name, Duration::from_secs(5)))
            .collect(),
        nets,
        nodes: Mutex::new(nodes),
        options,
        topology,
        incidents: Mutex::new(Vec::new()),
    };

    // Set-up: nodes, membership, bucket properties.
    {
        let mut nodes = cluster.lock();
        for node in nodes.iter_mut() {
            node.start(&cluster.options)?;
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            node.wait_ready(&cluster.admin[i], Duration::from_secs(30))?;
        }
    }
    let formed = wait_for(
        "every node to see every node alive",
        Duration::from_secs(60),
        Duration::from_millis(200),
        stop,
        || cluster.members_alive(),
    )?;
    eprintln!(
        "jepsen: cluster of {} formed in {formed:?}",
        cluster.nets.len()
    );
    let workload = Workload::new(opts.workload, opts.keys, opts.elements_per_key);
    let props = json!({ "allow_mult": opts.allow_mult });
    wait_for(
        "the bucket properties to be set",
        Duration::from_secs(30),
        Duration::from_millis(500),
        stop,
        || {
            cluster.admin[0]
                .set_props(&workload.bucket, &props)
                .map_err(|e| format!("{e:#}"))?;
            for client in &cluster.admin {
                let path = format!("/buckets/{}/props", workload.bucket);
                let got = client.json(&path).map_err(|e| format!("{e:#}"))?;
                if got["props"]["allow_mult"] != opts.allow_mult {
                    return Err(format!("{} has {}", client.node, got["props"]));
                }
            }
            Ok(())
        },
    )?;

    // The run.
    let start = Instant::now();
    let rec = Recorder::new(start, Some(&dir.join("history.jsonl")))?;
    eprintln!(
        "jepsen: {} clients at {} ops/s for {:?}",
        opts.concurrency, opts.rate, opts.time_limit
    );
    std::thread::scope(|scope| {
        let cluster = &cluster;
        let rec = &rec;
        let workload = &workload;
        scope.spawn(move || nemesis_thread(cluster, steps, start, rec, stop));
        for c in 0..opts.concurrency {
            scope.spawn(move || client_thread(opts, cluster, workload, c, start, rec, stop));
        }
    });

    // Heal everything and wait for the membership.
    let invoke = rec.record(Op::invoke(Process::nemesis(), F::Stop).fault("heal everything"));
    let heal_errors = cluster.heal_all();
    let mut done = invoke.complete(OpType::Info);
    if !heal_errors.is_empty() {
        done = done.error(heal_errors.join("; "));
    }
    rec.record(done);
    let healed = Instant::now();
    let mut notes: Vec<String> = Vec::new();
    match wait_for(
        "the membership to recover after the heal",
        Duration::from_secs(60),
        Duration::from_millis(250),
        stop,
        || cluster.members_alive(),
    ) {
        Ok(d) => eprintln!("jepsen: membership recovered {d:?} after the heal"),
        Err(e) => notes.push(format!("{e:#}")),
    }

    // Convergence, on the replicas' own copies.
    let keys = workload.touched();
    let mut preflists = HashMap::new();
    let mut convergence = Convergence::new();
    let wait_end = healed + opts.convergence_wait;
    loop {
        let round = poll_round(
            &cluster,
            &workload,
            &keys,
            &mut preflists,
            healed.elapsed().as_millis() as u64,
        );
        if convergence.observe(round) || Instant::now() >= wait_end || stop.load(Ordering::Relaxed)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let waited_ms = healed.elapsed().as_millis() as u64;

    // Final reads, each attempt in the history.
    let final_deadline = Instant::now() + Duration::from_secs(60);
    for (k, key) in keys.iter().enumerate() {
        for attempt in 0..5 {
            let i = (k + attempt) % cluster.nets.len();
            let client = Client::new(
                &cluster.nets[i].http_base(),
                &cluster.nets[i].name,
                opts.client_timeout,
            );
            if workload.final_read(&client, key, &rec) || Instant::now() > final_deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    cluster.check_exits();
    rec.flush()?;

    // Judgement.
    let ops = rec.ops();
    let mut checkers = serde_json::Map::new();
    let mut verdicts = Vec::new();
    let main = match opts.workload {
        Kind::Set | Kind::Convergence => {
            set::check(&ops).map(|r| (r.valid, serde_json::to_value(r)))
        }
        Kind::Register => register::check(&ops).map(|r| (r.valid, serde_json::to_value(r))),
        Kind::Delete => delete::check(&ops).map(|r| (r.valid, serde_json::to_value(r))),
    };
    let main_name = match opts.workload {
        Kind::Set | Kind::Convergence => "set",
        Kind::Register => "register",
        Kind::Delete => "delete",
    };
    match main {
        Ok((valid, value)) => {
            verdicts.push(valid);
            checkers.insert(main_name.into(), value?);
        }
        Err(e) => {
            verdicts.push(Validity::Unknown);
            checkers.insert(
                main_name.into(),
                json!({ "valid": "unknown", "error": format!("malformed history: {e:#}") }),
            );
        }
    }
    let mut acked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    if opts.workload.has_elements() {
        let pairs = crate::history::pairs(&ops).unwrap_or_default();
        for p in pairs
            .iter()
            .filter(|p| p.invoke.f == F::Add && p.outcome() == OpType::Ok)
        {
            if let (Some(k), Some(v)) = (&p.invoke.key, p.invoke.value) {
                acked.entry(k.clone()).or_default().insert(v);
            }
        }
    }
    let conv = convergence.finish(&acked, waited_ms);
    verdicts.push(conv.valid);
    checkers.insert("convergence".into(), serde_json::to_value(&conv)?);
    let incidents = cluster
        .incidents
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let nodes_valid = if incidents.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    verdicts.push(nodes_valid);
    checkers.insert(
        "nodes".into(),
        json!({
            "valid": nodes_valid,
            "incidents": incidents,
            "summary": if incidents.is_empty() {
                "every node stayed up unless killed, and restarted on its data directory".to_owned()
            } else {
                format!("{} incident(s): a node exited by itself or could not restart", incidents.len())
            },
        }),
    );
    let interrupted = stop.load(Ordering::Relaxed);
    if interrupted {
        notes.push("interrupted by a signal: the verdict is at best unknown".into());
        verdicts.push(Validity::Unknown);
    }
    let validity = Validity::worst(verdicts);
    let stats = report::stats(&ops);
    let windows = report::windows(&ops);
    let title = format!(
        "{} — seed {} — run {}",
        opts.test_name(),
        opts.seed,
        topology.run_id
    );
    std::fs::write(
        dir.join("latency.svg"),
        report::latency_svg(&ops, &windows, &format!("Latency: {title}")),
    )?;
    std::fs::write(
        dir.join("throughput.svg"),
        report::throughput_svg(&ops, &windows, &format!("Throughput: {title}")),
    )?;
    std::fs::write(
        dir.join("timeline.html"),
        report::timeline_html(&ops, &windows, &title, opts.concurrency),
    )?;

    let mut summary = vec![format!(
        "{}: {} ops ({:.1}/s, {:.1}% info), convergence {}",
        validity,
        stats.ops,
        stats.ops_per_s,
        stats.info_share * 100.0,
        conv.converged_after_ms
            .map_or_else(|| "not reached".to_owned(), |ms| format!("{ms} ms"))
    )];
    for (name, value) in &checkers {
        summary.push(format!(
            "  {name}: {} — {}",
            match &value["valid"] {
                Value::Bool(true) => "valid".to_owned(),
                Value::Bool(false) => "INVALID".to_owned(),
                other => other.as_str().unwrap_or("?").to_owned(),
            },
            value["summary"]
                .as_str()
                .or(value["error"].as_str())
                .unwrap_or("")
        ));
    }
    for line in &summary {
        println!("{line}");
    }
    Ok(Judged {
        validity,
        results: json!({
            "checkers": checkers,
            "stats": stats,
            "notes": notes,
            "fault_windows": windows,
            "convergence_ms": conv.converged_after_ms,
            "summary": summary,
        }),
    })
}
