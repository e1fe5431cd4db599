//! Tombstone reaping: remove deleted keys for good, and never let them come
//! back.
//!
//! A tombstone may be removed only when nothing anywhere could bring back
//! what it deleted. So, every `interval`, for each tombstone older than the
//! grace period (`delete_mode`, as Riak names it) whose key's first primary
//! is this node, the reaper checks that
//!
//! - the ring is settled: every current member is alive and no join or leave
//!   is in progress (a node that is down, or data in transit, could hold an
//!   older copy);
//! - every primary holds exactly this tombstone;
//! - every other alive node holds either nothing for the key or a copy the
//!   tombstone covers, and every hint for the key, anywhere, is covered too;
//!
//! and then asks every node to remove its copy and its hints, each only if
//! the tombstone still covers them (a write that raced in stays, and the
//! key with it). The grace period covers copies in flight when the checks
//! ran: it must exceed the longest a request can take (the config refuses a
//! shorter one).
//!
//! Boundary: the compare-and-remove is the store's ([`storage::Store::reap`]);
//! this module decides when it is safe to ask for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use membership::MemberState;
use storage::{Object, merkle};
use tracing::{debug, info};

use crate::coordinator::{Coordinator, View};
use crate::rpc::{ReapKey, Request, Response};

/// When tombstones are reaped (Riak's `delete_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Never: tombstones stay forever (the safest, and the largest).
    Keep,
    /// Once every replica holds the tombstone and it is this old.
    After(Duration),
}

/// Settings of the reaper.
#[derive(Debug, Clone)]
pub struct ReaperConfig {
    /// When tombstones go.
    pub delete_mode: DeleteMode,
    /// Time between two reaping rounds.
    pub interval: Duration,
    /// Tombstones checked per batch.
    pub batch: usize,
}

impl Default for ReaperConfig {
    fn default() -> ReaperConfig {
        ReaperConfig {
            delete_mode: DeleteMode::After(DEFAULT_GRACE),
            interval: Duration::from_secs(5),
            batch: 256,
        }
    }
}

/// The default grace period: well above the default request deadline.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Counters of the reaper.
#[derive(Debug, Default)]
pub struct ReaperStats {
    /// Tombstones removed from every node.
    pub reaped: AtomicU64,
    /// Tombstones old enough but not yet safe to remove (a replica lacked
    /// them, or a node was down).
    pub deferred: AtomicU64,
    /// Rounds that ran.
    pub rounds: AtomicU64,
}

/// Runs the reaper until the process ends.
pub async fn run(coordinator: Arc<Coordinator>, config: ReaperConfig, stats: Arc<ReaperStats>) {
    let DeleteMode::After(grace) = config.delete_mode else {
        info!("delete_mode = keep: tombstones are never reaped");
        return;
    };
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = round(&coordinator, &config, grace, &stats).await {
            debug!(%err, "reaping round stopped short");
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Whether the ring is settled enough to reap: every current member alive
/// and no ownership change pending.
fn settled(view: &View) -> bool {
    view.ring.members() == view.future.members()
        && view.ring.members().iter().all(|m| view.healthy(m.id))
}

/// A tombstone this node may try to reap, with the key's primaries.
struct Candidate {
    bucket: Vec<u8>,
    key: Vec<u8>,
    tombstone: Object,
    primaries: Vec<u128>,
}

async fn round(
    coordinator: &Arc<Coordinator>,
    config: &ReaperConfig,
    grace: Duration,
    stats: &ReaperStats,
) -> Result<(), String> {
    let view = coordinator.view();
    if !settled(&view) {
        return Ok(());
    }
    let cutoff_us = now_us().saturating_sub(grace.as_micros() as u64);
    let mut after: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        let store = coordinator.store().clone();
        let from = after.clone();
        let batch = config.batch.max(1);
        let (page, next) = tokio::task::spawn_blocking(move || {
            store.tombstones_before(
                cutoff_us,
                from.as_ref().map(|(b, k)| (b.as_slice(), k.as_slice())),
                batch,
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut candidates = Vec::new();
        for (bucket, key, tombstone) in page {
            let props = coordinator
                .props(&bytes::Bytes::from(bucket.clone()))
                .await
                .map_err(|e| e.to_string())?;
            let n = view.replicas(props.n_val) as usize;
            let partition = view.ring.partition_of(&bucket, &key);
            let primaries: Vec<u128> = view
                .ring
                .preference_list(partition, n)
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            // The first primary reaps; the others leave it alone.
            if primaries.first() == Some(&view.local) {
                candidates.push(Candidate {
                    bucket,
                    key,
                    tombstone,
                    primaries,
                });
            }
        }
        if !candidates.is_empty() {
            reap(coordinator, &view, candidates, stats).await?;
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Checks a batch of candidates on every alive node and reaps the ones
/// that are safe.
async fn reap(
    coordinator: &Arc<Coordinator>,
    view: &View,
    candidates: Vec<Candidate>,
    stats: &ReaperStats,
) -> Result<(), String> {
    let nodes: Vec<u128> = view
        .members
        .values()
        .filter(|m| m.id.0 == view.local || m.state == MemberState::Alive)
        .map(|m| m.id.0)
        .collect();
    let deadline = std::time::Instant::now() + coordinator.config().request_timeout;
    let holdings_request = Request::Holdings {
        keys: candidates
            .iter()
            .map(|c| (c.bucket.clone(), c.key.clone(), c.primaries.clone()))
            .collect(),
    };
    let mut safe = vec![true; candidates.len()];
    let mut asked = FuturesUnordered::new();
    for &node in &nodes {
        let request = holdings_request.clone();
        asked.push(async move {
            let addr = view.members.get(&node).map(|m| m.meta.addr);
            (
                node,
                coordinator
                    .call(view.local, node, addr, request, deadline)
                    .await,
            )
        });
    }
    while let Some((node, answer)) = asked.next().await {
        let Ok(Response::Holdings(holdings)) = answer else {
            // A node that cannot say what it holds might hold anything.
            return Err(format!(
                "node {node:032x} did not answer Holdings: {answer:?}"
            ));
        };
        if holdings.len() != candidates.len() {
            return Err("Holdings answered the wrong number of keys".into());
        }
        for (i, (c, (copy, hints))) in candidates.iter().zip(holdings).enumerate() {
            let covered = |o: &Object| c.tombstone.version.descends(&o.version);
            let copy_ok = if c.primaries.contains(&node) {
                copy.is_some_and(|o| {
                    merkle::object_digest(&o) == merkle::object_digest(&c.tombstone)
                })
            } else {
                copy.as_ref().is_none_or(covered)
            };
            if !copy_ok || !hints.iter().all(covered) {
                safe[i] = false;
            }
        }
    }
    drop(asked);
    let doomed: Vec<ReapKey> = candidates
        .iter()
        .zip(&safe)
        .filter(|(_, s)| **s)
        .map(|(c, _)| {
            (
                c.bucket.clone(),
                c.key.clone(),
                c.tombstone.clone(),
                c.primaries.clone(),
            )
        })
        .collect();
    let deferred = candidates.len() - doomed.len();
    stats.deferred.fetch_add(deferred as u64, Ordering::Relaxed);
    if doomed.is_empty() {
        return Ok(());
    }
    let count = doomed.len();
    let reap_request = Request::Reap { keys: doomed };
    let mut gone = vec![true; count];
    let mut asked = FuturesUnordered::new();
    for &node in &nodes {
        let request = reap_request.clone();
        asked.push(async move {
            let addr = view.members.get(&node).map(|m| m.meta.addr);
            coordinator
                .call(view.local, node, addr, request, deadline)
                .await
        });
    }
    while let Some(answer) = asked.next().await {
        match answer {
            Ok(Response::Removed(removed)) if removed.len() == count => {
                for (g, r) in gone.iter_mut().zip(removed) {
                    *g &= r;
                }
            }
            other => {
                // The rest of the nodes still reaped what they could; the
                // next round finishes the job.
                debug!(?other, "a node did not reap");
                gone.iter_mut().for_each(|g| *g = false);
            }
        }
    }
    let reaped = gone.iter().filter(|g| **g).count();
    stats.reaped.fetch_add(reaped as u64, Ordering::Relaxed);
    if reaped > 0 {
        debug!(reaped, deferred, "reaped tombstones");
    }
    Ok(())
}
