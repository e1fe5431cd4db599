//! The database under test: one real `starling start` process per node, in
//! the node's namespace, with its own data directory and log.
//!
//! A node is started with `ip netns exec NS starling start ...`; `ip netns
//! exec` replaces itself with `starling`, so the child's pid is the node's
//! and signals reach it directly. Every node lists every other as a seed,
//! so a restarted node finds the cluster whoever else is down. A restart
//! reuses the data directory: that is what a crash-recovery test is about.
//!
//! Every start appends a marker line to the node's log, so restarts are
//! visible there.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};

use crate::client::Client;
use crate::net::{NodeNet, ip_binary};

/// How every node of a run is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The `starling` binary.
    pub starling: PathBuf,
    /// The shared cluster secret.
    pub secret: String,
    /// The cluster name (carries the run id).
    pub cluster_name: String,
    /// The node's default request deadline.
    pub request_timeout_ms: u64,
    /// More `starling start` arguments, as given.
    pub extra_args: Vec<String>,
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Where it lives on the network.
    pub net: NodeNet,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log (stdout and stderr, every life appended).
    pub log_path: PathBuf,
    seeds: String,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl Node {
    /// A node that is not running yet. `seeds` are the other nodes.
    pub fn new(net: NodeNet, dir: &Path, log_dir: &Path, others: &[NodeNet]) -> Node {
        let seeds = others
            .iter()
            .map(NodeNet::cluster_addr)
            .collect::<Vec<_>>()
            .join(",");
        Node {
            data_dir: dir.join(&net.name),
            log_path: log_dir.join(format!("{}.log", net.name)),
            net,
            seeds,
            child: None,
            paused: false,
            starts: 0,
        }
    }

    /// Starts the process; [`Node::wait_ready`] waits for it to answer.
    pub fn start(&mut self, options: &NodeOptions) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.net.name);
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        self.starts += 1;
        writeln!(
            log,
            "=== jepsen: starting {} (life {}) ===",
            self.net.name, self.starts
        )?;
        let mut command = Command::new(ip_binary());
        command
            .args(["netns", "exec", &self.net.ns])
            .arg(&options.starling)
            .arg("start")
            .args(["--node-name", &self.net.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--http-listen", &self.net.http_addr()])
            .args(["--cluster-listen", &self.net.cluster_addr()])
            .args(["--cluster-secret", &options.secret])
            .args(["--cluster-name", &options.cluster_name])
            .args([
                "--request-timeout-ms",
                &options.request_timeout_ms.to_string(),
            ]);
        if !self.seeds.is_empty() {
            command.args(["--join", &self.seeds]);
        }
        command.args(&options.extra_args);
        // The node's settings are the ones above, not the caller's.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STARLING_") {
                command.env_remove(name);
            }
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", options.starling.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Waits until the node answers `/ping`; fails with the end of its log
    /// if it exits or `deadline` passes first. The calling thread must be
    /// in the harness namespace.
    pub fn wait_ready(&mut self, client: &Client, deadline: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "{} exited with {status} while starting; its log ends:\n{}",
                    self.net.name,
                    self.log_tail(40)
                );
            }
            if client.ping() {
                return Ok(());
            }
            if start.elapsed() > deadline {
                bail!(
                    "{} did not answer /ping within {deadline:?}; its log ends:\n{}",
                    self.net.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the process exited on its own; reaps it if so.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| Pid::from_raw(c.id() as i32))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().ok();
        child.wait().context("reaping a killed node")?;
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().context("pausing a node that is not running")?;
        kill_process(pid, Signal::STOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            kill_process(pid, Signal::CONT)?;
        }
        self.paused = false;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
