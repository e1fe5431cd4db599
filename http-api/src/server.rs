//! The HTTP/1.1 server: accepting connections, routing requests to
//! handlers, bounding bodies, and draining on shutdown.
//!
//! Invariants: every request gets a response (a handler error becomes a
//! `4xx`/`5xx` with a message; a handler panic becomes a `500`, not a dropped
//! connection); a body above the limit is refused with `413` before it is
//! read in full; at most `connections_max` connections are served at once
//! (further clients wait in the listen backlog).
//!
//! Shutdown: when the shutdown future completes the listener is closed, idle
//! keep-alive connections are closed, and in-flight requests finish, for at
//! most `drain_timeout`; connections still busy after that are cut.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

use crate::backend::{AdminRequest, Backend};
use crate::error::ApiError;
use crate::object::{self, Target};
use crate::query::Query;
use crate::response::{self, ResponseBody};
use crate::routes::{self, Resource};
use crate::{ServeConfig, listing, props, resources};

/// Why the server stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener failed with an error that retrying cannot fix.
    #[error("accepting connections failed: {0}")]
    Accept(#[source] std::io::Error),
}

/// Counters shown in `/stats`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests received.
    pub requests_total: AtomicU64,
    /// Requests being handled now.
    pub requests_in_flight: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Responses by status class.
    pub responses_2xx: AtomicU64,
    /// See `responses_2xx`.
    pub responses_3xx: AtomicU64,
    /// See `responses_2xx`.
    pub responses_4xx: AtomicU64,
    /// See `responses_2xx`.
    pub responses_5xx: AtomicU64,
}

/// What every request handler shares.
#[derive(Debug)]
pub struct State<B> {
    /// The node.
    pub backend: Arc<B>,
    /// Limits and timeouts.
    pub config: ServeConfig,
    /// Counters.
    pub metrics: Metrics,
    /// When the server started.
    pub started: Instant,
}

/// Serves the Riak-compatible HTTP API on `listener` until `shutdown`
/// completes, then drains (see the module documentation).
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let drain_timeout = config.drain_timeout;
    let connections = Arc::new(Semaphore::new(config.connections_max.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // Riak clients were written against mochiweb, which sends
        // `X-Riak-Vclock`; some compare header names case-sensitively.
        .title_case_headers(true)
        // hyper refuses a smaller buffer; a head above it gets `431`.
        .max_buf_size(config.header_size_bytes_max.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let state = Arc::new(State {
        backend,
        config,
        metrics: Metrics::default(),
        started: Instant::now(),
    });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    info!(addr = ?listener.local_addr().ok(), "HTTP API listening");
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_transient(&err) => {
                    // Out of file descriptors or a connection reset while
                    // queued: back off instead of spinning, keep serving.
                    warn!(%err, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(err) => return Err(ServeError::Accept(err)),
            },
        };
        let _ = stream.set_nodelay(true);
        let conn_state = state.clone();
        let service = service_fn(move |req| {
            let state = conn_state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let state = state.clone();
        state
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%err, %peer, "connection ended with an error");
            }
            state
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    info!("HTTP API stopped accepting; draining in-flight requests");
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => info!("HTTP API drained"),
        Err(_) => warn!(
            open = state.metrics.connections_open.load(Ordering::Relaxed),
            ?drain_timeout,
            "drain timeout passed; cutting the remaining connections"
        ),
    }
    Ok(())
}

fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || matches!(err.raw_os_error(), Some(23 | 24 | 105))
}

/// Answers one request; never fails and never panics outward.
pub async fn handle<B: Backend>(
    state: &State<B>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let m = &state.metrics;
    m.requests_total.fetch_add(1, Ordering::Relaxed);
    m.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = match AssertUnwindSafe(dispatch(state, req)).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => response::error(err),
        Err(_) => {
            error!(%method, %path, "request handler panicked");
            response::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request handler failed",
            )
        }
    };
    m.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    let class = match response.status().as_u16() {
        200..=299 => &m.responses_2xx,
        300..=399 => &m.responses_3xx,
        400..=499 => &m.responses_4xx,
        _ => &m.responses_5xx,
    };
    class.fetch_add(1, Ordering::Relaxed);
    debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

async fn dispatch<B: Backend>(
    state: &State<B>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let Some(found) = routes::find(path)? else {
        return Err(ApiError::not_found(format!("no such resource: {path}")));
    };
    let method = parts.method.as_str();
    if !found.spec.methods.contains(&method) {
        let allow = found.spec.methods.join(", ");
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed here; allowed: {allow}"),
        )
        .with_header(ALLOW, &allow));
    }
    let backend = &*state.backend;
    let config = &state.config;
    let headers = &parts.headers;
    if found.spec.resource == Resource::Admin {
        let body = read_body(body, headers, config.body_size_bytes_max).await?;
        let request = AdminRequest {
            method: parts.method.clone(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            content_type: header_string(headers, CONTENT_TYPE),
            accept: header_string(headers, http::header::ACCEPT),
            body,
        };
        let answer = backend.admin(request).await;
        return Ok(response::full(
            answer.status,
            &answer.content_type,
            answer.body,
        ));
    }
    let query = Query::parse(parts.uri.query())?;
    let is_read = parts.method == Method::GET || parts.method == Method::HEAD;
    let bucket = found.bucket.clone().unwrap_or_default();
    let legacy = found.spec.legacy;
    let target = || Target {
        bucket: bucket.clone(),
        key: found.key.clone().unwrap_or_default(),
        legacy,
    };
    match found.spec.resource {
        Resource::Root => Ok(resources::root(headers)),
        Resource::Ping => Ok(resources::ping()),
        Resource::Stats => Ok(resources::stats(state).await),
        Resource::Buckets => listing::buckets(backend, &query).await,
        Resource::Props | Resource::LegacyBucket => {
            object::check_bucket(config, &bucket)?;
            match parts.method {
                Method::PUT => {
                    props::require_json(headers)?;
                    let body = read_body(body, headers, config.body_size_bytes_max).await?;
                    props::put(backend, &bucket, &body).await
                }
                Method::DELETE => props::reset(backend, &bucket).await,
                Method::POST => create(state, target(), &query, headers, body).await,
                _ if found.spec.resource == Resource::LegacyBucket => {
                    legacy_bucket(backend, &bucket, &query).await
                }
                _ => props::get(backend, &bucket).await,
            }
        }
        Resource::Keys if is_read => {
            object::check_bucket(config, &bucket)?;
            listing::keys(backend, &bucket, &query).await
        }
        Resource::Keys => create(state, target(), &query, headers, body).await,
        Resource::Object => match parts.method {
            Method::GET | Method::HEAD => {
                object::get(backend, config, &target(), &query, headers).await
            }
            Method::DELETE => object::delete(backend, config, &target(), &query, headers).await,
            _ => {
                let prepared =
                    object::prepare_put(backend, config, target(), &query, headers, false).await?;
                let value = read_body(body, headers, config.body_size_bytes_max).await?;
                object::put(backend, prepared, value, headers).await
            }
        },
        Resource::Preflist => {
            let target = target();
            object::check_target(config, &target)?;
            let entries = backend
                .preflist(
                    Bytes::from(target.bucket.into_bytes()),
                    Bytes::from(target.key.into_bytes()),
                )
                .await?;
            Ok(response::json(
                StatusCode::OK,
                &json!({ "preflist": entries }),
            ))
        }
        Resource::Admin => Err(ApiError::not_found("no such resource")),
    }
}

/// `POST /buckets/{b}/keys`: store under a server-chosen key.
async fn create<B: Backend>(
    state: &State<B>,
    target: Target,
    query: &Query,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let backend = &*state.backend;
    let prepared =
        object::prepare_put(backend, &state.config, target, query, headers, true).await?;
    let value = read_body(body, headers, state.config.body_size_bytes_max).await?;
    object::put(backend, prepared, value, headers).await
}

/// Legacy `GET /riak/{b}`: `props` unless `props=false`, plus keys with
/// `keys=true|stream` (default: no keys, because listing is expensive).
async fn legacy_bucket<B: Backend>(
    backend: &B,
    bucket: &str,
    query: &Query,
) -> Result<Response<ResponseBody>, ApiError> {
    let head = if query.value("props") == Some("false") {
        serde_json::Map::new()
    } else {
        props::legacy_fields(backend, bucket).await?
    };
    match query.value("keys") {
        None | Some("false") => Ok(response::json(
            StatusCode::OK,
            &serde_json::Value::Object(head),
        )),
        _ => {
            let mode = listing::mode(query, "keys")?;
            let names = backend
                .list_keys(Bytes::copy_from_slice(bucket.as_bytes()))
                .await?;
            listing::send(names, "keys", mode, head).await
        }
    }
}

fn header_string(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads a request body of at most `size_bytes_max` bytes. A declared
/// length above the limit is refused before reading anything; a chunked body
/// is refused as soon as it passes the limit.
async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    size_bytes_max: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::too_large(format!(
            "the request body is larger than the limit of {size_bytes_max} bytes"
        ))
    };
    if declared.is_some_and(|len| len > size_bytes_max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, size_bytes_max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(err) => Err(ApiError::bad_request(format!(
            "the request body could not be read: {err}"
        ))),
    }
}
