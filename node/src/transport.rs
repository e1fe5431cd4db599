//! Cluster transport: one QUIC endpoint (one UDP port) per node.
//!
//! Two kinds of traffic share it. Unreliable, small messages (SWIM probes and
//! their piggy-backed updates) travel as QUIC datagrams. Everything that must
//! arrive whole (push-pull state sync, replica RPCs, hints, Merkle exchange)
//! is a request/response on a bidirectional stream of its own, so one slow
//! request never blocks another.
//!
//! Connections are made on demand, one cached per peer address (the newest,
//! whichever side opened it), and re-made when they close; connecting is bounded by a timeout so a dead peer
//! costs a bounded wait. Both directions are authenticated by mutual TLS
//! (see [`crate::tls`]).
//!
//! Boundary: the transport moves bytes. It does not decode them; what arrives
//! goes to the node through a bounded channel of [`Inbound`] values, and when
//! that channel is full, datagrams are dropped (SWIM tolerates loss) and
//! requests are refused by closing their stream. Requests of the one kind
//! registered with [`Transport::serve_directly`] (replica RPCs, the bulk of
//! the traffic) skip the channel: the stream's own task answers them, so a
//! replica request costs no hop to another task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::tls::{ClusterTls, SERVER_NAME};

/// Largest request or response body on a stream.
pub const MESSAGE_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Inbound messages queued for the node before new ones are refused.
const INBOUND_QUEUE_MAX: usize = 4096;

/// Why a send or request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No connection could be made within the connect timeout.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The handshake failed (wrong cluster secret or name, or not a node).
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke while sending or receiving.
    #[error("connection to {addr} failed: {reason}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The datagram is larger than the path allows, or the peer takes none.
    #[error("datagram of {size_bytes} bytes does not fit (max {max_bytes:?})")]
    DatagramTooLarge {
        /// Size of the datagram.
        size_bytes: usize,
        /// What the connection allows.
        max_bytes: Option<usize>,
    },
    /// The peer did not answer within the deadline.
    #[error("request to {0} timed out")]
    Timeout(SocketAddr),
    /// The answer was larger than [`MESSAGE_SIZE_BYTES_MAX`].
    #[error("response from {0} is too large")]
    ResponseTooLarge(SocketAddr),
}

/// Something a peer sent.
#[derive(Debug)]
pub enum Inbound {
    /// An unreliable message (SWIM).
    Datagram {
        /// Where it came from.
        from: SocketAddr,
        /// Its bytes, undecoded.
        bytes: Bytes,
    },
    /// A request that wants an answer.
    Request {
        /// Where it came from.
        from: SocketAddr,
        /// Its bytes, undecoded.
        bytes: Bytes,
        /// Sends the answer.
        reply: Responder,
    },
}

/// The answering half of a request stream.
#[derive(Debug)]
pub struct Responder {
    send: quinn::SendStream,
}

impl Responder {
    /// Refuses the request: the peer's read fails instead of seeing an
    /// empty answer.
    pub fn refuse(mut self) {
        let _ = self.send.reset(1u32.into());
    }

    /// Sends `bytes` as the whole answer. It returns once the bytes are
    /// handed to the connection: a finished stream keeps being
    /// retransmitted until the peer acknowledges it or the connection
    /// closes, so nothing waits for the acknowledgement.
    pub async fn send(mut self, bytes: &[u8]) {
        if let Err(err) = self.send.write_all(bytes).await {
            debug!(%err, "could not send a response");
            return;
        }
        let _ = self.send.finish();
    }
}

/// Answers the requests of one kind on the task that read them (see
/// [`Transport::serve_directly`]).
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers `bytes` (the request without its tag byte) from `from`
    /// through `reply`.
    fn handle(&self, from: SocketAddr, bytes: Bytes, reply: Responder) -> BoxFuture<'static, ()>;
}

/// The kind of request served directly, and by what.
struct Direct {
    tag: u8,
    handler: Arc<dyn RequestHandler>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Settings of the transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The UDP address to bind.
    pub listen: SocketAddr,
    /// Bound on making a connection (the SWIM probe timeout is a good value:
    /// a peer that cannot be reached within it is not answering anyway).
    pub connect_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Key for QUIC stateless resets, the same in every life of this node.
    /// A restarted node can then reset the connections its previous life
    /// left open, so peers notice at once instead of sending into a dead
    /// connection until it times out.
    pub reset_key: [u8; 32],
}

/// The node's cluster endpoint.
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    connect_timeout: Duration,
    /// One slot per peer; the async mutex makes concurrent senders share one
    /// connection attempt.
    peers: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Option<quinn::Connection>>>>>,
    inbound: mpsc::Sender<Inbound>,
    /// Set once: the request kind answered where it arrives.
    direct: OnceLock<Direct>,
}

fn transport_config(idle_timeout: Duration) -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut config = quinn::TransportConfig::default();
    config.max_idle_timeout(Some(idle_timeout.try_into()?));
    // Keep cached connections alive while the peer is, so a probe does not
    // pay for a handshake.
    config.keep_alive_interval(Some(idle_timeout / 3));
    config.max_concurrent_bidi_streams(1024u32.into());
    config.max_concurrent_uni_streams(0u32.into());
    config.datagram_receive_buffer_size(Some(1024 * 1024));
    Ok(Arc::new(config))
}

impl Transport {
    /// Binds the endpoint and starts accepting connections.
    pub fn bind(
        config: &TransportConfig,
        tls: &ClusterTls,
    ) -> anyhow::Result<(Transport, mpsc::Receiver<Inbound>)> {
        let transport = transport_config(config.idle_timeout)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.server.clone())?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client.clone())?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.reset_key(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &config.reset_key,
        )));
        let socket = std::net::UdpSocket::bind(config.listen)?;
        let runtime =
            quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime for QUIC"))?;
        let endpoint = quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)?;
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE_MAX);
        let inner = Arc::new(Inner {
            endpoint,
            client,
            connect_timeout: config.connect_timeout,
            peers: Mutex::new(HashMap::new()),
            inbound: tx,
            direct: OnceLock::new(),
        });
        tokio::spawn(accept_loop(inner.clone()));
        Ok((Transport { inner }, rx))
    }

    /// From now on, requests whose first byte is `tag` are answered by
    /// `handler` on the task that read them instead of going to the inbound
    /// channel. Only one kind can be registered; a second call is refused.
    pub fn serve_directly(
        &self,
        tag: u8,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<(), &'static str> {
        self.inner
            .direct
            .set(Direct { tag, handler })
            .map_err(|_| "a request kind is already served directly")
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Sends an unreliable datagram.
    pub async fn send_datagram(&self, to: SocketAddr, bytes: Bytes) -> Result<(), TransportError> {
        let connection = self.connection(to).await?;
        let max_bytes = connection.max_datagram_size();
        if max_bytes.is_none_or(|max| bytes.len() > max) {
            return Err(TransportError::DatagramTooLarge {
                size_bytes: bytes.len(),
                max_bytes,
            });
        }
        connection
            .send_datagram(bytes)
            .map_err(|err| TransportError::Connection {
                addr: to,
                reason: err.to_string(),
            })
    }

    /// The largest datagram a connection to `to` takes now, connecting first.
    pub async fn max_datagram_size(&self, to: SocketAddr) -> Result<Option<usize>, TransportError> {
        Ok(self.connection(to).await?.max_datagram_size())
    }

    /// Sends a request on a stream of its own and waits for the answer.
    pub async fn request(
        &self,
        to: SocketAddr,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let exchange = async {
            let connection = self.connection(to).await?;
            let broken = |err: &dyn std::fmt::Display| TransportError::Connection {
                addr: to,
                reason: err.to_string(),
            };
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| broken(&e))?;
            send.write_all(bytes).await.map_err(|e| broken(&e))?;
            send.finish().map_err(|e| broken(&e))?;
            match recv.read_to_end(MESSAGE_SIZE_BYTES_MAX).await {
                Ok(answer) => Ok(Bytes::from(answer)),
                Err(quinn::ReadToEndError::TooLong) => Err(TransportError::ResponseTooLarge(to)),
                Err(err) => Err(broken(&err)),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(to))?
    }

    /// Drops the cached connection to `addr` (the peer was declared dead or
    /// left), so the next message opens a fresh one instead of trusting a
    /// connection to a process that may be gone.
    pub fn forget(&self, addr: SocketAddr) {
        if let Some(slot) = self.inner.peers.lock().remove(&addr) {
            tokio::spawn(async move {
                if let Some(connection) = slot.lock().await.take() {
                    connection.close(0u32.into(), b"peer considered down");
                }
            });
        }
    }

    /// Closes every connection and the endpoint.
    pub async fn close(&self) {
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// A live connection to `to`, cached or new.
    async fn connection(&self, to: SocketAddr) -> Result<quinn::Connection, TransportError> {
        let slot = self.inner.peers.lock().entry(to).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.client.clone(), to, SERVER_NAME)
            .map_err(|err| TransportError::Connect {
                addr: to,
                reason: err.to_string(),
            })?;
        let connection = tokio::time::timeout(self.inner.connect_timeout, connecting)
            .await
            .map_err(|_| TransportError::ConnectTimeout(to))?
            .map_err(|err| TransportError::Connect {
                addr: to,
                reason: err.to_string(),
            })?;
        tokio::spawn(serve_connection(self.inner.clone(), connection.clone()));
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            match incoming.await {
                Ok(connection) => {
                    // Served at once: taking the slot below waits while a
                    // connect of ours to the same address is in flight (to
                    // a peer's previous life, up to the connect timeout),
                    // and what the peer sends meanwhile must not wait.
                    tokio::spawn(serve_connection(inner.clone(), connection.clone()));
                    // The newest connection with a peer wins: a peer that
                    // connects to us again has most likely restarted, and
                    // the connection we opened to its previous life may
                    // still look open. Sending on the new one reaches it
                    // at once.
                    let slot = inner.peers.lock().entry(from).or_default().clone();
                    *slot.lock().await = Some(connection);
                }
                // A peer without the cluster's credentials ends here.
                Err(err) => warn!(%from, %err, "refused a cluster connection"),
            }
        });
    }
}

/// Reads datagrams and request streams from one connection until it closes.
async fn serve_connection(inner: Arc<Inner>, connection: quinn::Connection) {
    let from = connection.remote_address();
    let datagrams = {
        let inner = inner.clone();
        let connection = connection.clone();
        async move {
            while let Ok(bytes) = connection.read_datagram().await {
                if inner
                    .inbound
                    .try_send(Inbound::Datagram { from, bytes })
                    .is_err()
                {
                    debug!(%from, "inbound queue full; dropped a datagram");
                }
            }
        }
    };
    let streams = async {
        while let Ok((send, mut recv)) = connection.accept_bi().await {
            let inner = inner.clone();
            tokio::spawn(async move {
                let bytes = match recv.read_to_end(MESSAGE_SIZE_BYTES_MAX).await {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(err) => {
                        debug!(%from, %err, "bad request stream");
                        return;
                    }
                };
                if let Some(direct) = inner.direct.get()
                    && bytes.first() == Some(&direct.tag)
                {
                    let reply = Responder { send };
                    direct.handler.handle(from, bytes.slice(1..), reply).await;
                    return;
                }
                let request = Inbound::Request {
                    from,
                    bytes,
                    reply: Responder { send },
                };
                if let Err(err) = inner.inbound.try_send(request) {
                    debug!(%from, "inbound queue full; refused a request");
                    if let mpsc::error::TrySendError::Full(Inbound::Request { reply, .. })
                    | mpsc::error::TrySendError::Closed(Inbound::Request { reply, .. }) = err
                    {
                        reply.refuse();
                    }
                }
            });
        }
    };
    tokio::join!(datagrams, streams);
}
