//! Bucket and key listings: `GET /buckets?buckets=true|stream` and
//! `GET /buckets/{b}/keys?keys=true|stream`.
//!
//! `true` collects the whole list into one `{"buckets":[...]}` /
//! `{"keys":[...]}` document; `stream` sends one such document per chunk the
//! backend produces, as a chunked body, so memory stays bounded by the
//! backend's chunk size (an empty listing sends one empty document). A backend error in the middle of a stream cuts the
//! response short (the chunked body never terminates properly), so a client
//! cannot mistake a partial list for a complete one. Names that are not UTF-8
//! (impossible through this API, which refuses them) are shown lossily.
//!
//! Listing walks every key of the node: it is an operator's tool, as in Riak.

use bytes::Bytes;
use futures_util::stream;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Map, Value, json};

use crate::backend::{Backend, KeyStream};
use crate::error::ApiError;
use crate::query::Query;
use crate::response::{self, BoxError, ResponseBody};

/// How a listing is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One document.
    Collect,
    /// One document per chunk.
    Stream,
}

/// Reads a `true|stream` listing parameter; anything else is a `400`.
pub fn mode(query: &Query, name: &str) -> Result<Mode, ApiError> {
    match query.value(name) {
        Some("true") => Ok(Mode::Collect),
        Some("stream") => Ok(Mode::Stream),
        _ => Err(ApiError::bad_request(format!(
            "listing requires the query parameter {name}=true or {name}=stream"
        ))),
    }
}

/// `GET /buckets`.
pub async fn buckets<B: Backend>(
    backend: &B,
    query: &Query,
) -> Result<Response<ResponseBody>, ApiError> {
    let mode = mode(query, "buckets")?;
    let names = backend.list_buckets().await?;
    send(names, "buckets", mode, Map::new()).await
}

/// `GET /buckets/{b}/keys`.
pub async fn keys<B: Backend>(
    backend: &B,
    bucket: &str,
    query: &Query,
) -> Result<Response<ResponseBody>, ApiError> {
    let mode = mode(query, "keys")?;
    let names = backend
        .list_keys(Bytes::copy_from_slice(bucket.as_bytes()))
        .await?;
    send(names, "keys", mode, Map::new()).await
}

/// Sends a listing; `head` holds extra members (the legacy `props`) that
/// go into the single document, or into a first document when streaming.
pub async fn send(
    mut names: KeyStream,
    field: &'static str,
    mode: Mode,
    head: Map<String, Value>,
) -> Result<Response<ResponseBody>, ApiError> {
    match mode {
        Mode::Collect => {
            let mut all = Vec::new();
            while let Some(chunk) = names.recv().await {
                all.extend(
                    chunk?
                        .iter()
                        .map(|n| Value::from(String::from_utf8_lossy(n))),
                );
            }
            let mut document = head;
            document.insert(field.to_owned(), Value::Array(all));
            Ok(response::json(StatusCode::OK, &Value::Object(document)))
        }
        Mode::Stream => {
            let first = (!head.is_empty()).then(|| Bytes::from(Value::Object(head).to_string()));
            // An empty listing still sends one (empty) document, so a
            // client always gets at least one JSON document.
            let state = (Some(names), first.is_some());
            let chunks = stream::unfold(state, move |(names, sent)| async move {
                let mut names = names?;
                let Some(item) = names.recv().await else {
                    if sent {
                        return None;
                    }
                    let empty = json!({ field: Vec::<Value>::new() }).to_string();
                    return Some((Ok(Frame::data(Bytes::from(empty))), (None, true)));
                };
                let frame = match item {
                    Ok(chunk) => {
                        let list: Vec<Value> = chunk
                            .iter()
                            .map(|n| Value::from(String::from_utf8_lossy(n)))
                            .collect();
                        Ok(Frame::data(Bytes::from(json!({ field: list }).to_string())))
                    }
                    Err(err) => {
                        tracing::warn!(%err, "listing failed mid-stream; cutting the response short");
                        Err(BoxError::from(err))
                    }
                };
                Some((frame, (Some(names), true)))
            });
            let head = stream::iter(first.map(|b| Ok::<_, BoxError>(Frame::data(b))));
            let body = StreamBody::new(futures_util::StreamExt::chain(head, chunks)).boxed_unsync();
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
    }
}
