//! The HTTP/1.1 server: accepting connections (optionally over TLS),
//! enforcing the limits, authenticating, routing requests to handlers, and
//! draining on shutdown.
//!
//! Invariants: every request gets a response (a handler error becomes a
//! `4xx`/`5xx` with a message; a handler panic becomes a `500`, not a dropped
//! connection); a body above the limit is refused with `413` before it is
//! read in full; overload is answered at once, never queued: a connection
//! beyond `connections_max` gets a `503` and is closed (over TLS it is
//! closed without an answer, since a handshake is what overload cannot
//! afford), a request beyond `requests_in_flight_max` or one whose body does
//! not fit the body budget gets `503` with `Retry-After` (see
//! [`crate::limits`]). A request refused before its body was read still has
//! its body read (within the same limits) before the answer, so that its
//! connection can carry the next request; when that cannot be done the
//! answer says `Connection: close`.
//!
//! Request ids: every response of [`handle`], errors and overload
//! included, carries the request's id in `X-Request-Id` (see
//! [`crate::request_id`]). Answers written before there is a request to
//! give an id to do not: the canned `503` to a connection beyond the limit,
//! and hyper's own answers to a head it cannot parse (`400`, `431`).
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

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::auth;
use crate::backend::{AdminRequest, Backend};
use crate::error::ApiError;
use crate::limits::{BodyBudget, Reservation, StallGuard};
use crate::object::{self, Target};
use crate::query::Query;
use crate::request_id::{self, RequestId};
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
    /// Requests refused with `503` because every request slot or the body
    /// budget was taken.
    pub requests_overloaded_total: AtomicU64,
    /// Requests refused with `401`, `403` or `426`.
    pub requests_unauthorized_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections refused because `connections_max` were open.
    pub connections_refused_total: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures_total: AtomicU64,
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
    /// Request slots (`requests_in_flight_max`).
    pub requests: Semaphore,
    /// Bytes of request bodies held in memory (`body_buffer_bytes_max`).
    pub body_budget: BodyBudget,
}

/// At most this many refused connections are being answered at once; past
/// it, a refused connection is closed without an answer.
const REFUSALS_MAX: usize = 256;
/// How long a refused connection is given to take its `503`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The answer to a connection beyond `connections_max`.
const OVERLOADED_CONNECTION: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\n\
Content-Length: 45\r\n\r\ntoo many connections to this node; retry later\n";

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
    let refusals = Arc::new(Semaphore::new(REFUSALS_MAX));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // Riak clients were written against mochiweb, which sends
        // `X-Riak-Vclock`; some compare header names case-sensitively.
        .title_case_headers(true)
        // hyper refuses a smaller buffer; a head above it gets `431`.
        .max_buf_size(config.header_size_bytes_max.max(8192))
        .max_headers(config.headers_count_max.max(1))
        .timer(TokioTimer::new())
        // Also closes keep-alive connections idle for this long: hyper arms
        // it whenever it waits for a request head.
        .header_read_timeout(config.header_read_timeout);
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let state = Arc::new(State {
        backend,
        requests: Semaphore::new(config.requests_in_flight_max.max(1)),
        body_budget: BodyBudget::new(config.body_buffer_bytes_max),
        config,
        metrics: Metrics::default(),
        started: Instant::now(),
    });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    info!(addr = ?listener.local_addr().ok(), tls = tls.is_some(), "HTTP API listening");
    loop {
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
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            state
                .metrics
                .connections_refused_total
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "connection refused: connections_max reached");
            refuse(stream, tls.is_some(), &refusals);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        state
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let write_timeout = state.config.write_timeout;
            match tls {
                None => {
                    let io = StallGuard::new(stream, write_timeout);
                    serve_connection(&state, &builder, watcher, io, false, peer).await;
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        state.config.header_read_timeout,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let io = StallGuard::new(stream, write_timeout);
                            serve_connection(&state, &builder, watcher, io, true, peer).await;
                        }
                        Ok(Err(err)) => {
                            state
                                .metrics
                                .tls_handshake_failures_total
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(%err, %peer, "TLS handshake failed");
                        }
                        Err(_) => {
                            state
                                .metrics
                                .tls_handshake_failures_total
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
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

/// Serves HTTP/1.1 on one established connection until it closes.
async fn serve_connection<B, S>(
    state: &Arc<State<B>>,
    builder: &hyper::server::conn::http1::Builder,
    watcher: Watcher,
    io: S,
    is_tls: bool,
    peer: std::net::SocketAddr,
) where
    B: Backend,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn_state = state.clone();
    let service = service_fn(move |req| {
        let state = conn_state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req, is_tls).await) }
    });
    let connection = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
    if let Err(err) = connection.await {
        debug!(%err, %peer, "connection ended with an error");
    }
}

/// Answers a connection beyond the limit with `503` (plain HTTP) or closes
/// it (TLS), without ever holding more than [`REFUSALS_MAX`] of them.
fn refuse(stream: TcpStream, is_tls: bool, refusals: &Arc<Semaphore>) {
    if is_tls {
        return;
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            stream.write_all(OVERLOADED_CONNECTION).await?;
            stream.shutdown().await?;
            // Read what the client sent before closing, or the kernel
            // answers it with a reset that may destroy the 503 in flight.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || matches!(err.raw_os_error(), Some(23 | 24 | 105))
}

/// The `503` for a request that found no slot or no body budget.
fn overloaded(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the node is overloaded ({what}); retry later"),
    )
    .with_header(http::header::RETRY_AFTER, "1")
}

/// Answers one request; never fails and never panics outward. `is_tls`
/// says whether it arrived over TLS (credentials need it, see
/// [`crate::auth`]).
///
/// The request gets its id first (the client's `X-Request-Id` if sane,
/// else a new one): the answer carries it in `X-Request-Id`, whatever the
/// status, and everything below runs in the `request` span holding it and
/// with it as [`RequestId::current`].
pub async fn handle<B: Backend>(
    state: &State<B>,
    req: Request<Incoming>,
    is_tls: bool,
) -> Response<ResponseBody> {
    let given = RequestId::from_headers(req.headers());
    let request_id = given.unwrap_or_else(RequestId::generate);
    // Info level, so that the node's info, warn and error lines about the
    // request carry the id too; creating it is one small allocation.
    let span = info_span!("request", request_id = %request_id);
    if given.is_none() && req.headers().contains_key(&request_id::HEADER) {
        span.in_scope(|| {
            debug!("ignored an X-Request-Id that is empty, too long or not visible ASCII")
        });
    }
    let mut response = request_id
        .scope(answer(state, req, is_tls))
        .instrument(span)
        .await;
    response
        .headers_mut()
        .insert(request_id::HEADER, request_id.header_value());
    response
}

/// [`handle`] once the request has its id.
async fn answer<B: Backend>(
    state: &State<B>,
    req: Request<Incoming>,
    is_tls: bool,
) -> Response<ResponseBody> {
    let m = &state.metrics;
    m.requests_total.fetch_add(1, Ordering::Relaxed);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let (parts, body) = req.into_parts();
    let mut body = RequestBody::new(body);
    let mut response = match state.requests.try_acquire() {
        Err(_) => {
            m.requests_overloaded_total.fetch_add(1, Ordering::Relaxed);
            response::error(overloaded("every request slot is taken"))
        }
        Ok(_slot) => {
            m.requests_in_flight.fetch_add(1, Ordering::Relaxed);
            let answer = AssertUnwindSafe(dispatch(state, &parts, &mut body, is_tls))
                .catch_unwind()
                .await;
            m.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
            match answer {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => {
                    match err.status {
                        StatusCode::UNAUTHORIZED
                        | StatusCode::FORBIDDEN
                        | StatusCode::UPGRADE_REQUIRED => {
                            m.requests_unauthorized_total
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        StatusCode::SERVICE_UNAVAILABLE if err.message.contains("overloaded") => {
                            m.requests_overloaded_total.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    response::error(err)
                }
                Err(_) => {
                    error!(%method, %path, "request handler panicked");
                    response::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error: the request handler failed",
                    )
                }
            }
        }
    };
    let class = match response.status().as_u16() {
        200..=299 => &m.responses_2xx,
        300..=399 => &m.responses_3xx,
        400..=499 => &m.responses_4xx,
        _ => &m.responses_5xx,
    };
    class.fetch_add(1, Ordering::Relaxed);
    debug!(%method, %path, status = response.status().as_u16(), "request");
    if !body.finish(&parts.headers, &state.config).await {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn dispatch<B: Backend>(
    state: &State<B>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    is_tls: bool,
) -> Result<Response<ResponseBody>, ApiError> {
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
    if let Some(auth) = &config.auth {
        // Before anything else is parsed: an unauthenticated client learns
        // nothing from validation errors. A query that does not parse is
        // refused below; here it only means "no returnbody".
        let query = Query::parse(parts.uri.query()).unwrap_or_default();
        let needed = auth::required(found.spec.resource, &parts.method, path, &query);
        auth.check(&needed, headers, is_tls).await?;
    }
    if found.spec.resource == Resource::Admin {
        let (body, _reserved) = read_body(state, body, headers).await?;
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
                    let (body, _reserved) = read_body(state, body, headers).await?;
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
                let (value, _reserved) = read_body(state, body, headers).await?;
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
    body: &mut RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    let backend = &*state.backend;
    let prepared =
        object::prepare_put(backend, &state.config, target, query, headers, true).await?;
    let (value, _reserved) = read_body(state, body, headers).await?;
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

/// Reads a request body of at most `body_size_bytes_max` bytes within
/// `body_read_timeout`, holding its size in the body budget until the
/// returned [`Reservation`] is dropped. A declared length above the limit is
/// refused (`413`) before reading anything, as is one that does not fit the
/// budget (`503`); a chunked body is refused as soon as it passes either.
/// A body that does not arrive in time is `408`. After any of these the
/// body is abandoned: the answer closes the connection.
async fn read_body<B>(
    state: &State<B>,
    slot: &mut RequestBody,
    headers: &HeaderMap,
) -> Result<(Bytes, Reservation), ApiError> {
    let mut body = slot.take()?;
    let size_bytes_max = state.config.body_size_bytes_max;
    let declared = declared_length(headers);
    let too_large = || {
        ApiError::too_large(format!(
            "the request body is larger than the limit of {size_bytes_max} bytes"
        ))
    };
    let no_budget = || overloaded("request bodies in memory are at their limit");
    let mut reservation = Reservation::default();
    if let Some(len) = declared {
        if len > size_bytes_max as u64 {
            return Err(too_large());
        }
        // `len` fits in usize: it is at most `size_bytes_max`.
        if !state.body_budget.reserve(&mut reservation, len as usize) {
            return Err(no_budget());
        }
    }
    let collect = async {
        let mut buffer = BytesMut::with_capacity(declared.map_or(0, |len| len as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                ApiError::bad_request(format!("the request body could not be read: {err}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let size_bytes = buffer.len() + data.len();
            if size_bytes > size_bytes_max {
                return Err(too_large());
            }
            if !state.body_budget.reserve(&mut reservation, size_bytes) {
                return Err(no_budget());
            }
            buffer.extend_from_slice(&data);
        }
        Ok(buffer.freeze())
    };
    let timeout = state.config.body_read_timeout;
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(bytes)) => {
            slot.state = BodyState::Read;
            Ok((bytes, reservation))
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// A request's body from the arrival of its head to the answer.
///
/// A handler that refuses a request before it needs the body (a bad query,
/// a stale context, a failed authentication) leaves the body unread. hyper
/// then closes the connection after the answer without saying so, and a
/// client that sends its next request on it finds it dead; a body still
/// arriving meets a reset that can destroy the answer in flight. So
/// [`RequestBody::finish`] reads and drops an unread body before the answer
/// goes out, within the limits a body that is kept must meet; only when
/// that is not possible does the answer say `Connection: close`.
struct RequestBody {
    state: BodyState,
}

enum BodyState {
    /// No handler has touched it (it may be empty).
    Unread(Incoming),
    /// Read to its end.
    Read,
    /// Taken by a reader that did not reach its end.
    Abandoned,
}

impl RequestBody {
    fn new(body: Incoming) -> RequestBody {
        RequestBody {
            state: BodyState::Unread(body),
        }
    }

    /// The body, for a reader that sets [`BodyState::Read`] once it has
    /// reached the end; until then the body counts as abandoned.
    fn take(&mut self) -> Result<Incoming, ApiError> {
        match std::mem::replace(&mut self.state, BodyState::Abandoned) {
            BodyState::Unread(body) => Ok(body),
            _ => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request body was read twice",
            )),
        }
    }

    /// Reads and drops what no handler read, at most `body_size_bytes_max`
    /// bytes within `body_read_timeout`, unless the client waits for
    /// `100 Continue` (a refused request should not invite the body). Says
    /// whether the connection can carry another request.
    async fn finish(&mut self, headers: &HeaderMap, config: &ServeConfig) -> bool {
        let size_bytes_max = config.body_size_bytes_max;
        let mut body = match std::mem::replace(&mut self.state, BodyState::Read) {
            BodyState::Read => return true,
            BodyState::Abandoned => return false,
            BodyState::Unread(body) if body.is_end_stream() => return true,
            BodyState::Unread(_) if expects_continue(headers) => return false,
            BodyState::Unread(_)
                if declared_length(headers).is_some_and(|len| len > size_bytes_max as u64) =>
            {
                return false;
            }
            BodyState::Unread(body) => body,
        };
        let drain = async {
            let mut size_bytes = 0;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return false;
                };
                if let Some(data) = frame.data_ref() {
                    size_bytes += data.len();
                    if size_bytes > size_bytes_max {
                        return false;
                    }
                }
            }
            true
        };
        tokio::time::timeout(config.body_read_timeout, drain)
            .await
            .unwrap_or(false)
    }
}

/// The request's `Content-Length`, if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
