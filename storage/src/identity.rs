//! The node's identity and the dot counter that is never reused.
//!
//! A replica's [`ActorId`] is its node id plus the epoch of its data
//! directory. The epoch is random and created with the directory, so a node
//! whose disk was wiped comes back as a new actor and cannot hand out a dot it
//! handed out before (Riak's kv679).
//!
//! Counters are leased in blocks of [`COUNTER_LEASE_BLOCK`]: before a counter
//! at or above the persisted ceiling is handed out, a new ceiling is written
//! and fsynced. On open the counter resumes at the persisted ceiling, so a
//! crash at any point (kill -9, power loss) skips at most one block and never
//! repeats a counter. The cost is one fsync per block of writes.
//!
//! Defensively, minting takes a floor: the highest counter of this actor that
//! the object being written (or the client's context) has already seen. Should
//! the counter ever be at or below it (a restored backup of the data
//! directory, a bug), the counter jumps past it with an error in the log
//! instead of reusing a dot, which would silently drop the write.
//!
//! A crash can also lose a write whose dot has already left: the minting
//! replica replicates a write while its own fsync is still running, so
//! after a crash the other replicas may hold a dot whose write this
//! replica lost. Were the actor to go on, its next dot for that key would
//! be above the lost one, and the object's version vector would then
//! claim to cover it: merging the other replicas' copy would drop the
//! write. So an epoch lasts only from one clean shutdown to the next (as
//! Riak's vnodes take a new actor id after an unclean one). A clean
//! shutdown writes a mark (`clean-shutdown`, holding the epoch) after its
//! last fsync, once no more dots can be minted; opening removes the mark
//! durably before anything is written. A store opened without the mark
//! takes a new epoch, whose counters start at 1; the epoch is persisted
//! with its first lease, in the same fsynced batch as the ceiling, so a
//! crash before any dot of it left leaves nothing of it behind. What it
//! costs: each unclean restart adds one actor to the version vectors of
//! the keys this replica coordinates afterwards.
//!
//! This module decides when to lease; the store does the writing and fsync
//! through the closure it passes to `DotCounter::mint`.
//!
//! Invariant: `next <= ceiling` and every counter handed out is `< ceiling`
//! where `ceiling` was durable before the counter left this module; an
//! epoch's dots are all durable on this replica before its clean-shutdown
//! mark is written, and no dot of it is minted after.

use std::path::Path;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::dvv::{ActorId, Dot};
use crate::error::StoreError;
use crate::layout::{META_DOT_CEILING, META_EPOCH, META_NODE_ID, decode_u64, encode_u64};

/// Counters leased per fsync of the ceiling.
pub const COUNTER_LEASE_BLOCK: u64 = 1000;
/// How far past our own counter a stored or incoming object may claim to be
/// before we refuse instead of jumping: jumping 2^32 ahead is plausible after
/// a restored backup, jumping towards `u64::MAX` is corruption or an attack
/// that would exhaust the actor.
const COUNTER_JUMP_MAX: u64 = 1 << 32;

/// Who this replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Stable id of the node: survives restarts, chosen at random when the
    /// data directory is created unless the configuration fixes it.
    pub node_id: u64,
    /// Random id of this data directory's lifetime.
    pub epoch: u64,
}

impl Identity {
    /// The actor that tags this replica's dots.
    pub fn actor(&self) -> ActorId {
        ActorId {
            node: self.node_id,
            epoch: self.epoch,
        }
    }
}

/// What the store found in (or wrote to) the `meta` keyspace on open.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) identity: Identity,
    pub(crate) dot_ceiling: u64,
    /// Whether the data directory was new.
    pub(crate) created: bool,
}

/// Reads the identity from `meta`, or creates it if the directory is new.
///
/// A new identity is written in one batch and fsynced before it is used.
pub(crate) fn load_or_create(
    db: &fjall::Database,
    meta: &fjall::Keyspace,
    configured_node_id: Option<u64>,
) -> Result<Loaded, StoreError> {
    let read = |name: &str| -> Result<Option<u64>, StoreError> {
        meta.get(name)?
            .map(|bytes| decode_u64(name, &bytes))
            .transpose()
    };
    match (
        read(META_NODE_ID)?,
        read(META_EPOCH)?,
        read(META_DOT_CEILING)?,
    ) {
        (Some(node_id), Some(epoch), Some(dot_ceiling)) => {
            if let Some(configured) = configured_node_id
                && configured != node_id
            {
                return Err(StoreError::IdentityMismatch {
                    stored: node_id,
                    configured,
                });
            }
            if dot_ceiling == 0 {
                return Err(StoreError::Corrupt {
                    record: format!("meta {META_DOT_CEILING}"),
                    reason: "ceiling is zero".into(),
                });
            }
            Ok(Loaded {
                identity: Identity { node_id, epoch },
                dot_ceiling,
                created: false,
            })
        }
        (None, None, None) => {
            let identity = Identity {
                node_id: configured_node_id.unwrap_or_else(nonzero_random),
                epoch: nonzero_random(),
            };
            // Counters start at 1: an actor's absent entry in a version
            // vector reads as 0, and a dot must never look already seen.
            let dot_ceiling = 1;
            let mut batch = db.batch();
            batch.insert(meta, META_NODE_ID, encode_u64(identity.node_id));
            batch.insert(meta, META_EPOCH, encode_u64(identity.epoch));
            batch.insert(meta, META_DOT_CEILING, encode_u64(dot_ceiling));
            batch.commit()?;
            db.persist(fjall::PersistMode::SyncAll)?;
            Ok(Loaded {
                identity,
                dot_ceiling,
                created: true,
            })
        }
        partial => Err(StoreError::Corrupt {
            record: "meta".into(),
            reason: format!(
                "identity is incomplete (node_id, epoch, ceiling present: {}, {}, {})",
                partial.0.is_some(),
                partial.1.is_some(),
                partial.2.is_some()
            ),
        }),
    }
}

/// The name of the clean-shutdown mark in the data directory.
pub(crate) const CLEAN_MARK: &str = "clean-shutdown";

/// Whether the last shutdown of the store in `dir`, whose persisted epoch
/// is `epoch`, was clean; removes the mark durably (so that a crash from
/// now on is seen as one) before returning. A mark naming another epoch
/// (a data directory restored from elsewhere) is no mark.
pub(crate) fn take_clean_mark(dir: &Path, epoch: u64) -> Result<bool, StoreError> {
    let path = dir.join(CLEAN_MARK);
    let marked = match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).ok() == Some(epoch),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err.into()),
    };
    std::fs::remove_file(&path)?;
    sync_dir(dir)?;
    Ok(marked)
}

/// Writes the clean-shutdown mark for `epoch` in `dir`, durably.
pub(crate) fn write_clean_mark(dir: &Path, epoch: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let staging = dir.join(format!("{CLEAN_MARK}.new"));
    let mut file = std::fs::File::create(&staging)?;
    writeln!(file, "{epoch:x}")?;
    file.sync_all()?;
    std::fs::rename(&staging, dir.join(CLEAN_MARK))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A fresh epoch, for a new data directory or after an unclean shutdown.
pub(crate) fn new_epoch() -> u64 {
    nonzero_random()
}

fn nonzero_random() -> u64 {
    loop {
        let value = rand::random::<u64>();
        if value != 0 {
            return value;
        }
    }
}

/// Hands out this actor's dots.
#[derive(Debug)]
pub(crate) struct DotCounter {
    actor: ActorId,
    state: Mutex<CounterState>,
}

#[derive(Debug)]
struct CounterState {
    /// The next counter to hand out.
    next: u64,
    /// The durable ceiling: no counter at or above it was handed out.
    ceiling: u64,
}

/// A dot fresh from [`DotCounter::mint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Minted {
    /// The dot.
    pub(crate) dot: Dot,
    /// Whether the counter had to jump past the floor (a broken invariant).
    pub(crate) jumped: bool,
    /// Whether a new ceiling was persisted to hand it out.
    pub(crate) leased: bool,
}

impl DotCounter {
    /// A counter that resumes at the persisted `ceiling`.
    pub(crate) fn resume(actor: ActorId, ceiling: u64) -> DotCounter {
        assert!(ceiling >= 1, "counters start at 1");
        DotCounter {
            actor,
            state: Mutex::new(CounterState {
                next: ceiling,
                ceiling,
            }),
        }
    }

    /// Hands out a dot whose counter is above `floor` and was never handed
    /// out before.
    ///
    /// `persist_ceiling` must make the given ceiling durable (write and
    /// fsync) before returning `Ok`; it runs under the counter's lock so no
    /// other dot leaves while the lease is in flight.
    pub(crate) fn mint(
        &self,
        floor: u64,
        persist_ceiling: impl FnOnce(u64) -> Result<(), StoreError>,
    ) -> Result<Minted, StoreError> {
        let mut state = self.state.lock();
        let jumped = state.next <= floor;
        if jumped {
            self.jump(&mut state, floor)?;
        }
        let mut leased = false;
        if state.next >= state.ceiling {
            let ceiling = state
                .next
                .checked_add(COUNTER_LEASE_BLOCK)
                .ok_or_else(|| StoreError::CounterExhausted("counter reached u64::MAX".into()))?;
            persist_ceiling(ceiling)?;
            state.ceiling = ceiling;
            leased = true;
        }
        let counter = state.next;
        state.next += 1;
        assert!(counter > floor && counter < state.ceiling && state.next <= state.ceiling);
        Ok(Minted {
            dot: Dot {
                actor: self.actor,
                counter,
            },
            jumped,
            leased,
        })
    }

    /// Notes that an object already holds counter `seen` of this actor (from
    /// a merge). Returns whether the counter had to jump, which means our
    /// counter had fallen behind our own history: a broken invariant.
    pub(crate) fn observe(&self, seen: u64) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        if state.next > seen {
            return Ok(false);
        }
        self.jump(&mut state, seen)?;
        Ok(true)
    }

    fn jump(&self, state: &mut CounterState, floor: u64) -> Result<(), StoreError> {
        let distance = floor - state.next + 1;
        if distance > COUNTER_JUMP_MAX {
            tracing::error!(
                actor = ?self.actor,
                next = state.next,
                claimed = floor,
                "an object claims a counter of this actor implausibly far ahead; refusing"
            );
            return Err(StoreError::CounterExhausted(format!(
                "an object claims counter {floor} of this actor, ours is at {}",
                state.next
            )));
        }
        tracing::error!(
            actor = ?self.actor,
            next = state.next,
            claimed = floor,
            "BUG or restored backup: an object already holds a dot of this actor at or \
             above the next counter; jumping past it instead of reusing a dot"
        );
        state.next = floor + 1;
        Ok(())
    }

    /// The next counter that would be handed out (for stats and tests).
    pub(crate) fn next(&self) -> u64 {
        self.state.lock().next
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn actor() -> ActorId {
        ActorId { node: 1, epoch: 1 }
    }

    #[test]
    fn leases_a_block_before_crossing_the_ceiling() {
        let counter = DotCounter::resume(actor(), 1);
        let mut persisted = Vec::new();
        let mut last = 0;
        for _ in 0..2500 {
            let minted = counter
                .mint(0, |c| {
                    persisted.push(c);
                    Ok(())
                })
                .unwrap();
            assert!(minted.dot.counter > last);
            assert!(!minted.jumped);
            last = minted.dot.counter;
            assert!(last < *persisted.last().unwrap());
        }
        assert_eq!(persisted, vec![1001, 2001, 3001]);
    }

    #[test]
    fn a_failed_lease_hands_out_nothing() {
        let counter = DotCounter::resume(actor(), 10);
        assert!(matches!(
            counter.mint(0, |_| Err(StoreError::Poisoned {
                cause: crate::PoisonCause::Fsync
            })),
            Err(StoreError::Poisoned { .. })
        ));
        assert_eq!(counter.next(), 10);
        let minted = counter.mint(0, |_| Ok(())).unwrap();
        assert_eq!(minted.dot.counter, 10);
        assert!(minted.leased);
    }

    #[test]
    fn jumps_past_a_floor_but_not_absurdly_far() {
        let counter = DotCounter::resume(actor(), 1);
        let minted = counter.mint(500, |_| Ok(())).unwrap();
        assert!(minted.jumped);
        assert_eq!(minted.dot.counter, 501);
        assert!(counter.observe(10).is_ok_and(|jumped| !jumped));
        assert!(counter.observe(700).is_ok_and(|jumped| jumped));
        assert_eq!(counter.mint(0, |_| Ok(())).unwrap().dot.counter, 701);
        assert!(matches!(
            counter.observe(u64::MAX - 1),
            Err(StoreError::CounterExhausted(_))
        ));
        assert!(matches!(
            counter.mint(u64::MAX - 1, |_| Ok(())),
            Err(StoreError::CounterExhausted(_))
        ));
    }
}
