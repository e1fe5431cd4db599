//! The test network: one namespace per node, a bridge in the harness's own
//! namespace, and the sweeping of whatever a crashed run left behind.
//!
//! ```text
//!   sj-RUN-h (harness)                 sj-RUN-n1           sj-RUN-n2 ...
//!   ┌───────────────────────┐          ┌──────────┐        ┌──────────┐
//!   │ sjbrRUN 10.X.Y.1/24   │──veth───▶│ eth0 .11 │        │ eth0 .12 │
//!   │  (clients live here)  │──veth───────────────────────▶│          │
//!   └───────────────────────┘          └──────────┘        └──────────┘
//! ```
//!
//! Every name carries the run id (8 hex digits): namespaces `sj-RUN-h` and
//! `sj-RUN-nI`, the bridge `sjbrRUN`, veth ports `sjvRUNI`, the nftables
//! table `inet sj_RUN` in each node's namespace, the cluster name `sj-RUN`
//! on every node's command line, and the subnet `10.X.Y.0/24` (X and Y from
//! the run id). Nothing is created in the machine's own namespace, so a
//! run cannot disturb the host's network, and two runs never collide.
//!
//! A run registers itself in `/run/starling-jepsen/RUN.json` with its pid
//! and the pid's start time. [`cleanup`] removes every run whose harness
//! is gone (or every run, with `all`): it kills the processes in its
//! namespaces and every process whose command line names its cluster,
//! deletes the nftables tables, the bridge and the namespaces, and the
//! registration. [`Topology`]'s `Drop` does the same for its own run, so a
//! panicking harness still leaves nothing behind.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

/// The prefix of every namespace and cluster name a run creates.
pub const PREFIX: &str = "sj-";

/// Where runs register themselves (tmpfs: gone at boot, like namespaces).
pub const REGISTRY_DIR: &str = "/run/starling-jepsen";

/// The HTTP port of every node (each node has its own address).
pub const HTTP_PORT: u16 = 8098;

/// The cluster (QUIC) port of every node.
pub const CLUSTER_PORT: u16 = 7946;

/// How long teardown waits for killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The `ip` binary.
pub fn ip_binary() -> PathBuf {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new(ip_binary()).args(args))
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
pub fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new(ip_binary())
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "nft in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Whether this machine can run the harness: root, `ip`, `nft`, and the
/// kernel lets us make and enter network namespaces. The error says why
/// not, for a SKIP line.
pub fn available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root (network namespaces and nftables need it)".into());
    }
    let probe = format!("{PREFIX}probe-{}", std::process::id());
    Command::new(ip_binary())
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("no `ip` (iproute2): {e}"))?
        .success()
        .then_some(())
        .ok_or("`ip netns add` failed (namespaces are not allowed here)")?;
    let nft_ok = Command::new(ip_binary())
        .args(["netns", "exec", &probe, "nft", "list", "ruleset"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new(ip_binary())
        .args(["netns", "del", &probe])
        .status();
    if !nft_ok {
        return Err(
            "`ip netns exec ... nft` failed (nftables missing, or no mount namespaces)".into(),
        );
    }
    Ok(())
}

/// A fresh run id: 8 hex digits from the pid, the time and a counter.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser: nearby inputs give unrelated ids.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("{:08x}", x as u32)
}

/// The subnet of a run: `10.X.Y.0/24` with X in 64..128 and Y from the id.
pub fn subnet(run_id: &str) -> [u8; 3] {
    let h = u32::from_str_radix(run_id, 16).unwrap_or(0);
    [10, 64 + ((h >> 8) & 63) as u8, (h & 255) as u8]
}

/// The cluster name of a run (also how its processes are found again).
pub fn cluster_name(run_id: &str) -> String {
    format!("{PREFIX}{run_id}")
}

/// A run's registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    run_id: String,
    pid: u32,
    /// The harness process's start time (clock ticks since boot, from
    /// `/proc/PID/stat`), so a recycled pid is not mistaken for it.
    start_ticks: u64,
    store: String,
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised command name, which may
    // itself contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn registration_path(run_id: &str) -> PathBuf {
    Path::new(REGISTRY_DIR).join(format!("{run_id}.json"))
}

fn run_alive(run_id: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(registration_path(run_id)) else {
        return false;
    };
    let Ok(reg) = serde_json::from_str::<Registration>(&text) else {
        return false;
    };
    start_ticks(reg.pid) == Some(reg.start_ticks)
}

/// One node's place in the network.
#[derive(Debug, Clone)]
pub struct NodeNet {
    /// `n1`, `n2`, ...
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its veth port on the bridge.
    pub veth: String,
}

impl NodeNet {
    /// `http://ADDR:8098`.
    pub fn http_base(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.addr)
    }

    /// `ADDR:8098`, as the node names itself in preference lists.
    pub fn http_addr(&self) -> String {
        format!("{}:{HTTP_PORT}", self.addr)
    }

    /// `ADDR:7946`.
    pub fn cluster_addr(&self) -> String {
        format!("{}:{CLUSTER_PORT}", self.addr)
    }
}

/// The network of one run. Dropping it tears everything down.
#[derive(Debug)]
pub struct Topology {
    /// The run id.
    pub run_id: String,
    /// The harness namespace (holds the bridge; clients run here).
    pub harness_ns: String,
    /// The bridge.
    pub bridge: String,
    /// The harness's address on the bridge.
    pub gateway: Ipv4Addr,
    /// The nodes.
    pub nodes: Vec<NodeNet>,
    /// The nftables table (family `inet`) in every node namespace.
    pub table: String,
    namespaces: Vec<String>,
    torn_down: bool,
}

impl Topology {
    /// Registers the run and builds its network for `count` nodes. Stale
    /// runs are swept first. On error, what was built is torn down.
    pub fn create(run_id: &str, count: usize, store: &Path) -> anyhow::Result<Topology> {
        ensure!((1..=99).contains(&count), "1 to 99 nodes, not {count}");
        ensure!(
            run_id.len() == 8 && run_id.chars().all(|c| c.is_ascii_hexdigit()),
            "a run id is 8 hex digits"
        );
        let report = cleanup(false);
        if !report.removed_runs.is_empty() {
            eprintln!(
                "swept {} stale run(s) left by crashed harnesses: {}",
                report.removed_runs.len(),
                report.removed_runs.join(", ")
            );
        }
        std::fs::create_dir_all(REGISTRY_DIR)?;
        let pid = std::process::id();
        let registration = Registration {
            run_id: run_id.to_owned(),
            pid,
            start_ticks: start_ticks(pid).context("reading /proc/self/stat")?,
            store: store.display().to_string(),
        };
        // Written aside and renamed: a concurrent sweep must never read a
        // half-written registration and take a live run for a dead one.
        let path = registration_path(run_id);
        let partial = path.with_extension("partial");
        std::fs::write(&partial, serde_json::to_vec_pretty(&registration)?)?;
        std::fs::rename(&partial, &path)?;
        let [a, b, c] = subnet(run_id);
        let mut topology = Topology {
            run_id: run_id.to_owned(),
            harness_ns: format!("{PREFIX}{run_id}-h"),
            bridge: format!("sjbr{run_id}"),
            gateway: Ipv4Addr::new(a, b, c, 1),
            nodes: (1..=count)
                .map(|i| NodeNet {
                    name: format!("n{i}"),
                    ns: format!("{PREFIX}{run_id}-n{i}"),
                    addr: Ipv4Addr::new(a, b, c, 10 + i as u8),
                    veth: format!("sjv{run_id}{i}"),
                })
                .collect(),
            table: format!("sj_{run_id}"),
            namespaces: Vec::new(),
            torn_down: false,
        };
        topology.build()?;
        Ok(topology)
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let h = self.harness_ns.clone();
        self.add_namespace(&h)?;
        let br = self.bridge.clone();
        ip(&["-n", &h, "link", "add", &br, "type", "bridge"])?;
        ip(&[
            "-n",
            &h,
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &br,
        ])?;
        ip(&["-n", &h, "link", "set", &br, "up"])?;
        for node in self.nodes.clone() {
            self.add_namespace(&node.ns)?;
            ip(&[
                "-n", &h, "link", "add", &node.veth, "type", "veth", "peer", "name", "eth0",
                "netns", &node.ns,
            ])?;
            ip(&["-n", &h, "link", "set", &node.veth, "master", &br])?;
            ip(&["-n", &h, "link", "set", &node.veth, "up"])?;
            ip(&[
                "-n",
                &node.ns,
                "addr",
                "add",
                &format!("{}/24", node.addr),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &node.ns, "link", "set", "eth0", "up"])?;
            nft(&node.ns, &crate::nft::empty_table(&self.table))?;
        }
        Ok(())
    }

    /// Moves the calling thread into the harness namespace: its sockets,
    /// and those of threads it spawns afterwards, live there.
    pub fn enter_harness(&self) -> anyhow::Result<()> {
        let file = File::open(format!("/run/netns/{}", self.harness_ns))?;
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns into the harness namespace")?;
        Ok(())
    }

    /// Tears everything down; returns what could not be removed.
    pub fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut problems = remove_run(&self.run_id, &self.namespaces, &self.harness_ns);
        let left = leftovers(&self.run_id);
        problems.extend(left);
        problems
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("teardown: {problem}");
        }
    }
}

/// Pids of processes whose command line names `needle` (our cluster name).
fn pids_naming(needle: &str) -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|&b| b == 0).any(|arg| arg == needle.as_bytes()))
        })
        .collect()
}

fn namespace_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_and_wait(pids: &[u32]) -> Vec<String> {
    for &pid in pids {
        if let Some(pid) = Pid::from_raw(pid as i32) {
            // SIGKILL ends a SIGSTOPped process too.
            let _ = kill_process(pid, Signal::KILL);
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    let mut problems = Vec::new();
    for &pid in pids {
        // A killed child of ours stays a zombie until its parent reaps it;
        // a zombie holds no sockets or files, so it counts as gone.
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if Instant::now() > deadline {
                problems.push(format!("process {pid} survived SIGKILL"));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    problems
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Removes one run's processes, tables, bridge, namespaces and registration.
fn remove_run(run_id: &str, namespaces: &[String], harness_ns: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut pids: Vec<u32> = namespaces
        .iter()
        .flat_map(|ns| namespace_pids(ns))
        .collect();
    pids.extend(pids_naming(&cluster_name(run_id)));
    pids.sort_unstable();
    pids.dedup();
    problems.extend(kill_and_wait(&pids));
    let table = format!("sj_{run_id}");
    for ns in namespaces {
        if ns != harness_ns {
            let _ = nft(ns, &format!("delete table inet {table}\n"));
        }
    }
    let _ = ip(&["-n", harness_ns, "link", "del", &format!("sjbr{run_id}")]);
    for ns in namespaces.iter().rev() {
        if let Err(e) = ip(&["netns", "del", ns]) {
            problems.push(format!("{e:#}"));
        }
    }
    let _ = std::fs::remove_file(registration_path(run_id));
    problems
}

/// What is left of a run: namespaces, processes, registration.
pub fn leftovers(run_id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for ns in list_namespaces() {
        if ns.starts_with(&format!("{PREFIX}{run_id}-")) {
            left.push(format!("namespace {ns} is still there"));
        }
    }
    for pid in pids_naming(&cluster_name(run_id)) {
        if !is_zombie(pid) {
            left.push(format!("process {pid} of run {run_id} is still running"));
        }
    }
    if registration_path(run_id).exists() {
        left.push(format!(
            "{} is still there",
            registration_path(run_id).display()
        ));
    }
    left
}

fn list_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The run id in a namespace or cluster name `sj-RUN...`.
fn run_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?;
    let id = rest.get(..8)?;
    let tail = &rest[8..];
    let ours =
        id.chars().all(|c| c.is_ascii_hexdigit()) && (tail.is_empty() || tail.starts_with('-'));
    ours.then(|| id.to_owned())
}

/// What [`cleanup`] did.
#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    /// Runs removed.
    pub removed_runs: Vec<String>,
    /// Runs left alone because their harness is alive.
    pub live_runs: Vec<String>,
    /// What could not be removed.
    pub problems: Vec<String>,
}

/// Removes every run whose harness is gone, or every run with `all`.
pub fn cleanup(all: bool) -> CleanupReport {
    use std::collections::BTreeMap;
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ns in list_namespaces() {
        if let Some(run) = run_of(&ns) {
            runs.entry(run).or_default().push(ns);
        }
    }
    // Processes of runs whose namespaces are already gone.
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            for arg in cmd.split(|&b| b == 0) {
                if let Some(run) = std::str::from_utf8(arg).ok().and_then(run_of)
                    && arg.len() == PREFIX.len() + 8
                {
                    runs.entry(run).or_default();
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(REGISTRY_DIR) {
        for entry in entries.flatten() {
            if let Some(run) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
            {
                runs.entry(run.to_owned()).or_default();
            }
        }
    }
    let mut report = CleanupReport::default();
    // Probe namespaces of `available()` whose process is gone.
    for ns in list_namespaces() {
        let Some(pid) = ns
            .strip_prefix(&format!("{PREFIX}probe-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && let Err(e) = ip(&["netns", "del", &ns])
        {
            report.problems.push(format!("{e:#}"));
        }
    }
    for (run, mut namespaces) in runs {
        if !all && run_alive(&run) {
            report.live_runs.push(run);
            continue;
        }
        // The harness namespace goes last: the bridge lives there.
        let harness = format!("{PREFIX}{run}-h");
        namespaces.sort_by_key(|ns| *ns == harness);
        namespaces.reverse();
        let problems = remove_run(&run, &namespaces, &harness);
        report.problems.extend(problems);
        report.problems.extend(leftovers(&run));
        report.removed_runs.push(run);
    }
    report
}

/// Fails unless `name` is a name this module could have made.
pub fn check_run_id(run_id: &str) -> anyhow::Result<()> {
    if run_id.len() != 8 || !run_id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{run_id:?} is not a run id (8 hex digits)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn run_ids_are_eight_hex_digits_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert!(check_run_id(&a).is_ok());
        assert!(check_run_id("xyz").is_err());
    }

    #[test]
    fn names_of_a_run_lead_back_to_it() {
        assert_eq!(run_of("sj-0badc0de-h").as_deref(), Some("0badc0de"));
        assert_eq!(run_of("sj-0badc0de-n12").as_deref(), Some("0badc0de"));
        assert_eq!(run_of("sj-0badc0de").as_deref(), Some("0badc0de"));
        assert_eq!(run_of("sj-probe-12"), None);
        assert_eq!(run_of("stct-1-2-host"), None);
        assert_eq!(run_of("sj-0badc0dex"), None);
    }

    #[test]
    fn the_subnet_carries_the_run_id() {
        assert_eq!(subnet("0000ab12"), [10, 64 + 0x2b, 0x12]);
        let [a, b, _] = subnet("ffffffff");
        assert_eq!((a, b), (10, 127));
    }

    #[test]
    fn a_pid_start_time_is_read_from_proc() {
        assert!(start_ticks(std::process::id()).is_some());
    }
}
