//! Replica RPC messages: what one node asks another about keys it holds.
//!
//! Every request travels on a QUIC stream of its own (see
//! [`crate::transport`]), postcard-encoded inside an [`Envelope`] with a
//! format version, a request id (for logs) and the time budget the caller
//! has left, so a replica never works on a request its caller gave up on.
//! Decoding untrusted bytes returns an error, never panics; objects from
//! peers are checked with `Object::is_well_formed` before use.

use serde::{Deserialize, Serialize};
use storage::{BucketProps, Content, KeyDigest, Object, TreeId, VersionVector};

/// Format version of the envelope; a peer speaking another is refused.
pub const RPC_FORMAT: u8 = 1;

/// Wraps every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// [`RPC_FORMAT`].
    pub format: u8,
    /// Chosen by the caller; appears in both sides' logs.
    pub request_id: u64,
    /// Milliseconds the caller will still wait for the answer.
    pub budget_ms: u32,
    /// The request itself.
    pub request: Request,
}

/// Write options a replica applies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Apply {
    /// Collapse siblings by time (`allow_mult=false` / `last_write_wins`).
    pub resolve_by_time: bool,
    /// Fsync before answering even if the sync policy would not.
    pub sync: bool,
}

/// What a node can ask a replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Read the local copy of a key.
    Get {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
    },
    /// Coordinate a client write at this replica: mint a dot against the
    /// local copy and store the result. Only sent to a primary replica.
    Put {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The client's causal context.
        context: VersionVector,
        /// What to store.
        content: Content,
        /// Options.
        apply: Apply,
    },
    /// Merge another replica's copy into the local one (replication, read
    /// repair, hand-off).
    Merge {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The copy.
        object: Object,
        /// Options.
        apply: Apply,
    },
    /// Keep a copy for `owner`, a primary that cannot be reached now, and
    /// hand it to it later.
    Hint {
        /// The node the copy belongs to.
        owner: u128,
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The copy.
        object: Object,
        /// Options.
        apply: Apply,
    },
    /// Set (or with `None`, reset) a bucket's properties on this node.
    SetProps {
        /// Bucket.
        bucket: Vec<u8>,
        /// The new properties, or `None` for the defaults.
        props: Option<BucketProps>,
    },
    /// List the keys of `bucket` this node holds (or the buckets, if
    /// `bucket` is `None`).
    List {
        /// Bucket to list, or `None` for the bucket names.
        bucket: Option<Vec<u8>>,
    },
    /// Anti-entropy: the roots of every tree this node holds.
    AaeRoots,
    /// Anti-entropy: the branch hashes of one tree.
    AaeBranches {
        /// Which tree.
        tree: TreeId,
    },
    /// Anti-entropy: the segment hashes under some branches of a tree.
    AaeSegments {
        /// Which tree.
        tree: TreeId,
        /// Branch indices.
        branches: Vec<u16>,
    },
    /// Anti-entropy: the keys and digests of some segments of a tree.
    AaeKeys {
        /// Which tree.
        tree: TreeId,
        /// Segment indices.
        segments: Vec<u16>,
    },
    /// Ownership transfer: a page of every key of one tree.
    TreeKeys {
        /// Which tree.
        tree: TreeId,
        /// Cursor from the previous page.
        after: Option<Vec<u8>>,
        /// Most keys to return.
        limit: u32,
    },
    /// Read several local copies at once.
    GetMany {
        /// `(bucket, key)` pairs.
        keys: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Merge several copies at once (anti-entropy repair, transfer).
    MergeMany {
        /// `(bucket, key, copy)` triples.
        objects: Vec<(Vec<u8>, Vec<u8>, Object)>,
        /// Options.
        apply: Apply,
    },
    /// Reaping: this node's copies of some keys and the hints it holds for
    /// them on behalf of `owners`.
    Holdings {
        /// `(bucket, key, hint owners)` triples.
        keys: Vec<(Vec<u8>, Vec<u8>, Vec<u128>)>,
    },
    /// Reaping: remove the copy and the hints (for the given owners) of each
    /// key wherever the tombstone given covers them.
    Reap {
        /// `(bucket, key, tombstone, hint owners)`.
        keys: Vec<ReapKey>,
    },
    /// Hand-off: the version of this node's copy of each key.
    Versions {
        /// `(bucket, key)` pairs.
        keys: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Cluster metadata: the nodes the sender knows were removed; the
    /// receiver adds them to its own set and answers with its whole set.
    Removed {
        /// Node ids.
        ids: Vec<u128>,
    },
    /// Several reads or several writes at once (see `crate::lane`): the
    /// replica carries out each in order, waits once for the durability of
    /// the writes, and answers with [`Response::Batch`]. Never nested.
    Batch(Vec<Request>),
    /// Hand-off: remove each key whose copy still has the given digest.
    RemoveIfUnchanged {
        /// `(bucket, key, digest)` triples.
        keys: Vec<(Vec<u8>, Vec<u8>, u64)>,
    },
}

/// One key to reap: `(bucket, key, tombstone, hint owners)`.
pub type ReapKey = (Vec<u8>, Vec<u8>, Object, Vec<u128>);

/// A replica's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The local copy, if any.
    Object(Option<Object>),
    /// The copy after a write, and whether it was fsynced.
    Written {
        /// The stored copy.
        object: Object,
        /// Fsynced before answering.
        durable: bool,
    },
    /// Key or bucket names.
    Names(Vec<Vec<u8>>),
    /// Done.
    Done,
    /// Tree roots as `(tree, root, keys)`; `None` while this node's trees
    /// are still being built.
    Roots(Option<Vec<(TreeId, u64, u64)>>),
    /// Hashes of one tree level; `None` while building.
    Hashes(Option<Vec<u64>>),
    /// Segment hashes per branch; `None` while building.
    SegmentHashes(Option<Vec<(u16, Vec<u64>)>>),
    /// Keys with digests, and the cursor of the next page if any.
    KeyDigests(Vec<KeyDigest>, Option<Vec<u8>>),
    /// Local copies, in request order.
    Objects(Vec<Option<Object>>),
    /// A batch was merged: how many copies, and whether fsynced.
    Merged {
        /// Copies merged.
        count: u32,
        /// Fsynced before answering.
        durable: bool,
    },
    /// Per key, in request order: the stored copy and the hints held for
    /// any owner.
    Holdings(Vec<(Option<Object>, Vec<Object>)>),
    /// Per key, in request order: whether it was removed.
    Removed(Vec<bool>),
    /// Per key, in request order: the version of the local copy.
    Versions(Vec<Option<VersionVector>>),
    /// Every node this node knows was removed.
    RemovedIds(Vec<u128>),
    /// One answer per request of a [`Request::Batch`], in order.
    Batch(Vec<Response>),
    /// The replica could not do it.
    Error {
        /// What kind of failure, for the coordinator's mapping.
        kind: ErrorKind,
        /// For logs and clients.
        message: String,
    },
}

/// Why a replica refused.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was malformed or invalid.
    BadRequest,
    /// The object would exceed a size limit.
    TooLarge,
    /// The object would exceed the sibling limit.
    TooManySiblings,
    /// The replica cannot write now (failed fsync, full disk, full hint
    /// store).
    Unavailable,
    /// Anything else.
    Internal,
}

/// Why bytes from a peer were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a postcard encoding of the expected type.
    #[error("malformed RPC message: {0}")]
    Malformed(#[from] postcard::Error),
    /// A format this node does not speak.
    #[error("unknown RPC format {0}")]
    Format(u8),
    /// An object that breaks the dvv invariants.
    #[error("RPC message carries a malformed object")]
    BadObject,
}

/// Encodes a value for the wire.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding into memory cannot fail")
}

/// Decodes and checks an envelope from a peer.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let envelope: Envelope = postcard::from_bytes(bytes)?;
    if envelope.format != RPC_FORMAT {
        return Err(DecodeError::Format(envelope.format));
    }
    if !request_well_formed(&envelope.request, true) {
        return Err(DecodeError::BadObject);
    }
    Ok(envelope)
}

/// Whether every object a request carries keeps the dvv invariants (and a
/// batch holds no batch).
fn request_well_formed(request: &Request, top_level: bool) -> bool {
    match request {
        Request::Merge { object, .. } | Request::Hint { object, .. } => object.is_well_formed(),
        Request::MergeMany { objects, .. } => objects.iter().all(|(_, _, o)| o.is_well_formed()),
        Request::Reap { keys } => keys.iter().all(|(_, _, o, _)| o.is_well_formed()),
        Request::Batch(requests) => {
            top_level && requests.iter().all(|r| request_well_formed(r, false))
        }
        _ => true,
    }
}

/// Decodes and checks a response from a peer.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    let response: Response = postcard::from_bytes(bytes)?;
    if !response_well_formed(&response, true) {
        return Err(DecodeError::BadObject);
    }
    Ok(response)
}

fn response_well_formed(response: &Response, top_level: bool) -> bool {
    match response {
        Response::Object(Some(object)) | Response::Written { object, .. } => {
            object.is_well_formed()
        }
        Response::Objects(objects) => objects.iter().flatten().all(Object::is_well_formed),
        Response::Holdings(holdings) => holdings
            .iter()
            .all(|(o, hints)| o.iter().chain(hints).all(Object::is_well_formed)),
        Response::Batch(responses) => {
            top_level && responses.iter().all(|r| response_well_formed(r, false))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn garbage_is_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_envelope(&bytes);
            let _ = decode_response(&bytes);
        }
    }

    #[test]
    fn round_trip_and_unknown_format() {
        let envelope = Envelope {
            format: RPC_FORMAT,
            request_id: 7,
            budget_ms: 100,
            request: Request::Get {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            },
        };
        let bytes = encode(&envelope);
        assert_eq!(decode_envelope(&bytes).unwrap().request_id, 7);
        let mut other = envelope;
        other.format = 9;
        assert!(matches!(
            decode_envelope(&encode(&other)),
            Err(DecodeError::Format(9))
        ));
    }
}
