//! Conditional requests: `If-Match`, `If-None-Match`, `If-Modified-Since`
//! and `If-Unmodified-Since`.
//!
//! Reads answer `304 Not Modified` when the client's copy is current. Writes
//! and deletes answer `412 Precondition Failed` when a condition fails. As in
//! Riak, write conditions are checked against a fresh read made just before
//! the write, so the check is **not atomic** with the write: a write that
//! lands in between is not lost (it stays as a sibling, because the write
//! carries the context of the read), but the condition did not see it.
//!
//! The validators of an object: with one live sibling, its vtag and
//! last-modified time; with several, an ETag derived from all their vtags and
//! the latest last-modified time (Riak derives it from the vector clock).
//! Dates have one-second resolution, so times are compared in whole seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};

use crate::error::ApiError;

/// What conditions are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The entity tag, unquoted.
    pub etag: String,
    /// Last modification, microseconds since the Unix epoch.
    pub last_modified_us: u64,
}

/// Whether the request carries any condition.
pub fn is_conditional(headers: &HeaderMap) -> bool {
    [
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
}

/// For `GET`/`HEAD`: whether the client's copy is current (`304`).
pub fn not_modified(headers: &HeaderMap, current: &Validators) -> bool {
    if let Some(tags) = header_text(headers, &IF_NONE_MATCH) {
        // If-None-Match takes precedence over If-Modified-Since (RFC 9110).
        return etag_listed(tags, &current.etag);
    }
    match header_date(headers, &IF_MODIFIED_SINCE) {
        Some(since) => seconds(current.last_modified_us) <= since,
        None => false,
    }
}

/// For writes: checks every condition against the current object (`None`:
/// the key has no live value).
pub fn check_write(headers: &HeaderMap, current: Option<&Validators>) -> Result<(), ApiError> {
    if let Some(tags) = header_text(headers, &IF_MATCH) {
        let ok = current.is_some_and(|c| tags.trim() == "*" || etag_listed(tags, &c.etag));
        if !ok {
            return Err(ApiError::precondition_failed(
                "If-Match failed: the object does not exist or its ETag differs",
            ));
        }
    }
    if let (Some(since), Some(c)) = (header_date(headers, &IF_UNMODIFIED_SINCE), current)
        && seconds(c.last_modified_us) > since
    {
        return Err(ApiError::precondition_failed(
            "If-Unmodified-Since failed: the object was modified after that date",
        ));
    }
    if let (Some(tags), Some(c)) = (header_text(headers, &IF_NONE_MATCH), current)
        && etag_listed(tags, &c.etag)
    {
        return Err(ApiError::precondition_failed(
            "If-None-Match failed: the object exists with a matching ETag",
        ));
    }
    if let (Some(since), Some(c)) = (header_date(headers, &IF_MODIFIED_SINCE), current)
        && seconds(c.last_modified_us) <= since
    {
        return Err(ApiError::precondition_failed(
            "If-Modified-Since failed: the object was not modified after that date",
        ));
    }
    Ok(())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &http::header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A date header in whole seconds since the epoch; an unparseable date is
/// ignored, as RFC 9110 requires.
fn header_date(headers: &HeaderMap, name: &http::header::HeaderName) -> Option<u64> {
    let date = httpdate::parse_http_date(header_text(headers, name)?).ok()?;
    Some(date.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn seconds(us: u64) -> u64 {
    us / 1_000_000
}

/// Whether `etag` is in the comma-separated list `tags` (or `tags` is `*`),
/// using weak comparison.
fn etag_listed(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).trim_matches('"') == etag)
}

/// Formats a last-modified time as an HTTP date.
pub fn http_date(last_modified_us: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_micros(last_modified_us))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(http::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(
                n.clone(),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    const NOW_US: u64 = 1_700_000_000_000_000;

    fn current() -> Validators {
        Validators {
            etag: "abc".into(),
            last_modified_us: NOW_US,
        }
    }

    #[test]
    fn reads_are_not_modified_when_the_copy_is_current() {
        assert!(not_modified(
            &headers(&[(IF_NONE_MATCH, "\"abc\"")]),
            &current()
        ));
        assert!(!not_modified(
            &headers(&[(IF_NONE_MATCH, "\"xyz\"")]),
            &current()
        ));
        let later = http_date(NOW_US + 5_000_000);
        let earlier = http_date(NOW_US - 5_000_000);
        assert!(not_modified(
            &headers(&[(IF_MODIFIED_SINCE, &later)]),
            &current()
        ));
        assert!(!not_modified(
            &headers(&[(IF_MODIFIED_SINCE, &earlier)]),
            &current()
        ));
    }

    #[test]
    fn write_conditions_fail_with_412() {
        let c = current();
        assert!(check_write(&headers(&[(IF_NONE_MATCH, "*")]), None).is_ok());
        assert_eq!(
            check_write(&headers(&[(IF_NONE_MATCH, "*")]), Some(&c))
                .unwrap_err()
                .status,
            412
        );
        assert!(check_write(&headers(&[(IF_MATCH, "\"abc\"")]), Some(&c)).is_ok());
        assert_eq!(
            check_write(&headers(&[(IF_MATCH, "\"no\"")]), Some(&c))
                .unwrap_err()
                .status,
            412
        );
        assert_eq!(
            check_write(&headers(&[(IF_MATCH, "*")]), None)
                .unwrap_err()
                .status,
            412
        );
        let earlier = http_date(NOW_US - 5_000_000);
        assert!(check_write(&headers(&[(IF_UNMODIFIED_SINCE, &earlier)]), Some(&c)).is_err());
        assert!(check_write(&headers(&[(IF_MODIFIED_SINCE, &earlier)]), Some(&c)).is_ok());
        assert!(check_write(&headers(&[(IF_MODIFIED_SINCE, "garbage")]), Some(&c)).is_ok());
    }
}
