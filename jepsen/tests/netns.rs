//! The harness against real `starling` nodes in network namespaces.
//!
//! - A smoke run (3 nodes, partitions and a kill, about a minute) must be
//!   valid, and leave no namespace, table or process behind.
//! - The same run with `allow_mult=false` (last write wins) must be judged
//!   invalid: this is what proves the checker can see a lost write.
//! - A harness killed with SIGKILL leaves its namespaces and nodes behind;
//!   `jepsen cleanup` removes all of it.
//! - A harness stopped with SIGTERM heals, tears down and says unknown.
//!
//! They need root, iproute2 and nftables; without them they print SKIP and
//! pass. They run one at a time (`.config/nextest.toml`, and a lock for
//! `cargo test`). The `starling` binary is the release build, built here
//! with the same command as the docker tests unless `STARLING_BIN` names
//! one. Every wait has a deadline.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../node/tests/release_build/mod.rs"]
mod release_build;

/// One namespace run at a time in this process (nextest runs each test in
/// its own process and serialises them with a test group).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The release `starling`: `STARLING_BIN`, or built now.
fn starling() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("STARLING_BIN") {
                return PathBuf::from(path);
            }
            release_build::build(&repo_root())
        })
        .clone()
}

fn skip(test: &str) -> bool {
    match jepsen::net::available() {
        Ok(()) => false,
        Err(why) => {
            println!("SKIP {test}: {why}");
            true
        }
    }
}

fn store() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jepsen-store")
}

/// A `jepsen` child, killed if the test panics.
struct Harness {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Harness {
    fn start(args: &[&str]) -> Harness {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jepsen"))
            .args(args)
            .arg("--starling")
            .arg(starling())
            .arg("--store")
            .arg(store())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("| {line}");
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Harness {
            child: Some(child),
            lines,
            output: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for an output line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {deadline:?}; output so far:\n{}",
                    self.output.join("\n")
                ),
            }
        }
    }

    /// Waits for the harness to exit; returns its exit code.
    fn wait(&mut self, deadline: Duration) -> i32 {
        let end = Instant::now() + deadline;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.output.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "the harness did not finish within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The run id the harness printed.
    fn run_id(&mut self) -> String {
        let line = self.wait_line("jepsen: run ", Duration::from_secs(60));
        line.split("jepsen: run ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned()
    }

    /// The artifact directory it printed at the start.
    fn artifacts(&self) -> PathBuf {
        let line = self
            .output
            .iter()
            .find(|l| l.contains("artifacts in "))
            .expect("the harness names its artifact directory");
        PathBuf::from(line.split("artifacts in ").nth(1).unwrap().trim())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets it tear down; SIGKILL if it does not.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new(env!("CARGO_BIN_EXE_jepsen"))
                .arg("cleanup")
                .status();
        }
    }
}

fn results(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Nothing of run `run_id` is left: namespaces, processes, registration
/// (the nftables tables and the bridge live in the namespaces).
fn assert_nothing_left(run_id: &str) {
    let left = jepsen::net::leftovers(run_id);
    assert!(left.is_empty(), "run {run_id} left: {left:?}");
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains(&format!("sj_{run_id}")),
        "a table of run {run_id} in the host's namespace"
    );
}

/// The smoke run: 3 nodes, partitions and a kill, faults in the first 35
/// of 50 seconds so the clients' writes bring replicas together after the
/// last one (anti-entropy is not there to do it yet).
const SMOKE: &[&str] = &[
    "test",
    "--workload",
    "set",
    "--nemesis",
    "partition,kill",
    "--nodes",
    "3",
    "--time-limit",
    "50",
    "--quiet-tail",
    "15",
    "--elements-per-key",
    "5000",
    "--seed",
    "1",
    "--convergence-wait",
    "60",
];

fn with_name<'a>(args: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(extra);
    all
}

#[test]
fn smoke_run_with_partitions_and_a_kill_is_valid() {
    if skip("smoke_run_with_partitions_and_a_kill_is_valid") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut harness = Harness::start(&with_name(SMOKE, &["--name", "ci-smoke"]));
    let run_id = harness.run_id();
    let code = harness.wait(Duration::from_secs(400));
    let dir = harness.artifacts();
    let r = results(&dir);
    assert_eq!(code, 0, "the smoke run must be valid: {}", r["summary"]);
    assert_eq!(r["valid"], true);
    let set = &r["checkers"]["set"];
    assert!(set["acknowledged"].as_u64().unwrap() > 500, "{set}");
    assert_eq!(set["lost_count"], 0);
    assert_eq!(r["checkers"]["convergence"]["valid"], true);
    let labels: Vec<&str> = r["fault_windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["label"].as_str())
        .collect();
    assert!(labels.iter().any(|l| l.starts_with("kill")), "{labels:?}");
    assert!(
        labels
            .iter()
            .any(|l| !l.starts_with("kill") && !l.starts_with("heal")),
        "no partition in {labels:?}"
    );
    for file in [
        "history.jsonl",
        "results.json",
        "latency.svg",
        "throughput.svg",
        "timeline.html",
        "nodes/n1.log",
        "nodes/n3.log",
    ] {
        assert!(
            dir.join(file).exists(),
            "{file} missing in {}",
            dir.display()
        );
    }
    let latest = std::fs::canonicalize(store().join("ci-smoke/latest")).unwrap();
    assert_eq!(latest, dir);
    assert_nothing_left(&run_id);
}

#[test]
fn last_write_wins_canary_is_invalid() {
    if skip("last_write_wins_canary_is_invalid") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut harness = Harness::start(&with_name(
        SMOKE,
        &["--allow-mult", "false", "--name", "ci-canary"],
    ));
    let run_id = harness.run_id();
    let code = harness.wait(Duration::from_secs(400));
    let dir = harness.artifacts();
    let r = results(&dir);
    assert_eq!(
        code, 1,
        "last write wins must lose writes: {}",
        r["summary"]
    );
    assert_eq!(r["valid"], false);
    assert!(r["checkers"]["set"]["lost_count"].as_u64().unwrap() > 0);
    assert_nothing_left(&run_id);
    // An invalid run keeps its data directories; the canary's are of no use.
    std::fs::remove_dir_all(dir.join("data")).unwrap();
}

#[test]
fn cleanup_removes_what_a_killed_harness_left() {
    if skip("cleanup_removes_what_a_killed_harness_left") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut harness = Harness::start(&[
        "test",
        "--nemesis",
        "partition",
        "--nodes",
        "3",
        "--time-limit",
        "300",
        "--name",
        "ci-crash",
    ]);
    let run_id = harness.run_id();
    harness.wait_line("clients at", Duration::from_secs(90));
    // The run is under way: namespaces and nodes exist. SIGKILL gives the
    // harness no chance to clean up.
    assert!(!jepsen::net::leftovers(&run_id).is_empty());
    harness.signal("-KILL");
    harness.wait(Duration::from_secs(10));
    let left = jepsen::net::leftovers(&run_id);
    assert!(
        left.iter().any(|l| l.contains("namespace")) && left.iter().any(|l| l.contains("process")),
        "a killed harness should have left namespaces and nodes: {left:?}"
    );
    let cleanup = Command::new(env!("CARGO_BIN_EXE_jepsen"))
        .arg("cleanup")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cleanup.stdout);
    assert!(
        cleanup.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    assert!(said.contains(&format!("removed run {run_id}")), "{said}");
    assert_nothing_left(&run_id);
    let _ = std::fs::remove_dir_all(harness.artifacts());
}

#[test]
fn a_terminated_run_heals_tears_down_and_is_unknown() {
    if skip("a_terminated_run_heals_tears_down_and_is_unknown") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut harness = Harness::start(&[
        "test",
        "--nemesis",
        "pause",
        "--nodes",
        "3",
        "--time-limit",
        "300",
        "--convergence-wait",
        "20",
        "--name",
        "ci-terminated",
    ]);
    let run_id = harness.run_id();
    harness.wait_line("clients at", Duration::from_secs(90));
    // Into the first fault (a pause), so the heal has something to undo.
    harness.wait_line("start: pause", Duration::from_secs(60));
    harness.signal("-TERM");
    let code = harness.wait(Duration::from_secs(180));
    let r = results(&harness.artifacts());
    assert_eq!(code, 2, "{}", r["summary"]);
    assert_eq!(r["valid"], "unknown");
    assert!(
        r["notes"].to_string().contains("interrupted"),
        "{}",
        r["notes"]
    );
    assert_nothing_left(&run_id);
    let _ = std::fs::remove_dir_all(harness.artifacts());
}
