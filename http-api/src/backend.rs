//! The boundary between the HTTP surface and the node: the [`Backend`] trait
//! and the requests and errors that cross it.
//!
//! `http-api` parses and validates; the backend stores, replicates and
//! coordinates. A backend sees only well-formed requests: buckets and keys are
//! non-empty, within the configured size limits and valid UTF-8; causal
//! contexts are verified; quorum values parsed and checked against `n_val`.
//! A backend may still refuse a request (for example a quorum larger than the
//! live replica count) by returning a [`BackendError`], which this crate turns
//! into the matching HTTP status.
//!
//! This module knows nothing of HTTP beyond [`AdminRequest`], which passes
//! cluster administration through verbatim because `http-api` knows nothing
//! of the cluster.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use storage::{BucketProps, Content, ContextKey, Object, PropsError, Quorum, VersionVector};

/// A listing in bounded chunks (keys or bucket names), produced by the
/// backend as it walks its data. An `Err` item ends the listing: the HTTP
/// response is cut short so the client sees an incomplete body, not a short
/// but seemingly complete list.
pub type KeyStream = tokio::sync::mpsc::Receiver<Result<Vec<Bytes>, BackendError>>;

/// Read quorum parameters as the client gave them; `None` means "the
/// bucket's setting". Integers have been checked against the bucket's
/// `n_val`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadQuorums {
    /// Replies the read waits for (`r`).
    pub r: Option<Quorum>,
    /// Primary replicas among those replies (`pr`).
    pub pr: Option<Quorum>,
    /// Whether a replica's "not found" counts towards R (`notfound_ok`).
    pub notfound_ok: Option<bool>,
    /// Whether to answer "not found" once a quorum said so (`basic_quorum`).
    pub basic_quorum: Option<bool>,
}

/// Write quorum parameters as the client gave them; `None` means "the
/// bucket's setting". Integers have been checked against the bucket's
/// `n_val`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteQuorums {
    /// Acknowledgements the write waits for (`w`).
    pub w: Option<Quorum>,
    /// Durable (fsynced) acknowledgements among them (`dw`).
    pub dw: Option<Quorum>,
    /// Primary replicas among them (`pw`).
    pub pw: Option<Quorum>,
    /// Acknowledgements a delete waits for (`rw`); always `None` for puts.
    pub rw: Option<Quorum>,
}

/// Fetch one key.
#[derive(Clone, Debug)]
pub struct GetRequest {
    /// Bucket name (non-empty, UTF-8, within the size limit).
    pub bucket: Bytes,
    /// Key (non-empty, UTF-8, within the size limit).
    pub key: Bytes,
    /// Quorum parameters from the query string.
    pub quorums: ReadQuorums,
    /// The client's `timeout` parameter; `None` lets the backend choose.
    pub timeout: Option<Duration>,
}

/// Store one value.
#[derive(Clone, Debug)]
pub struct PutRequest {
    /// Bucket name.
    pub bucket: Bytes,
    /// Key; chosen by the server (22 random base-62 characters, like Riak's
    /// `unique_id_62`) for `POST /buckets/{b}/keys`.
    pub key: Bytes,
    /// The verified causal context from `X-Riak-Vclock`; `None` is a blind
    /// write, concurrent with every existing sibling.
    pub context: Option<VersionVector>,
    /// Value and metadata. `meta.last_modified_us` is 0: the coordinating
    /// replica stamps it.
    pub content: Content,
    /// Quorum parameters (`rw` is `None`).
    pub quorums: WriteQuorums,
    /// The client's `timeout` parameter.
    pub timeout: Option<Duration>,
}

/// Delete one key by writing a tombstone.
#[derive(Clone, Debug)]
pub struct DeleteRequest {
    /// Bucket name.
    pub bucket: Bytes,
    /// Key.
    pub key: Bytes,
    /// The causal context; when the client sent none, `http-api` read the
    /// object first and passes its version, as Riak does.
    pub context: Option<VersionVector>,
    /// Quorum parameters, `rw` included.
    pub quorums: WriteQuorums,
    /// The client's `timeout` parameter.
    pub timeout: Option<Duration>,
}

/// One entry of a key's preference list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PreflistEntry {
    /// Ring partition index.
    pub partition: u64,
    /// Name of the node holding the replica.
    pub node: String,
    /// Whether the node is a primary (false: a fallback).
    pub primary: bool,
}

/// A request under `/admin/...` or `/metrics`, passed through untouched.
#[derive(Clone, Debug)]
pub struct AdminRequest {
    /// HTTP method.
    pub method: Method,
    /// The path as received (still percent-encoded), e.g. `/admin/ring`.
    pub path: String,
    /// The raw query string without `?`, if any.
    pub query: Option<String>,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The request's `Accept`, if any.
    pub accept: Option<String>,
    /// The request body (bounded by the configured body limit).
    pub body: Bytes,
}

/// The backend's answer to an [`AdminRequest`].
#[derive(Clone, Debug)]
pub struct AdminResponse {
    /// Status code to send.
    pub status: StatusCode,
    /// `Content-Type` of `body`.
    pub content_type: String,
    /// Response body.
    pub body: Bytes,
}

impl AdminResponse {
    /// A `404` naming the path that is not served.
    pub fn not_found(req: &AdminRequest) -> AdminResponse {
        AdminResponse::text(
            StatusCode::NOT_FOUND,
            format!("no such resource: {}\n", req.path),
        )
    }

    /// A plain-text answer.
    pub fn text(status: StatusCode, body: impl Into<String>) -> AdminResponse {
        AdminResponse {
            status,
            content_type: "text/plain; charset=utf-8".to_owned(),
            body: Bytes::from(body.into()),
        }
    }

    /// A JSON answer.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
        AdminResponse {
            status,
            content_type: "application/json".to_owned(),
            body: Bytes::from(value.to_string()),
        }
    }
}

/// Why the backend could not serve a request. Each variant maps to one HTTP
/// status; the message reaches the client as a `text/plain` body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The request is invalid for a reason only the backend can see
    /// (`400 Bad Request`).
    #[error("{0}")]
    BadRequest(String),
    /// A quorum value or property set does not fit the bucket
    /// (`400 Bad Request`).
    #[error(transparent)]
    InvalidQuorum(#[from] PropsError),
    /// Too few replicas answered (`503 Service Unavailable`). `what` names the
    /// quorum parameter (`r`, `pr`, `w`, `dw`, `pw`, `rw`); for writes and
    /// deletes the message says the outcome is indeterminate, because some
    /// replicas may hold the write.
    #[error("{}", quorum_message(.needed, .replied, .what))]
    QuorumNotMet {
        /// Replies the quorum needed.
        needed: u32,
        /// Replies that arrived.
        replied: u32,
        /// The quorum parameter that was not met.
        what: String,
    },
    /// The request's deadline passed (`504 Gateway Timeout`).
    #[error("request timed out")]
    Timeout,
    /// The object or request is larger than the node accepts
    /// (`413 Content Too Large`).
    #[error("{0}")]
    TooLarge(String),
    /// The write would push the object past the sibling limit
    /// (`409 Conflict`); the client must resolve the siblings.
    #[error(
        "the object has {count} siblings and the limit is {max}: resolve them by reading the \
         object and writing the merged value with the X-Riak-Vclock context of that read"
    )]
    TooManySiblings {
        /// Siblings the object would have.
        count: u64,
        /// The configured limit.
        max: u64,
    },
    /// The node sheds load (`503` with `Retry-After`).
    #[error("the node is overloaded; retry later")]
    Overloaded,
    /// The node cannot serve the request now (`503 Service Unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (`500`, logged).
    #[error("{0}")]
    Internal(String),
}

fn quorum_message(needed: &u32, replied: &u32, what: &str) -> String {
    let is_read = matches!(what, "r" | "pr" | "read");
    if is_read {
        format!("{what} quorum not met: {replied} of {needed} replicas replied")
    } else {
        format!(
            "{what} quorum not met: {replied} of {needed} replicas acknowledged; the write's \
             outcome is indeterminate"
        )
    }
}

/// What the node provides to the HTTP surface.
///
/// Implementations are shared between connections (`Arc<B>`), so every
/// method takes `&self`. Futures must be `Send`: each connection runs on its
/// own task.
///
/// Every method runs inside the client request's `request` tracing span and
/// with [`crate::RequestId::current`] set to its id; a backend that does
/// work elsewhere (other tasks, other nodes) carries the id there itself.
pub trait Backend: Send + Sync + 'static {
    /// Reads a key. `Ok(None)`: no replica has it. `Ok(Some(obj))` with
    /// `obj.is_deleted()`: a tombstone, answered as `404` with its context.
    fn get(
        &self,
        req: GetRequest,
    ) -> impl Future<Output = Result<Option<Object>, BackendError>> + Send;

    /// Writes a value; returns the object after the write (every sibling the
    /// coordinating replica now holds), used for `returnbody=true`.
    fn put(&self, req: PutRequest) -> impl Future<Output = Result<Object, BackendError>> + Send;

    /// Writes a tombstone with the request's context.
    fn delete(&self, req: DeleteRequest) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The bucket's effective properties (defaults merged in).
    fn bucket_props(
        &self,
        bucket: Bytes,
    ) -> impl Future<Output = Result<BucketProps, BackendError>> + Send;

    /// Replaces the bucket's properties with `props` (already validated and
    /// merged with the current ones).
    fn set_bucket_props(
        &self,
        bucket: Bytes,
        props: BucketProps,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Returns the bucket to the default properties.
    fn reset_bucket_props(
        &self,
        bucket: Bytes,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Every bucket that holds at least one key, in chunks.
    fn list_buckets(&self) -> impl Future<Output = Result<KeyStream, BackendError>> + Send;

    /// Every key of `bucket`, in chunks.
    fn list_keys(
        &self,
        bucket: Bytes,
    ) -> impl Future<Output = Result<KeyStream, BackendError>> + Send;

    /// The replicas that hold `bucket`/`key`.
    fn preflist(
        &self,
        bucket: Bytes,
        key: Bytes,
    ) -> impl Future<Output = Result<Vec<PreflistEntry>, BackendError>> + Send;

    /// The node's own `/stats` fields; they override `http-api`'s fields of
    /// the same name (`nodename` in particular).
    fn stats(&self) -> impl Future<Output = serde_json::Map<String, serde_json::Value>> + Send;

    /// Serves everything under `/admin/` and `/metrics`.
    fn admin(&self, req: AdminRequest) -> impl Future<Output = AdminResponse> + Send;

    /// The cluster-wide key that seals and verifies `X-Riak-Vclock`.
    fn context_key(&self) -> &ContextKey;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quorum_messages_say_who_replied_and_what_it_means() {
        let write = BackendError::QuorumNotMet {
            needed: 2,
            replied: 1,
            what: "w".into(),
        };
        assert_eq!(
            write.to_string(),
            "w quorum not met: 1 of 2 replicas acknowledged; the write's outcome is indeterminate"
        );
        let read = BackendError::QuorumNotMet {
            needed: 2,
            replied: 1,
            what: "r".into(),
        };
        assert_eq!(
            read.to_string(),
            "r quorum not met: 1 of 2 replicas replied"
        );
    }
}
