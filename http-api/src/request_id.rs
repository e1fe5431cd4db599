//! Request ids: one per client request, so that every log line about it,
//! on every node it touches, can be found with one search.
//!
//! The id is the client's `X-Request-Id` when that is sane (1 to
//! [`RequestId::LEN_MAX`] visible ASCII characters, so it cannot break a
//! log line or smuggle markup into one), else a new one: 16 hex digits of a
//! random `u64`. The server answers it in `X-Request-Id` on every response
//! it writes, errors included, puts it in the request's `request` tracing
//! span, and makes it [`RequestId::current`] while the handler and the
//! [`crate::Backend`] run, so the node can carry it to the replicas.
//!
//! An id is a small `Copy` value with no heap behind it: it travels with
//! every replica operation of a request, and a write fans out to several.
//!
//! This module does not log anything and knows nothing of replicas; what
//! the node does with the id is the node's business.

use std::fmt;
use std::future::Future;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries a request id, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of one client request; see the module documentation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    len: u8,
    bytes: [u8; RequestId::LEN_MAX],
}

impl RequestId {
    /// Longest id accepted, in bytes: room for a UUID (36), a W3C trace id
    /// (32) or a whole `traceparent` (55).
    pub const LEN_MAX: usize = 64;

    /// `text` as an id, if it is 1 to [`Self::LEN_MAX`] visible ASCII
    /// characters (`!` to `~`: no spaces, no control characters).
    pub fn parse(text: &[u8]) -> Option<RequestId> {
        if text.is_empty() || text.len() > Self::LEN_MAX || !text.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        let mut bytes = [0; Self::LEN_MAX];
        bytes[..text.len()].copy_from_slice(text);
        Some(RequestId {
            len: text.len() as u8,
            bytes,
        })
    }

    /// A new id: 16 lower-case hex digits of a random `u64`.
    pub fn generate() -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let value: u64 = rand::random();
        let mut bytes = [0; Self::LEN_MAX];
        for (i, byte) in bytes[..16].iter_mut().enumerate() {
            *byte = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId { len: 16, bytes }
    }

    /// The client's id from `X-Request-Id` (the first such header), if it
    /// is sane.
    pub fn from_headers(headers: &HeaderMap) -> Option<RequestId> {
        headers
            .get(&HEADER)
            .and_then(|value| RequestId::parse(value.as_bytes()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("a request id is ASCII by construction")
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(self.as_str()).expect("a request id is visible ASCII")
    }

    /// The id of the client request being served by the current task, if
    /// any: set by the server around each request's handler (and so
    /// around every [`crate::Backend`] call it makes). Tasks the backend
    /// spawns do not inherit it; pass it along explicitly.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(|id| *id).ok()
    }

    /// Runs `future` with this id as [`RequestId::current`].
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({:?})", self.as_str())
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RequestId {
    /// Accepts only what [`RequestId::parse`] accepts: an id from a peer is
    /// checked like one from a client.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RequestId, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RequestId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a request id of 1 to {} visible ASCII characters",
                    RequestId::LEN_MAX
                )
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RequestId, E> {
                RequestId::parse(text.as_bytes())
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sane_client_ids_are_kept_and_others_refused() {
        assert_eq!(
            RequestId::parse(b"test-req-42").unwrap().as_str(),
            "test-req-42"
        );
        let longest = "a".repeat(RequestId::LEN_MAX);
        assert_eq!(
            RequestId::parse(longest.as_bytes()).unwrap().as_str(),
            longest
        );
        for bad in [
            &b""[..],
            "a".repeat(RequestId::LEN_MAX + 1).as_bytes(),
            b"two words",
            b"line\nbreak",
            b"tab\there",
            "ünïcode".as_bytes(),
            b"\x00",
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_16_hex_digits_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_sane_ids_deserialize() {
        let id = RequestId::parse(b"abc").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"abc\"");
        assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<RequestId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<RequestId>("\"\"").is_err());
    }

    #[tokio::test]
    async fn current_is_set_only_inside_the_scope() {
        assert!(RequestId::current().is_none());
        let id = RequestId::generate();
        let seen = id.scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
        assert!(RequestId::current().is_none());
    }
}
