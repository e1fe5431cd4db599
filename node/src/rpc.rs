//! Replica RPC messages: what one node asks another about keys it holds.
//!
//! Every request travels on a QUIC stream of its own (see
//! [`crate::transport`]), postcard-encoded inside an [`Envelope`] with a
//! format version, the ids of the client requests it serves (for logs) and
//! the time budget the caller has left, so a replica never works on a
//! request its caller gave up on. Decoding untrusted bytes returns an
//! error, never panics; objects from peers are checked with
//! `Object::is_well_formed` before use.
//!
//! Request ids: each replica operation carries the id of the client
//! request it serves ([`RequestId`], the one in the client's
//! `X-Request-Id` answer), so the replica's log lines about it can be
//! found with the coordinator's. A lane batch mixes operations of several
//! client requests, so the envelope holds one id per operation. Work that
//! no client asked for (anti-entropy, hand-off, reaping) has none; read
//! repair has the id of the read that found the difference.
//! [`log_serving`] and [`log_failures`] write the replica's lines (target
//! `node::rpc`): one debug line per operation served, and one line per
//! operation that failed (debug for a refusal the client hears about,
//! warn when the replica cannot write, error for anything else).

use http_api::RequestId;
use serde::{Deserialize, Serialize};
use storage::{BucketProps, Content, KeyDigest, Object, TreeId, VersionVector};
use tracing::{Level, debug, error, warn};

/// Format version of the envelope; a peer speaking another is refused with
/// [`DecodeError::Format`] before the rest is decoded. Version 2 replaced
/// version 1's per-RPC `u64` counter with client request ids; version 3
/// answers a peer's point read with the stored record
/// ([`Response::Record`]); version 4 acknowledges a `Merge` or `Hint`
/// without the merged copy ([`Response::Applied`]).
pub const RPC_FORMAT: u8 = 4;

/// Wraps every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// [`RPC_FORMAT`]; the first byte of the encoding (postcard writes a
    /// `u8` as itself), so a peer can check it before decoding the rest.
    pub format: u8,
    /// The client requests this serves, for both sides' logs: for a
    /// [`Request::Batch`] one entry per request in order (`None` for one
    /// that serves no client request), or none at all; for any other
    /// request at most one. Checked on decode.
    pub request_ids: Vec<Option<RequestId>>,
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
    /// A `Merge` or `Hint` was applied, and whether it was fsynced. The
    /// merged copy stays with the replica: the sender already has the
    /// object it sent, and nobody needs the merge.
    Applied {
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
    /// A replica's answer to a peer's [`Request::Get`]: the stored record
    /// as it is, which the replica need not decode only to encode it again.
    /// [`decode_response`] decodes and checks it into [`Response::Object`]
    /// (a corrupt record into [`Response::Error`]), so no caller sees this.
    Record(Option<bytes::Bytes>),
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
    /// Request ids that do not match the requests (see
    /// [`Envelope::request_ids`]).
    #[error("RPC message carries {ids} request ids for {requests} requests")]
    RequestIds {
        /// Ids carried.
        ids: usize,
        /// Requests carried.
        requests: usize,
    },
}

/// Encodes a value for the wire.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding into memory cannot fail")
}

/// Decodes and checks an envelope from a peer.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    // The format first: another version's fields may decode as this one's
    // and mean something else.
    if let Some(&format) = bytes.first()
        && format != RPC_FORMAT
    {
        return Err(DecodeError::Format(format));
    }
    let envelope: Envelope = postcard::from_bytes(bytes)?;
    if envelope.format != RPC_FORMAT {
        return Err(DecodeError::Format(envelope.format));
    }
    if !request_well_formed(&envelope.request, true) {
        return Err(DecodeError::BadObject);
    }
    let (ids, requests) = (envelope.request_ids.len(), envelope.request.operations());
    let ids_fit = match envelope.request {
        Request::Batch(_) => ids == 0 || ids == requests,
        _ => ids <= 1,
    };
    if !ids_fit {
        return Err(DecodeError::RequestIds { ids, requests });
    }
    Ok(envelope)
}

impl Envelope {
    /// The client request id of the `index`-th request (0 for a request
    /// that is not a batch), if it serves one.
    pub fn request_id(&self, index: usize) -> Option<RequestId> {
        id_at(&self.request_ids, index)
    }
}

/// The id of the `index`-th operation in an envelope's `request_ids`.
fn id_at(ids: &[Option<RequestId>], index: usize) -> Option<RequestId> {
    ids.get(index).copied().flatten()
}

impl Request {
    /// Requests carried: those of a batch, else 1.
    pub fn operations(&self) -> usize {
        match self {
            Request::Batch(requests) => requests.len(),
            _ => 1,
        }
    }

    /// The operation's name, bucket and key (for logs).
    fn summary(&self) -> (&'static str, Option<&[u8]>, Option<&[u8]>) {
        match self {
            Request::Get { bucket, key } => ("get", Some(bucket), Some(key)),
            Request::Put { bucket, key, .. } => ("put", Some(bucket), Some(key)),
            Request::Merge { bucket, key, .. } => ("merge", Some(bucket), Some(key)),
            Request::Hint { bucket, key, .. } => ("hint", Some(bucket), Some(key)),
            Request::SetProps { bucket, .. } => ("set_props", Some(bucket), None),
            Request::List { bucket } => ("list", bucket.as_deref(), None),
            Request::AaeRoots => ("aae_roots", None, None),
            Request::AaeBranches { .. } => ("aae_branches", None, None),
            Request::AaeSegments { .. } => ("aae_segments", None, None),
            Request::AaeKeys { .. } => ("aae_keys", None, None),
            Request::TreeKeys { .. } => ("tree_keys", None, None),
            Request::GetMany { .. } => ("get_many", None, None),
            Request::MergeMany { .. } => ("merge_many", None, None),
            Request::Holdings { .. } => ("holdings", None, None),
            Request::Reap { .. } => ("reap", None, None),
            Request::Versions { .. } => ("versions", None, None),
            Request::Removed { .. } => ("removed", None, None),
            Request::Batch(_) => ("batch", None, None),
            Request::RemoveIfUnchanged { .. } => ("remove_if_unchanged", None, None),
        }
    }
}

/// Logs at debug level each request this replica is about to serve, with
/// the client request id it serves; `from` is the peer, `None` for this
/// node's own coordinator. Costs one check when debug is off.
pub fn log_serving(
    from: Option<std::net::SocketAddr>,
    ids: &[Option<RequestId>],
    request: &Request,
) {
    if !tracing::enabled!(Level::DEBUG) {
        return;
    }
    let one = |index: usize, request: &Request| {
        let (op, bucket, key) = request.summary();
        let text = |name: &[u8]| String::from_utf8_lossy(name).escape_debug().to_string();
        debug!(
            request_id = id_at(ids, index).as_ref().map(RequestId::as_str),
            op,
            bucket = bucket.map(text),
            key = key.map(text),
            from = from.map(tracing::field::display),
            "replica serving"
        );
    };
    match request {
        Request::Batch(requests) => requests.iter().enumerate().for_each(|(i, r)| one(i, r)),
        other => one(0, other),
    }
}

/// Logs every failed operation in a replica's answer with its client
/// request id: debug for refusals the client is told about (bad request,
/// too large, too many siblings), warn when the replica cannot write now,
/// error for anything else. Successes log nothing.
pub fn log_failures(ids: &[Option<RequestId>], response: &Response) {
    let one = |index: usize, response: &Response| {
        let Response::Error { kind, message } = response else {
            return;
        };
        let request_id = id_at(ids, index);
        let request_id = request_id.as_ref().map(RequestId::as_str);
        match kind {
            ErrorKind::BadRequest | ErrorKind::TooLarge | ErrorKind::TooManySiblings => {
                debug!(request_id, ?kind, %message, "replica refused a request");
            }
            ErrorKind::Unavailable => {
                warn!(request_id, ?kind, %message, "replica could not serve a request");
            }
            ErrorKind::Internal => {
                error!(request_id, ?kind, %message, "replica failed to serve a request");
            }
        }
    };
    match response {
        Response::Batch(responses) => responses.iter().enumerate().for_each(|(i, r)| one(i, r)),
        other => one(0, other),
    }
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
    Ok(open_records(response))
}

/// Decodes and checks every [`Response::Record`] in `response`; one that
/// does not decode becomes an error for its own request only.
fn open_records(response: Response) -> Response {
    match response {
        Response::Record(None) => Response::Object(None),
        Response::Record(Some(record)) => {
            match storage::layout::decode_object("the replica's copy", &record) {
                Ok(object) => Response::Object(Some(object)),
                Err(err) => Response::Error {
                    kind: ErrorKind::Internal,
                    message: err.to_string(),
                },
            }
        }
        Response::Batch(responses) => {
            Response::Batch(responses.into_iter().map(open_records).collect())
        }
        other => other,
    }
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
        let id = RequestId::parse(b"test-req-7").unwrap();
        let envelope = Envelope {
            format: RPC_FORMAT,
            request_ids: vec![Some(id)],
            budget_ms: 100,
            request: get(),
        };
        let bytes = encode(&envelope);
        assert_eq!(decode_envelope(&bytes).unwrap().request_id(0), Some(id));
        let mut other = envelope;
        other.format = 9;
        assert!(matches!(
            decode_envelope(&encode(&other)),
            Err(DecodeError::Format(9))
        ));
    }

    /// A replica's record answer is decoded and checked where it arrives:
    /// a good one becomes the object, a corrupt one an error for its own
    /// request only, a missing one "not found".
    #[test]
    fn records_open_into_objects_and_a_corrupt_one_fails_alone() {
        let mut object = Object::default();
        let dot = storage::Dot {
            actor: storage::ActorId { node: 1, epoch: 7 },
            counter: 1,
        };
        let content = Content {
            value: b"v".to_vec(),
            meta: storage::Metadata::default(),
            deleted: false,
        };
        object
            .update(&VersionVector::default(), dot, content)
            .unwrap();
        let mut record = vec![1, 0];
        record.extend(postcard::to_stdvec(&object).unwrap());
        let mut corrupt = record.clone();
        corrupt.truncate(record.len() - 1);
        let batch = Response::Batch(vec![
            Response::Record(Some(record.into())),
            Response::Record(Some(corrupt.into())),
            Response::Record(None),
        ]);
        let Response::Batch(answers) = decode_response(&encode(&batch)).unwrap() else {
            panic!("not a batch");
        };
        assert!(matches!(&answers[0], Response::Object(Some(o)) if *o == object));
        assert!(matches!(
            &answers[1],
            Response::Error {
                kind: ErrorKind::Internal,
                ..
            }
        ));
        assert!(matches!(&answers[2], Response::Object(None)));
    }

    fn get() -> Request {
        Request::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        }
    }

    /// Format 1's envelope: a per-RPC counter where format 2 has ids.
    #[derive(Serialize)]
    struct EnvelopeV1 {
        format: u8,
        request_id: u64,
        budget_ms: u32,
        request: Request,
    }

    #[test]
    fn an_older_format_is_refused_by_its_version_not_misread() {
        let old = EnvelopeV1 {
            format: 1,
            request_id: 0,
            budget_ms: 100,
            request: get(),
        };
        assert!(matches!(
            decode_envelope(&encode(&old)),
            Err(DecodeError::Format(1))
        ));
    }

    #[test]
    fn each_request_of_a_batch_keeps_its_own_id() {
        let (a, b) = (
            RequestId::generate(),
            RequestId::parse(b"client-b").unwrap(),
        );
        let envelope = Envelope {
            format: RPC_FORMAT,
            request_ids: vec![Some(a), None, Some(b)],
            budget_ms: 100,
            request: Request::Batch(vec![get(), get(), get()]),
        };
        let decoded = decode_envelope(&encode(&envelope)).unwrap();
        assert_eq!(
            (0..3).map(|i| decoded.request_id(i)).collect::<Vec<_>>(),
            vec![Some(a), None, Some(b)]
        );
        // No ids at all is fine; some but not one per request is not.
        let mut bare = envelope.clone();
        bare.request_ids.clear();
        assert!(decode_envelope(&encode(&bare)).is_ok());
        let mut short = envelope.clone();
        short.request_ids.pop();
        assert!(matches!(
            decode_envelope(&encode(&short)),
            Err(DecodeError::RequestIds {
                ids: 2,
                requests: 3
            })
        ));
        let single = Envelope {
            request_ids: vec![Some(a), Some(b)],
            request: get(),
            ..envelope
        };
        assert!(decode_envelope(&encode(&single)).is_err());
    }

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `log` writes at `level` and above.
    fn captured(level: Level, log: impl FnOnce()) -> Vec<serde_json::Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn a_replica_logs_each_operation_and_each_failure_under_its_own_id() {
        let (a, b) = (
            RequestId::parse(b"req-a").unwrap(),
            RequestId::parse(b"req-b").unwrap(),
        );
        let ids = [Some(a), Some(b), None];
        let batch = Request::Batch(vec![get(), get(), get()]);
        let served = captured(Level::DEBUG, || log_serving(None, &ids, &batch));
        let served_ids: Vec<_> = served
            .iter()
            .map(|l| l["fields"]["request_id"].as_str())
            .collect();
        assert_eq!(served_ids, vec![Some("req-a"), Some("req-b"), None]);
        assert!(served.iter().all(|l| l["fields"]["op"] == "get"));
        // At info level normal operation logs nothing; a replica that
        // cannot write warns under the failed operation's id only.
        assert!(captured(Level::INFO, || log_serving(None, &ids, &batch)).is_empty());
        let answer = Response::Batch(vec![
            Response::Done,
            Response::Error {
                kind: ErrorKind::Unavailable,
                message: "disk full".into(),
            },
            Response::Error {
                kind: ErrorKind::TooLarge,
                message: "too large".into(),
            },
        ]);
        let failures = captured(Level::INFO, || log_failures(&ids, &answer));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0]["level"], "WARN");
        assert_eq!(failures[0]["fields"]["request_id"], "req-b");
    }

    #[test]
    fn an_id_a_client_could_not_send_is_refused_from_a_peer_too() {
        #[derive(Serialize)]
        struct Forged<'a> {
            format: u8,
            request_ids: Vec<Option<&'a str>>,
            budget_ms: u32,
            request: Request,
        }
        let long = "x".repeat(RequestId::LEN_MAX + 1);
        for bad in ["", "line\nbreak", long.as_str()] {
            let forged = Forged {
                format: RPC_FORMAT,
                request_ids: vec![Some(bad)],
                budget_ms: 100,
                request: get(),
            };
            assert!(
                matches!(
                    decode_envelope(&encode(&forged)),
                    Err(DecodeError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
