//! Test fixtures: an in-memory [`Backend`] over `storage::Object` (one fake
//! actor, one counter), a server on an ephemeral port, and a small HTTP
//! client that sends requests exactly as written.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_api::{
    AdminRequest, AdminResponse, Backend, BackendError, DeleteRequest, GetRequest, KeyStream,
    PreflistEntry, PutRequest, RequestId, ServeConfig,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use storage::{ActorId, BucketProps, Content, ContextKey, Dot, Object};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sibling limit of the test backend (the real store's is 100).
pub const SIBLINGS_MAX: usize = 10;

/// A single-replica backend in a `HashMap`.
#[derive(Debug)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<(Bytes, Bytes), Object>>,
    props: Mutex<HashMap<Bytes, BucketProps>>,
    counter: AtomicU64,
    clock_us: AtomicU64,
    key: ContextKey,
    actor: ActorId,
    /// The last put the backend received, for assertions.
    pub last_put: Mutex<Option<PutRequest>>,
    /// The last get the backend received.
    pub last_get: Mutex<Option<GetRequest>>,
    /// Delay added to every put (to test draining).
    pub put_delay: Mutex<Duration>,
    /// Puts that reached the backend (counted before the delay).
    pub puts_started: AtomicU64,
    /// [`RequestId::current`] in the last get or put.
    pub last_request_id: Mutex<Option<RequestId>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend {
            objects: Mutex::default(),
            props: Mutex::default(),
            counter: AtomicU64::new(0),
            clock_us: AtomicU64::new(0),
            key: ContextKey::derive(b"test cluster secret"),
            actor: ActorId {
                node: 0xfeed,
                epoch: 7,
            },
            last_put: Mutex::default(),
            last_get: Mutex::default(),
            put_delay: Mutex::new(Duration::ZERO),
            puts_started: AtomicU64::new(0),
            last_request_id: Mutex::default(),
        }
    }

    /// The stored object, for assertions.
    pub fn get_raw(&self, bucket: &str, key: &str) -> Object {
        let id = (
            Bytes::copy_from_slice(bucket.as_bytes()),
            Bytes::copy_from_slice(key.as_bytes()),
        );
        self.objects
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .expect("object stored")
    }

    /// A strictly increasing wall clock, so every write has its own time.
    fn now_us(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let previous = self.clock_us.fetch_max(wall, Ordering::SeqCst);
        if previous >= wall {
            self.clock_us.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            wall
        }
    }

    fn write(
        &self,
        bucket: &Bytes,
        key: &Bytes,
        context: Option<storage::VersionVector>,
        mut content: Content,
    ) -> Result<Object, BackendError> {
        let props = self
            .props
            .lock()
            .unwrap()
            .get(bucket)
            .cloned()
            .unwrap_or_default();
        content.meta.last_modified_us = self.now_us();
        let mut objects = self.objects.lock().unwrap();
        let mut object = objects
            .get(&(bucket.clone(), key.clone()))
            .cloned()
            .unwrap_or_default();
        let dot = Dot {
            actor: self.actor,
            counter: self.counter.fetch_add(1, Ordering::SeqCst) + 1,
        };
        object
            .update(&context.unwrap_or_default(), dot, content)
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        if props.resolves_by_time() {
            object.resolve_last_write_wins();
        }
        if object.siblings.len() > SIBLINGS_MAX {
            return Err(BackendError::TooManySiblings {
                count: object.siblings.len() as u64,
                max: SIBLINGS_MAX as u64,
            });
        }
        objects.insert((bucket.clone(), key.clone()), object.clone());
        Ok(object)
    }
}

fn chunked(mut names: Vec<Bytes>) -> KeyStream {
    names.sort();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        for chunk in names.chunks(2) {
            if tx.send(Ok(chunk.to_vec())).await.is_err() {
                return;
            }
        }
    });
    rx
}

impl Backend for MemoryBackend {
    async fn get(&self, req: GetRequest) -> Result<Option<Object>, BackendError> {
        *self.last_get.lock().unwrap() = Some(req.clone());
        *self.last_request_id.lock().unwrap() = RequestId::current();
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(&(req.bucket, req.key))
            .cloned())
    }

    async fn put(&self, req: PutRequest) -> Result<Object, BackendError> {
        self.puts_started.fetch_add(1, Ordering::SeqCst);
        let delay = *self.put_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        *self.last_put.lock().unwrap() = Some(req.clone());
        *self.last_request_id.lock().unwrap() = RequestId::current();
        self.write(&req.bucket, &req.key, req.context, req.content)
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), BackendError> {
        self.write(&req.bucket, &req.key, req.context, Content::tombstone(0))
            .map(|_| ())
    }

    async fn bucket_props(&self, bucket: Bytes) -> Result<BucketProps, BackendError> {
        Ok(self
            .props
            .lock()
            .unwrap()
            .get(&bucket)
            .cloned()
            .unwrap_or_default())
    }

    async fn set_bucket_props(
        &self,
        bucket: Bytes,
        props: BucketProps,
    ) -> Result<(), BackendError> {
        props.validate()?;
        self.props.lock().unwrap().insert(bucket, props);
        Ok(())
    }

    async fn reset_bucket_props(&self, bucket: Bytes) -> Result<(), BackendError> {
        self.props.lock().unwrap().remove(&bucket);
        Ok(())
    }

    async fn list_buckets(&self) -> Result<KeyStream, BackendError> {
        let mut buckets: Vec<Bytes> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .map(|(b, _)| b.clone())
            .collect();
        buckets.dedup();
        Ok(chunked(buckets))
    }

    async fn list_keys(&self, bucket: Bytes) -> Result<KeyStream, BackendError> {
        let keys = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|((b, _), o)| *b == bucket && !o.is_deleted())
            .map(|((_, k), _)| k.clone())
            .collect();
        Ok(chunked(keys))
    }

    async fn preflist(
        &self,
        bucket: Bytes,
        _key: Bytes,
    ) -> Result<Vec<PreflistEntry>, BackendError> {
        let n_val = self.bucket_props(bucket).await?.n_val;
        Ok((0..n_val)
            .map(|i| PreflistEntry {
                partition: u64::from(i) * 7,
                node: format!("test{i}@127.0.0.1"),
                primary: i == 0,
            })
            .collect())
    }

    async fn stats(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        map.insert("nodename".into(), "test@127.0.0.1".into());
        map.insert(
            "test_backend_keys".into(),
            self.objects.lock().unwrap().len().into(),
        );
        map
    }

    async fn admin(&self, req: AdminRequest) -> AdminResponse {
        match req.path.as_str() {
            "/admin/echo" => AdminResponse::json(
                StatusCode::OK,
                &serde_json::json!({
                    "method": req.method.as_str(),
                    "query": req.query,
                    "body": String::from_utf8_lossy(&req.body),
                }),
            ),
            "/metrics" => AdminResponse {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4".into(),
                body: Bytes::from_static(b"# TYPE starling_up gauge\nstarling_up 1\n"),
            },
            _ => AdminResponse::not_found(&req),
        }
    }

    fn context_key(&self) -> &ContextKey {
        &self.key
    }
}

/// A running server.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Arc<MemoryBackend>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), http_api::ServeError>>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn vclock(&self) -> String {
        self.header("x-riak-vclock")
            .expect("X-Riak-Vclock header")
            .to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(ServeConfig::default()).await
    }

    pub async fn start_with(config: ServeConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(MemoryBackend::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(http_api::serve(listener, backend.clone(), config, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            backend,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A client-only handle on a server started elsewhere.
    pub fn attach(addr: SocketAddr, backend: Arc<MemoryBackend>) -> TestServer {
        TestServer {
            addr,
            backend,
            shutdown: None,
            task: None,
        }
    }

    /// Starts shutdown and waits for the server to drain.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        builder = builder.header("host", "localhost");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body.into())).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], Bytes::new()).await
    }

    pub async fn put_text(&self, path: &str, context: Option<&str>, value: &str) -> Reply {
        let mut headers = vec![("content-type", "text/plain")];
        if let Some(context) = context {
            headers.push(("x-riak-vclock", context));
        }
        self.request("PUT", path, &headers, value.to_owned()).await
    }

    /// Sends raw bytes and returns whatever comes back before the server
    /// closes the connection or one second passes.
    pub async fn raw(&self, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One part of a multipart body: lower-cased headers and the body.
#[derive(Debug)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a `multipart/mixed` body into its parts with the crate's own
/// decoder, lower-casing header names.
pub fn parse_multipart(content_type: &str, body: &str) -> Vec<Part> {
    http_api::multipart::decode(content_type, body.as_bytes())
        .unwrap_or_else(|e| panic!("bad multipart body ({e}): {body:?}"))
        .into_iter()
        .map(|p| Part {
            headers: p
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            body: String::from_utf8(p.body).expect("UTF-8 part body"),
        })
        .collect()
}
