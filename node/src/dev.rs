//! `starling dev`: a three-node cluster on loopback for a first try.
//!
//! Three real nodes run in this process, each with its own HTTP port
//! (8098, 8099, 8100 by default), QUIC port (7946, 7947, 7948) and data
//! directory under `--dir`; the second and third join through the first.
//! They share a cluster secret created in `--dir` on the first run, so the
//! cluster comes back as it was on the next. Ctrl-C stops all three
//! gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, DEFAULT_CLUSTER_PORT, RawConfig};
use crate::server::RunningNode;

/// Nodes in the development cluster.
const DEV_NODES: u16 = 3;

/// Heap the dev process touches at start: one process, three nodes, each
/// growing into its own share (`crate::memory`).
pub const PREFAULT_BYTES: u64 = DEV_NODES as u64 * crate::memory::DEFAULT_PREFAULT_BYTES;

/// Waits (bounded) until every node sees all three alive and owning
/// partitions (the joining ones fill their share first), so that the user
/// is told the cluster is ready only when it is.
async fn formed(nodes: &[RunningNode]) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let ready = nodes.iter().all(|n| {
            n.alive_members() == usize::from(DEV_NODES)
                && n.ring_members() == usize::from(DEV_NODES)
        });
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tells the user where the nodes are and what to try.
fn print_banner(nodes: &[RunningNode], dir: &Path) {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("http://{}", n.http_addr))
        .collect();
    println!(
        "\nStarling dev cluster is up: {} nodes, n_val=3.\n{}\n  data: {}\n\nTry:\n  \
         curl -i -XPUT {}/buckets/demo/keys/hello -H 'Content-Type: text/plain' -d 'world'\n  \
         curl -i {}/buckets/demo/keys/hello\n  \
         curl {}/admin/members\n\nCtrl-C stops it (data is kept).\n",
        DEV_NODES,
        urls.iter()
            .enumerate()
            .map(|(i, u)| format!("  node{}: {u}", i + 1))
            .collect::<Vec<_>>()
            .join("\n"),
        dir.display(),
        urls[0],
        urls[2],
        urls[0],
    );
}

/// Runs the development cluster until SIGINT or SIGTERM.
pub async fn run(dir: PathBuf, http_port: u16) -> anyhow::Result<()> {
    let shutdown = crate::server::shutdown_signal();
    tokio::pin!(shutdown);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = dev_secret(&dir)?;
    let seed = SocketAddr::from(([127, 0, 0, 1], DEFAULT_CLUSTER_PORT));
    let mut nodes = Vec::new();
    for i in 0..DEV_NODES {
        let raw = RawConfig {
            node_name: Some(format!("dev{}@127.0.0.1", i + 1)),
            data_dir: Some(dir.join(format!("node{}", i + 1))),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], http_port + i))),
            cluster_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_CLUSTER_PORT + i))),
            cluster_secret: Some(secret.clone()),
            join: (i > 0).then(|| vec![seed.to_string()]),
            ..RawConfig::default()
        };
        nodes.push(crate::server::start(Config::from_raw(raw)?).await?);
    }
    // Ctrl-C while the cluster forms stops it at once, without the banner.
    let stopped = tokio::select! {
        () = &mut shutdown => true,
        () = formed(&nodes) => false,
    };
    if !stopped {
        print_banner(&nodes, &dir);
        shutdown.await;
    }
    // All three at once: stopped one by one, the last would gossip its
    // leave to nobody and wait out the drain.
    let stops: Vec<_> = nodes
        .into_iter()
        .map(|node| tokio::spawn(node.stop()))
        .collect();
    let mut result = Ok(());
    for stop in stops {
        match stop.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = Err(err),
            Err(err) => result = Err(anyhow::anyhow!("stopping a node panicked: {err}")),
        }
    }
    result
}

/// The dev cluster's shared secret, created on first use (the nodes are
/// given it explicitly, so none warns about a secret of its own).
fn dev_secret(dir: &Path) -> anyhow::Result<String> {
    use rand::distr::{Alphanumeric, SampleString};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("cluster_secret");
    if !path.exists() {
        let secret = Alphanumeric.sample_string(&mut rand::rng(), 40);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, secret.as_bytes())?;
        file.sync_all()?;
    }
    let secret =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(secret.trim().to_owned())
}
