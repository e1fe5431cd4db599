//! The opaque causal context handed to clients in `X-Riak-Vclock`.
//!
//! A context is the object's [`VersionVector`], postcard-encoded behind a
//! format version, bound to its bucket and key, and sealed with a keyed
//! BLAKE3 tag, then base64-encoded. Decoding checks all of that: a truncated,
//! garbled, forged or transplanted context is a [`ContextError`], never a
//! panic and never silently accepted.
//!
//! Why a tag: a context decides which siblings a write removes and which
//! counters an object has seen. A forged context claiming a huge counter for a
//! replica's actor would make that replica's next writes look already seen,
//! and they would vanish. The key is cluster-wide (derived from the cluster
//! secret) so that any node accepts a context any other node handed out.
//!
//! This module does not know where the key comes from.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::dvv::VersionVector;

/// Format version of the encoded context.
const CONTEXT_FORMAT: u8 = 1;
/// Bytes of the BLAKE3 tag kept (128 bits).
const TAG_SIZE_BYTES: usize = 16;
/// Contexts larger than this are refused before decoding (a vector of a few
/// hundred actors fits comfortably).
pub const CONTEXT_SIZE_BYTES_MAX: usize = 16 * 1024;

/// The key that seals contexts; the same on every node of a cluster.
#[derive(Clone)]
pub struct ContextKey([u8; 32]);

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

impl ContextKey {
    /// Derives the key from a cluster secret.
    pub fn derive(cluster_secret: &[u8]) -> ContextKey {
        ContextKey(blake3::derive_key(
            "starling causal context v1",
            cluster_secret,
        ))
    }

    fn tag(&self, bucket: &[u8], key: &[u8], body: &[u8]) -> [u8; TAG_SIZE_BYTES] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        // Length prefixes keep (bucket, key) pairs from colliding.
        hasher.update(&(bucket.len() as u64).to_le_bytes());
        hasher.update(bucket);
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(body);
        let mut out = [0u8; TAG_SIZE_BYTES];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_SIZE_BYTES]);
        out
    }
}

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// Longer than [`CONTEXT_SIZE_BYTES_MAX`].
    #[error("causal context is too large ({0} bytes)")]
    TooLarge(usize),
    /// Not valid base64.
    #[error("causal context is not valid base64")]
    Base64,
    /// Shorter than a version byte and a tag, or an unknown format version.
    #[error("causal context has an unknown format")]
    Format,
    /// The tag does not match: the context was not issued by this cluster for
    /// this bucket and key, or was altered.
    #[error("causal context was not issued for this object or was altered")]
    Forged,
    /// The tag matched but the body did not decode (a bug, or a key leak).
    #[error("causal context body is malformed")]
    Body,
}

#[derive(Serialize, Deserialize)]
struct Body {
    version: VersionVector,
}

/// Encodes `version` as the opaque context of `bucket`/`key`.
pub fn encode(
    key: &ContextKey,
    bucket: &[u8],
    object_key: &[u8],
    version: &VersionVector,
) -> String {
    let body = postcard::to_stdvec(&Body {
        version: version.clone(),
    })
    .expect("encoding a version vector into memory cannot fail");
    let mut bytes = Vec::with_capacity(1 + body.len() + TAG_SIZE_BYTES);
    bytes.push(CONTEXT_FORMAT);
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&key.tag(bucket, object_key, &body));
    STANDARD.encode(bytes)
}

/// Decodes and verifies a context that a client sent for `bucket`/`key`.
pub fn decode(
    key: &ContextKey,
    bucket: &[u8],
    object_key: &[u8],
    text: &str,
) -> Result<VersionVector, ContextError> {
    let text = text.trim();
    if text.len() > CONTEXT_SIZE_BYTES_MAX {
        return Err(ContextError::TooLarge(text.len()));
    }
    let bytes = STANDARD.decode(text).map_err(|_| ContextError::Base64)?;
    if bytes.len() < 1 + TAG_SIZE_BYTES || bytes[0] != CONTEXT_FORMAT {
        return Err(ContextError::Format);
    }
    let (body, tag) = bytes[1..].split_at(bytes.len() - 1 - TAG_SIZE_BYTES);
    let expected = key.tag(bucket, object_key, body);
    // Constant-time comparison: the tag is a secret-derived value.
    if !constant_time_eq(&expected, tag) {
        return Err(ContextError::Forged);
    }
    let decoded: Body = postcard::from_bytes(body).map_err(|_| ContextError::Body)?;
    Ok(decoded.version)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dvv::{ActorId, Dot};
    use proptest::prelude::*;

    fn vv() -> VersionVector {
        let mut v = VersionVector::new();
        v.add(Dot {
            actor: ActorId { node: 7, epoch: 3 },
            counter: 42,
        });
        v
    }

    #[test]
    fn round_trips() {
        let k = ContextKey::derive(b"secret");
        let text = encode(&k, b"b", b"k", &vv());
        assert_eq!(decode(&k, b"b", b"k", &text).unwrap(), vv());
    }

    #[test]
    fn refuses_another_key_another_object_and_tampering() {
        let k = ContextKey::derive(b"secret");
        let text = encode(&k, b"b", b"k", &vv());
        assert_eq!(
            decode(&ContextKey::derive(b"other"), b"b", b"k", &text),
            Err(ContextError::Forged)
        );
        assert_eq!(decode(&k, b"b", b"k2", &text), Err(ContextError::Forged));
        let mut raw = STANDARD.decode(&text).unwrap();
        raw[2] ^= 1;
        assert_eq!(
            decode(&k, b"b", b"k", &STANDARD.encode(raw)),
            Err(ContextError::Forged)
        );
        assert_eq!(
            decode(&k, b"b", b"k", "not base64!"),
            Err(ContextError::Base64)
        );
        assert_eq!(decode(&k, b"b", b"k", ""), Err(ContextError::Format));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in ".{0,200}") {
            let k = ContextKey::derive(b"secret");
            let _ = decode(&k, b"b", b"k", &s);
        }

        #[test]
        fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let k = ContextKey::derive(b"secret");
            prop_assert!(decode(&k, b"b", b"k", &STANDARD.encode(bytes)).is_err());
        }
    }
}
