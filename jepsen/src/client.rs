//! A Riak HTTP client for the workloads, honest about what it knows.
//!
//! Every request is on a fresh connection (no pool), so a request is never
//! sent twice and a connection a killed node left half-open cannot turn a
//! new request into an old one's failure. Transport errors are sorted by
//! what they prove:
//!
//! - **not sent**: the connection could not be made (refused, unreachable,
//!   connect timeout). The request never reached a node: a write that ends
//!   here *failed*.
//! - **indeterminate**: anything after the connection was made (timeouts,
//!   resets). A write that ends here is *info*.
//!
//! The client never retries: a retry would turn one invocation into two
//! writes the history cannot tell apart.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::time::Duration;

use anyhow::{Context, bail};

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The request certainly did not reach the node.
    NotSent(String),
    /// It may have.
    Indeterminate(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(e) => write!(f, "not sent: {e}"),
            CallError::Indeterminate(e) => write!(f, "indeterminate: {e}"),
        }
    }
}

fn classify(err: ureq::Error) -> CallError {
    use ureq::Error;
    use ureq::Timeout;
    match err {
        Error::Timeout(Timeout::Connect | Timeout::Resolve) => {
            CallError::NotSent("connect timeout".into())
        }
        Error::ConnectionFailed | Error::HostNotFound => CallError::NotSent(err.to_string()),
        Error::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            ) =>
        {
            CallError::NotSent(e.to_string())
        }
        other => CallError::Indeterminate(other.to_string()),
    }
}

/// A response: status, causal context, content type and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `X-Riak-Vclock`, if any.
    pub context: Option<String>,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text, for error messages (cut short).
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        text.chars().take(300).collect()
    }

    /// The values of every sibling of a `GET`: one for `200`, each part of
    /// a `multipart/mixed` `300`, none for `404`.
    pub fn sibling_values(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        match self.status {
            200 => Ok(vec![self.body.clone()]),
            404 => Ok(Vec::new()),
            300 => {
                let content_type = self.content_type.as_deref().unwrap_or("");
                Ok(parse_multipart(content_type, &self.body)?
                    .into_iter()
                    .map(|p| p.body)
                    .collect())
            }
            other => bail!("status {other}: {}", self.text()),
        }
    }
}

/// One node's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// The node's name, for the history.
    pub node: String,
}

impl Client {
    /// A client of the node at `base` (`http://ADDR:PORT`) that gives up on
    /// a request after `timeout`.
    pub fn new(base: &str, node: &str, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A 300 is Riak's sibling answer, not a redirect.
            .max_redirects(0)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_connect(Some(Duration::from_millis(1000).min(timeout)))
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            node: node.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response, CallError> {
        let mut response = result.map_err(classify)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let context = header("x-riak-vclock");
        let content_type = header("content-type");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| CallError::Indeterminate(format!("reading the body: {e}")))?;
        Ok(Response {
            status,
            context,
            content_type,
            body,
        })
    }

    /// `GET /buckets/B/keys/K?QUERY` with every sibling asked for.
    pub fn get(&self, bucket: &str, key: &str, query: &str) -> Result<Response, CallError> {
        let url = self.url(&object_path(bucket, key, query));
        Client::finish(
            self.agent
                .get(&url)
                .header("Accept", "multipart/mixed, text/plain;q=0.5, */*;q=0.1")
                .call(),
        )
    }

    /// `PUT /buckets/B/keys/K?QUERY` of a text value, with a context.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        query: &str,
        context: Option<&str>,
        value: &[u8],
    ) -> Result<Response, CallError> {
        let url = self.url(&object_path(bucket, key, query));
        let mut request = self.agent.put(&url).header("Content-Type", "text/plain");
        if let Some(context) = context {
            request = request.header("X-Riak-Vclock", context);
        }
        Client::finish(request.send(value))
    }

    /// `DELETE /buckets/B/keys/K?QUERY` with a context.
    pub fn delete(
        &self,
        bucket: &str,
        key: &str,
        query: &str,
        context: Option<&str>,
    ) -> Result<Response, CallError> {
        let url = self.url(&object_path(bucket, key, query));
        let mut request = self.agent.delete(&url);
        if let Some(context) = context {
            request = request.header("X-Riak-Vclock", context);
        }
        Client::finish(request.call())
    }

    /// `GET` of a JSON resource (`/admin/...`, props, preflists).
    pub fn json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = Client::finish(self.agent.get(&self.url(path)).call())
            .map_err(|e| anyhow::anyhow!("{} GET {path}: {e}", self.node))?;
        if response.status != 200 {
            bail!(
                "{} GET {path}: status {}: {}",
                self.node,
                response.status,
                response.text()
            );
        }
        serde_json::from_slice(&response.body).with_context(|| format!("{} GET {path}", self.node))
    }

    /// `GET` of any path, as it answered.
    pub fn get_path(&self, path: &str) -> Result<Response, CallError> {
        Client::finish(self.agent.get(&self.url(path)).call())
    }

    /// Whether the node answers `/ping`.
    pub fn ping(&self) -> bool {
        Client::finish(self.agent.get(&self.url("/ping")).call()).is_ok_and(|r| r.status == 200)
    }

    /// `PUT /buckets/B/props`.
    pub fn set_props(&self, bucket: &str, props: &serde_json::Value) -> anyhow::Result<()> {
        let url = self.url(&format!("/buckets/{}/props", encode(bucket)));
        let body = serde_json::to_vec(&serde_json::json!({ "props": props }))?;
        let response = Client::finish(
            self.agent
                .put(&url)
                .header("Content-Type", "application/json")
                .send(&body[..]),
        )
        .map_err(|e| anyhow::anyhow!("{} PUT props: {e}", self.node))?;
        if !(200..300).contains(&response.status) {
            bail!(
                "{} PUT props: status {}: {}",
                self.node,
                response.status,
                response.text()
            );
        }
        Ok(())
    }
}

fn object_path(bucket: &str, key: &str, query: &str) -> String {
    let mut path = format!("/buckets/{}/keys/{}", encode(bucket), encode(key));
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// Percent-encodes a path segment (our keys are plain, but be safe).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Header lines, as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// Parses a `multipart/mixed` body (RFC 2046) as Riak and Starling send
/// it: every part preceded by `CRLF--boundary CRLF`, headers, an empty
/// line and the value; the end marked by `CRLF--boundary--`.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> anyhow::Result<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .with_context(|| format!("no boundary in {content_type:?}"))?;
    let delimiter = format!("--{boundary}");
    // A leading CRLF is optional before the first delimiter.
    let mut data: Vec<u8> = Vec::with_capacity(body.len() + 2);
    if !body.starts_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(body);
    let marker = format!("\r\n{delimiter}");
    let chunks = split_bytes(&data, marker.as_bytes());
    let mut parts = Vec::new();
    let mut closed = false;
    // chunks[0] is the preamble.
    for chunk in chunks.into_iter().skip(1) {
        if chunk.starts_with(b"--") {
            closed = true;
            break;
        }
        let chunk = chunk
            .strip_prefix(b"\r\n")
            .context("a multipart delimiter not followed by CRLF")?;
        let (head, value) = if let Some(rest) = chunk.strip_prefix(b"\r\n") {
            (&b""[..], rest)
        } else {
            let at = find(chunk, b"\r\n\r\n").context("a part without an empty line")?;
            (&chunk[..at], &chunk[at + 4..])
        };
        let headers = String::from_utf8_lossy(head)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        parts.push(Part {
            headers,
            body: value.to_vec(),
        });
    }
    anyhow::ensure!(closed, "a multipart body without its closing delimiter");
    Ok(parts)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(data: &'a [u8], marker: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = find(rest, marker) {
        out.push(&rest[..at]);
        rest = &rest[at + marker.len()..];
    }
    out.push(rest);
    out
}

/// A set of elements as the set workloads store it: decimal numbers
/// separated by spaces.
pub fn encode_set(elements: &BTreeSet<u64>) -> String {
    elements
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The elements of a stored value; anything else is an error (a value
/// the workload never wrote).
pub fn decode_set(value: &[u8]) -> anyhow::Result<BTreeSet<u64>> {
    let text = std::str::from_utf8(value).context("a set value that is not UTF-8")?;
    text.split_ascii_whitespace()
        .map(|t| {
            t.parse::<u64>()
                .with_context(|| format!("{t:?} in a set value is not an element"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn multipart_bodies_as_the_server_sends_them_parse() {
        let body = b"\r\n--XyZ\r\nContent-Type: text/plain\r\nEtag: a\r\n\r\n1 2 3\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\n4\r\n--XyZ--\r\n";
        let parts = parse_multipart("multipart/mixed; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, b"1 2 3");
        assert_eq!(parts[0].headers[1], ("etag".to_owned(), "a".to_owned()));
        assert_eq!(parts[1].body, b"4");
    }

    #[test]
    fn multipart_edge_cases() {
        // No leading CRLF, a quoted boundary, a part without headers, an
        // empty value.
        let body = b"--b\r\n\r\n7\r\n--b\r\nX: y\r\n\r\n\r\n--b--";
        let parts = parse_multipart("multipart/mixed; boundary=\"b\"", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, b"7");
        assert_eq!(parts[1].body, b"");
        assert!(parse_multipart("multipart/mixed", body).is_err());
        assert!(parse_multipart("multipart/mixed; boundary=b", b"\r\n--b\r\n\r\n7").is_err());
    }

    #[test]
    fn sets_round_trip_and_garbage_is_refused() {
        let set = BTreeSet::from([3, 1, 20]);
        assert_eq!(encode_set(&set), "1 3 20");
        assert_eq!(decode_set(b"1 3 20").unwrap(), set);
        assert_eq!(decode_set(b"").unwrap(), BTreeSet::new());
        assert!(decode_set(b"1 x").is_err());
    }

    #[test]
    fn a_refused_connection_is_not_sent() {
        // Port 1 on loopback: nothing listens there.
        let client = Client::new("http://127.0.0.1:1", "n0", Duration::from_secs(2));
        match client.get("b", "k", "") {
            Err(CallError::NotSent(_)) => {}
            other => panic!("expected not sent, got {other:?}"),
        }
    }
}
