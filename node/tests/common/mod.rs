//! Support for tests that run real `starling` processes on loopback.
//!
//! Every wait here polls a condition against a deadline; nothing sleeps and
//! hopes.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster secret the tests share, long enough to pass validation.
pub const TEST_SECRET: &str = "starling-test-secret-0123456789";

/// Picks a free TCP port on loopback. The port is released before the node
/// binds it, so another process could take it in between; on a test machine
/// the kernel hands ports out in sequence, which makes that rare.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP agent that reports 4xx/5xx as responses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A 300 is Riak's sibling answer, not a redirect to follow.
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into()
}

/// Picks a free UDP port on loopback (same caveat as [`free_port`]).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `starling start` process.
pub struct NodeProcess {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    secret: String,
    log_path: PathBuf,
    extra_args: Vec<String>,
    /// `RUST_LOG` of the process.
    log_filter: String,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts a node with its data in `data_dir` and waits until it answers.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> NodeProcess {
        NodeProcess::start_with_secret(data_dir, TEST_SECRET, extra_args)
    }

    /// Starts a node with its own cluster secret.
    pub fn start_with_secret(data_dir: &Path, secret: &str, extra_args: &[&str]) -> NodeProcess {
        NodeProcess::start_full(
            data_dir,
            &data_dir.with_extension("log"),
            secret,
            extra_args,
            "info",
        )
    }

    /// Starts a node logging with `RUST_LOG=log_filter`.
    pub fn start_with(
        data_dir: &Path,
        secret: &str,
        extra_args: &[&str],
        log_filter: &str,
    ) -> NodeProcess {
        NodeProcess::start_full(
            data_dir,
            &data_dir.with_extension("log"),
            secret,
            extra_args,
            log_filter,
        )
    }

    /// Starts a node whose log goes to `log_path` (for a data directory on
    /// a filesystem that should hold nothing else).
    pub fn start_logging_to(data_dir: &Path, log_path: &Path, extra_args: &[&str]) -> NodeProcess {
        NodeProcess::start_full(data_dir, log_path, TEST_SECRET, extra_args, "info")
    }

    fn start_full(
        data_dir: &Path,
        log_path: &Path,
        secret: &str,
        extra_args: &[&str],
        log_filter: &str,
    ) -> NodeProcess {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cluster = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let mut node = NodeProcess {
            data_dir: data_dir.to_owned(),
            http,
            cluster,
            secret: secret.to_owned(),
            log_path: log_path.to_owned(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log_filter: log_filter.to_owned(),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("start")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-listen")
            .arg(self.http.to_string())
            .arg("--cluster-listen")
            .arg(self.cluster.to_string())
            .arg("--cluster-secret")
            .arg(&self.secret)
            .args(&self.extra_args)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = self.url("/ping");
        let agent = agent();
        let log_path = self.log_path.clone();
        let child = self.child.as_mut().unwrap();
        wait_until("the node to answer /ping", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "starling exited with {status} while starting; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            agent.get(&url).call().is_ok_and(|r| r.status() == 200)
        });
    }

    /// The URL of `path` on this node.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("node is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.send_term();
        self.wait_exit()
    }

    /// Sends SIGTERM without waiting.
    pub fn send_term(&self) {
        let child = self.child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same data directory and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The members this node reports, as (http address, state, incarnation).
    pub fn members(&self) -> Vec<(String, String, u64)> {
        let Ok(mut r) = agent().get(&self.url("/admin/members")).call() else {
            return Vec::new();
        };
        let Ok(body) = r.body_mut().read_to_string() else {
            return Vec::new();
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        value["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m["http_addr"].as_str().unwrap_or("").to_owned(),
                            m["state"].as_str().unwrap_or("").to_owned(),
                            m["incarnation"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ring state of every member this node reports.
    pub fn ring_states(&self) -> Vec<String> {
        let Ok(mut r) = agent().get(&self.url("/admin/members")).call() else {
            return Vec::new();
        };
        let value: serde_json::Value = r
            .body_mut()
            .read_to_string()
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        value["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| m["ring_state"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state this node reports for the node whose HTTP address is `http`.
    pub fn state_of(&self, http: SocketAddr) -> Option<(String, u64)> {
        let http = http.to_string();
        self.members()
            .into_iter()
            .find(|(h, _, _)| *h == http)
            .map(|(_, s, i)| (s, i))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `count` nodes in `dir`, the first as the seed, and waits until
/// every node sees all of them alive.
pub fn cluster(dir: &Path, count: usize, extra_args: &[&str]) -> Vec<NodeProcess> {
    cluster_logging(dir, count, extra_args, "info")
}

/// [`cluster`] with `RUST_LOG=log_filter` on every node.
pub fn cluster_logging(
    dir: &Path,
    count: usize,
    extra_args: &[&str],
    log_filter: &str,
) -> Vec<NodeProcess> {
    let start = |name: String, args: &[&str]| {
        NodeProcess::start_with(&dir.join(name), TEST_SECRET, args, log_filter)
    };
    let seed = start("n0".to_owned(), extra_args);
    let join = seed.cluster.to_string();
    let mut nodes = vec![seed];
    for i in 1..count {
        let mut args: Vec<&str> = vec!["--join", &join];
        args.extend_from_slice(extra_args);
        nodes.push(start(format!("n{i}"), &args));
    }
    wait_until(
        "every node to see the whole cluster alive and owning partitions",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                n.members().iter().filter(|(_, s, _)| s == "alive").count() == count
                    && n.ring_states().iter().filter(|s| *s == "member").count() == count
            })
        },
    );
    nodes
}

impl NodeProcess {
    /// This node's own replica of a key: the values of its siblings, or
    /// `None` if it holds none.
    pub fn local_values(&self, bucket: &str, key: &str) -> Option<Vec<String>> {
        let url = self.url(&format!("/admin/local?bucket={bucket}&key={key}"));
        let mut r = agent().get(&url).call().ok()?;
        if r.status() != 200 {
            return None;
        }
        let value: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        Some(
            value["siblings"]
                .as_array()?
                .iter()
                .filter(|s| s["deleted"] != serde_json::Value::Bool(true))
                .map(|s| s["value"].as_str().unwrap_or("").to_owned())
                .collect(),
        )
    }

    /// Hints this node holds.
    pub fn hints_pending(&self) -> Option<u64> {
        let mut r = agent().get(&self.url("/admin/hints")).call().ok()?;
        let value: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        value["pending"].as_u64()
    }

    /// PUTs `value` (text/plain) to `bucket`/`key` with optional query
    /// string; returns status and body.
    pub fn put(&self, bucket: &str, key: &str, query: &str, value: &str) -> (u16, String) {
        let url = self.url(&format!("/buckets/{bucket}/keys/{key}{query}"));
        match agent()
            .put(&url)
            .header("Content-Type", "text/plain")
            .send(value)
        {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(err) => (0, err.to_string()),
        }
    }

    /// The causal context of `bucket`/`key` as this node reads it now.
    pub fn context(&self, bucket: &str, key: &str) -> Option<String> {
        let url = self.url(&format!("/buckets/{bucket}/keys/{key}"));
        let r = agent().get(&url).call().ok()?;
        Some(r.headers().get("x-riak-vclock")?.to_str().ok()?.to_owned())
    }

    /// PUTs `value` with a causal context; returns status and body.
    pub fn put_with_context(
        &self,
        bucket: &str,
        key: &str,
        query: &str,
        context: &str,
        value: &str,
    ) -> (u16, String) {
        let url = self.url(&format!("/buckets/{bucket}/keys/{key}{query}"));
        match agent()
            .put(&url)
            .header("Content-Type", "text/plain")
            .header("X-Riak-Vclock", context)
            .send(value)
        {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(err) => (0, err.to_string()),
        }
    }

    /// GETs `bucket`/`key` (all siblings as multipart); returns status and
    /// body.
    pub fn get(&self, bucket: &str, key: &str, query: &str) -> (u16, String) {
        let url = self.url(&format!("/buckets/{bucket}/keys/{key}{query}"));
        match agent().get(&url).header("Accept", "multipart/mixed").call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(err) => (0, err.to_string()),
        }
    }
}

impl NodeProcess {
    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process has exited (it then is no longer tracked).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(child) => {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// GETs a JSON document from this node (`Null` if it does not answer).
    pub fn json(&self, path: &str) -> serde_json::Value {
        let Ok(mut r) = agent().get(&self.url(path)).call() else {
            return serde_json::Value::Null;
        };
        r.body_mut()
            .read_to_string()
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }

    /// This node's anti-entropy view (`/admin/aae`).
    pub fn aae(&self) -> serde_json::Value {
        self.json("/admin/aae")
    }

    /// This node's Merkle tree roots, by `(partition, n_val)`; `None` while
    /// its trees are being built or it does not answer.
    pub fn roots(&self) -> Option<std::collections::BTreeMap<(u64, u64), String>> {
        let aae = self.aae();
        if aae["ready"] != serde_json::Value::Bool(true) {
            return None;
        }
        Some(
            aae["trees"]
                .as_array()?
                .iter()
                .map(|t| {
                    (
                        (
                            t["partition"].as_u64().unwrap_or(0),
                            t["n_val"].as_u64().unwrap_or(0),
                        ),
                        t["root"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect(),
        )
    }

    /// The id this node reports for itself.
    pub fn id(&self) -> String {
        let members = self.json("/admin/members");
        members["members"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["local"] == serde_json::Value::Bool(true))
            })
            .and_then(|m| m["id"].as_str())
            .unwrap_or("")
            .to_owned()
    }
}

/// Writes keys `k{i}` for `i` in `keys` of `bucket` with
/// `value_size_bytes` values through `nodes` (round-robin) from `threads`
/// client threads; panics on any write that is not acknowledged.
pub fn load(
    nodes: &[&NodeProcess],
    bucket: &str,
    keys: std::ops::Range<usize>,
    value_size_bytes: usize,
    query: &str,
    threads: usize,
) {
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let urls = &urls;
            let keys = keys.clone();
            scope.spawn(move || {
                let agent = agent();
                let mut i = keys.start + t;
                while i < keys.end {
                    let value = format!("{i:0width$}", width = value_size_bytes);
                    let url = format!("{}/buckets/{bucket}/keys/k{i}{query}", urls[i % urls.len()]);
                    let status = agent
                        .put(&url)
                        .header("Content-Type", "text/plain")
                        .send(&value)
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    assert!(matches!(status, 200 | 204), "PUT {url} answered {status}");
                    i += threads;
                }
            });
        }
    });
}

/// Reads keys `k{i}` for `i` in `keys` of `bucket` through `node` with
/// `query` from `threads` threads and returns the keys that did not answer
/// 200 with the value [`load`] wrote.
pub fn missing(
    node: &NodeProcess,
    bucket: &str,
    keys: std::ops::Range<usize>,
    value_size_bytes: usize,
    query: &str,
    threads: usize,
) -> Vec<usize> {
    let base = node.url("");
    let lost = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (base, lost) = (&base, &lost);
            let keys = keys.clone();
            scope.spawn(move || {
                let agent = agent();
                let mut i = keys.start + t;
                while i < keys.end {
                    let url = format!("{base}/buckets/{bucket}/keys/k{i}{query}");
                    let expected = format!("{i:0width$}", width = value_size_bytes);
                    let ok = agent.get(&url).call().is_ok_and(|mut r| {
                        r.status() == 200
                            && r.body_mut().read_to_string().is_ok_and(|b| b == expected)
                    });
                    if !ok {
                        lost.lock().unwrap().push(i);
                    }
                    i += threads;
                }
            });
        }
    });
    let mut lost = lost.into_inner().unwrap();
    lost.sort_unstable();
    lost
}

/// Parses a `/metrics` body with a Prometheus text parser: sample name plus
/// sorted labels (`name{k=v,...}`) -> value; a histogram gives its count.
pub fn parse_metrics(body: &str) -> std::collections::HashMap<String, f64> {
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = std::collections::HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    out
}
