//! `multipart/mixed` (RFC 2046) for the siblings of a `300` response:
//! [`encode`] for the server, [`decode`] for clients (the test suites, the
//! partition harness, any Rust client reading siblings).
//!
//! Layout, as Riak sends it: each part is preceded by `CRLF--boundary CRLF`,
//! its headers, an empty line and the raw value; the body ends with
//! `CRLF--boundary--CRLF`. The boundary is random and checked against every
//! part, so a value can never contain the delimiter: whatever bytes clients
//! stored, a reader sees exactly the siblings that were sent (the `multipart`
//! fuzz target checks that `decode(encode(parts))` gives the parts back).
//! Header lines whose name or value could break the framing (CR, LF, a colon
//! in the name) are left out, as the single-value response leaves out header
//! values that are not valid header text.
//!
//! [`decode`] is strict and bounded: it refuses a missing or bad boundary, a
//! part without the blank line after its headers, a header line without a
//! colon, more than [`PARTS_MAX`] parts or [`PART_HEADERS_MAX`] headers per
//! part, and a body without its closing delimiter. It never panics.

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

/// Whether a header line can go into a part without breaking its framing:
/// the name is an HTTP token (RFC 9110) and the value has no CR or LF.
pub fn is_framable_header(name: &str, value: &str) -> bool {
    const TOKEN_SYMBOLS: &[u8] = b"!#$%&'*+-.^_`|~";
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TOKEN_SYMBOLS.contains(&b))
        && !value.bytes().any(|b| matches!(b, b'\r' | b'\n'))
}

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
            if !is_framable_header(name, value) {
                continue;
            }
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

/// Most parts [`decode`] accepts: more than any object's sibling limit.
pub const PARTS_MAX: usize = 1024;
/// Most header lines per part [`decode`] accepts.
pub const PART_HEADERS_MAX: usize = 256;
/// Longest boundary (RFC 2046).
pub const BOUNDARY_SIZE_BYTES_MAX: usize = 70;

/// One decoded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPart {
    /// `(name, value)` header lines in order, as sent (names not
    /// lower-cased; values trimmed of surrounding spaces).
    pub headers: Vec<(String, String)>,
    /// The part's body.
    pub body: Vec<u8>,
}

impl OwnedPart {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a multipart body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    /// The content type has no usable `boundary` parameter.
    #[error("multipart content type without a valid boundary parameter")]
    Boundary,
    /// The body does not start with the first delimiter.
    #[error("multipart body does not start with its boundary")]
    NoFirstDelimiter,
    /// A delimiter line is followed by something other than CRLF or `--`.
    #[error("malformed delimiter line")]
    Delimiter,
    /// A part's headers are not followed by an empty line.
    #[error("part headers are not terminated by an empty line")]
    Headers,
    /// A header line is not `name: value` in UTF-8.
    #[error("malformed part header line")]
    HeaderLine,
    /// The body ends before the closing delimiter.
    #[error("multipart body without its closing delimiter")]
    Unterminated,
    /// More parts or headers than the limits allow.
    #[error("multipart body exceeds the limit of {PARTS_MAX} parts or {PART_HEADERS_MAX} headers")]
    TooMany,
}

/// The `boundary` parameter of a `multipart/...` content type.
pub fn boundary_of(content_type: &str) -> Result<String, MultipartError> {
    let mime: mime::Mime = content_type.parse().map_err(|_| MultipartError::Boundary)?;
    if mime.type_() != mime::MULTIPART {
        return Err(MultipartError::Boundary);
    }
    let boundary = mime
        .get_param(mime::BOUNDARY)
        .ok_or(MultipartError::Boundary)?
        .as_str()
        .to_owned();
    if boundary.is_empty()
        || boundary.len() > BOUNDARY_SIZE_BYTES_MAX
        || boundary.ends_with(' ')
        || !boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b))
    {
        return Err(MultipartError::Boundary);
    }
    Ok(boundary)
}

/// Decodes a multipart body sent with `content_type` (see the module
/// documentation for what is refused). A preamble before the first
/// delimiter and an epilogue after the last are ignored, as RFC 2046 says.
pub fn decode(content_type: &str, body: &[u8]) -> Result<Vec<OwnedPart>, MultipartError> {
    let boundary = boundary_of(content_type)?;
    let dash_boundary = format!("--{boundary}");
    let delimiter = format!("\r\n{dash_boundary}");
    // The first delimiter may open the body without a CRLF before it.
    let mut rest = if body.starts_with(dash_boundary.as_bytes()) {
        &body[dash_boundary.len()..]
    } else {
        let at = find(body, delimiter.as_bytes()).ok_or(MultipartError::NoFirstDelimiter)?;
        &body[at + delimiter.len()..]
    };
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` closes, otherwise optional linear white
        // space and CRLF open a part.
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let line_end = find(rest, b"\r\n").ok_or(MultipartError::Unterminated)?;
        if !rest[..line_end].iter().all(|b| matches!(b, b' ' | b'\t')) {
            return Err(MultipartError::Delimiter);
        }
        rest = &rest[line_end + 2..];
        if parts.len() == PARTS_MAX {
            return Err(MultipartError::TooMany);
        }
        let (headers, after) = part_headers(rest)?;
        let end = find(after, delimiter.as_bytes()).ok_or(MultipartError::Unterminated)?;
        parts.push(OwnedPart {
            headers,
            body: after[..end].to_vec(),
        });
        rest = &after[end + delimiter.len()..];
    }
}

/// Parses header lines up to the empty line; returns them and what follows.
#[allow(clippy::type_complexity)]
fn part_headers(mut rest: &[u8]) -> Result<(Vec<(String, String)>, &[u8]), MultipartError> {
    let mut headers = Vec::new();
    loop {
        let end = find(rest, b"\r\n").ok_or(MultipartError::Headers)?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            return Ok((headers, rest));
        }
        if headers.len() == PART_HEADERS_MAX {
            return Err(MultipartError::TooMany);
        }
        let line = std::str::from_utf8(line).map_err(|_| MultipartError::HeaderLine)?;
        let (name, value) = line.split_once(':').ok_or(MultipartError::HeaderLine)?;
        if name.is_empty() || name.trim() != name {
            return Err(MultipartError::HeaderLine);
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
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
        let decoded = decode(&format!("multipart/mixed; boundary={boundary}"), &body).unwrap();
        assert_eq!(
            decoded,
            vec![
                OwnedPart {
                    headers: vec![("Content-Type".into(), "text/plain".into())],
                    body: b"one".to_vec(),
                },
                OwnedPart {
                    headers: vec![("Etag".into(), "x".into())],
                    body: b"two\r\n".to_vec(),
                },
            ]
        );
    }

    #[test]
    fn header_lines_that_would_break_framing_are_left_out() {
        let parts = [Part {
            headers: vec![
                ("X-Riak-Meta-a".into(), "ok".into()),
                ("X-Riak-Meta-b".into(), "bad\r\n\r\ninjected".into()),
                ("Bad:Name".into(), "v".into()),
            ],
            body: b"v",
        }];
        let (boundary, body) = encode(&parts);
        let decoded = decode(&format!("multipart/mixed; boundary={boundary}"), &body).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(
            decoded[0].headers,
            vec![("X-Riak-Meta-a".into(), "ok".into())]
        );
        assert_eq!(decoded[0].body, b"v");
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let ct = "multipart/mixed; boundary=XyZ";
        for (body, err) in [
            (&b"no delimiter"[..], MultipartError::NoFirstDelimiter),
            (b"--XyZ\r\nA: b\r\n\r\nbody", MultipartError::Unterminated),
            (
                b"--XyZ\r\nno colon\r\n\r\nx\r\n--XyZ--",
                MultipartError::HeaderLine,
            ),
            (b"--XyZ junk\r\n\r\nx\r\n--XyZ--", MultipartError::Delimiter),
            (b"--XyZ\r\nA: b", MultipartError::Headers),
        ] {
            assert_eq!(
                decode(ct, body),
                Err(err),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(decode("text/plain", b""), Err(MultipartError::Boundary));
        assert_eq!(
            decode("multipart/mixed", b""),
            Err(MultipartError::Boundary)
        );
        assert_eq!(
            decode(ct, b"preamble\r\n--XyZ\r\n\r\nv\r\n--XyZ--\r\nepilogue").unwrap(),
            vec![OwnedPart {
                headers: vec![],
                body: b"v".to_vec()
            }]
        );
    }
}
