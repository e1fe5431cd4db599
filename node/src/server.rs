//! Node life-cycle: open the store, serve HTTP, shut down gracefully.
//!
//! Shutdown order matters for durability: stop accepting connections, let
//! in-flight requests finish (bounded by the drain timeout), then close the
//! store, which flushes and fsyncs. A write acknowledged before shutdown was
//! already durable (sync = always); one in flight is either finished and
//! acknowledged or never acknowledged.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use storage::{ContextKey, Store, StoreConfig};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use std::time::Duration;

use membership::{NodeId, RingState};

use crate::aae::{self, AaeStats};
use crate::backend::NodeBackend;
use crate::cluster::{Cluster, ClusterConfig, TAG_RPC};
use crate::config::Config;
use crate::coordinator::{Coordinator, ReplicaRpcs};
use crate::handoff::{self, HandoffStats};
use crate::reaper::{self, ReaperStats};
use crate::tls::ClusterTls;
use crate::transport::{Transport, TransportConfig};

/// Name of the file that holds a node's own cluster secret when none is
/// configured.
const SECRET_FILE: &str = "cluster_secret";

/// A node running in this process.
#[derive(Debug)]
pub struct RunningNode {
    /// The address the HTTP API is bound to.
    pub http_addr: SocketAddr,
    cluster: Cluster,
    shutdown: oneshot::Sender<()>,
    /// Notified when an operator's leave has moved every key elsewhere.
    left: Arc<tokio::sync::Notify>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Shuts the node down gracefully and waits until its store is closed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("node task panicked")?
    }

    /// Members this node sees alive, itself included.
    pub fn alive_members(&self) -> usize {
        self.cluster
            .members()
            .iter()
            .filter(|m| m.state == membership::MemberState::Alive)
            .count()
    }

    /// Waits until the node stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("node task panicked")?
    }

    /// Members this node sees in ring state `member`, itself included.
    pub fn ring_members(&self) -> usize {
        self.cluster
            .members()
            .iter()
            .filter(|m| m.meta.ring == RingState::Member)
            .count()
    }

    /// Completes once a leave (`starling admin leave`) has handed every key
    /// to the remaining members; the node should then stop.
    pub async fn left(&self) {
        self.left.notified().await;
    }
}

/// Opens the store and starts serving; returns once the node accepts requests.
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let secret = match &config.cluster_secret {
        Some(secret) => secret.clone(),
        None => own_secret(&config.data_dir)?,
    };
    let store_config = StoreConfig {
        data_dir: config.data_dir.join("store"),
        sync: config.sync,
        limits: config.limits.clone(),
        node_id: None,
        partition_count: config.replication.partition_count,
        disk_reserve_bytes: config.disk_reserve_bytes,
        fsync_spacing: config.fsync_spacing,
    };
    let store = tokio::task::spawn_blocking(move || Store::open(store_config))
        .await
        .context("store open panicked")?
        .context("opening the store")?;
    let identity = store.identity();
    let ring_state = initial_ring_state(&store, &config)?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding HTTP listener on {}", config.http_listen))?;
    let http_addr = listener.local_addr()?;
    let cluster = start_cluster(&config, &secret, identity.node_id, http_addr, ring_state).await?;
    let coordinator = Arc::new(
        Coordinator::new(Arc::new(store), cluster.clone(), config.replication.clone())
            .context("starting the applier thread")?,
    );
    cluster
        .transport()
        .serve_directly(TAG_RPC, Arc::new(ReplicaRpcs(coordinator.clone())))
        .map_err(|err| anyhow::anyhow!(err))?;
    let handoff_stats = Arc::new(HandoffStats::default());
    tokio::spawn(handoff::run(
        coordinator.clone(),
        config.handoff.clone(),
        handoff_stats.clone(),
    ));
    let aae_stats = Arc::new(AaeStats::default());
    let reaper_stats = Arc::new(ReaperStats::default());
    let left = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(aae::run(
        coordinator.clone(),
        config.aae.clone(),
        aae_stats.clone(),
        left.clone(),
    ));
    tokio::spawn(reaper::run(
        coordinator.clone(),
        config.reaper.clone(),
        reaper_stats.clone(),
    ));
    let backend = Arc::new(NodeBackend::new(
        coordinator,
        ContextKey::derive(secret.as_bytes()),
        config.node_name.clone(),
        handoff_stats,
        aae_stats,
        reaper_stats,
    ));
    info!(
        node = %config.node_name,
        http = %http_addr,
        data_dir = %config.data_dir.display(),
        node_id = format_args!("{:016x}", identity.node_id),
        epoch = format_args!("{:x}", identity.epoch),
        sync = ?config.sync,
        "starling node started"
    );
    let serve_config = http_serve_config(&config)?;
    crate::security::raise_open_files_limit(config.http.connections_max);
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let node_cluster = cluster.clone();
    let task = tokio::spawn(async move {
        let serve_config = serve_config;
        // The leave starts with the drain, so peers route around this node
        // while it finishes what it has in flight.
        let (leave_tx, leave_rx) = oneshot::channel::<tokio::task::JoinHandle<()>>();
        let leaving_cluster = cluster.clone();
        let served = http_api::serve(listener, backend.clone(), serve_config, async move {
            let _ = shutdown_rx.await;
            info!("shutting down: leaving the cluster and draining requests");
            let leave = tokio::spawn(async move { leaving_cluster.leave().await });
            let _ = leave_tx.send(leave);
        })
        .await;
        info!("HTTP server stopped");
        if let Ok(leave) = leave_rx.await {
            let _ = leave.await;
            info!("left the cluster");
        }
        backend.close().await;
        info!("store closed");
        served.context("HTTP server failed")
    });
    Ok(RunningNode {
        http_addr,
        cluster: node_cluster,
        shutdown,
        left,
        task,
    })
}

/// The HTTP server's settings: limits from the config, the TLS certificate
/// and the users file loaded now, so a bad file stops the start.
fn http_serve_config(config: &Config) -> anyhow::Result<http_api::ServeConfig> {
    let http = &config.http;
    let tls = http
        .tls
        .as_ref()
        .map(crate::security::load_tls)
        .transpose()
        .context("loading the HTTP API's TLS certificate")?;
    let auth = http
        .auth
        .as_ref()
        .map(crate::security::load_auth)
        .transpose()
        .context("loading the users file")?;
    if let Some(auth) = &auth
        && auth.allows_plain_http()
        && tls.is_none()
    {
        warn!(
            "authentication is on over plain HTTP (auth_allow_plain_http): passwords travel in \
             clear text unless a TLS-terminating proxy stands in front of this node"
        );
    }
    Ok(http_api::ServeConfig {
        drain_timeout: config.shutdown_drain,
        body_size_bytes_max: http.body_size_bytes_max,
        body_buffer_bytes_max: http.body_buffer_bytes_max,
        header_size_bytes_max: http.header_size_bytes_max,
        header_read_timeout: http.header_read_timeout,
        body_read_timeout: http.body_read_timeout,
        write_timeout: http.write_timeout,
        connections_max: http.connections_max,
        requests_in_flight_max: http.requests_in_flight_max,
        tls,
        auth,
        ..http_api::ServeConfig::default()
    })
}

/// Binds the cluster endpoint and starts membership.
async fn start_cluster(
    config: &Config,
    secret: &str,
    node_id: u64,
    http_addr: SocketAddr,
    ring_state: RingState,
) -> anyhow::Result<Cluster> {
    let tls = ClusterTls::from_secret(&config.cluster_name, secret)?;
    let swim = membership::Config {
        // QUIC datagrams must fit the path: before MTU discovery a QUIC
        // packet is 1200 bytes, of which headers, the AEAD tag and the
        // datagram frame take about 50.
        datagram_size_bytes_max: 1100,
        ..membership::Config::default()
    };
    let transport_config = TransportConfig {
        listen: config.cluster_listen,
        // Sends run in tasks of their own, so a slow handshake delays no
        // probe; but it must be allowed to finish on a loaded machine.
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        reset_key: {
            let mut material = secret.as_bytes().to_vec();
            material.extend_from_slice(&node_id.to_be_bytes());
            blake3::derive_key("starling QUIC stateless reset v1", &material)
        },
    };
    let (transport, inbound) = Transport::bind(&transport_config, &tls)
        .with_context(|| format!("binding the cluster endpoint on {}", config.cluster_listen))?;
    let bound = transport.local_addr()?;
    let advertise = resolve_one(&config.cluster_advertise, bound.port()).await?;
    let http_advertise = if config.http_advertise.ends_with(":0") {
        http_addr.to_string()
    } else {
        config.http_advertise.clone()
    };
    let cluster_config = ClusterConfig {
        cluster_name: config.cluster_name.clone(),
        advertise,
        http_addr: http_advertise,
        zone: config.zone.clone(),
        seeds: config.join.clone(),
        swim,
        ring_state,
    };
    info!(cluster = %config.cluster_name, listen = %bound, %advertise, seeds = ?config.join, "cluster endpoint up");
    Cluster::start(
        cluster_config,
        NodeId(u128::from(node_id)),
        transport,
        inbound,
    )
}

/// This node's ring state: as persisted, or for a new data directory
/// `member` when it starts a cluster (no seeds) and `joining` when it joins
/// one. A node that left or was removed cannot come back with its old data.
fn initial_ring_state(store: &Store, config: &Config) -> anyhow::Result<RingState> {
    let persisted = store
        .cluster_meta(aae::META_RING_STATE)
        .context("reading the ring state")?;
    let state = match persisted.as_deref() {
        Some([byte]) => aae::ring_state_from_byte(*byte)
            .with_context(|| format!("unknown persisted ring state {byte}"))?,
        Some(other) => anyhow::bail!("malformed persisted ring state {other:?}"),
        None => {
            let state = if config.join.is_empty() {
                RingState::Member
            } else {
                RingState::Joining
            };
            store
                .set_cluster_meta(aae::META_RING_STATE, &[aae::ring_state_byte(state)])
                .context("persisting the ring state")?;
            state
        }
    };
    if state == RingState::Removed {
        anyhow::bail!(
            "this node left or was removed from its cluster and owns nothing; \
             to run it again, start it with an empty data directory"
        );
    }
    Ok(state)
}

/// Resolves `host:port` to one address; port 0 means "the bound port".
async fn resolve_one(addr: &str, bound_port: u16) -> anyhow::Result<SocketAddr> {
    let mut found = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving cluster_advertise {addr}"))?;
    let mut resolved = found
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    if resolved.port() == 0 {
        resolved.set_port(bound_port);
    }
    Ok(resolved)
}

/// Runs a node until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut node = start(config).await?;
    let left = node.left.clone();
    tokio::select! {
        () = shutdown => {
            info!("shutdown requested; finishing in-flight requests");
            node.stop().await
        }
        () = left.notified() => {
            info!("left the cluster: every key is with the remaining members; stopping");
            node.stop().await
        }
        result = node.wait() => result,
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is called; the future
/// completes on either. Call it inside the runtime before the node starts
/// serving: a signal that comes before anyone listens takes its default
/// action and kills the process without a clean close (a test that sent
/// SIGTERM as soon as `/ping` answered saw exactly that).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(listener) => Some(listener),
        Err(err) => {
            warn!(%err, "cannot listen for {name}; it will not stop the node cleanly");
            None
        }
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    async fn received(listener: &mut Option<Signal>) {
        match listener {
            Some(listener) => {
                listener.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            () = received(&mut interrupt) => {}
            () = received(&mut terminate) => {}
        }
    }
}

/// Reads the secret kept in `data_dir`, creating it first.
pub fn own_secret(data_dir: &Path) -> anyhow::Result<String> {
    use rand::distr::{Alphanumeric, SampleString};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) => return Ok(secret.trim().to_owned()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 40);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    warn!(
        path = %path.display(),
        "no cluster_secret configured: created a secret for this node alone; \
         set cluster_secret to the same value on every node of a cluster"
    );
    Ok(secret)
}
