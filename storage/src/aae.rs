//! The store's anti-entropy state: the key index on disk and the Merkle
//! trees in memory.
//!
//! # The index
//!
//! Keyspace `aae`, one record per stored object, written in the same atomic
//! batch as the object itself:
//!
//! `partition (u32 BE) ++ segment (u16 BE) ++ object key` →
//! `format (u8 = 1) ++ n_val (u8) ++ digest (u64 BE) ++ record size (u32 BE)`.
//!
//! Sorting by partition and segment makes "the keys of segment s" and "the
//! keys of partition p" prefix scans, which is what exchanges and ownership
//! transfer read; the digest lets a segment be listed without decoding a
//! single object.
//!
//! # The trees
//!
//! One [`Tree`] per [`TreeId`], in memory, built from the index at start-up
//! (see [`Trees::begin_build`]) and updated by every write under the key's
//! lock with the XOR of the key's old and new leaf. While a build runs, the
//! trees are not [`Trees::ready`] and exchanges must wait.
//!
//! Invariant: outside a build, the trees are exactly the fold of the index
//! records; the index record of a key describes the object stored for it.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::error::StoreError;
use crate::merkle::{self, Tree, TreeId};

/// Format version of index records.
const INDEX_FORMAT: u8 = 1;
/// Bytes of an index record.
const INDEX_RECORD_SIZE_BYTES: usize = 14;
/// Bytes of an index key before the object key.
pub(crate) const INDEX_KEY_PREFIX_SIZE_BYTES: usize = 6;

/// What the index says about one stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// The bucket's `n_val` when the object was indexed.
    pub(crate) n_val: u8,
    /// [`merkle::object_digest`] of the object.
    pub(crate) digest: u64,
    /// Size of the object's stored record in bytes.
    pub(crate) size_bytes: u32,
}

/// Where a key sits in the trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) partition: u32,
    pub(crate) segment: u16,
}

impl Placement {
    pub(crate) fn of(bucket: &[u8], key: &[u8], partition_bits: u32) -> Placement {
        let hash = merkle::key_hash(bucket, key);
        Placement {
            partition: merkle::partition_of_hash(hash, partition_bits),
            segment: merkle::segment_of_hash(hash, partition_bits),
        }
    }
}

/// The index key of an object key.
pub(crate) fn index_key(placement: Placement, store_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_KEY_PREFIX_SIZE_BYTES + store_key.len());
    out.extend_from_slice(&placement.partition.to_be_bytes());
    out.extend_from_slice(&placement.segment.to_be_bytes());
    out.extend_from_slice(store_key);
    out
}

/// The prefix of every index key of `partition` (and `segment`).
pub(crate) fn index_prefix(partition: u32, segment: Option<u16>) -> Vec<u8> {
    let mut out = partition.to_be_bytes().to_vec();
    if let Some(segment) = segment {
        out.extend_from_slice(&segment.to_be_bytes());
    }
    out
}

/// Splits an index key into its placement and object key.
pub(crate) fn split_index_key(index_key: &[u8]) -> Option<(Placement, &[u8])> {
    let (partition, rest) = index_key.split_first_chunk::<4>()?;
    let (segment, store_key) = rest.split_first_chunk::<2>()?;
    let segment = u16::from_be_bytes(*segment);
    if usize::from(segment) >= merkle::SEGMENTS {
        return None;
    }
    Some((
        Placement {
            partition: u32::from_be_bytes(*partition),
            segment,
        },
        store_key,
    ))
}

pub(crate) fn encode_entry(entry: IndexEntry) -> [u8; INDEX_RECORD_SIZE_BYTES] {
    let mut out = [0u8; INDEX_RECORD_SIZE_BYTES];
    out[0] = INDEX_FORMAT;
    out[1] = entry.n_val;
    out[2..10].copy_from_slice(&entry.digest.to_be_bytes());
    out[10..14].copy_from_slice(&entry.size_bytes.to_be_bytes());
    out
}

pub(crate) fn decode_entry(record: &[u8], bytes: &[u8]) -> Result<IndexEntry, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        record: format!("index {}", crate::error::escape(record)),
        reason,
    };
    let bytes: &[u8; INDEX_RECORD_SIZE_BYTES] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("expected 14 bytes, found {}", bytes.len())))?;
    if bytes[0] != INDEX_FORMAT {
        return Err(corrupt(format!("unknown index format {}", bytes[0])));
    }
    let n_val = bytes[1];
    if n_val == 0 || u32::from(n_val) > crate::props::N_VAL_MAX {
        return Err(corrupt(format!("n_val {n_val} out of range")));
    }
    let digest = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
    let size_bytes = u32::from_be_bytes(bytes[10..14].try_into().expect("4 bytes"));
    Ok(IndexEntry {
        n_val,
        digest,
        size_bytes,
    })
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

    /// Folds one index record of the build's snapshot in.
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
        let entry = IndexEntry {
            n_val: 3,
            digest: 0xdead_beef,
            size_bytes: 77,
        };
        assert_eq!(decode_entry(b"k", &encode_entry(entry)).unwrap(), entry);
        let mut bad = encode_entry(entry);
        bad[1] = 0;
        assert!(decode_entry(b"k", &bad).is_err());
        bad = encode_entry(entry);
        bad[0] = 2;
        assert!(decode_entry(b"k", &bad).is_err());
        assert!(decode_entry(b"k", &[1, 3]).is_err());
        let placement = Placement {
            partition: 7,
            segment: 1023,
        };
        let key = index_key(placement, b"\0\x01bk");
        assert_eq!(split_index_key(&key), Some((placement, &b"\0\x01bk"[..])));
        assert!(key.starts_with(&index_prefix(7, Some(1023))));
        assert_eq!(split_index_key(&[0, 0, 0, 1, 0xff, 0xff, 1]), None);
        assert_eq!(split_index_key(&[0, 0]), None);
    }
}
