//! Hinted hand-off: deliver the copies this node keeps for unreachable
//! primaries once they answer again.
//!
//! Every `interval`, for each owner with hints that SWIM sees alive, one
//! batch of at most `batch_size` hints is merged into the owner (fsynced
//! there) and each delivered hint is removed, but only if it did not change
//! meanwhile (a newer hint for the same key stays for the next round). An
//! owner that fails gets an exponential back-off, so a flapping node is not
//! hammered; one slow owner never delays the others.
//!
//! Boundary: which hints exist is the store's business; where they go is
//! the coordinator's ring and liveness view.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::coordinator::Coordinator;
use crate::rpc::{Apply, Request, Response};

/// Settings of the hand-off task.
#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// Time between two rounds.
    pub interval: Duration,
    /// Hints per owner per round.
    pub batch_size: usize,
    /// Longest back-off after failures.
    pub backoff_max: Duration,
    /// Deliver hints at all (off only for tests).
    pub enabled: bool,
}

impl Default for HandoffConfig {
    fn default() -> HandoffConfig {
        HandoffConfig {
            interval: Duration::from_millis(500),
            batch_size: 256,
            backoff_max: Duration::from_secs(30),
            enabled: true,
        }
    }
}

/// Counters for `/stats` and `/admin/hints`.
#[derive(Debug, Default)]
pub struct HandoffStats {
    /// Hints delivered and removed.
    pub delivered: AtomicU64,
    /// Deliveries that failed.
    pub failed: AtomicU64,
}

/// Runs hand-off rounds until the process ends.
pub async fn run(coordinator: Arc<Coordinator>, config: HandoffConfig, stats: Arc<HandoffStats>) {
    if !config.enabled {
        info!("hinted hand-off is disabled");
        return;
    }
    let mut backoff: HashMap<u128, (Instant, Duration)> = HashMap::new();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = coordinator.store().clone();
        let Ok(Ok(owners)) = tokio::task::spawn_blocking(move || store.hint_owner_ids()).await
        else {
            continue;
        };
        let view = coordinator.view();
        let removed = coordinator.removed();
        for owner in owners {
            // Hints for a node an operator removed go to the key's current
            // primaries instead: the owner will never come back for them.
            let gone = removed.contains(&owner);
            if !gone && (!view.healthy(owner) || owner == view.local) {
                continue;
            }
            if backoff
                .get(&owner)
                .is_some_and(|(until, _)| Instant::now() < *until)
            {
                continue;
            }
            let ok = deliver(&coordinator, &view, owner, gone, config.batch_size, &stats).await;
            if ok {
                backoff.remove(&owner);
            } else {
                let next = backoff
                    .get(&owner)
                    .map_or(config.interval, |(_, d)| (*d * 2).min(config.backoff_max));
                backoff.insert(owner, (Instant::now() + next, next));
            }
        }
    }
}

/// Delivers one batch of `owner`'s hints (to the first healthy current
/// primary of each key when the owner was removed); false if any delivery
/// failed.
async fn deliver(
    coordinator: &Arc<Coordinator>,
    view: &crate::coordinator::View,
    owner: u128,
    owner_removed: bool,
    batch_size: usize,
    stats: &HandoffStats,
) -> bool {
    let store = coordinator.store().clone();
    let Ok(Ok(batch)) = tokio::task::spawn_blocking(move || store.hints(owner, batch_size)).await
    else {
        return false;
    };
    let deadline = Instant::now() + coordinator.config().request_timeout;
    let mut delivered = 0usize;
    for (bucket, key, object) in batch {
        let props = coordinator
            .props(&bucket.clone().into())
            .await
            .unwrap_or_default();
        let target = if owner_removed {
            let partition = view.ring.partition_of(&bucket, &key);
            let n = view.replicas(props.n_val) as usize;
            let Some(primary) = view
                .ring
                .preference_list(partition, n)
                .into_iter()
                .map(|(_, id)| id)
                .find(|&id| view.healthy(id))
            else {
                return false;
            };
            primary
        } else {
            owner
        };
        let addr = view.members.get(&target).map(|m| m.meta.addr);
        let apply = Apply {
            resolve_by_time: props.resolves_by_time(),
            sync: true,
        };
        let request = Request::Merge {
            bucket: bucket.clone(),
            key: key.clone(),
            object: object.clone(),
            apply,
        };
        match coordinator
            .call(view.local, target, addr, request, deadline)
            .await
        {
            Ok(Response::Applied { durable: true }) => {
                let store = coordinator.store().clone();
                let removed = tokio::task::spawn_blocking(move || {
                    store.remove_hint(owner, &bucket, &key, &object)
                })
                .await;
                if matches!(removed, Ok(Ok(_))) {
                    delivered += 1;
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            other => {
                debug!(
                    owner = format_args!("{owner:032x}"),
                    ?other,
                    "hint delivery failed"
                );
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if delivered > 0 {
                    info!(
                        owner = format_args!("{owner:032x}"),
                        delivered, "handed off hints"
                    );
                }
                return false;
            }
        }
    }
    if delivered > 0 {
        info!(
            owner = format_args!("{owner:032x}"),
            delivered, "handed off hints"
        );
    }
    true
}
