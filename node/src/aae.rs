//! Active anti-entropy and ownership transfer: every replica of every key
//! converges, whatever was lost on the way, and data follows the ring when
//! members join, leave or are removed.
//!
//! Every round (`interval`, with jitter) this node asks every alive peer for
//! the roots of the Merkle trees it holds (one small RPC each) and compares
//! them with its own. For each tree — a partition and an `n_val` — it looks
//! at the tree's preference list in the *current* ring (members `member` or
//! `leaving`) and the *future* ring (`joining` or `member`):
//!
//! - **Exchange**: both nodes are current replicas and the roots differ; the
//!   one with the smaller id descends the trees (branches, then segments,
//!   then the key lists of differing segments) and repairs both sides of
//!   every differing key with the same merge as read repair.
//! - **Fill**: this node will own the tree but does not yet (it is
//!   joining): it exchanges with every current replica. A joining node
//!   becomes a `member` once one round filled every tree it will own.
//! - **Push**: this node owns the tree now but will not (it is leaving): it
//!   walks its copy of the tree and merges every key into each future owner
//!   that has not seen it yet. Once every tree is pushed it announces
//!   `removed`, hands off what is left and stops.
//! - **Hand-off**: this node holds a tree it owns in neither ring (a leftover
//!   after a join, or a leaver after its flip): it walks the tree, merges each
//!   key into every current replica that has not seen it, and removes its
//!   own copy once every current replica has (compare-and-remove, so a write
//!   that landed meanwhile stays for the next round).
//!
//! Exchanges run at most `exchanges_max` at a time. Bytes sent and received
//! are counted, so the cost can be compared with a full copy (the trees know
//! the size of what they hold).
//!
//! Boundary: the trees, the index and the compare-and-remove are the
//! store's; liveness is SWIM's; this module decides what to compare with
//! whom, and when ownership moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use membership::{MemberState, RingState};
use parking_lot::Mutex;
use rand::Rng;
use serde::Serialize;
use storage::merkle::{self, KeyDigest, TreeId};
use storage::{Object, Store};
use tracing::{debug, error, info, warn};

use crate::coordinator::{Coordinator, Traffic, View};
use crate::rpc::{Apply, Request, Response};

/// Settings of anti-entropy.
#[derive(Debug, Clone)]
pub struct AaeConfig {
    /// Exchange trees with peers at all (ownership transfer runs regardless).
    pub enabled: bool,
    /// Time between two rounds (jittered by ±25%).
    pub interval: Duration,
    /// Exchanges running at once.
    pub exchanges_max: usize,
    /// Keys per batch when fetching, merging or handing off.
    pub batch_keys: usize,
    /// Deadline of one anti-entropy RPC.
    pub rpc_timeout: Duration,
}

impl Default for AaeConfig {
    fn default() -> AaeConfig {
        AaeConfig {
            enabled: true,
            interval: Duration::from_secs(5),
            exchanges_max: 2,
            batch_keys: 256,
            rpc_timeout: Duration::from_secs(30),
        }
    }
}

/// What one tree's last exchange found, for `/admin/aae`.
#[derive(Debug, Clone, Serialize)]
pub struct TreeRecord {
    /// `exchange`, `fill`, `push` or `handoff`.
    pub kind: &'static str,
    /// The peer, hex.
    pub peer: String,
    /// When it finished, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Keys whose copies differed.
    pub keys_differing: u64,
    /// Copies written to bring both sides level.
    pub keys_repaired: u64,
    /// Whether it completed.
    pub ok: bool,
}

/// Counters and last results of anti-entropy.
#[derive(Debug, Default)]
pub struct AaeStats {
    /// Whether exchanges are enabled (set when the task starts).
    pub enabled: std::sync::atomic::AtomicBool,
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Exchanges (including fills) completed.
    pub exchanges: AtomicU64,
    /// Exchanges, pushes or hand-offs that failed.
    pub failures: AtomicU64,
    /// Keys found to differ between replicas.
    pub keys_differing: AtomicU64,
    /// Copies written to repair a difference or to move data.
    pub keys_repaired: AtomicU64,
    /// Keys removed here after they were handed to their owners.
    pub keys_handed_off: AtomicU64,
    /// Bytes of anti-entropy requests sent.
    pub bytes_sent: AtomicU64,
    /// Bytes of anti-entropy answers received.
    pub bytes_received: AtomicU64,
    /// Trees this node holds but owns in neither ring, or still has to
    /// fill or push (gauge, from the last round).
    pub transfers_pending: AtomicU64,
    records: Mutex<BTreeMap<TreeId, TreeRecord>>,
}

impl AaeStats {
    fn traffic(&self, t: Traffic) {
        self.bytes_sent.fetch_add(t.sent_bytes, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(t.received_bytes, Ordering::Relaxed);
    }

    /// The last record of every tree.
    pub fn records(&self) -> BTreeMap<TreeId, TreeRecord> {
        self.records.lock().clone()
    }

    fn record(&self, id: TreeId, record: TreeRecord) {
        self.records.lock().insert(id, record);
    }
}

/// Why anti-entropy work stopped short.
type Failure = String;

/// What an exchange found and did.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    differing: u64,
    repaired: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exchange,
    Fill,
    Push,
    Handoff,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Exchange => "exchange",
            Kind::Fill => "fill",
            Kind::Push => "push",
            Kind::Handoff => "handoff",
        }
    }
}

/// How long a joining node that hears from nobody waits before it starts a
/// cluster of its own.
const ALONE_BOOTSTRAP: Duration = Duration::from_secs(10);

/// Time between rounds while this node joins or leaves.
const TRANSFER_INTERVAL: Duration = Duration::from_secs(1);

/// Persisted record of this node's ring state.
pub const META_RING_STATE: &str = "ring_state";

/// The byte a ring state is persisted as.
pub fn ring_state_byte(state: RingState) -> u8 {
    match state {
        RingState::Joining => 0,
        RingState::Member => 1,
        RingState::Leaving => 2,
        RingState::Removed => 3,
    }
}

/// The ring state a persisted byte names.
pub fn ring_state_from_byte(byte: u8) -> Option<RingState> {
    match byte {
        0 => Some(RingState::Joining),
        1 => Some(RingState::Member),
        2 => Some(RingState::Leaving),
        3 => Some(RingState::Removed),
        _ => None,
    }
}

/// Persists and announces a new ring state for this node.
pub async fn set_ring_state(
    coordinator: &Arc<Coordinator>,
    state: RingState,
) -> Result<(), Failure> {
    let store = coordinator.store().clone();
    blocking(move || store.set_cluster_meta(META_RING_STATE, &[ring_state_byte(state)]))
        .await?
        .map_err(|e| e.to_string())?;
    coordinator.cluster().set_ring_state(state).await;
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The running anti-entropy task.
struct Aae {
    coordinator: Arc<Coordinator>,
    store: Arc<Store>,
    config: AaeConfig,
    stats: Arc<AaeStats>,
    /// Notified when this node finished leaving and should stop.
    left: Arc<tokio::sync::Notify>,
    started: Instant,
}

/// Runs anti-entropy, maintenance and ownership transfer until the process
/// ends. `left` is notified once a leave has moved every key elsewhere.
pub async fn run(
    coordinator: Arc<Coordinator>,
    config: AaeConfig,
    stats: Arc<AaeStats>,
    left: Arc<tokio::sync::Notify>,
) {
    let store = coordinator.store().clone();
    tokio::spawn(maintain(store.clone()));
    let aae = Aae {
        coordinator,
        store,
        config,
        stats,
        left,
        started: Instant::now(),
    };
    aae.stats
        .enabled
        .store(aae.config.enabled, Ordering::Relaxed);
    if !aae.config.enabled {
        info!("anti-entropy exchanges are disabled; ownership transfer still runs");
    }
    loop {
        // While this node's ownership is changing, rounds come faster: a
        // join or leave should not wait a full interval per step.
        let changing = matches!(
            aae.coordinator.cluster().ring_state(),
            RingState::Joining | RingState::Leaving | RingState::Removed
        );
        let interval = if changing {
            TRANSFER_INTERVAL.min(aae.config.interval)
        } else {
            aae.config.interval
        };
        let jitter = rand::rng().random_range(0.75..1.25);
        tokio::time::sleep(interval.mul_f64(jitter)).await;
        aae.stats.rounds.fetch_add(1, Ordering::Relaxed);
        match aae.round().await {
            Ok(true) => {
                aae.left.notify_one();
                return;
            }
            Ok(false) => {}
            Err(err) => debug!(%err, "anti-entropy round stopped short"),
        }
    }
}

/// Store upkeep: builds the trees at start, verifies the index when asked,
/// follows `n_val` changes.
async fn maintain(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || store.maintain()).await {
            Ok(Ok(report)) if report.trees_built || report.records_verified > 0 => info!(
                trees_built = report.trees_built,
                records_verified = report.records_verified,
                records_fixed = report.records_fixed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "anti-entropy maintenance done"
            ),
            Ok(Ok(_)) => {}
            // The store logged why it refuses writes, once; do not repeat
            // it every second.
            Ok(Err(
                err @ (storage::StoreError::DiskFull { .. } | storage::StoreError::Poisoned { .. }),
            )) => debug!(%err, "anti-entropy maintenance waits for storage to take writes"),
            Ok(Err(err)) => warn!(%err, "anti-entropy maintenance failed; retrying"),
            Err(err) => error!(%err, "anti-entropy maintenance panicked"),
        }
    }
}

/// Which trees go to which peer in one round.
#[derive(Debug, Default)]
struct Plan {
    /// `(tree, peer, kind)` with differing roots.
    work: Vec<(TreeId, u128, Kind)>,
    /// Trees this node still has to fill from current replicas (joining).
    fills: BTreeSet<TreeId>,
    /// Trees to push to future owners (leaving), with those owners.
    pushes: BTreeMap<TreeId, Vec<u128>>,
    /// Leftover trees to hand off, with their current replicas.
    handoffs: BTreeMap<TreeId, Vec<u128>>,
}

impl Aae {
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.rpc_timeout
    }

    async fn rpc(&self, view: &View, peer: u128, request: Request) -> Result<Response, Failure> {
        let addr = view.members.get(&peer).map(|m| m.meta.addr);
        let (result, traffic) = self
            .coordinator
            .call_counted(view.local, peer, addr, request, self.deadline())
            .await;
        self.stats.traffic(traffic);
        match result? {
            Response::Error { kind, message } => Err(format!("peer refused ({kind:?}): {message}")),
            other => Ok(other),
        }
    }

    /// One round. Returns `true` when this node finished leaving.
    async fn round(&self) -> Result<bool, Failure> {
        self.gossip_removed().await;
        let view = self.coordinator.view();
        let local_state = view
            .members
            .get(&view.local)
            .map_or(RingState::Joining, |m| m.meta.ring);
        if self.coordinator.removed().contains(&view.local) && local_state != RingState::Removed {
            error!(
                "an operator removed this node from the cluster; it owns nothing from now on. \
                 Wipe its data directory to join again."
            );
            set_ring_state(&self.coordinator, RingState::Removed).await?;
            return Ok(false);
        }
        let store = self.store.clone();
        let Some(local_trees) = blocking(move || store.aae_trees()).await? else {
            return Ok(false); // still building
        };
        let local_roots: HashMap<TreeId, u64> =
            local_trees.iter().map(|t| (t.id, t.root)).collect();
        // Every alive peer's roots, asked all at once.
        let peers: Vec<u128> = view
            .members
            .values()
            .filter(|m| m.id.0 != view.local && m.state == MemberState::Alive)
            .map(|m| m.id.0)
            .collect();
        let view_ref = &view;
        let mut asked = FuturesUnordered::new();
        for &peer in &peers {
            asked.push(async move { (peer, self.rpc(view_ref, peer, Request::AaeRoots).await) });
        }
        let mut remote: HashMap<u128, HashMap<TreeId, u64>> = HashMap::new();
        while let Some((peer, answer)) = asked.next().await {
            match answer {
                Ok(Response::Roots(Some(roots))) => {
                    remote.insert(peer, roots.into_iter().map(|(id, r, _)| (id, r)).collect());
                }
                Ok(Response::Roots(None)) => debug!(
                    peer = format_args!("{peer:032x}"),
                    "peer trees still building"
                ),
                Ok(other) => debug!(?other, "unexpected answer to AaeRoots"),
                Err(err) => debug!(peer = format_args!("{peer:032x}"), %err, "AaeRoots failed"),
            }
        }
        drop(asked);
        let plan = self.plan(&view, &local_roots, &remote);
        self.stats.transfers_pending.store(
            (plan.fills.len() + plan.pushes.len() + plan.handoffs.len()) as u64,
            Ordering::Relaxed,
        );

        // Exchanges and fills, a few at a time.
        // One tree is compared with one peer at a time: a joining node
        // filling a tree from two owners at once would copy it twice.
        let mut waiting: Vec<(TreeId, u128, Kind)> = plan
            .work
            .iter()
            .filter(|(_, _, kind)| matches!(kind, Kind::Exchange | Kind::Fill))
            .filter(|(_, _, kind)| self.config.enabled || *kind == Kind::Fill)
            .copied()
            .collect();
        let mut busy: BTreeSet<TreeId> = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        let mut failed_fills: BTreeSet<TreeId> = BTreeSet::new();
        loop {
            while running.len() < self.config.exchanges_max.max(1) {
                let Some(next) = waiting.iter().position(|(id, _, _)| !busy.contains(id)) else {
                    break;
                };
                let (id, peer, kind) = waiting.remove(next);
                busy.insert(id);
                running.push(async move {
                    let result = self.exchange(view_ref, id, peer).await;
                    (id, peer, kind, result)
                });
            }
            let Some((id, peer, kind, result)) = running.next().await else {
                break;
            };
            busy.remove(&id);
            let (ok, outcome) = match result {
                Ok(outcome) => {
                    self.stats.exchanges.fetch_add(1, Ordering::Relaxed);
                    (true, outcome)
                }
                Err(err) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = format_args!("{peer:032x}"), partition = id.partition, n_val = id.n_val, %err, "exchange failed");
                    if kind == Kind::Fill {
                        failed_fills.insert(id);
                    }
                    (false, Outcome::default())
                }
            };
            self.stats.record(
                id,
                TreeRecord {
                    kind: kind.name(),
                    peer: format!("{peer:032x}"),
                    at_unix_ms: now_unix_ms(),
                    keys_differing: outcome.differing,
                    keys_repaired: outcome.repaired,
                    ok,
                },
            );
        }
        drop(running);

        match local_state {
            RingState::Joining => {
                let unfilled = plan.fills.intersection(&failed_fills).count();
                // With no member yet, this is a new cluster starting: become a
                // member at once, but only once this node heard from another
                // (or waited long enough for its seeds): before that, it
                // cannot tell a new cluster from one it has not reached.
                let ring_empty = view.ring.members().is_empty()
                    && (view.members.len() > 1 || self.started.elapsed() > ALONE_BOOTSTRAP);
                if unfilled == 0 && (ring_empty || !remote.is_empty()) {
                    info!(
                        trees = plan.fills.len(),
                        "every partition this node will own is filled: becoming a member"
                    );
                    set_ring_state(&self.coordinator, RingState::Member).await?;
                } else {
                    info!(
                        unfilled,
                        "joining: waiting for every partition this node will own to be filled"
                    );
                }
                Ok(false)
            }
            RingState::Leaving => {
                let mut all = true;
                for (&id, owners) in &plan.pushes {
                    all &= self.walk(&view, id, owners, false, Kind::Push).await;
                }
                if all {
                    info!(
                        trees = plan.pushes.len(),
                        "every partition is with its new owners: leaving the ring"
                    );
                    set_ring_state(&self.coordinator, RingState::Removed).await?;
                }
                Ok(false)
            }
            RingState::Member | RingState::Removed => {
                let mut all = true;
                for (&id, owners) in &plan.handoffs {
                    all &= self.walk(&view, id, owners, true, Kind::Handoff).await;
                }
                let left_everything = local_state == RingState::Removed
                    && all
                    && !self.coordinator.removed().contains(&view.local);
                if left_everything {
                    let store = self.store.clone();
                    let remaining = blocking(move || store.aae_trees())
                        .await?
                        .map_or(usize::MAX, |t| t.len());
                    if remaining == 0 {
                        info!("every key was handed to its owners: the leave is complete");
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Decides, for every tree known here or at a peer, what to do with
    /// whom.
    fn plan(
        &self,
        view: &View,
        local_roots: &HashMap<TreeId, u64>,
        remote: &HashMap<u128, HashMap<TreeId, u64>>,
    ) -> Plan {
        let mut ids: BTreeSet<TreeId> = local_roots.keys().copied().collect();
        for roots in remote.values() {
            ids.extend(roots.keys().copied());
        }
        let current_n = |n: u8| u32::from(n).min(view.ring.members().len() as u32) as usize;
        let future_n = |n: u8| u32::from(n).min(view.future.members().len() as u32) as usize;
        let me = view.local;
        let mut plan = Plan::default();
        for id in ids {
            let pc: Vec<u128> = view
                .ring
                .preference_list(id.partition, current_n(id.n_val))
                .into_iter()
                .map(|(_, node)| node)
                .collect();
            let pf: Vec<u128> = view
                .future
                .preference_list(id.partition, future_n(id.n_val))
                .into_iter()
                .map(|(_, node)| node)
                .collect();
            let (me_c, me_f) = (pc.contains(&me), pf.contains(&me));
            let held_here = local_roots.get(&id).copied().unwrap_or(0) != 0;
            if me_f && !me_c {
                plan.fills.insert(id);
            }
            if me_c && !me_f && held_here {
                let owners: Vec<u128> = pf.iter().copied().filter(|n| !pc.contains(n)).collect();
                plan.pushes.insert(id, owners);
            }
            if !me_c && !me_f && held_here {
                plan.handoffs.insert(id, pc.clone());
            }
            for (&peer, roots) in remote {
                let peer_c = pc.contains(&peer);
                let kind = if me_c && peer_c && me < peer {
                    Some(Kind::Exchange)
                } else if me_f && !me_c && peer_c {
                    Some(Kind::Fill)
                } else {
                    None
                };
                let Some(kind) = kind else { continue };
                let mine = local_roots.get(&id).copied().unwrap_or(0);
                let theirs = roots.get(&id).copied().unwrap_or(0);
                if mine != theirs {
                    plan.work.push((id, peer, kind));
                }
            }
        }
        plan
    }

    /// Compares one tree with a peer and repairs every differing key on
    /// both sides.
    async fn exchange(&self, view: &View, id: TreeId, peer: u128) -> Result<Outcome, Failure> {
        let Response::Hashes(Some(remote)) = self
            .rpc(view, peer, Request::AaeBranches { tree: id })
            .await?
        else {
            return Err("peer trees not ready".into());
        };
        let store = self.store.clone();
        let local = blocking(move || store.aae_branches(id))
            .await?
            .ok_or("local trees not ready")?;
        let branches = merkle::differing(&local, &remote);
        if branches.is_empty() {
            return Ok(Outcome::default());
        }
        let Response::SegmentHashes(Some(remote)) = self
            .rpc(
                view,
                peer,
                Request::AaeSegments {
                    tree: id,
                    branches: branches.clone(),
                },
            )
            .await?
        else {
            return Err("peer trees not ready".into());
        };
        let store = self.store.clone();
        let local = blocking(move || store.aae_segment_hashes(id, &branches))
            .await?
            .ok_or("local trees not ready")?;
        let mut segments = Vec::new();
        for (branch, hashes) in &local {
            let theirs = remote
                .iter()
                .find(|(b, _)| b == branch)
                .map_or(&[][..], |(_, h)| h.as_slice());
            segments.extend(
                merkle::differing(hashes, theirs)
                    .into_iter()
                    .map(|i| merkle::segment_index(*branch, i)),
            );
        }
        let mut keys: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for chunk in segments.chunks(64) {
            let Response::KeyDigests(remote, _) = self
                .rpc(
                    view,
                    peer,
                    Request::AaeKeys {
                        tree: id,
                        segments: chunk.to_vec(),
                    },
                )
                .await?
            else {
                return Err("unexpected answer to AaeKeys".into());
            };
            let store = self.store.clone();
            let chunk = chunk.to_vec();
            let local = blocking(move || store.aae_keys(id, &chunk))
                .await?
                .map_err(|e| e.to_string())?;
            keys.extend(merkle::differing_keys(&local, &remote));
        }
        let mut outcome = Outcome {
            differing: keys.len() as u64,
            repaired: 0,
        };
        self.stats
            .keys_differing
            .fetch_add(outcome.differing, Ordering::Relaxed);
        for batch in keys.chunks(self.config.batch_keys.max(1)) {
            outcome.repaired += self.repair(view, peer, batch).await?;
        }
        if outcome.differing > 0 {
            debug!(
                peer = format_args!("{peer:032x}"),
                partition = id.partition,
                n_val = id.n_val,
                differing = outcome.differing,
                repaired = outcome.repaired,
                "anti-entropy repaired a tree"
            );
        }
        Ok(outcome)
    }

    /// Brings both sides of `keys` to the merge of the two copies. Returns
    /// the copies written.
    async fn repair(
        &self,
        view: &View,
        peer: u128,
        keys: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<u64, Failure> {
        let Response::Objects(remote) = self
            .rpc(
                view,
                peer,
                Request::GetMany {
                    keys: keys.to_vec(),
                },
            )
            .await?
        else {
            return Err("unexpected answer to GetMany".into());
        };
        if remote.len() != keys.len() {
            return Err("GetMany answered the wrong number of keys".into());
        }
        let store = self.store.clone();
        let owned = keys.to_vec();
        let local = blocking(move || {
            owned
                .iter()
                .map(|(b, k)| store.get(b, k))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
        .map_err(|e| e.to_string())?;
        let mut to_local: Vec<(Vec<u8>, Vec<u8>, Object)> = Vec::new();
        let mut to_remote: Vec<(Vec<u8>, Vec<u8>, Object)> = Vec::new();
        for (((bucket, key), mine), theirs) in keys.iter().zip(local).zip(remote) {
            let merged = match (&mine, &theirs) {
                (Some(a), Some(b)) => a.merge(b),
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b.clone(),
                (None, None) => continue,
            };
            if mine.as_ref() != Some(&merged) {
                to_local.push((bucket.clone(), key.clone(), merged.clone()));
            }
            if theirs.as_ref() != Some(&merged) {
                to_remote.push((bucket.clone(), key.clone(), merged));
            }
        }
        let repaired = (to_local.len() + to_remote.len()) as u64;
        if !to_remote.is_empty() {
            let answer = self
                .rpc(
                    view,
                    peer,
                    Request::MergeMany {
                        objects: to_remote,
                        apply: Apply {
                            resolve_by_time: false,
                            sync: false,
                        },
                    },
                )
                .await?;
            if !matches!(answer, Response::Merged { .. }) {
                return Err(format!("unexpected answer to MergeMany: {answer:?}"));
            }
        }
        if !to_local.is_empty() {
            self.merge_locally(to_local).await?;
        }
        self.stats
            .keys_repaired
            .fetch_add(repaired, Ordering::Relaxed);
        Ok(repaired)
    }

    async fn merge_locally(&self, objects: Vec<(Vec<u8>, Vec<u8>, Object)>) -> Result<(), Failure> {
        let store = self.store.clone();
        blocking(move || {
            let opts = storage::WriteOptions {
                resolve_by_time: false,
                repair: true,
            };
            store
                .merge_many(
                    objects
                        .iter()
                        .map(|(b, k, o)| (b.as_slice(), k.as_slice(), o)),
                    opts,
                )
                .map(|_| ())
        })
        .await?
        .map_err(|e| e.to_string())
    }

    /// Walks this node's copy of a tree and merges each key into every one
    /// of `owners` that has not seen all of it; with `drop`, removes the
    /// local copy of each key every owner has seen. Returns whether every
    /// key of the tree reached every owner (and, with `drop`, was removed).
    async fn walk(&self, view: &View, id: TreeId, owners: &[u128], drop: bool, kind: Kind) -> bool {
        let result = self.walk_inner(view, id, owners, drop).await;
        let (ok, outcome) = match result {
            Ok((done, outcome)) => (done, outcome),
            Err(err) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                debug!(partition = id.partition, n_val = id.n_val, %err, kind = kind.name(), "transfer stopped short");
                (false, Outcome::default())
            }
        };
        self.stats.record(
            id,
            TreeRecord {
                kind: kind.name(),
                peer: owners
                    .iter()
                    .map(|o| format!("{o:032x}"))
                    .collect::<Vec<_>>()
                    .join(","),
                at_unix_ms: now_unix_ms(),
                keys_differing: outcome.differing,
                keys_repaired: outcome.repaired,
                ok,
            },
        );
        ok
    }

    async fn walk_inner(
        &self,
        view: &View,
        id: TreeId,
        owners: &[u128],
        drop: bool,
    ) -> Result<(bool, Outcome), Failure> {
        if owners.is_empty() {
            // Pushing to nobody is done at once; handing off to nobody (an
            // empty ring) never is: the data stays.
            return Ok((!drop, Outcome::default()));
        }
        if owners.iter().any(|&o| !view.healthy(o)) {
            return Err("an owner is not alive".into());
        }
        let mut outcome = Outcome::default();
        let mut complete = true;
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let store = self.store.clone();
            let after = cursor.clone();
            let batch = self.config.batch_keys.max(1);
            let (page, next) = blocking(move || store.aae_tree_keys(id, after.as_deref(), batch))
                .await?
                .map_err(|e| e.to_string())?;
            if page.is_empty() && next.is_none() {
                break;
            }
            let keys: Vec<(Vec<u8>, Vec<u8>)> = page
                .iter()
                .map(|k: &KeyDigest| (k.bucket.clone(), k.key.clone()))
                .collect();
            let store = self.store.clone();
            let owned = keys.clone();
            let mine = blocking(move || {
                owned
                    .iter()
                    .map(|(b, k)| store.get(b, k))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .map_err(|e| e.to_string())?;
            // A key is done when every owner's copy has seen all of ours.
            let mut done = vec![true; keys.len()];
            for &owner in owners {
                let Response::Versions(versions) = self
                    .rpc(view, owner, Request::Versions { keys: keys.clone() })
                    .await?
                else {
                    return Err("unexpected answer to Versions".into());
                };
                if versions.len() != keys.len() {
                    return Err("Versions answered the wrong number of keys".into());
                }
                let mut missing = Vec::new();
                for (i, ((key, ours), theirs)) in keys.iter().zip(&mine).zip(versions).enumerate() {
                    let Some(ours) = ours else { continue };
                    let seen = theirs.is_some_and(|v| v.descends(&ours.version));
                    if !seen {
                        done[i] = false;
                        missing.push((key.0.clone(), key.1.clone(), ours.clone()));
                    }
                }
                outcome.differing += missing.len() as u64;
                if !missing.is_empty() {
                    outcome.repaired += missing.len() as u64;
                    self.stats
                        .keys_repaired
                        .fetch_add(missing.len() as u64, Ordering::Relaxed);
                    let answer = self
                        .rpc(
                            view,
                            owner,
                            Request::MergeMany {
                                objects: missing,
                                // Durable at the owner: this copy may be
                                // dropped here right after.
                                apply: Apply {
                                    resolve_by_time: false,
                                    sync: true,
                                },
                            },
                        )
                        .await?;
                    if !matches!(answer, Response::Merged { durable: true, .. }) {
                        return Err(format!("unexpected answer to MergeMany: {answer:?}"));
                    }
                }
            }
            complete &= done.iter().all(|&d| d);
            if drop {
                let removable: Vec<(Vec<u8>, Vec<u8>, u64)> = keys
                    .iter()
                    .zip(&mine)
                    .zip(&done)
                    .filter(|(_, d)| **d)
                    .filter_map(|((k, o), _)| {
                        o.as_ref()
                            .map(|o| (k.0.clone(), k.1.clone(), merkle::object_digest(o)))
                    })
                    .collect();
                let store = self.store.clone();
                let removed = blocking(move || {
                    removable
                        .iter()
                        .map(|(b, k, d)| store.remove_if_unchanged(b, k, *d))
                        .collect::<Result<Vec<bool>, _>>()
                })
                .await?
                .map_err(|e| e.to_string())?;
                let count = removed.iter().filter(|r| **r).count() as u64;
                self.stats
                    .keys_handed_off
                    .fetch_add(count, Ordering::Relaxed);
                complete &= removed.iter().all(|r| *r);
            }
            match next {
                // With `drop`, removed keys are gone: the cursor still moves
                // past them in index order.
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok((complete, outcome))
    }

    /// Sends the removed set to one random alive peer and adopts its own.
    async fn gossip_removed(&self) {
        let view = self.coordinator.view();
        let peers: Vec<u128> = view
            .members
            .values()
            .filter(|m| m.id.0 != view.local && m.state == MemberState::Alive)
            .map(|m| m.id.0)
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[rand::rng().random_range(0..peers.len())];
        let ids = self.coordinator.removed();
        if let Ok(Response::RemovedIds(theirs)) =
            self.rpc(&view, peer, Request::Removed { ids }).await
        {
            let coordinator = self.coordinator.clone();
            if let Ok(Ok(true)) = blocking(move || coordinator.add_removed(&theirs)).await {
                info!("learned of nodes removed from the cluster");
            }
        }
    }
}
