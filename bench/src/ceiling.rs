//! The ceiling: a bare hyper server inside the bench process that answers
//! every request with a fixed 100-byte body.
//!
//! It does the least an HTTP server can do (parse the request, read its
//! body, write a response), on the same runtime and cores as the generator.
//! What the generator reaches against it is the most this machine can do
//! with this client, at this moment; a database's figures as a percentage
//! of it stay comparable across machines and across a noisy neighbour.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Size of the ceiling's answer.
pub const BODY_BYTES: usize = 100;

/// A running ceiling server; stops when dropped.
#[derive(Debug)]
pub struct Ceiling {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts the ceiling server on an ephemeral loopback port.
pub async fn start() -> anyhow::Result<Ceiling> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the ceiling server")?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(vec![b'c'; BODY_BYTES]);
    let accept = tokio::spawn(async move {
        // Runs until the Ceiling is dropped (the task is aborted); a failed
        // accept (e.g. out of descriptors) ends it, and the run then counts
        // connect errors.
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        // Read the request body, as a real server must.
                        let _ = request.into_body().collect().await;
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Ceiling { addr, accept })
}
