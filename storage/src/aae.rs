//! The store's anti-entropy state: where each object is filed, and the
//! Merkle trees in memory.
//!
//! # Placement
//!
//! Every object is stored under its placed key (see [`crate::layout`]):
//!
//! `hash prefix (u32 BE) ++ name key`,
//!
//! where the hash prefix is the top 32 bits of the key's hash, whose own
//! top bits are the key's partition and then its segment; its stored value
//! starts with its [`IndexEntry`] (the bucket's `n_val` and the object's
//! digest) before the object record. Sorting by the hash prefix sorts by
//! partition and segment, so "the keys of segment s" and "the keys of
//! partition p" are range scans of the objects themselves, which is what
//! exchanges and ownership transfer read, and the entry lets a segment be
//! listed without decoding a single object. There is no separate index to
//! keep in step with the objects: each object carries its own entry, written
//! in the same record.
//!
//! # The trees
//!
//! One [`Tree`] per [`TreeId`], in memory, built from the stored entries at
//! start-up (see [`Trees::begin_build`]) and updated by every write under
//! the key's lock with the XOR of the key's old and new leaf. While a build
//! runs, the trees are not [`Trees::ready`] and exchanges must wait.
//!
//! Invariant: outside a build, the trees are exactly the fold of the stored
//! entries.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::error::StoreError;
use crate::layout::RecordName;
use crate::merkle::{self, Tree, TreeId};

/// Bytes of an entry at the start of a stored value.
pub(crate) const ENTRY_SIZE_BYTES: usize = 9;
/// Bytes of a placed key before the name key.
pub(crate) const PLACED_KEY_PREFIX_SIZE_BYTES: usize = 4;

/// What the trees know of one stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// The bucket's `n_val` when the object was stored.
    pub(crate) n_val: u8,
    /// [`merkle::object_digest`] of the object.
    pub(crate) digest: u64,
    /// Size of the object record (after the entry) in bytes.
    pub(crate) size_bytes: u32,
}

/// Where a key sits in the trees, and in the store's key order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) partition: u32,
    pub(crate) segment: u16,
    /// The top 32 bits of the key's hash: its partition's bits, then its
    /// segment's, then more of the hash. A placed key starts with them.
    pub(crate) hash_prefix: u32,
}

impl Placement {
    pub(crate) fn of(bucket: &[u8], key: &[u8], partition_bits: u32) -> Placement {
        let hash = merkle::key_hash(bucket, key);
        Placement::of_prefix((hash >> 32) as u32, partition_bits)
    }

    /// The placement a key's hash prefix stands for.
    fn of_prefix(hash_prefix: u32, partition_bits: u32) -> Placement {
        let hash = u64::from(hash_prefix) << 32;
        Placement {
            partition: merkle::partition_of_hash(hash, partition_bits),
            segment: merkle::segment_of_hash(hash, partition_bits),
            hash_prefix,
        }
    }
}

/// The name key at the tail of a placed key; `None` if it is too short.
pub(crate) fn name_key(placed_key: &[u8]) -> Option<&[u8]> {
    placed_key.get(PLACED_KEY_PREFIX_SIZE_BYTES..)
}

/// The placed key of a name key.
///
/// It starts with the key's hash prefix rather than its partition and
/// segment as separate fields: the order is the same (they are the prefix's
/// top bits), and the first four bytes then differ between nearly any two
/// keys, so fjall's keys (which keep their first four bytes inline) compare
/// without following a pointer.
pub(crate) fn placed_key(placement: Placement, name_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PLACED_KEY_PREFIX_SIZE_BYTES + name_key.len());
    out.extend_from_slice(&placement.hash_prefix.to_be_bytes());
    out.extend_from_slice(name_key);
    out
}

/// The placed key of `bucket`/`key`, built in one buffer (the name key
/// without an allocation of its own).
pub(crate) fn placed_key_of(placement: Placement, bucket: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PLACED_KEY_PREFIX_SIZE_BYTES + 2 + bucket.len() + key.len());
    out.extend_from_slice(&placement.hash_prefix.to_be_bytes());
    crate::layout::extend_object_key(&mut out, bucket, key);
    out
}

/// The range of placed keys of `partition` (and `segment`): from the
/// lower bound (inclusive) to the upper bound (exclusive; `None`: the end).
pub(crate) fn placed_range(
    partition: u32,
    segment: Option<u16>,
    partition_bits: u32,
) -> (Vec<u8>, Option<Vec<u8>>) {
    // The hash prefix's top bits, then zeros: the first key of the range.
    let (top, bits) = match segment {
        Some(segment) => (
            (u64::from(partition) << merkle::SEGMENT_BITS) | u64::from(segment),
            partition_bits + merkle::SEGMENT_BITS,
        ),
        None => (u64::from(partition), partition_bits),
    };
    let shift = 32 - bits;
    let lower = top << shift;
    let upper = (top + 1) << shift;
    // Both fit 32 bits, except the upper bound of the last range.
    let to_key = |v: u64| u32::try_from(v).ok().map(|v| v.to_be_bytes().to_vec());
    (
        to_key(lower).expect("a partition and segment fit the hash prefix"),
        to_key(upper),
    )
}

/// Splits a placed key into its placement and name key.
pub(crate) fn split_placed_key(
    placed_key: &[u8],
    partition_bits: u32,
) -> Option<(Placement, &[u8])> {
    let (prefix, name_key) = placed_key.split_first_chunk::<PLACED_KEY_PREFIX_SIZE_BYTES>()?;
    Some((
        Placement::of_prefix(u32::from_be_bytes(*prefix), partition_bits),
        name_key,
    ))
}

/// Writes the entry of an object (its `n_val` and digest) into the first
/// [`ENTRY_SIZE_BYTES`] of a stored value.
pub(crate) fn encode_entry(n_val: u8, digest: u64, out: &mut [u8]) {
    out[0] = n_val;
    out[1..ENTRY_SIZE_BYTES].copy_from_slice(&digest.to_be_bytes());
}

/// Splits a stored value into its entry and the object record after it.
/// `record` names the value in errors.
pub(crate) fn decode_entry(
    record: impl RecordName,
    value: &[u8],
) -> Result<(IndexEntry, &[u8]), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        record: record.record_name(),
        reason,
    };
    let Some((head, object_record)) = value.split_first_chunk::<ENTRY_SIZE_BYTES>() else {
        return Err(corrupt(format!(
            "stored value is only {} bytes",
            value.len()
        )));
    };
    let n_val = head[0];
    if n_val == 0 || u32::from(n_val) > crate::props::N_VAL_MAX {
        return Err(corrupt(format!("n_val {n_val} out of range")));
    }
    let digest = u64::from_be_bytes(head[1..].try_into().expect("8 bytes"));
    Ok((
        IndexEntry {
            n_val,
            digest,
            size_bytes: u32::try_from(object_record.len()).unwrap_or(u32::MAX),
        },
        object_record,
    ))
}

/// The in-memory trees of one store.
#[derive(Debug, Default)]
pub(crate) struct Trees {
    state: Mutex<TreesState>,
}

#[derive(Debug, Default)]
struct TreesState {
    trees: HashMap<TreeId, Tree>,
    /// Writes update the trees (set once the first build started).
    recording: bool,
    /// A build ran to completion since the last `begin_build`.
    ready: bool,
    /// Completed builds since the store opened.
    builds: u64,
}

impl Trees {
    /// Moves one key from its old entry to its new one (either may be
    /// absent). The caller holds the key's lock.
    pub(crate) fn apply(
        &self,
        bucket: &[u8],
        key: &[u8],
        placement: Placement,
        old: Option<IndexEntry>,
        new: Option<IndexEntry>,
    ) {
        if old == new {
            return;
        }
        let mut state = self.state.lock();
        if !state.recording {
            return;
        }
        let ready = state.ready;
        for (entry, sign) in [(old, -1i8), (new, 1)] {
            let Some(entry) = entry else { continue };
            let id = TreeId {
                partition: placement.partition,
                n_val: entry.n_val,
            };
            let leaf = merkle::leaf(bucket, key, entry.digest);
            let tree = state.trees.entry(id).or_default();
            tree.toggle(placement.segment, leaf, u64::from(entry.size_bytes), sign);
            if sign < 0 && ready && tree.keys() == 0 {
                debug_assert_eq!(tree.root(), 0, "an empty tree has a zero root");
                state.trees.remove(&id);
            }
        }
    }

    /// Starts a build: empties the trees and records writes from now on. The
    /// caller holds every key lock and takes the snapshot to fold before
    /// releasing them, so each write is counted by the snapshot or by
    /// [`Trees::apply`], never both and never neither.
    pub(crate) fn begin_build(&self) {
        let mut state = self.state.lock();
        state.trees.clear();
        state.recording = true;
        state.ready = false;
    }

    /// Folds one stored entry of the build's snapshot in.
    pub(crate) fn fold(&self, bucket: &[u8], key: &[u8], placement: Placement, entry: IndexEntry) {
        let mut state = self.state.lock();
        let id = TreeId {
            partition: placement.partition,
            n_val: entry.n_val,
        };
        state.trees.entry(id).or_default().toggle(
            placement.segment,
            merkle::leaf(bucket, key, entry.digest),
            u64::from(entry.size_bytes),
            1,
        );
    }

    /// Ends a build.
    pub(crate) fn finish_build(&self) {
        let mut state = self.state.lock();
        state.trees.retain(|_, tree| tree.keys() > 0);
        state.ready = true;
        state.builds += 1;
    }

    /// Whether the trees describe the store (no build is running).
    pub(crate) fn ready(&self) -> bool {
        self.state.lock().ready
    }

    /// Completed builds.
    pub(crate) fn builds(&self) -> u64 {
        self.state.lock().builds
    }

    /// Runs `f` on the trees if they are ready.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&HashMap<TreeId, Tree>) -> R) -> Option<R> {
        let state = self.state.lock();
        state.ready.then(|| f(&state.trees))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_and_keys_round_trip_and_bad_ones_are_corrupt() {
        let name = "k";
        let mut value = vec![0u8; ENTRY_SIZE_BYTES];
        encode_entry(3, 0xdead_beef, &mut value);
        value.extend_from_slice(b"record");
        let (entry, record) = decode_entry(name, &value).unwrap();
        assert_eq!(
            entry,
            IndexEntry {
                n_val: 3,
                digest: 0xdead_beef,
                size_bytes: 6,
            }
        );
        assert_eq!(record, b"record");
        value[0] = 0;
        assert!(decode_entry(name, &value).is_err());
        assert!(decode_entry(name, &[1, 3]).is_err());
        // 16 partitions: 4 bits of partition, 10 of segment, 18 more.
        let placement = Placement::of(b"b", b"k", 4);
        let key = placed_key(placement, b"\0\x01bk");
        assert_eq!(
            split_placed_key(&key, 4),
            Some((placement, &b"\0\x01bk"[..]))
        );
        assert_eq!(split_placed_key(&[0, 0], 4), None);
        for (partition, segment) in [
            (0u32, None),
            (7, Some(1023u16)),
            (15, Some(1023)),
            (15, None),
        ] {
            let (lower, upper) = placed_range(partition, segment, 4);
            let (at, _) = split_placed_key(&lower, 4).unwrap();
            assert_eq!(at.partition, partition);
            assert!(segment.is_none_or(|s| s == at.segment));
            match upper {
                Some(upper) => {
                    let last = u32::from_be_bytes(upper[..].try_into().unwrap()) - 1;
                    let (at, _) = split_placed_key(&last.to_be_bytes(), 4).unwrap();
                    assert_eq!(at.partition, partition);
                    assert!(segment.is_none_or(|s| s == at.segment));
                    assert!(segment.is_some() || at.segment == 1023);
                }
                None => assert_eq!(partition, 15),
            }
        }
        // The key's own range holds it.
        let (lower, upper) = placed_range(placement.partition, Some(placement.segment), 4);
        assert!(key >= lower && upper.is_none_or(|u| key < u));
    }
}
