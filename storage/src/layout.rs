//! How the store lays out keys and values on disk.
//!
//! # Keyspaces
//!
//! - `placed`: one record per (bucket, key), filed by its anti-entropy
//!   placement (the private `aae` module).
//! - `props`: one record per bucket with non-default properties.
//! - `meta`: the node's identity, the dot counter's ceiling and the
//!   partition count.
//! - `hints`: copies kept for unreachable primaries.
//! - `tombstones`: the keys whose objects are all tombstones, with the time
//!   of the newest one, for the reaper.
//!
//! Directories written before 2026-12-07 hold their objects in `objects`
//! (keyed by name key, the object record as the value) and a separate
//! anti-entropy index in `aae`; opening one moves every object into
//! `placed` and drops both (see `Store::open`).
//!
//! # Name keys
//!
//! `u16 big-endian length of bucket ++ bucket ++ key`. The length prefix makes
//! the encoding injective (bucket `a` + key `bc` differs from bucket `ab` +
//! key `c`). Hints and tombstone records are keyed by it.
//!
//! # Placed keys
//!
//! `hash prefix (u32 BE) ++ name key`: the top 32 bits of the key's hash,
//! whose own top bits are its partition (for the store's fixed partition
//! count) and then its segment. So placed keys sort by partition and
//! segment, an exchange lists a segment and a hand-off a partition with a
//! range scan, and a point read computes the prefix first (one hash). Two
//! keys nearly always differ in their first four bytes, which fjall keeps
//! inline, so its key compares rarely follow a pointer. A bucket's keys are
//! spread over the whole keyspace, so listing a bucket or the buckets is a
//! full scan, as in Riak.
//!
//! # Placed values
//!
//! `n_val (u8) ++ digest (u64 BE) ++ object record`: the entry the trees
//! fold (`aae::decode_entry`), then the object record, which is
//! also what a replica sends its peers.
//!
//! # Object records
//!
//! `format version (u8 = 1) ++ flags (u8) ++ postcard(Object)`. Flag bit 0 says
//! every sibling is a tombstone, so listings can hide deleted keys without
//! decoding the object; the flag is checked against the decoded object on
//! every full read. Other flag bits must be zero.
//!
//! # Props values
//!
//! `format version (u8 = 1) ++ postcard(BucketProps)`, keyed by bucket name.
//!
//! # Meta values
//!
//! Each a `u64` big-endian: `node_id`, `epoch`, `dot_ceiling`,
//! `partition_count`, `index_version`.
//!
//! This module does not touch fjall; it only encodes and checks bytes. Every
//! decoder treats its input as untrusted: a bad record is
//! [`StoreError::Corrupt`], never a panic.

use crate::dvv::Object;
use crate::error::{StoreError, escape};
use crate::props::BucketProps;

/// Largest key fjall accepts (its key length is a `u16`).
pub(crate) const STORE_KEY_SIZE_BYTES_MAX: usize = u16::MAX as usize;

/// Format version of object records.
const OBJECT_FORMAT: u8 = 1;
/// Format version of props records.
const PROPS_FORMAT: u8 = 1;
/// Object flag: every sibling is a tombstone.
const FLAG_DELETED: u8 = 0b0000_0001;
/// Bytes before the postcard body of an object record.
pub(crate) const OBJECT_HEADER_SIZE_BYTES: usize = 2;

/// Keyspace of placed object records.
pub(crate) const KEYSPACE_PLACED: &str = "placed";
/// Keyspace of object records by name key, before placed records.
pub(crate) const KEYSPACE_LEGACY_OBJECTS: &str = "objects";
/// Keyspace of the anti-entropy index, before placed records.
pub(crate) const KEYSPACE_LEGACY_INDEX: &str = "aae";
/// Keyspace of bucket properties.
pub(crate) const KEYSPACE_PROPS: &str = "props";
/// Keyspace of identity and counter records.
pub(crate) const KEYSPACE_META: &str = "meta";
/// Keyspace of hints: copies kept for unreachable primaries, keyed by
/// `owner (16 bytes, big-endian) ++ object key`.
pub(crate) const KEYSPACE_HINTS: &str = "hints";
/// Keyspace of tombstone-only objects awaiting reaping: object key →
/// `u64` BE microseconds of the newest tombstone.
pub(crate) const KEYSPACE_TOMBSTONES: &str = "tombstones";

/// Meta record: the node id.
pub(crate) const META_NODE_ID: &str = "node_id";
/// Meta record: the epoch of this data directory.
pub(crate) const META_EPOCH: &str = "epoch";
/// Meta record: no counter at or above this value was handed out.
pub(crate) const META_DOT_CEILING: &str = "dot_ceiling";
/// Meta record: the partition count the placed keys were computed with.
pub(crate) const META_PARTITION_COUNT: &str = "partition_count";

/// The name key of `bucket`/`key`. The caller has checked the limits, which
/// keep the bucket within `u16` and the whole key (placed too) within
/// fjall's limit.
pub(crate) fn object_key(bucket: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bucket.len() + key.len());
    extend_object_key(&mut out, bucket, key);
    out
}

/// Appends the name key of `bucket`/`key` to `out` (a placed key's
/// prefix, a hint's owner).
pub(crate) fn extend_object_key(out: &mut Vec<u8>, bucket: &[u8], key: &[u8]) {
    let length = u16::try_from(bucket.len()).expect("bucket length checked against the limits");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bucket);
    out.extend_from_slice(key);
    assert!(out.len() <= STORE_KEY_SIZE_BYTES_MAX, "limits not checked");
}

/// The prefix shared by every store key of `bucket`.
pub(crate) fn bucket_prefix(bucket: &[u8]) -> Vec<u8> {
    let length = u16::try_from(bucket.len()).expect("bucket length checked against the limits");
    let mut out = Vec::with_capacity(2 + bucket.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bucket);
    out
}

/// Splits a name key back into (bucket, key); `None` if it is malformed.
pub(crate) fn split_object_key(name_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = name_key.split_first_chunk::<2>()?;
    let length = usize::from(u16::from_be_bytes(*length));
    if rest.len() <= length || length == 0 {
        // Empty buckets and empty keys are never written.
        return None;
    }
    Some(rest.split_at(length))
}

/// What a record is called in errors; built only when one is reported, so
/// that reading a record allocates no name.
pub trait RecordName {
    /// The name, e.g. `object bucket/key`.
    fn record_name(&self) -> String;
}

impl<T: AsRef<str> + ?Sized> RecordName for &T {
    fn record_name(&self) -> String {
        (*self).as_ref().to_owned()
    }
}

/// The name of the object record of a bucket and key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObjectRecord<'a>(pub &'a [u8], pub &'a [u8]);

impl RecordName for ObjectRecord<'_> {
    fn record_name(&self) -> String {
        format!("object {}/{}", escape(self.0), escape(self.1))
    }
}

/// Encodes an object record.
///
/// Asserts the dvv invariants first: writing a malformed object would turn a
/// bug into corruption on disk.
pub(crate) fn encode_object(object: &Object) -> Vec<u8> {
    encode_object_after(object, Vec::new())
}

/// Appends the object record of `object` to `out` (empty, or a placed
/// value's entry) and returns it; see [`encode_object`].
fn encode_object_after(object: &Object, mut out: Vec<u8>) -> Vec<u8> {
    assert!(
        object.is_well_formed(),
        "refusing to store a malformed object: {object:?}"
    );
    let start = out.len();
    let flags = if object.is_deleted() { FLAG_DELETED } else { 0 };
    out.extend_from_slice(&[OBJECT_FORMAT, flags]);
    let out = postcard::to_extend(object, out).expect("encoding an object into memory cannot fail");
    debug_assert_eq!(
        decode_object("just encoded", &out[start..]).ok().as_ref(),
        Some(object)
    );
    out
}

/// Encodes the placed value of an object: its entry (`n_val` and
/// [`crate::merkle::object_digest`]) and its object record, in one buffer.
/// Returns the value and the entry.
pub(crate) fn encode_placed(object: &Object, n_val: u8) -> (Vec<u8>, crate::aae::IndexEntry) {
    use crate::aae::{ENTRY_SIZE_BYTES, IndexEntry, encode_entry};
    let mut out = encode_object_after(object, vec![0u8; ENTRY_SIZE_BYTES]);
    let digest = crate::merkle::object_digest(object);
    encode_entry(n_val, digest, &mut out);
    let entry = IndexEntry {
        n_val,
        digest,
        size_bytes: u32::try_from(out.len() - ENTRY_SIZE_BYTES).unwrap_or(u32::MAX),
    };
    (out, entry)
}

/// Whether an object record's header says it is all tombstones, checking only
/// the header (for listings). The full decode cross-checks the flag.
pub fn object_is_deleted(record: impl RecordName, bytes: &[u8]) -> Result<bool, StoreError> {
    let flags = object_header(&record, bytes)?;
    Ok(flags & FLAG_DELETED != 0)
}

fn object_header(record: &impl RecordName, bytes: &[u8]) -> Result<u8, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        record: record.record_name(),
        reason,
    };
    let [format, flags, ..] = bytes else {
        return Err(corrupt(format!("record is only {} bytes", bytes.len())));
    };
    if *format != OBJECT_FORMAT {
        return Err(corrupt(format!("unknown object format version {format}")));
    }
    if flags & !FLAG_DELETED != 0 {
        return Err(corrupt(format!("unknown object flags {flags:#04x}")));
    }
    Ok(*flags)
}

/// Decodes and checks an object record.
pub fn decode_object(record: impl RecordName, bytes: &[u8]) -> Result<Object, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        record: record.record_name(),
        reason,
    };
    let flags = object_header(&record, bytes)?;
    let (object, rest): (Object, &[u8]) =
        postcard::take_from_bytes(&bytes[OBJECT_HEADER_SIZE_BYTES..])
            .map_err(|err| corrupt(format!("object does not decode: {err}")))?;
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} trailing bytes after object",
            rest.len()
        )));
    }
    if !object.is_well_formed() {
        return Err(corrupt("object breaks the dvv invariants".into()));
    }
    if object.siblings.is_empty() {
        // The store never writes an object without siblings.
        return Err(corrupt("object has no siblings".into()));
    }
    if (flags & FLAG_DELETED != 0) != object.is_deleted() {
        return Err(corrupt("deleted flag disagrees with the siblings".into()));
    }
    Ok(object)
}

/// Encodes a props record. The caller has validated the props.
pub(crate) fn encode_props(props: &BucketProps) -> Vec<u8> {
    postcard::to_extend(props, vec![PROPS_FORMAT])
        .expect("encoding bucket props into memory cannot fail")
}

/// Decodes and validates a props record.
pub fn decode_props(bucket: &[u8], bytes: &[u8]) -> Result<BucketProps, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        record: format!("props {}", escape(bucket)),
        reason,
    };
    let Some((format, body)) = bytes.split_first() else {
        return Err(corrupt("record is empty".into()));
    };
    if *format != PROPS_FORMAT {
        return Err(corrupt(format!("unknown props format version {format}")));
    }
    let (props, rest): (BucketProps, &[u8]) = postcard::take_from_bytes(body)
        .map_err(|err| corrupt(format!("props do not decode: {err}")))?;
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} trailing bytes after props",
            rest.len()
        )));
    }
    props
        .validate()
        .map_err(|err| corrupt(format!("stored props do not validate: {err}")))?;
    Ok(props)
}

/// Encodes a meta `u64`.
pub(crate) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

/// Decodes a meta `u64`.
pub(crate) fn decode_u64(name: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        record: format!("meta {name}"),
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dvv::{ActorId, Content, Dot, Metadata, VersionVector};
    use proptest::prelude::*;

    fn object(deleted: bool) -> Object {
        let mut o = Object::new();
        let dot = Dot {
            actor: ActorId { node: 1, epoch: 2 },
            counter: 3,
        };
        let content = if deleted {
            Content::tombstone(5)
        } else {
            Content {
                value: b"v".to_vec(),
                meta: Metadata::default(),
                deleted: false,
            }
        };
        o.update(&VersionVector::new(), dot, content).unwrap();
        o
    }

    #[test]
    fn keys_round_trip_and_do_not_collide() {
        let a = object_key(b"a", b"bc");
        let b = object_key(b"ab", b"c");
        assert_ne!(a, b);
        assert_eq!(split_object_key(&a), Some((&b"a"[..], &b"bc"[..])));
        assert_eq!(split_object_key(&b), Some((&b"ab"[..], &b"c"[..])));
        assert!(a.starts_with(&bucket_prefix(b"a")));
        assert!(!b.starts_with(&bucket_prefix(b"a")));
        assert_eq!(split_object_key(&[0, 5, b'a']), None);
        assert_eq!(split_object_key(&[0, 1, b'a']), None);
        assert_eq!(split_object_key(&[0]), None);
    }

    #[test]
    fn objects_round_trip_with_their_deleted_flag() {
        for deleted in [false, true] {
            let o = object(deleted);
            let bytes = encode_object(&o);
            assert_eq!(decode_object("t", &bytes).unwrap(), o);
            assert_eq!(object_is_deleted("t", &bytes).unwrap(), deleted);
        }
    }

    #[test]
    fn bad_records_are_corrupt() {
        let good = encode_object(&object(false));
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        let mut bad_flag = good.clone();
        bad_flag[1] = FLAG_DELETED;
        let mut unknown_flag = good.clone();
        unknown_flag[1] = 0x80;
        let mut trailing = good.clone();
        trailing.push(0);
        for bytes in [
            &[][..],
            &[1][..],
            &bad_version[..],
            &bad_flag[..],
            &unknown_flag[..],
            &trailing[..],
            &good[..good.len() - 1],
        ] {
            assert!(matches!(
                decode_object("t", bytes),
                Err(StoreError::Corrupt { .. })
            ));
        }
        // A sibling whose dot the version does not cover.
        let mut broken = object(false);
        broken.version = VersionVector::new();
        let bytes = postcard::to_extend(&broken, vec![OBJECT_FORMAT, 0]).unwrap();
        assert!(matches!(
            decode_object("t", &bytes),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn props_round_trip_and_bad_props_are_corrupt() {
        let props = BucketProps {
            n_val: 5,
            ..BucketProps::default()
        };
        assert_eq!(decode_props(b"b", &encode_props(&props)).unwrap(), props);
        let invalid = BucketProps {
            n_val: 0,
            ..BucketProps::default()
        };
        assert!(decode_props(b"b", &encode_props(&invalid)).is_err());
        assert!(decode_props(b"b", &[]).is_err());
        assert!(decode_props(b"b", &[2]).is_err());
        assert!(decode_u64("x", &[1, 2]).is_err());
        assert_eq!(decode_u64("x", &encode_u64(7)).unwrap(), 7);
    }

    proptest! {
        #[test]
        fn garbage_objects_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_object("t", &bytes);
            let _ = decode_props(b"b", &bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(index in 0usize..64, bit in 0u8..8) {
            let mut bytes = encode_object(&object(false));
            let i = index % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(o) = decode_object("t", &bytes) {
                prop_assert!(o.is_well_formed());
            }
        }
    }
}
