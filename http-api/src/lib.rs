//! Starling's HTTP API: the Riak KV HTTP surface (the key-value subset of
//! Riak 2.2's, see [`resources::RIAK_API_LEVEL`]) served with hyper 1.
//!
//! What it does: routes requests ([`routes::ROUTES`]), parses and validates
//! them (percent-decoding, size limits, quorum values against `n_val`,
//! content types, `Link` and `X-Riak-Meta-*` headers, sealed causal contexts
//! in `X-Riak-Vclock`), evaluates conditional headers, renders objects and
//! their siblings (`300 Multiple Choices`, `multipart/mixed`), maps errors to
//! statuses with `text/plain` messages, and drains gracefully on shutdown.
//! `openapi.yaml` beside this crate describes the surface and is tested
//! against it.
//!
//! What it does not do: store, replicate or coordinate anything. It talks to
//! the node only through the [`Backend`] trait and knows `storage`'s types,
//! not its store; it knows nothing of rings, members or quorum arithmetic
//! beyond checking a number against `n_val`. `/admin/...` and `/metrics` are
//! passed through to the backend untouched.
//!
//! Every answer carries the request's id in `X-Request-Id` (the client's,
//! when sane, else a new one; see [`request_id`]), and every log line
//! written while serving it carries the id as `request_id`.
//!
//! Client security ([`auth`]): optional TLS (rustls) on the listener and
//! optional HTTP Basic authentication of users with `read`, `write` and
//! `admin` grants. Limits ([`limits`]): connections, requests in flight,
//! header and body sizes, body bytes in memory, and timeouts against slow
//! clients; overload is answered `503` at once.
//!
//! Invariants: bad input from a client is a `4xx` with a message, never a
//! panic or a dropped connection; the backend only sees buckets and keys that
//! are non-empty, UTF-8 and within the limits, contexts that verified, and,
//! with authentication on, requests from users holding the grants they need.

pub mod auth;
pub mod backend;
pub mod conditional;
pub mod error;
pub mod limits;
pub mod link;
pub mod listing;
pub mod multipart;
pub mod object;
pub mod props;
pub mod query;
pub mod request_id;
pub mod resources;
pub mod response;
pub mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

pub use backend::{
    AdminRequest, AdminResponse, Backend, BackendError, DeleteRequest, GetRequest, KeyStream,
    PreflistEntry, PutRequest, ReadQuorums, WriteQuorums,
};
pub use error::ApiError;
pub use request_id::RequestId;
pub use resources::RIAK_API_LEVEL;
pub use server::{ServeError, serve};

/// Limits, timeouts and security of the server. Every field has a
/// production default; TLS and authentication are off by default.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// How long in-flight requests may run after shutdown begins before their
    /// connections are cut.
    pub drain_timeout: Duration,
    /// Largest request body (object value, props document, admin body).
    /// Riak refuses objects above 50 MiB; so does this default. A declared
    /// larger body is refused with `413` before it is read.
    pub body_size_bytes_max: usize,
    /// Bytes of request bodies held in memory at once, over all requests
    /// (each body is buffered whole). A body that does not fit is `503`.
    /// Should be at least `body_size_bytes_max`, or the largest bodies are
    /// always refused.
    pub body_buffer_bytes_max: usize,
    /// Largest bucket name after percent-decoding (`400` above).
    pub bucket_size_bytes_max: usize,
    /// Largest key after percent-decoding (`400` above).
    pub key_size_bytes_max: usize,
    /// Largest request head (request line and headers); hyper answers `431`
    /// above it. Must leave room for a percent-encoded key of
    /// `key_size_bytes_max` (three bytes per byte in the worst case). At
    /// least 8 KiB (hyper's minimum).
    pub header_size_bytes_max: usize,
    /// Most header lines in a request (`431` above).
    pub headers_count_max: usize,
    /// How long a client may take to send a request head, and how long a
    /// keep-alive connection may stay idle between requests; the connection
    /// is closed after it. Also bounds the TLS handshake.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body (`408` after it).
    pub body_read_timeout: Duration,
    /// How long a response write may make no progress (the client does not
    /// read) before the connection is closed.
    pub write_timeout: Duration,
    /// Connections served at once; a connection beyond it is answered `503`
    /// and closed. Each costs a file descriptor: the node's descriptor
    /// limit must be above it.
    pub connections_max: usize,
    /// Requests handled at once over all connections; one beyond it is
    /// answered `503` at once.
    pub requests_in_flight_max: usize,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require credentials (see [`auth`]); `None` serves everyone.
    pub auth: Option<Arc<auth::Auth>>,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            drain_timeout: Duration::from_secs(30),
            body_size_bytes_max: 50 * 1024 * 1024,
            body_buffer_bytes_max: 512 * 1024 * 1024,
            bucket_size_bytes_max: 65_535,
            key_size_bytes_max: 65_535,
            header_size_bytes_max: 256 * 1024,
            headers_count_max: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            connections_max: 4096,
            requests_in_flight_max: 1024,
            tls: None,
            auth: None,
        }
    }
}
