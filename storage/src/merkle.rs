//! Merkle trees for anti-entropy: what a replica holds, summarised so two
//! replicas find their differences by exchanging a few hashes.
//!
//! # Shape
//!
//! Every key has a 64-bit [`key_hash`]. Its top `log2(Q)` bits are its
//! partition (the ring uses the same function, so partitions here and on the
//! ring agree); the next [`SEGMENT_BITS`] bits are its segment within the
//! partition. A replica keeps one [`Tree`] per [`TreeId`]: a partition and
//! the `n_val` of the keys' buckets, because keys with different `n_val`
//! live on different replica sets (as Riak's `index_n` trees do).
//!
//! A tree has three levels: [`SEGMENTS`] segment hashes, [`BRANCHES`] branch
//! hashes of [`SEGMENTS_PER_BRANCH`] segments each, and a root. Every hash is
//! the XOR of the [`leaf`] hashes below it (a "tictac" tree, as Riak KV's
//! later anti-entropy uses), so a write updates every level in O(1) with the
//! XOR of the key's old and new leaf, without reading any other key, and the
//! result does not depend on the order writes arrived in.
//!
//! # Exchange
//!
//! Two replicas compare roots; where they differ, branch hashes
//! ([`differing`]); under differing branches, segment hashes; for differing
//! segments, the lists of `(key, digest)`; and repair only the keys that
//! differ. The cost follows the size of the difference, not of the data.
//!
//! This module is pure: no disk, no locks, no network. The store keeps the
//! trees up to date (see [`crate::store`]); the node runs exchanges.
//!
//! Invariant: a tree's segment, branch and root hashes are always the XOR
//! of the leaves of the keys it holds, and its key and byte counts their
//! count and sum (checked by [`Tree::is_consistent`] in tests).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::dvv::Object;

/// Bits of the key hash below the partition bits that choose the segment.
pub const SEGMENT_BITS: u32 = 10;
/// Segments per tree.
pub const SEGMENTS: usize = 1 << SEGMENT_BITS;
/// Branches per tree (the middle level).
pub const BRANCHES: usize = 32;
/// Segments under one branch.
pub const SEGMENTS_PER_BRANCH: usize = SEGMENTS / BRANCHES;

/// Which tree: the keys of one partition whose buckets have one `n_val`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TreeId {
    /// Ring partition.
    pub partition: u32,
    /// Replica count of the keys' buckets.
    pub n_val: u8,
}

/// The 64-bit hash of a key, from which its partition and segment follow.
///
/// The bucket's length comes first so that bucket `a` + key `bc` and bucket
/// `ab` + key `c` hash apart.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(bucket.len() + key.len() + 4);
    bytes.extend_from_slice(&(bucket.len() as u32).to_be_bytes());
    bytes.extend_from_slice(bucket);
    bytes.extend_from_slice(key);
    xxh3_64(&bytes)
}

/// The partition of a key hash when there are `2^partition_bits`
/// partitions.
pub fn partition_of_hash(hash: u64, partition_bits: u32) -> u32 {
    if partition_bits == 0 {
        0
    } else {
        (hash >> (64 - partition_bits)) as u32
    }
}

/// The segment of a key hash within its partition.
pub fn segment_of_hash(hash: u64, partition_bits: u32) -> u16 {
    // The bits right below the partition bits; partition_bits <= 16 leaves
    // at least SEGMENT_BITS of them.
    ((hash << partition_bits) >> (64 - SEGMENT_BITS)) as u16
}

/// The digest of one replica's copy of an object: equal on two replicas iff
/// they hold the same version and the same siblings (a dot names one write's
/// content, so dots suffice).
pub fn object_digest(object: &Object) -> u64 {
    let mut bytes = Vec::with_capacity(32 * (object.version.len() + object.siblings.len()));
    for (actor, counter) in object.version.iter() {
        bytes.extend_from_slice(&actor.node.to_be_bytes());
        bytes.extend_from_slice(&actor.epoch.to_be_bytes());
        bytes.extend_from_slice(&counter.to_be_bytes());
    }
    // A separator: the vector's length is implied by where the dots start.
    bytes.extend_from_slice(&(object.version.len() as u64).to_be_bytes());
    for sibling in &object.siblings {
        bytes.extend_from_slice(&sibling.dot.actor.node.to_be_bytes());
        bytes.extend_from_slice(&sibling.dot.actor.epoch.to_be_bytes());
        bytes.extend_from_slice(&sibling.dot.counter.to_be_bytes());
    }
    xxh3_64(&bytes)
}

/// The leaf hash of a key holding an object with `digest`: what the key
/// contributes (by XOR) to its segment, branch and root.
pub fn leaf(bucket: &[u8], key: &[u8], digest: u64) -> u64 {
    let mut bytes = Vec::with_capacity(bucket.len() + key.len() + 12);
    bytes.extend_from_slice(&(bucket.len() as u32).to_be_bytes());
    bytes.extend_from_slice(bucket);
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(&digest.to_be_bytes());
    xxh3_64(&bytes)
}

/// One replica's summary of the keys of one [`TreeId`].
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    segments: Box<[u64]>,
    branches: [u64; BRANCHES],
    root: u64,
    // Signed: while a build folds its snapshot in, a later write may remove
    // a key's old leaf before the build adds it.
    keys: i64,
    size_bytes: i64,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("root", &format_args!("{:016x}", self.root))
            .field("keys", &self.keys)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}

impl Tree {
    /// A tree holding no keys.
    pub fn new() -> Tree {
        Tree {
            segments: vec![0; SEGMENTS].into_boxed_slice(),
            branches: [0; BRANCHES],
            root: 0,
            keys: 0,
            size_bytes: 0,
        }
    }

    /// Adds (`sign = 1`) or removes (`sign = -1`) one key's leaf in
    /// `segment`, with the size of its stored record.
    ///
    /// Removing is the same XOR as adding; the sign only keeps the key and
    /// byte counts.
    pub fn toggle(&mut self, segment: u16, leaf: u64, size_bytes: u64, sign: i8) {
        let segment = usize::from(segment);
        assert!(segment < SEGMENTS, "segment {segment} out of range");
        self.segments[segment] ^= leaf;
        self.branches[segment / SEGMENTS_PER_BRANCH] ^= leaf;
        self.root ^= leaf;
        let size_bytes = i64::try_from(size_bytes).unwrap_or(i64::MAX);
        if sign >= 0 {
            self.keys += 1;
            self.size_bytes += size_bytes;
        } else {
            self.keys -= 1;
            self.size_bytes -= size_bytes;
        }
    }

    /// The root hash: 0 for an empty tree (and, with probability 2^-64, for
    /// a non-empty one).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The branch hashes.
    pub fn branches(&self) -> &[u64; BRANCHES] {
        &self.branches
    }

    /// The segment hashes under `branch`.
    pub fn branch_segments(&self, branch: u16) -> &[u64] {
        let start = usize::from(branch) * SEGMENTS_PER_BRANCH;
        &self.segments[start..start + SEGMENTS_PER_BRANCH]
    }

    /// The hash of one segment.
    pub fn segment(&self, segment: u16) -> u64 {
        self.segments[usize::from(segment)]
    }

    /// Keys in the tree.
    pub fn keys(&self) -> u64 {
        u64::try_from(self.keys).unwrap_or(0)
    }

    /// Bytes of the stored records of the keys in the tree: what a full copy
    /// of this tree's data would send.
    pub fn size_bytes(&self) -> u64 {
        u64::try_from(self.size_bytes).unwrap_or(0)
    }

    /// Whether every level is the XOR of the level below.
    pub fn is_consistent(&self) -> bool {
        let branches_ok = (0..BRANCHES).all(|b| {
            let start = b * SEGMENTS_PER_BRANCH;
            self.segments[start..start + SEGMENTS_PER_BRANCH]
                .iter()
                .fold(0, |acc, s| acc ^ s)
                == self.branches[b]
        });
        branches_ok && self.branches.iter().fold(0, |acc, b| acc ^ b) == self.root
    }
}

/// Indices at which two equally long hash lists differ. A remote list of
/// the wrong length (a buggy or hostile peer) differs everywhere.
pub fn differing(local: &[u64], remote: &[u64]) -> Vec<u16> {
    if local.len() != remote.len() {
        return (0..local.len()).map(|i| i as u16).collect();
    }
    local
        .iter()
        .zip(remote)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u16)
        .collect()
}

/// The global segment index of segment `index` under `branch`.
pub fn segment_index(branch: u16, index: u16) -> u16 {
    branch * SEGMENTS_PER_BRANCH as u16 + index
}

/// One key's entry in a segment listing: what a replica holds for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyDigest {
    /// Bucket.
    pub bucket: Vec<u8>,
    /// Key.
    pub key: Vec<u8>,
    /// [`object_digest`] of the replica's copy.
    pub digest: u64,
}

/// The keys whose copies differ between two segment listings (present on
/// one side only, or with different digests), in key order.
pub fn differing_keys(local: &[KeyDigest], remote: &[KeyDigest]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::collections::BTreeMap;
    /// The digest on each side, if the side has the key.
    type Sides = (Option<u64>, Option<u64>);
    let mut seen: BTreeMap<(&[u8], &[u8]), Sides> = BTreeMap::new();
    for k in local {
        seen.entry((&k.bucket, &k.key)).or_default().0 = Some(k.digest);
    }
    for k in remote {
        seen.entry((&k.bucket, &k.key)).or_default().1 = Some(k.digest);
    }
    seen.into_iter()
        .filter(|(_, (a, b))| a != b)
        .map(|((bucket, key), _)| (bucket.to_vec(), key.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dvv::{ActorId, Content, Dot, Metadata, VersionVector};
    use proptest::prelude::*;

    fn object(counter: u64, value: &str) -> Object {
        let mut o = Object::new();
        let dot = Dot {
            actor: ActorId { node: 1, epoch: 1 },
            counter,
        };
        o.update(
            &VersionVector::new(),
            dot,
            Content {
                value: value.as_bytes().to_vec(),
                meta: Metadata::default(),
                deleted: false,
            },
        )
        .unwrap();
        o
    }

    #[test]
    fn partition_and_segment_come_from_the_hash_bits() {
        let hash = 0xABCD_0000_0000_0000u64;
        assert_eq!(partition_of_hash(hash, 8), 0xAB);
        assert_eq!(partition_of_hash(hash, 0), 0);
        // The 10 bits after the top 8: 0xCD << 2 = 0x334.
        assert_eq!(segment_of_hash(hash, 8), 0x334);
        assert_eq!(segment_of_hash(u64::MAX, 16), (SEGMENTS - 1) as u16);
    }

    #[test]
    fn digests_follow_version_and_siblings_only() {
        let a = object(1, "x");
        assert_eq!(object_digest(&a), object_digest(&a.clone()));
        assert_ne!(object_digest(&a), object_digest(&object(2, "x")));
        // The same dot means the same write, whatever bytes we put in the test.
        assert_eq!(object_digest(&a), object_digest(&object(1, "y")));
        let merged = a.merge(&object(2, "z"));
        assert_ne!(object_digest(&merged), object_digest(&a));
    }

    #[test]
    fn differing_lists_and_keys() {
        assert_eq!(differing(&[1, 2, 3], &[1, 5, 3]), vec![1]);
        assert_eq!(differing(&[1, 2], &[1]), vec![0, 1]);
        let k = |key: &str, digest| KeyDigest {
            bucket: b"b".to_vec(),
            key: key.as_bytes().to_vec(),
            digest,
        };
        let local = [k("a", 1), k("b", 2), k("c", 3)];
        let remote = [k("b", 2), k("c", 4), k("d", 5)];
        let keys: Vec<String> = differing_keys(&local, &remote)
            .into_iter()
            .map(|(_, key)| String::from_utf8(key).unwrap())
            .collect();
        assert_eq!(keys, ["a", "c", "d"]);
    }

    proptest! {
        /// Adding keys in any order and removing some leaves the tree equal to
        /// one built from the remaining keys alone.
        #[test]
        fn trees_depend_only_on_the_keys_they_hold(
            keys in prop::collection::btree_set(any::<u32>(), 0..200),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..50),
            seed in any::<u64>(),
        ) {
            let keys: Vec<u32> = keys.into_iter().collect();
            let removed: std::collections::BTreeSet<u32> = removed
                .iter()
                .filter(|_| !keys.is_empty())
                .map(|i| keys[i.index(keys.len())])
                .collect();
            let entry = |k: u32| {
                let key = k.to_be_bytes();
                let hash = key_hash(b"b", &key);
                (segment_of_hash(hash, 6), leaf(b"b", &key, u64::from(k) ^ seed))
            };
            let mut incremental = Tree::new();
            let mut order = keys.clone();
            order.sort_by_key(|k| xxh3_64(&(u64::from(*k) ^ seed).to_le_bytes()));
            for &k in &order {
                let (segment, leaf) = entry(k);
                incremental.toggle(segment, leaf, 10, 1);
            }
            for &k in &removed {
                let (segment, leaf) = entry(k);
                incremental.toggle(segment, leaf, 10, -1);
            }
            let mut fresh = Tree::new();
            for &k in keys.iter().filter(|k| !removed.contains(k)) {
                let (segment, leaf) = entry(k);
                fresh.toggle(segment, leaf, 10, 1);
            }
            prop_assert!(incremental.is_consistent());
            prop_assert_eq!(&incremental, &fresh);
            prop_assert_eq!(incremental.keys() as usize, keys.len() - removed.len());
        }
    }
}
