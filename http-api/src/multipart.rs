//! `multipart/mixed` encoding (RFC 2046) for the siblings of a `300`
//! response. The server only emits multipart bodies; it never parses them.
//!
//! Layout, as Riak sends it: each part is preceded by `CRLF--boundary CRLF`,
//! its headers, an empty line and the raw value; the body ends with
//! `CRLF--boundary--CRLF`. The boundary is random and checked against every
//! part, so a value can never contain the delimiter.

use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;

/// One part: header lines and the raw body.
#[derive(Debug)]
pub struct Part<'a> {
    /// `(name, value)` header lines, in order.
    pub headers: Vec<(String, String)>,
    /// The part's body, sent as is.
    pub body: &'a [u8],
}

/// Attempts at drawing a boundary that no part contains; with 131 random
/// bits per boundary a second attempt is already astronomically unlikely.
const BOUNDARY_ATTEMPTS_MAX: usize = 16;

/// Encodes `parts`; returns the boundary and the body.
pub fn encode(parts: &[Part<'_>]) -> (String, Bytes) {
    let mut boundary = random_boundary();
    for _ in 0..BOUNDARY_ATTEMPTS_MAX {
        let delimiter = format!("--{boundary}");
        if !parts.iter().any(|p| contains(p.body, delimiter.as_bytes())) {
            break;
        }
        boundary = random_boundary();
    }
    let size_bytes: usize = parts.iter().map(|p| p.body.len() + 256).sum::<usize>() + 64;
    let mut out = BytesMut::with_capacity(size_bytes);
    for part in parts {
        out.put_slice(b"\r\n--");
        out.put_slice(boundary.as_bytes());
        out.put_slice(b"\r\n");
        for (name, value) in &part.headers {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.put_slice(part.body);
    }
    out.put_slice(b"\r\n--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
    (boundary, out.freeze())
}

fn random_boundary() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parts_are_framed_by_the_boundary() {
        let parts = [
            Part {
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: b"one",
            },
            Part {
                headers: vec![("Etag".into(), "x".into())],
                body: b"two\r\n",
            },
        ];
        let (boundary, body) = encode(&parts);
        let text = String::from_utf8(body.to_vec()).unwrap_or_default();
        assert_eq!(
            text,
            format!(
                "\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\none\
                 \r\n--{boundary}\r\nEtag: x\r\n\r\ntwo\r\n\r\n--{boundary}--\r\n"
            )
        );
        assert_eq!(boundary.len(), 22);
    }
}
