//! Client-facing errors: an HTTP status, a one-line message and any extra
//! headers, rendered as a `text/plain` body as Riak does.
//!
//! Every refusal in this crate is an [`ApiError`]; [`BackendError`]s convert
//! into it with the status the variant documents. Internal errors are logged
//! here, once, where they become a response.

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use crate::backend::BackendError;

/// A request that cannot be served, as the client will see it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// Status code of the response.
    pub status: StatusCode,
    /// Human-readable explanation, sent as the body.
    pub message: String,
    /// Extra response headers (`Allow`, `Retry-After`, `X-Riak-Vclock`...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// `413 Content Too Large`.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// `412 Precondition Failed`.
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PRECONDITION_FAILED, message)
    }

    /// `415 Unsupported Media Type`.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    /// Adds a response header; values that are not valid header text are
    /// dropped (they come from our own formatting, never from a client).
    pub fn with_header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }
}

impl From<BackendError> for ApiError {
    fn from(err: BackendError) -> ApiError {
        let status = match &err {
            BackendError::BadRequest(_) | BackendError::InvalidQuorum(_) => StatusCode::BAD_REQUEST,
            BackendError::QuorumNotMet { .. }
            | BackendError::Overloaded
            | BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            BackendError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BackendError::TooManySiblings { .. } => StatusCode::CONFLICT,
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let BackendError::Internal(message) = &err {
            tracing::error!(%message, "backend failed a request");
        }
        let api = ApiError::new(status, err.to_string());
        match err {
            // Tell well-behaved clients when to come back instead of having
            // them retry at once into the same overload.
            BackendError::Overloaded => api.with_header(http::header::RETRY_AFTER, "1"),
            _ => api,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backend_errors_map_to_documented_statuses() {
        let cases = [
            (BackendError::BadRequest("x".into()), 400),
            (
                BackendError::InvalidQuorum(storage::PropsError::BadNVal(0)),
                400,
            ),
            (
                BackendError::QuorumNotMet {
                    needed: 2,
                    replied: 1,
                    what: "w".into(),
                },
                503,
            ),
            (BackendError::Timeout, 504),
            (BackendError::TooLarge("big".into()), 413),
            (
                BackendError::TooManySiblings {
                    count: 101,
                    max: 100,
                },
                409,
            ),
            (BackendError::Overloaded, 503),
            (BackendError::Unavailable("down".into()), 503),
            (BackendError::Internal("bug".into()), 500),
        ];
        for (err, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status, "{}", api.message);
            assert!(!api.message.is_empty());
        }
        let overloaded = ApiError::from(BackendError::Overloaded);
        assert_eq!(
            overloaded.headers,
            vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))]
        );
    }
}
