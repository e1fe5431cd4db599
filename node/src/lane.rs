//! Lanes: replica requests to one node, sent in batches.
//!
//! Every client request makes a few replica requests (a read asks each
//! primary, a write mints on one and merges into the others). Sent one by
//! one, each costs a QUIC stream, a hop to a blocking thread and a wait for
//! durability on the replica. A lane queues the reads (or the writes) for one
//! node; a sender takes everything queued so far as one
//! [`Request::Batch`], which the replica carries out in one job of its
//! applier thread with one wait for durability
//! ([`Coordinator::execute_batch_async`]),
//! or, for a batch of reads, on the async worker that received it. The
//! local replica takes no lane at all: its reads are served at once and
//! its writes go to the applier thread one by one (`crate::applier`),
//! where they share fsyncs all the same. A lane adds no timer: an idle
//! lane yields once to the scheduler, so the requests the worker's other
//! ready tasks make in the same turn join the first one, and then sends;
//! beyond that, batches grow only while the previous one is in flight (one
//! batch per lane at a time, sent by the lane's own task), the way group
//! commit batches fsyncs.
//!
//! Reads and writes use separate lanes so a read never waits for a write's
//! fsync. Requests of other kinds are not batched.
//!
//! Boundary: a lane only moves requests; what they mean is the
//! coordinator's, how they travel the transport's.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::coordinator::Coordinator;
use crate::rpc::{Request, Response};

/// Requests in one batch.
pub const BATCH_MAX: usize = 128;
/// Rough bytes in one batch; a larger request travels alone.
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Requests queued on one lane before callers are refused.
const QUEUE_MAX: usize = 4096;

/// Which requests share a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaneKind {
    /// `Get`.
    Read,
    /// `Put`, `Merge`, `Hint`.
    Write,
}

impl LaneKind {
    /// The lane a request travels in, if it is batched at all.
    pub fn of(request: &Request) -> Option<LaneKind> {
        match request {
            Request::Get { .. } => Some(LaneKind::Read),
            Request::Put { .. } | Request::Merge { .. } | Request::Hint { .. } => {
                Some(LaneKind::Write)
            }
            _ => None,
        }
    }
}

/// One queued request and where its answer goes.
#[derive(Debug)]
pub struct Queued {
    /// The request.
    pub request: Request,
    /// The client request it serves, if any; it travels with the batch so
    /// the replica logs each request under its own id.
    pub request_id: Option<http_api::RequestId>,
    /// The caller gives up then.
    pub deadline: Instant,
    /// The answer.
    pub reply: oneshot::Sender<Result<Response, String>>,
}

/// The lanes of one node, created on first use.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: Mutex<HashMap<(u128, LaneKind), mpsc::Sender<Queued>>>,
}

impl Lanes {
    /// The sender of the lane to `node` for `kind`, starting it if needed.
    pub fn sender(
        &self,
        coordinator: &Arc<Coordinator>,
        node: u128,
        kind: LaneKind,
    ) -> mpsc::Sender<Queued> {
        let mut lanes = self.lanes.lock();
        if let Some(tx) = lanes.get(&(node, kind))
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(Arc::downgrade(coordinator), node, rx));
        lanes.insert((node, kind), tx.clone());
        tx
    }
}

/// Sends the lane's requests in batches until the coordinator goes away.
/// The task sends each batch itself and waits for its answers, so whatever
/// queues meanwhile becomes the next batch.
async fn run(coordinator: Weak<Coordinator>, node: u128, mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        // Let the worker finish the tasks it has ready first: requests
        // they make in this turn (other client requests' fan-outs) join
        // this batch instead of waiting for the next exchange. A turn,
        // not a timer: an idle node sends at once all the same.
        if rx.is_empty() {
            tokio::task::yield_now().await;
        }
        let mut size = estimated_size(&first.request);
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX && size < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(next) => {
                    size += estimated_size(&next.request);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        coordinator.send_batch(node, batch).await;
    }
}

fn estimated_size(request: &Request) -> usize {
    let object_size = |o: &storage::Object| {
        o.siblings
            .iter()
            .map(|s| s.content.value.len() + 64)
            .sum::<usize>()
            + 24 * o.version.len()
    };
    64 + match request {
        Request::Put { content, .. } => content.value.len(),
        Request::Merge { object, .. } | Request::Hint { object, .. } => object_size(object),
        _ => 0,
    }
}
