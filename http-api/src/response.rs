//! Building responses: the body type, plain-text and JSON answers, error
//! rendering, and `Accept` negotiation.
//!
//! Every error body is `text/plain; charset=utf-8` ending in a newline, as
//! Riak's are. Negotiation follows webmachine's rule: the offered type with
//! the highest `q` wins and ties go to the resource's preferred order.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::ApiError;

/// Error type of a streamed response body: a failed listing cuts the
/// response short.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response this crate sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The content type of every message body.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A response with a complete body.
pub fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// A response without a body (`204`, `304`).
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// A plain-text message.
pub fn text(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut body = message.to_owned();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    full(status, TEXT_PLAIN, body)
}

/// A JSON document.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    full(status, "application/json", value.to_string())
}

/// Renders an error with its message and headers.
pub fn error(err: ApiError) -> Response<ResponseBody> {
    let mut response = text(err.status, &err.message);
    for (name, value) in err.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Chooses among `offered` media types (in the resource's order of
/// preference) for the `Accept` header. A missing or empty header accepts
/// anything. `None`: nothing offered is acceptable.
pub fn negotiate<'a>(accept: Option<&str>, offered: &[&'a str]) -> Option<&'a str> {
    let accept = accept
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("*/*");
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((media, q))
        })
        .collect();
    let mut best: Option<(&'a str, f32)> = None;
    for &candidate in offered {
        let (kind, _) = candidate.split_once('/').unwrap_or((candidate, ""));
        // The most specific matching range decides the quality.
        let q = ranges
            .iter()
            .filter_map(|(media, q)| {
                let specificity = if media == candidate {
                    3
                } else if media.strip_suffix("/*") == Some(kind) {
                    2
                } else if media == "*/*" || media == "*" {
                    1
                } else {
                    return None;
                };
                Some((specificity, *q))
            })
            .max_by_key(|(specificity, _)| *specificity)
            .map(|(_, q)| q);
        if let Some(q) = q.filter(|q| *q > 0.0)
            && best.is_none_or(|(_, b)| q > b)
        {
            best = Some((candidate, q));
        }
    }
    best.map(|(media, _)| media)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn negotiation_follows_q_then_preference() {
        let offered = ["text/plain", "multipart/mixed"];
        assert_eq!(negotiate(None, &offered), Some("text/plain"));
        assert_eq!(negotiate(Some("*/*"), &offered), Some("text/plain"));
        assert_eq!(
            negotiate(Some("multipart/mixed"), &offered),
            Some("multipart/mixed")
        );
        assert_eq!(
            negotiate(Some("multipart/mixed, */*;q=0.5"), &offered),
            Some("multipart/mixed")
        );
        assert_eq!(
            negotiate(Some("text/*;q=0.1, multipart/*"), &offered),
            Some("multipart/mixed")
        );
        assert_eq!(negotiate(Some("application/json"), &offered), None);
        assert_eq!(negotiate(Some("text/plain;q=0"), &["text/plain"]), None);
    }
}
