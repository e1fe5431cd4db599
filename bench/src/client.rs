//! One keep-alive HTTP/1.1 connection per load worker, on hyper's
//! low-level client.
//!
//! A worker owns exactly one connection and sends one request at a time on
//! it, so the connection count is fixed and known (a pooled client would
//! open more under load and hide queueing). A connection that fails is
//! dropped and a new one is opened for the next request; with failover, a
//! refused connect moves the worker to the next target.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Why a request failed before an HTTP status arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connect or HTTP handshake failed.
    Connect,
    /// The connection broke while the request was in flight.
    Io,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
        }
    }
}

/// What the client needs of an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The causal context, when the server sent one.
    pub context: Option<HeaderValue>,
}

/// A live connection; its driver task ends when the connection is dropped.
#[derive(Debug)]
struct Live {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A worker's connection to one of the targets.
#[derive(Debug)]
pub struct Connection {
    targets: Vec<SocketAddr>,
    target: usize,
    failover: bool,
    live: Option<Live>,
    /// Connections opened, including the first.
    pub connects: u64,
}

impl Connection {
    /// A connection that will go to `targets[first % len]` when first used.
    pub fn new(targets: Vec<SocketAddr>, first: usize, failover: bool) -> Self {
        assert!(!targets.is_empty(), "a connection needs a target");
        let target = first % targets.len();
        Self {
            targets,
            target,
            failover,
            live: None,
            connects: 0,
        }
    }

    /// Drops the connection, as after a timeout: an HTTP/1.1 connection with
    /// a request in flight cannot carry the next one.
    pub fn reset(&mut self) {
        self.live = None;
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let addr = self.targets[self.target];
        let result = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>((sender, conn))
        }
        .await;
        match result {
            Ok((sender, conn)) => {
                let driver = tokio::spawn(async move {
                    // The connection's end is seen by the sender as an error.
                    let _ = conn.await;
                });
                self.live = Some(Live { sender, driver });
                self.connects += 1;
                Ok(())
            }
            Err(_) => {
                if self.failover {
                    self.target = (self.target + 1) % self.targets.len();
                }
                Err(Failure::Connect)
            }
        }
    }

    /// Sends `request` and reads the whole answer, (re)connecting first if
    /// needed. The body is read to the end so the connection can be reused.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        // A keep-alive connection the server closed while idle is not a
        // failure of this request: reconnect once and send it there.
        let mut ready = false;
        for _attempt in 0..2 {
            if self
                .live
                .as_ref()
                .is_none_or(|live| live.sender.is_closed())
            {
                self.live = None;
                self.connect().await?;
            }
            if let Some(live) = self.live.as_mut()
                && live.sender.ready().await.is_ok()
            {
                ready = true;
                break;
            }
            self.live = None;
        }
        let Some(live) = self.live.as_mut().filter(|_| ready) else {
            return Err(Failure::Io);
        };
        let result = async {
            let response = live.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            body.collect().await?;
            Ok::<_, hyper::Error>(Answer {
                status: parts.status,
                context: parts.headers.get("x-riak-vclock").cloned(),
            })
        }
        .await;
        result.map_err(|_| {
            self.live = None;
            Failure::Io
        })
    }
}
