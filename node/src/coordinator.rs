//! The quorum coordinator: any node takes any request and works with the
//! replicas of its key.
//!
//! The ring gives a key's preference list, its N primaries. Which of them
//! answer right now is SWIM's business: only members seen `alive` get
//! requests; a suspect or dead primary's share of a write goes to the next
//! healthy node on the ring as a hint.
//!
//! **Writes.** A write is minted by a primary, never by a fallback or a
//! non-replica: the coordinator forwards it to itself if it is a healthy
//! primary, else to the first healthy primary, which applies it to its
//! durable copy (minting the dot there keeps the dvv summary sound, see
//! `storage::dvv`). The resulting object is then merged into the other
//! primaries, or stored as hints on fallbacks for the ones that cannot be
//! reached. When this node mints, the copies leave while its own fsync
//! runs (storage gives the replica a new epoch after a crash, so a dot it
//! lost is never covered by a later one). The client is answered once W
//! replicas acknowledged, DW of them durably and PW of them primaries, and
//! the minter's own write is durable; the rest of the replication goes on
//! in the background. A write that cannot meet its quorum answers 503 with the
//! count: some replicas may hold it, so its outcome is indeterminate. If no
//! primary is reachable at all, the write is refused before anything is
//! written.
//!
//! **Reads.** A read asks every healthy primary, answers after R replies (PR
//! of them primaries; a "not found" counts towards R when `notfound_ok`),
//! merges what it got, and keeps listening for the late replies for a short
//! while: every replica whose copy is behind the merge of all replies is
//! repaired with it (read repair).
//!
//! Boundary: the coordinator decides where requests go and when to answer;
//! storage semantics are the store's, bytes on the wire the transport's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::FuturesUnordered;
use http_api::{BackendError, RequestId};
use membership::{Member, MemberState, RingState};
use parking_lot::Mutex;
use storage::{
    BucketProps, Content, Object, Quorum, Store, StoreError, VersionVector, WriteOptions,
};
use tracing::{Instrument as _, debug, warn};

use crate::cluster::{Cluster, TAG_RPC};
use crate::ring::{Ring, RingMember};
use crate::rpc::{self, Apply, Envelope, ErrorKind, Request, Response};
use crate::transport::{RequestHandler, Responder};

/// Replies still to come from a fan-out, in the order they arrive.
type Pending = FuturesUnordered<BoxFuture<'static, Reply>>;

/// The next reply of `pending` (`None` once all came), or `Err` when
/// `expiry` fires first: one timer serves a whole wait for a quorum rather
/// than one per reply.
async fn next_reply(
    pending: &mut Pending,
    expiry: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<Option<Reply>, Expired> {
    tokio::select! {
        biased;
        reply = pending.next() => Ok(reply),
        () = expiry => Err(Expired),
    }
}

/// Who a replica request is served for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// This node's own coordinator.
    Local,
    /// A peer, over the network.
    Peer,
}

/// The deadline of a wait passed.
#[derive(Debug)]
struct Expired;

/// The merge of replica copies. A copy equal to the merge so far (replicas
/// usually agree) is skipped rather than merged, which would copy it.
fn merge_copies<'a>(copies: impl IntoIterator<Item = &'a Object>) -> Option<Object> {
    let mut merged: Option<Object> = None;
    for copy in copies {
        merged = Some(match merged {
            Some(acc) if acc == *copy => acc,
            Some(acc) => acc.merge(copy),
            None => copy.clone(),
        });
    }
    merged
}

/// Replica RPCs from peers, answered by the coordinator where they arrive
/// (see [`crate::transport::Transport::serve_directly`]).
#[derive(Debug)]
pub struct ReplicaRpcs(pub Arc<Coordinator>);

impl RequestHandler for ReplicaRpcs {
    fn handle(&self, from: SocketAddr, bytes: Bytes, reply: Responder) -> BoxFuture<'static, ()> {
        Box::pin(self.0.clone().answer_rpc(from, bytes, reply))
    }
}

/// Replication settings of a node.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Partitions of the ring (a power of two, fixed at cluster creation).
    pub partition_count: u32,
    /// Deadline of a client request when the client gives none.
    pub request_timeout: Duration,
    /// How long a read keeps listening for late replies to repair them.
    pub read_repair_window: Duration,
    /// Repair stale replicas from reads (off only for tests).
    pub read_repair: bool,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            partition_count: crate::ring::DEFAULT_PARTITION_COUNT,
            request_timeout: Duration::from_secs(10),
            read_repair_window: Duration::from_secs(1),
            read_repair: true,
        }
    }
}

/// A snapshot of who owns what and who answers.
#[derive(Debug)]
pub struct View {
    /// The ring of the current member set: members in ring state `member`
    /// or `leaving`. Requests follow it.
    pub ring: Arc<Ring>,
    /// The ring once every pending change is done: members in ring state
    /// `joining` or `member`. Ownership transfer fills it.
    pub future: Arc<Ring>,
    /// Every known member by id.
    pub members: HashMap<u128, Member>,
    /// This node's id.
    pub local: u128,
}

impl View {
    /// Whether requests may go to `id` now.
    pub fn healthy(&self, id: u128) -> bool {
        id == self.local
            || self
                .members
                .get(&id)
                .is_some_and(|m| m.state == MemberState::Alive)
    }

    /// The replica count a bucket gets: `n_val`, capped at the member count.
    pub fn replicas(&self, n_val: u32) -> u32 {
        n_val.min(self.ring.members().len().max(1) as u32)
    }

    /// A member's name for clients (its HTTP address).
    pub fn name(&self, id: u128) -> String {
        self.members
            .get(&id)
            .map_or_else(|| format!("{id:032x}"), |m| m.meta.http_addr.clone())
    }
}

/// A replica request, split into a write started without waiting for its
/// durability, or anything else (see [`Coordinator::stage_write`]).
enum Staging {
    Write(Result<storage::Deferred, StoreError>, Apply),
    Other(Request),
}

/// A batch whose writes are applied but not yet durable.
struct StagedBatch {
    staged: Vec<Staged>,
    last_seq: Option<u64>,
    want_sync: bool,
}

/// One request of a batch after it was applied.
enum Staged {
    Done(Response),
    Write(storage::Written),
}

/// Bytes one RPC moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of the request.
    pub sent_bytes: u64,
    /// Bytes of the answer.
    pub received_bytes: u64,
}

/// One replica's outcome in a fan-out.
struct Reply {
    node: u128,
    primary: bool,
    /// A replica's acknowledgement or copy; `false` for the minting
    /// replica's durability, which comes after its acknowledgement.
    ack: bool,
    result: Result<Response, String>,
}

/// The replication layer of one node.
#[derive(Debug)]
pub struct Coordinator {
    store: Arc<Store>,
    cluster: Cluster,
    config: ReplicationConfig,
    ring_cache: Mutex<RingCache>,
    /// Batching of replica requests per node.
    lanes: crate::lane::Lanes,
    /// The thread that applies replica write batches.
    applier: crate::applier::Applier,
    /// The last view, with the member generation and removed-set size it
    /// was built from: most requests reuse it.
    view_cache: Mutex<Option<(u64, usize, Arc<View>)>>,
    /// Nodes an operator removed from the cluster for good: in neither ring
    /// whatever they announce. Grows only; persisted and gossiped.
    removed: parking_lot::RwLock<std::collections::BTreeSet<u128>>,
}

/// The last rings computed, by the member lists they came from.
#[derive(Debug, Default)]
struct RingCache {
    current: Option<(Vec<RingMember>, Arc<Ring>)>,
    future: Option<(Vec<RingMember>, Arc<Ring>)>,
}

/// Store record of the nodes removed from the cluster.
const META_REMOVED: &str = "removed";

/// Whether a replica request is a point read, served on the async worker
/// that received it rather than on a blocking thread. A point read is
/// answered from the memtables and the block cache in microseconds, less
/// than the two thread hops of `spawn_blocking`; one that misses the cache
/// holds its worker for a disk read, which the other worker covers for.
fn is_read(request: &Request) -> bool {
    matches!(request, Request::Get { .. })
}

fn in_current_ring(m: &Member) -> bool {
    matches!(m.meta.ring, RingState::Member | RingState::Leaving)
}

fn in_future_ring(m: &Member) -> bool {
    matches!(m.meta.ring, RingState::Joining | RingState::Member)
}

fn quorum_error(needed: u32, replied: u32, what: &str) -> BackendError {
    BackendError::QuorumNotMet {
        needed,
        replied,
        what: what.to_owned(),
    }
}

/// A replica write's answer: a put, which minted a dot, answers with the
/// stored copy holding it ([`Response::Written`]), which its coordinator
/// replicates; a merge or hint minted none and its sender has the object
/// already, so it only acknowledges ([`Response::Applied`]).
fn written_answer(written: storage::Written, durable: bool) -> Response {
    match written.dot {
        Some(_) => Response::Written {
            object: written.object,
            durable,
        },
        None => Response::Applied { durable },
    }
}

/// Adds a late read reply's copy to `answered` (a failed reply adds none).
fn add_copy(answered: &mut Vec<(u128, Option<Object>)>, reply: Reply) {
    if let Ok(Response::Object(object)) = reply.result {
        answered.push((reply.node, object));
    }
}

/// Takes the read replies that are already in, without waiting: whether
/// that was all of them and every copy equals `merged`, so that read repair
/// has nothing to wait for or mend and needs no task (the common case of a
/// healthy cluster).
fn all_in_and_alike(
    pending: &mut Pending,
    answered: &mut Vec<(u128, Option<Object>)>,
    merged: &Option<Object>,
) -> bool {
    while let Some(Some(reply)) = pending.next().now_or_never() {
        add_copy(answered, reply);
    }
    pending.is_empty() && answered.iter().all(|(_, copy)| copy == merged)
}

fn store_error(err: StoreError) -> (ErrorKind, String) {
    let kind = match &err {
        StoreError::KeyTooLarge { .. }
        | StoreError::BucketTooLarge { .. }
        | StoreError::EmptyKey
        | StoreError::EmptyBucket
        | StoreError::InvalidObject(_) => ErrorKind::BadRequest,
        StoreError::ObjectTooLarge { .. } => ErrorKind::TooLarge,
        StoreError::TooManySiblings { .. } => ErrorKind::TooManySiblings,
        StoreError::Poisoned { .. }
        | StoreError::Closed
        | StoreError::DiskFull { .. }
        | StoreError::HintStoreFull { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    (kind, err.to_string())
}

/// Maps a replica's refusal of a client write to the client's error.
fn refusal(kind: ErrorKind, message: String) -> BackendError {
    match kind {
        ErrorKind::BadRequest => BackendError::BadRequest(message),
        ErrorKind::TooLarge => BackendError::TooLarge(message),
        ErrorKind::TooManySiblings => {
            // The replica's message names the counts; keep them.
            BackendError::Unavailable(message)
        }
        ErrorKind::Unavailable => BackendError::Unavailable(message),
        ErrorKind::Internal => BackendError::Internal(message),
    }
}

impl Coordinator {
    /// A coordinator over the local store and cluster, with its applier
    /// thread.
    pub fn new(
        store: Arc<Store>,
        cluster: Cluster,
        config: ReplicationConfig,
    ) -> std::io::Result<Coordinator> {
        let removed = match store.cluster_meta(META_REMOVED) {
            Ok(Some(bytes)) => postcard::from_bytes::<Vec<u128>>(&bytes).unwrap_or_else(|err| {
                warn!(%err, "the record of removed nodes does not decode; starting empty");
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(err) => {
                warn!(%err, "could not read the record of removed nodes");
                Vec::new()
            }
        };
        Ok(Coordinator {
            store,
            cluster,
            config,
            ring_cache: Mutex::new(RingCache::default()),
            view_cache: Mutex::new(None),
            lanes: crate::lane::Lanes::default(),
            applier: crate::applier::Applier::start()?,
            removed: parking_lot::RwLock::new(removed.into_iter().collect()),
        })
    }

    /// The nodes removed from the cluster for good.
    pub fn removed(&self) -> Vec<u128> {
        self.removed.read().iter().copied().collect()
    }

    /// Adds nodes to the removed set and persists it (blocking: fsyncs).
    /// Returns whether anything was new.
    pub fn add_removed(&self, ids: &[u128]) -> Result<bool, StoreError> {
        let mut removed = self.removed.write();
        let before = removed.len();
        removed.extend(ids.iter().copied());
        if removed.len() == before {
            return Ok(false);
        }
        let list: Vec<u128> = removed.iter().copied().collect();
        let bytes = postcard::to_stdvec(&list).expect("encoding into memory cannot fail");
        self.store.set_cluster_meta(META_REMOVED, &bytes)?;
        Ok(true)
    }

    /// The local store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The cluster handle.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Settings.
    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    /// The current ring and liveness (shared until membership changes).
    pub fn view(&self) -> Arc<View> {
        let generation = self.cluster.generation();
        let removed = self.removed.read().len();
        if let Some((g, r, view)) = self.view_cache.lock().as_ref()
            && *g == generation
            && *r == removed
        {
            return view.clone();
        }
        let view = Arc::new(self.build_view());
        *self.view_cache.lock() = Some((generation, removed, view.clone()));
        view
    }

    fn build_view(&self) -> View {
        let local = self.cluster.local_id().0;
        let members: HashMap<u128, Member> = self
            .cluster
            .members()
            .into_iter()
            .map(|m| (m.id.0, m))
            .collect();
        let removed = self.removed.read();
        let ring_members = |keep: fn(&Member) -> bool| {
            let mut list: Vec<RingMember> = members
                .values()
                .filter(|m| keep(m) && !removed.contains(&m.id.0))
                .map(|m| RingMember {
                    id: m.id.0,
                    zone: m.meta.zone.clone(),
                })
                .collect();
            list.sort();
            list
        };
        let (current, future) = (ring_members(in_current_ring), ring_members(in_future_ring));
        drop(removed);
        let partition_count = self.config.partition_count;
        let cached =
            |slot: &mut Option<(Vec<RingMember>, Arc<Ring>)>, list: Vec<RingMember>| match slot
                .as_ref()
            {
                Some((cached, ring)) if *cached == list => ring.clone(),
                _ => {
                    let ring = Arc::new(
                        Ring::new(partition_count, &list)
                            .expect("partition count was validated at start"),
                    );
                    *slot = Some((list, ring.clone()));
                    ring
                }
            };
        let mut cache = self.ring_cache.lock();
        let ring = cached(&mut cache.current, current);
        let future = cached(&mut cache.future, future);
        View {
            ring,
            future,
            members,
            local,
        }
    }

    fn deadline(&self, timeout: Option<Duration>) -> Instant {
        Instant::now() + timeout.unwrap_or(self.config.request_timeout)
    }

    /// Sends `request` to replica `node` (or runs it here) and waits until
    /// `deadline`.
    pub async fn call(
        self: &Arc<Self>,
        view_local: u128,
        node: u128,
        addr: Option<std::net::SocketAddr>,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, String> {
        self.call_counted(view_local, node, addr, request, deadline)
            .await
            .0
    }

    /// [`Coordinator::call`], also saying how many bytes went each way (0
    /// for a request served locally).
    pub async fn call_counted(
        self: &Arc<Self>,
        view_local: u128,
        node: u128,
        addr: Option<std::net::SocketAddr>,
        request: Request,
        deadline: Instant,
    ) -> (Result<Response, String>, Traffic) {
        self.call_serving(view_local, node, addr, request, Vec::new(), deadline)
            .await
    }

    /// [`Coordinator::call_counted`] on behalf of client requests (see
    /// [`Envelope::request_ids`]): the replica logs what it does with
    /// their ids.
    async fn call_serving(
        self: &Arc<Self>,
        view_local: u128,
        node: u128,
        addr: Option<std::net::SocketAddr>,
        request: Request,
        request_ids: Vec<Option<RequestId>>,
        deadline: Instant,
    ) -> (Result<Response, String>, Traffic) {
        if node == view_local {
            rpc::log_serving(None, &request_ids, &request);
            let result = self
                .serve(request, Reader::Local)
                .await
                .map_err(|e| format!("local replica task failed: {e}"));
            if let Ok(response) = &result {
                rpc::log_failures(&request_ids, response);
            }
            return (result, Traffic::default());
        }
        let Some(addr) = addr else {
            return (
                Err(format!("no address for node {node:032x}")),
                Traffic::default(),
            );
        };
        let budget = deadline.saturating_duration_since(Instant::now());
        let envelope = Envelope {
            format: rpc::RPC_FORMAT,
            request_ids,
            budget_ms: budget.as_millis().min(u128::from(u32::MAX)) as u32,
            request,
        };
        let mut bytes = Vec::with_capacity(256);
        bytes.push(TAG_RPC);
        bytes.extend_from_slice(&rpc::encode(&envelope));
        let mut traffic = Traffic {
            sent_bytes: bytes.len() as u64,
            received_bytes: 0,
        };
        let answer = match self.cluster.transport().request(addr, &bytes, budget).await {
            Ok(answer) => answer,
            Err(err) => return (Err(err.to_string()), traffic),
        };
        traffic.received_bytes = answer.len() as u64;
        (
            rpc::decode_response(&answer).map_err(|e| e.to_string()),
            traffic,
        )
    }

    /// [`Coordinator::call`] through the node's lane for the request's kind
    /// (see [`crate::lane`]): reads and writes to one peer travel in
    /// batches. Other requests, and the local replica's, go alone.
    /// `request_id` is the client request it serves, if any.
    pub async fn call_batched(
        self: &Arc<Self>,
        view_local: u128,
        node: u128,
        addr: Option<std::net::SocketAddr>,
        request: Request,
        request_id: Option<RequestId>,
        deadline: Instant,
    ) -> Result<Response, String> {
        // The local replica takes no lane, which would only add hops (see
        // `serve`: a read is served at once, a write goes to the applier).
        let kind = crate::lane::LaneKind::of(&request).filter(|_| node != view_local);
        let Some(kind) = kind else {
            let ids = request_id.map(|id| vec![Some(id)]).unwrap_or_default();
            return self
                .call_serving(view_local, node, addr, request, ids, deadline)
                .await
                .0;
        };
        let lane = self.lanes.sender(self, node, kind);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = crate::lane::Queued {
            request,
            request_id,
            deadline,
            reply,
        };
        if lane.try_send(queued).is_err() {
            return Err(format!(
                "too many requests queued for node {node:032x}; refused"
            ));
        }
        // No timer of its own: every caller bounds its wait already (a
        // quorum wait, a read-repair window), and the answer comes anyway,
        // by the deadline, from the transport's timeout or the lane's check
        // before sending.
        answer
            .await
            .unwrap_or_else(|_| Err("the lane stopped".to_owned()))
    }

    /// Sends one lane batch to `node` (or runs it here) and hands each
    /// answer to its caller.
    pub(crate) async fn send_batch(self: &Arc<Self>, node: u128, batch: Vec<crate::lane::Queued>) {
        let now = Instant::now();
        let (live, late): (Vec<_>, Vec<_>) = batch.into_iter().partition(|q| q.deadline > now);
        for q in late {
            let _ = q.reply.send(Err("timed out before it was sent".to_owned()));
        }
        if live.is_empty() {
            return;
        }
        let deadline = live.iter().map(|q| q.deadline).max().unwrap_or(now);
        let mut request_ids: Vec<Option<RequestId>> = live.iter().map(|q| q.request_id).collect();
        if request_ids.iter().all(Option::is_none) {
            request_ids.clear();
        }
        let (requests, replies): (Vec<Request>, Vec<_>) =
            live.into_iter().map(|q| (q.request, q.reply)).unzip();
        let view = self.view();
        let addr = view.members.get(&node).map(|m| m.meta.addr);
        let count = requests.len();
        // A lone read travels bare; writes always as a batch, which the
        // replica completes without a thread blocked on its fsync.
        let batched = count > 1 || !matches!(requests[0], Request::Get { .. });
        let request = if batched {
            Request::Batch(requests)
        } else {
            requests.into_iter().next().expect("one request")
        };
        let answered = self.call_serving(view.local, node, addr, request, request_ids, deadline);
        let answers: Vec<Result<Response, String>> = match answered.await.0 {
            Ok(Response::Batch(responses)) if batched && responses.len() == count => {
                responses.into_iter().map(Ok).collect()
            }
            Ok(response) if !batched => vec![Ok(response)],
            Ok(other) => {
                let err = format!("unexpected answer to a batch: {other:?}");
                vec![Err(err); count]
            }
            Err(err) => vec![Err(err); count],
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    /// Serves a replica request against the local store, for this node's
    /// coordinator or a peer's: a batch or a lone write on the applier
    /// thread with one wait for durability, a point read on this worker
    /// (see `is_read`), anything else on a blocking thread.
    ///
    /// For a peer (`to`), a point read answers with the stored record as
    /// it is ([`Response::Record`]): the peer decodes and checks it, and
    /// this node does not decode it only to encode it again.
    async fn serve(
        self: &Arc<Self>,
        request: Request,
        to: Reader,
    ) -> Result<Response, tokio::task::JoinError> {
        match request {
            Request::Batch(requests) => Ok(self.execute_batch_async(requests, to).await),
            request if is_read(&request) => Ok(self.read(request, to)),
            // A lone write is a batch of one: applied by the applier, where
            // writes that queue meanwhile share its fsync.
            request
                if crate::lane::LaneKind::of(&request) == Some(crate::lane::LaneKind::Write) =>
            {
                match self.execute_batch_async(vec![request], to).await {
                    Response::Batch(mut answers) if answers.len() == 1 => {
                        Ok(answers.pop().expect("one answer"))
                    }
                    other => Ok(other),
                }
            }
            request => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.execute(request)).await
            }
        }
    }

    /// Carries out a batch of replica requests: each in order, writes
    /// without waiting, then one wait for the durability of all of them, so
    /// the batch shares one fsync. No thread is blocked on the fsync: the
    /// writes are applied on the applier thread (see [`crate::applier`]),
    /// which is then free; the commit thread's fsync wakes this task.
    pub async fn execute_batch_async(
        self: &Arc<Self>,
        requests: Vec<Request>,
        to: Reader,
    ) -> Response {
        if requests.iter().all(is_read) {
            return Response::Batch(requests.into_iter().map(|r| self.read(r, to)).collect());
        }
        let this = self.clone();
        // The job registers the durability wait itself, and the commit
        // thread answers: one wake-up of this task per batch. An answer
        // dropped unsent (a panic, or a bug in the store's callbacks) fails
        // the batch: its writes must not count as durable.
        let staged = self.applier.run_with(move |answer| {
            let staged = this.stage_batch(requests);
            match staged.last_seq {
                None => answer.send((staged, Ok(false))),
                Some(seq) => this
                    .store
                    .on_durable(seq, move |result| answer.send((staged, result))),
            }
        });
        let (staged, durability) = match staged.await {
            Ok(done) => done,
            Err(err) => {
                return Response::Error {
                    kind: ErrorKind::Internal,
                    message: format!("replica task failed: {err}"),
                };
            }
        };
        if staged.want_sync && matches!(durability, Ok(false)) {
            // A lazy sync policy, but the caller asked for durability.
            let durability = self.sync_all_blocking().await.map(|()| true);
            return self.finish_batch(staged, durability);
        }
        self.finish_batch(staged, durability)
    }

    /// Fsyncs the store on a blocking thread: for a lazy sync policy when
    /// the caller asked for durability.
    async fn sync_all_blocking(self: &Arc<Self>) -> Result<(), StoreError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.store.sync_all()).await {
            Ok(synced) => synced,
            Err(err) => Err(StoreError::Io(std::io::Error::other(format!(
                "the fsync task failed: {err}"
            )))),
        }
    }

    /// Mints a client's write on this node's replica: answers with the
    /// stored object as soon as the write is applied and journaled, and
    /// with a future of its durability, so that the copies travel while
    /// the fsync runs instead of after it. A crash that loses the write
    /// here after its copies left also ends this replica's epoch (see
    /// storage's identity module), so no later dot of it can cover the
    /// lost one and merging the copies back keeps the write.
    async fn mint_here(
        self: &Arc<Self>,
        put: Request,
        request_id: Option<RequestId>,
    ) -> Result<(Response, BoxFuture<'static, Result<bool, String>>), String> {
        let ids = request_id.map(|id| vec![Some(id)]).unwrap_or_default();
        rpc::log_serving(None, &ids, &put);
        let this = self.clone();
        let staged = self.applier.run_with(move |answer| {
            let staged = this.stage_batch(vec![put]);
            let (durable, durability) = tokio::sync::oneshot::channel();
            match staged.last_seq {
                None => {
                    let _ = durable.send(Ok(false));
                }
                Some(seq) => this.store.on_durable(seq, move |result| {
                    let _ = durable.send(result);
                }),
            }
            answer.send((staged, durability));
        });
        let (mut batch, durability) = staged
            .await
            .map_err(|err| format!("local replica task failed: {err}"))?;
        let want_sync = batch.want_sync;
        let response = match batch.staged.pop() {
            Some(Staged::Write(written)) => written_answer(written, false),
            Some(Staged::Done(response)) => response,
            None => return Err("the local replica answered nothing".to_owned()),
        };
        rpc::log_failures(&ids, &response);
        let this = self.clone();
        let durability = async move {
            let durable = match durability.await {
                // A lazy sync policy, but the caller asked for durability.
                Ok(Ok(false)) if want_sync => this.sync_all_blocking().await.map(|()| true),
                Ok(durable) => durable,
                Err(_) => return Err("the store dropped the durability wait".to_owned()),
            };
            durable.map_err(|err| format!("the write could not be made durable: {err}"))
        };
        Ok((response, durability.boxed()))
    }

    /// Starts a replica write (`Put`, `Merge`, `Hint`) without waiting for
    /// its durability; any other request comes back untouched.
    fn stage_write(&self, request: Request) -> Staging {
        match request {
            Request::Put {
                bucket,
                key,
                context,
                content,
                apply,
            } => {
                let opts = WriteOptions {
                    resolve_by_time: apply.resolve_by_time,
                    repair: false,
                };
                Staging::Write(
                    self.store
                        .put_deferred(&bucket, &key, &context, content, opts),
                    apply,
                )
            }
            Request::Merge {
                bucket,
                key,
                object,
                apply,
            } => {
                let opts = WriteOptions {
                    resolve_by_time: apply.resolve_by_time,
                    repair: true,
                };
                Staging::Write(
                    self.store.merge_deferred(&bucket, &key, &object, opts),
                    apply,
                )
            }
            Request::Hint {
                owner,
                bucket,
                key,
                object,
                apply,
            } => Staging::Write(
                self.store.put_hint_deferred(owner, &bucket, &key, &object),
                apply,
            ),
            other => Staging::Other(other),
        }
    }

    /// Applies every request of a batch, writes without waiting.
    fn stage_batch(&self, requests: Vec<Request>) -> StagedBatch {
        let mut staged = Vec::with_capacity(requests.len());
        let mut last_seq = None::<u64>;
        let mut want_sync = false;
        for request in requests {
            let write = match self.stage_write(request) {
                Staging::Write(result, apply) => Some((result, apply.sync)),
                Staging::Other(Request::Batch(_)) => {
                    staged.push(Staged::Done(Response::Error {
                        kind: ErrorKind::BadRequest,
                        message: "batches do not nest".to_owned(),
                    }));
                    None
                }
                Staging::Other(other) => {
                    staged.push(Staged::Done(self.execute(other)));
                    None
                }
            };
            match write {
                Some((Ok(deferred), sync)) => {
                    last_seq = Some(last_seq.map_or(deferred.seq, |s| s.max(deferred.seq)));
                    want_sync |= sync;
                    staged.push(Staged::Write(deferred.written));
                }
                Some((Err(err), _)) => {
                    let (kind, message) = store_error(err);
                    staged.push(Staged::Done(Response::Error { kind, message }));
                }
                None => {}
            }
        }
        StagedBatch {
            staged,
            last_seq,
            want_sync,
        }
    }

    /// The answers of a staged batch, given whether its writes became
    /// durable. A failure fails every write (none may be acknowledged after
    /// a failed fsync).
    fn finish_batch(&self, batch: StagedBatch, durability: Result<bool, StoreError>) -> Response {
        let durability = match durability {
            Ok(false) if batch.want_sync => self.store.sync_all().map(|()| true),
            other => other,
        };
        Response::Batch(
            batch
                .staged
                .into_iter()
                .map(|s| match s {
                    Staged::Done(response) => response,
                    Staged::Write(written) => match &durability {
                        Ok(durable) => written_answer(written, *durable),
                        Err(err) => Response::Error {
                            kind: ErrorKind::Unavailable,
                            message: format!("the write could not be made durable: {err}"),
                        },
                    },
                })
                .collect(),
        )
    }

    /// Serves a point read (see [`Coordinator::serve`]); anything else
    /// goes to [`Coordinator::execute`].
    fn read(&self, request: Request, to: Reader) -> Response {
        match (request, to) {
            (Request::Get { bucket, key }, Reader::Peer) => {
                match self.store.get_record(&bucket, &key) {
                    Ok(record) => Response::Record(record.map(Bytes::from)),
                    Err(err) => {
                        let (kind, message) = store_error(err);
                        Response::Error { kind, message }
                    }
                }
            }
            (request, _) => self.execute(request),
        }
    }

    /// Carries out a replica request other than a write or a batch
    /// against the local store (blocking). Writes and batches are served
    /// by [`Coordinator::serve`] through the applier, which shares their
    /// fsyncs; handed one here, it answers with an internal error.
    pub fn execute(&self, request: Request) -> Response {
        let result = match request {
            Request::Batch(_)
            | Request::Put { .. }
            | Request::Merge { .. }
            | Request::Hint { .. } => {
                return Response::Error {
                    kind: ErrorKind::Internal,
                    message: "writes and batches are served through the applier".to_owned(),
                };
            }
            Request::Get { bucket, key } => self.store.get(&bucket, &key).map(Response::Object),
            Request::SetProps {
                bucket,
                props: Some(props),
            } => self
                .store
                .set_bucket_props(&bucket, &props)
                .map(|()| Response::Done),
            Request::SetProps {
                bucket,
                props: None,
            } => self
                .store
                .reset_bucket_props(&bucket)
                .map(|()| Response::Done),
            Request::List { bucket: None } => self.store.list_buckets().map(Response::Names),
            Request::List {
                bucket: Some(bucket),
            } => self.store.list_keys(&bucket).map(Response::Names),
            Request::AaeRoots => {
                Ok(Response::Roots(self.store.aae_trees().map(|trees| {
                    trees.into_iter().map(|t| (t.id, t.root, t.keys)).collect()
                })))
            }
            Request::AaeBranches { tree } => Ok(Response::Hashes(self.store.aae_branches(tree))),
            Request::AaeSegments { tree, branches } => Ok(Response::SegmentHashes(
                self.store.aae_segment_hashes(tree, &branches),
            )),
            Request::AaeKeys { tree, segments } => self
                .store
                .aae_keys(tree, &segments)
                .map(|keys| Response::KeyDigests(keys, None)),
            Request::TreeKeys { tree, after, limit } => self
                .store
                .aae_tree_keys(tree, after.as_deref(), limit.clamp(1, 10_000) as usize)
                .map(|(keys, next)| Response::KeyDigests(keys, next)),
            Request::GetMany { keys } => keys
                .iter()
                .map(|(bucket, key)| self.store.get(bucket, key))
                .collect::<Result<Vec<_>, _>>()
                .map(Response::Objects),
            Request::MergeMany { objects, apply } => {
                let opts = WriteOptions {
                    resolve_by_time: apply.resolve_by_time,
                    repair: true,
                };
                let count = objects.len() as u32;
                self.store
                    .merge_many(
                        objects
                            .iter()
                            .map(|(b, k, o)| (b.as_slice(), k.as_slice(), o)),
                        opts,
                    )
                    .and_then(|mut durable| {
                        if apply.sync && !durable {
                            self.store.sync_all()?;
                            durable = true;
                        }
                        Ok(Response::Merged { count, durable })
                    })
            }
            Request::Holdings { keys } => keys
                .iter()
                .map(|(bucket, key, owners)| {
                    let copy = self.store.get(bucket, key)?;
                    let hints = owners
                        .iter()
                        .filter_map(|&owner| self.store.hint(owner, bucket, key).transpose())
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((copy, hints))
                })
                .collect::<Result<Vec<_>, StoreError>>()
                .map(Response::Holdings),
            Request::Reap { keys } => keys
                .iter()
                .map(|(bucket, key, tombstone, owners)| {
                    self.store.reap(bucket, key, tombstone, owners)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Response::Removed),
            Request::Versions { keys } => keys
                .iter()
                .map(|(bucket, key)| Ok(self.store.get(bucket, key)?.map(|o| o.version)))
                .collect::<Result<Vec<_>, StoreError>>()
                .map(Response::Versions),
            Request::Removed { ids } => self
                .add_removed(&ids)
                .map(|_| Response::RemovedIds(self.removed())),
            Request::RemoveIfUnchanged { keys } => keys
                .iter()
                .map(|(bucket, key, digest)| self.store.remove_if_unchanged(bucket, key, *digest))
                .collect::<Result<Vec<_>, _>>()
                .map(Response::Removed),
        };
        result.unwrap_or_else(|err| {
            let (kind, message) = store_error(err);
            Response::Error { kind, message }
        })
    }

    /// Answers one replica RPC from the peer at `from` (`bytes` without
    /// the tag byte), on the task that read it.
    async fn answer_rpc(self: Arc<Self>, from: SocketAddr, bytes: Bytes, reply: Responder) {
        let response = match rpc::decode_envelope(&bytes) {
            Ok(Envelope {
                request_ids,
                budget_ms,
                request,
                ..
            }) => {
                rpc::log_serving(Some(from), &request_ids, &request);
                let budget = Duration::from_millis(u64::from(budget_ms));
                let response = match tokio::time::timeout(budget, self.serve(request, Reader::Peer))
                    .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(err)) => Response::Error {
                        kind: ErrorKind::Internal,
                        message: err.to_string(),
                    },
                    // The caller gave up; an answer would go nowhere.
                    Err(_) => {
                        debug!(%from, ?request_ids, "replica request outlived its budget; dropped");
                        return;
                    }
                };
                rpc::log_failures(&request_ids, &response);
                response
            }
            Err(err @ rpc::DecodeError::Format(_)) => {
                // A peer of another version: not a bad request, a
                // replica that cannot serve this node now.
                debug!(%from, %err, "refused a replica request of another RPC format");
                Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: format!("{err}; this node speaks format {}", rpc::RPC_FORMAT),
                }
            }
            Err(err) => {
                debug!(%from, %err, "refused a malformed replica request");
                Response::Error {
                    kind: ErrorKind::BadRequest,
                    message: err.to_string(),
                }
            }
        };
        reply.send(&rpc::encode(&response)).await;
    }

    /// Bucket properties, defaults when unset.
    pub async fn props(&self, bucket: &Bytes) -> Result<BucketProps, BackendError> {
        // The store keeps every bucket's properties in memory: no blocking.
        self.store
            .bucket_props(bucket)
            .map(Option::unwrap_or_default)
            .map_err(|e| BackendError::BadRequest(e.to_string()))
    }

    fn resolve(
        q: Option<Quorum>,
        name: &'static str,
        n_val: u32,
        bucket_default: Quorum,
        cap: u32,
    ) -> Result<u32, BackendError> {
        let value = q
            .unwrap_or(Quorum::Default)
            .resolve(name, n_val, bucket_default)?;
        Ok(value.min(cap))
    }

    /// Reads a key from its replicas; `request_id` is the client
    /// request's, for the replicas' logs.
    pub async fn get(
        self: &Arc<Self>,
        req: http_api::GetRequest,
        request_id: Option<RequestId>,
    ) -> Result<Option<Object>, BackendError> {
        self.ensure_joined()?;
        let props = self.props(&req.bucket).await?;
        let view = self.view();
        let n = view.replicas(props.n_val);
        let q = &req.quorums;
        let r = Self::resolve(q.r, "r", props.n_val, props.r, n)?.max(1);
        let pr = Self::resolve(q.pr, "pr", props.n_val, props.pr, n)?;
        let notfound_ok = q.notfound_ok.unwrap_or(props.notfound_ok);
        let basic_quorum = q.basic_quorum.unwrap_or(props.basic_quorum);
        let partition = view.ring.partition_of(&req.bucket, &req.key);
        let primaries: Vec<u128> = view
            .ring
            .preference_list(partition, n as usize)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let healthy: Vec<u128> = primaries
            .iter()
            .copied()
            .filter(|&id| view.healthy(id))
            .collect();
        if (healthy.len() as u32) < pr {
            return Err(quorum_error(pr, healthy.len() as u32, "pr"));
        }
        if (healthy.len() as u32) < r {
            return Err(quorum_error(r, healthy.len() as u32, "r"));
        }
        let deadline = self.deadline(req.timeout);
        let mut pending = self.fan_out(&view, &healthy, true, deadline, request_id, |_| {
            Request::Get {
                bucket: req.bucket.to_vec(),
                key: req.key.to_vec(),
            }
        });
        let total = healthy.len() as u32;
        let mut expiry = std::pin::pin!(tokio::time::sleep_until(deadline.into()));
        let mut answered: Vec<(u128, Option<Object>)> = Vec::new();
        let (mut found, mut notfound, mut failed) = (0u32, 0u32, 0u32);
        let majority = n / 2 + 1;
        let outcome = loop {
            let counted = found + if notfound_ok { notfound } else { 0 };
            if counted >= r {
                break Ok(());
            }
            if !notfound_ok && basic_quorum && notfound >= majority {
                break Ok(());
            }
            let outstanding = total - found - notfound - failed;
            // Without notfound_ok, "not found" replies never count, so the
            // read can only still succeed through outstanding replies.
            if counted + outstanding < r {
                if found == 0 && !notfound_ok && notfound > 0 && outstanding == 0 {
                    break Ok(()); // every replica answered: it is simply not there
                }
                if Instant::now() >= deadline {
                    break Err(BackendError::Timeout);
                }
                break Err(quorum_error(r, found + notfound, "r"));
            }
            match next_reply(&mut pending, expiry.as_mut()).await {
                Ok(Some(reply)) => match reply.result {
                    Ok(Response::Object(Some(object))) => {
                        found += 1;
                        answered.push((reply.node, Some(object)));
                    }
                    Ok(Response::Object(None)) => {
                        notfound += 1;
                        answered.push((reply.node, None));
                    }
                    Ok(other) => {
                        debug!(
                            node = format_args!("{:032x}", reply.node),
                            ?other,
                            "unexpected reply to a read"
                        );
                        failed += 1;
                    }
                    Err(err) => {
                        debug!(node = format_args!("{:032x}", reply.node), %err, "replica read failed");
                        failed += 1;
                    }
                },
                Ok(None) => break Err(quorum_error(r, found + notfound, "r")),
                Err(_) => break Err(BackendError::Timeout),
            }
        };
        outcome?;
        let merged = merge_copies(answered.iter().filter_map(|(_, o)| o.as_ref()));
        if self.config.read_repair && !all_in_and_alike(&mut pending, &mut answered, &merged) {
            let this = self.clone();
            let bucket = req.bucket.to_vec();
            let key = req.key.to_vec();
            let resolve_by_time = props.resolves_by_time();
            tokio::spawn(
                async move {
                    this.read_repair(
                        view,
                        bucket,
                        key,
                        answered,
                        pending,
                        resolve_by_time,
                        request_id,
                    )
                    .await;
                }
                .in_current_span(),
            );
        }
        let mut merged = merged;
        if props.resolves_by_time()
            && let Some(object) = merged.as_mut()
        {
            object.resolve_last_write_wins();
        }
        Ok(merged)
    }

    /// Waits briefly for the remaining replies, then brings every replica
    /// that answered up to the merge of all answers.
    #[allow(clippy::too_many_arguments)]
    async fn read_repair(
        self: Arc<Self>,
        view: Arc<View>,
        bucket: Vec<u8>,
        key: Vec<u8>,
        mut answered: Vec<(u128, Option<Object>)>,
        mut pending: Pending,
        resolve_by_time: bool,
        request_id: Option<RequestId>,
    ) {
        let window = Instant::now() + self.config.read_repair_window;
        while let Ok(Some(reply)) = tokio::time::timeout_at(window.into(), pending.next()).await {
            add_copy(&mut answered, reply);
        }
        let Some(merged) = merge_copies(answered.iter().filter_map(|(_, o)| o.as_ref())) else {
            return;
        };
        let stale: Vec<u128> = answered
            .iter()
            .filter(|(_, copy)| copy.as_ref() != Some(&merged))
            .map(|(node, _)| *node)
            .collect();
        if stale.is_empty() {
            return;
        }
        debug!(replicas = stale.len(), "read repair");
        let deadline = Instant::now() + self.config.request_timeout;
        let apply = Apply {
            resolve_by_time,
            sync: false,
        };
        let mut repairs = self.fan_out(&view, &stale, true, deadline, request_id, |_| {
            Request::Merge {
                bucket: bucket.clone(),
                key: key.clone(),
                object: merged.clone(),
                apply,
            }
        });
        while let Some(reply) = repairs.next().await {
            if let Err(err) = reply.result {
                debug!(node = format_args!("{:032x}", reply.node), %err, "read repair failed");
            }
        }
    }

    /// Starts one request per node on behalf of client request
    /// `request_id`, if any; replies arrive in completion order.
    fn fan_out(
        self: &Arc<Self>,
        view: &View,
        nodes: &[u128],
        primary: bool,
        deadline: Instant,
        request_id: Option<RequestId>,
        mut request: impl FnMut(u128) -> Request,
    ) -> Pending {
        let pending = FuturesUnordered::new();
        for &node in nodes {
            let this = self.clone();
            let addr = view.members.get(&node).map(|m| m.meta.addr);
            let local = view.local;
            let request = request(node);
            pending.push(Box::pin(async move {
                let result = this
                    .call_batched(local, node, addr, request, request_id, deadline)
                    .await;
                Reply {
                    node,
                    primary,
                    ack: true,
                    result,
                }
            }) as BoxFuture<'static, Reply>);
        }
        pending
    }

    /// Refuses client requests until the node has joined its cluster (see
    /// `Cluster::joined`): before that its ring holds only itself.
    fn ensure_joined(&self) -> Result<(), BackendError> {
        if self.cluster.joined() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(
                "this node has not joined its cluster yet (no seed has answered); the request was not attempted"
                    .to_owned(),
            ))
        }
    }

    /// Writes `content` with `context` to the key's replicas; `request_id`
    /// is the client request's, for the replicas' logs.
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        self: &Arc<Self>,
        bucket: Bytes,
        key: Bytes,
        context: Option<VersionVector>,
        content: Content,
        quorums: http_api::WriteQuorums,
        timeout: Option<Duration>,
        request_id: Option<RequestId>,
    ) -> Result<Object, BackendError> {
        self.ensure_joined()?;
        let props = self.props(&bucket).await?;
        let view = self.view();
        let n = view.replicas(props.n_val);
        let w = Self::resolve(quorums.w, "w", props.n_val, props.w, n)?.max(1);
        // DW counts durable acknowledgements among the W: it never asks for
        // more than W (so `w=1` with the default `dw=quorum` means one
        // durable acknowledgement).
        let dw = Self::resolve(quorums.dw, "dw", props.n_val, props.dw, n)?.min(w);
        let pw = Self::resolve(quorums.pw, "pw", props.n_val, props.pw, n)?;
        if let Some(rw) = quorums.rw {
            Self::resolve(Some(rw), "rw", props.n_val, props.rw, n)?;
        }
        let partition = view.ring.partition_of(&bucket, &key);
        let primaries: Vec<u128> = view
            .ring
            .preference_list(partition, n as usize)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let healthy: Vec<u128> = primaries
            .iter()
            .copied()
            .filter(|&id| view.healthy(id))
            .collect();
        if (healthy.len() as u32) < pw {
            return Err(quorum_error(pw, healthy.len() as u32, "pw"));
        }
        // The replica that mints the dot: this node if it is a primary,
        // else the first healthy primary.
        let Some(&minter) = healthy
            .iter()
            .find(|&&id| id == view.local)
            .or_else(|| healthy.first())
        else {
            return Err(BackendError::Unavailable(format!(
                "none of the {n} primary replicas of this key is reachable; the write was not attempted"
            )));
        };
        let deadline = self.deadline(timeout);
        let apply = Apply {
            resolve_by_time: props.resolves_by_time(),
            sync: dw > 0,
        };
        let addr = view.members.get(&minter).map(|m| m.meta.addr);
        let put = Request::Put {
            bucket: bucket.to_vec(),
            key: key.to_vec(),
            context: context.unwrap_or_default(),
            content,
            apply,
        };
        // This node mints: its copies travel while its own fsync runs, and
        // the write is answered once both are done (see `mint_here`). A
        // remote minter answers after its fsync.
        let minted = tokio::time::timeout_at(deadline.into(), async {
            if minter == view.local {
                self.mint_here(put, request_id)
                    .await
                    .map(|(response, durability)| (response, Some(durability)))
            } else {
                self.call_batched(view.local, minter, addr, put, request_id, deadline)
                    .await
                    .map(|response| (response, None))
            }
        })
        .await;
        let (object, durable, mint_durability) = match minted {
            Err(_) => return Err(BackendError::Timeout),
            // The replica call gave up at the same deadline: a timeout.
            Ok(Err(_)) if Instant::now() >= deadline => return Err(BackendError::Timeout),
            Ok(Err(err)) => {
                return Err(BackendError::Unavailable(format!(
                    "the coordinating replica failed ({err}); the write's outcome is indeterminate"
                )));
            }
            Ok(Ok((Response::Written { object, durable }, pending))) => (object, durable, pending),
            Ok(Ok((
                Response::Error {
                    kind: ErrorKind::TooManySiblings,
                    message,
                },
                _,
            ))) => {
                return Err(too_many_siblings(&message));
            }
            Ok(Ok((
                Response::Error {
                    kind: ErrorKind::Unavailable,
                    message,
                },
                _,
            ))) => {
                // Say whose storage refused (a full disk, a poisoned store):
                // in a cluster it need not be the node the client asked.
                return Err(BackendError::Unavailable(format!(
                    "node {} refused the write: {message}",
                    view.name(minter)
                )));
            }
            Ok(Ok((Response::Error { kind, message }, _))) => return Err(refusal(kind, message)),
            Ok(Ok((other, _))) => {
                return Err(BackendError::Internal(format!(
                    "unexpected reply to a write: {other:?}"
                )));
            }
        };
        // Replicate to the other primaries. An unreachable one gets a hint on
        // the next healthy node past the preference list (which counts as an
        // acknowledgement, not as a primary); when the ring has no such node
        // (three nodes, N=3), the minting replica keeps the hint itself. It
        // already holds the data, so that hint adds no acknowledgement: it
        // only makes sure the owner gets the write when it is back.
        // The ring is walked for fallbacks only when a primary is down.
        let walk = if primaries.iter().all(|&id| view.healthy(id)) {
            Vec::new()
        } else {
            view.ring.walk(partition)
        };
        let mut fallbacks = walk
            .into_iter()
            .filter(|id| !primaries.contains(id) && view.healthy(*id));
        let mut targets: Vec<(u128, Option<u128>)> = Vec::new(); // (node, hint owner)
        for &primary in primaries.iter().filter(|&&id| id != minter) {
            if view.healthy(primary) {
                targets.push((primary, None));
            } else if let Some(fallback) = fallbacks.next() {
                targets.push((fallback, Some(primary)));
            } else {
                let this = self.clone();
                let addr = view.members.get(&minter).map(|m| m.meta.addr);
                let local = view.local;
                let hint = Request::Hint {
                    owner: primary,
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    object: object.clone(),
                    apply,
                };
                let keep = async move {
                    match this
                        .call_batched(local, minter, addr, hint, request_id, deadline)
                        .await
                    {
                        Ok(Response::Applied { .. }) => {}
                        other => warn!(
                            owner = format_args!("{primary:032x}"),
                            ?other,
                            "could not keep a hint for an unreachable primary"
                        ),
                    }
                };
                tokio::spawn(keep.in_current_span());
            }
        }
        let pending = FuturesUnordered::new();
        for (node, owner) in targets {
            let this = self.clone();
            let addr = view.members.get(&node).map(|m| m.meta.addr);
            let local = view.local;
            let request = match owner {
                None => Request::Merge {
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    object: object.clone(),
                    apply,
                },
                Some(owner) => Request::Hint {
                    owner,
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    object: object.clone(),
                    apply,
                },
            };
            pending.push(Box::pin(async move {
                let result = this
                    .call_batched(local, node, addr, request, request_id, deadline)
                    .await;
                Reply {
                    node,
                    primary: owner.is_none(),
                    ack: true,
                    result,
                }
            }) as BoxFuture<'static, Reply>);
        }
        let mut pending = pending;
        let (mut acks, mut durable_acks, mut primary_acks) = (1u32, u32::from(durable), 1u32);
        let mut outstanding = pending.len() as u32;
        // The minting replica's own durability, when it was not awaited
        // before the copies went out: the write is answered only once it
        // is in, whatever the quorums, as if the minter had waited.
        let mut minting = mint_durability.is_some();
        if let Some(durability) = mint_durability {
            pending.push(Box::pin(async move {
                Reply {
                    node: minter,
                    primary: true,
                    ack: false,
                    result: durability
                        .await
                        .map(|durable| Response::Applied { durable }),
                }
            }) as BoxFuture<'static, Reply>);
        }
        let mut expiry = std::pin::pin!(tokio::time::sleep_until(deadline.into()));
        // The first replica whose storage refused (disk full, poisoned):
        // named in a missed quorum, so the client learns why.
        let mut refused: Option<String> = None;
        let missed = |needed: u32, replied: u32, what: &str, refused: &Option<String>| {
            let what = match refused {
                Some(refusal) => format!("{what} ({refusal})"),
                None => what.to_owned(),
            };
            quorum_error(needed, replied, &what)
        };
        loop {
            if !minting && acks >= w && durable_acks >= dw && primary_acks >= pw {
                break;
            }
            if acks + outstanding < w {
                if Instant::now() >= deadline {
                    return Err(BackendError::QuorumNotMet {
                        needed: w,
                        replied: acks,
                        what: "w (timed out)".to_owned(),
                    });
                }
                return Err(missed(w, acks, "w", &refused));
            }
            if durable_acks + outstanding + u32::from(minting) < dw {
                return Err(missed(dw, durable_acks, "dw", &refused));
            }
            if primary_acks + outstanding < pw {
                return Err(missed(pw, primary_acks, "pw", &refused));
            }
            match next_reply(&mut pending, expiry.as_mut()).await {
                Ok(Some(reply)) if !reply.ack => {
                    minting = false;
                    match reply.result {
                        Ok(Response::Applied { durable }) => durable_acks += u32::from(durable),
                        failed => {
                            let why = failed.err().unwrap_or_default();
                            return Err(BackendError::Unavailable(format!(
                                "the coordinating replica could not make the write durable \
                                 ({why}); the write's outcome is indeterminate"
                            )));
                        }
                    }
                }
                Ok(Some(reply)) => {
                    outstanding -= 1;
                    match reply.result {
                        Ok(Response::Applied { durable }) => {
                            acks += 1;
                            durable_acks += u32::from(durable);
                            primary_acks += u32::from(reply.primary);
                        }
                        // A replica whose storage refuses writes logs that
                        // itself, once; a line per write here would be spam.
                        Ok(Response::Error {
                            kind: ErrorKind::Unavailable,
                            message,
                        }) => {
                            debug!(
                                node = format_args!("{:032x}", reply.node),
                                %message,
                                "replica refused a write"
                            );
                            refused.get_or_insert_with(|| {
                                format!("node {} refused: {message}", view.name(reply.node))
                            });
                        }
                        Ok(other) => warn!(
                            node = format_args!("{:032x}", reply.node),
                            ?other,
                            "replica refused a write"
                        ),
                        Err(err) => {
                            debug!(node = format_args!("{:032x}", reply.node), %err, "replica write failed")
                        }
                    }
                }
                Ok(None) => return Err(missed(w, acks, "w", &refused)),
                // Timed out waiting for the minter's own fsync: as when the
                // minter answers only after it (a remote one).
                Err(_) if minting => return Err(BackendError::Timeout),
                Err(_) => {
                    return Err(BackendError::QuorumNotMet {
                        needed: w,
                        replied: acks,
                        what: "w (timed out)".to_owned(),
                    });
                }
            }
        }
        // The remaining replicas finish without us: their requests are in
        // their lanes, which carry them out whether or not anyone waits for
        // the answer.
        drop(pending);
        Ok(object)
    }

    /// Sets (or resets) a bucket's properties here and on every healthy
    /// member. Members that miss it are named in the error.
    pub async fn set_props(
        self: &Arc<Self>,
        bucket: Bytes,
        props: Option<BucketProps>,
        request_id: Option<RequestId>,
    ) -> Result<(), BackendError> {
        self.ensure_joined()?;
        let view = self.view();
        let nodes: Vec<u128> = view
            .members
            .keys()
            .copied()
            .filter(|&id| view.healthy(id))
            .collect();
        let deadline = self.deadline(None);
        let mut pending = self.fan_out(&view, &nodes, true, deadline, request_id, |_| {
            Request::SetProps {
                bucket: bucket.to_vec(),
                props: props.clone(),
            }
        });
        let mut missed = Vec::new();
        while let Some(reply) = pending.next().await {
            match reply.result {
                Ok(Response::Done) => {}
                Ok(Response::Error {
                    kind: ErrorKind::BadRequest,
                    message,
                }) if reply.node == view.local => {
                    return Err(BackendError::BadRequest(message));
                }
                other => {
                    warn!(
                        node = format_args!("{:032x}", reply.node),
                        ?other,
                        "bucket properties not applied"
                    );
                    missed.push(view.name(reply.node));
                }
            }
        }
        if missed.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(format!(
                "bucket properties were not applied on {}; retry the request",
                missed.join(", ")
            )))
        }
    }

    /// The key's preference list as clients see it: each primary, or for an
    /// unreachable one the fallback standing in for it.
    pub fn preflist(&self, bucket: &[u8], key: &[u8], n_val: u32) -> Vec<http_api::PreflistEntry> {
        let view = self.view();
        let n = view.replicas(n_val);
        let partition = view.ring.partition_of(bucket, key);
        let primaries = view.ring.preference_list(partition, n as usize);
        let ids: Vec<u128> = primaries.iter().map(|&(_, id)| id).collect();
        let mut fallbacks = view
            .ring
            .walk(partition)
            .into_iter()
            .filter(|id| !ids.contains(id) && view.healthy(*id));
        primaries
            .into_iter()
            .map(|(p, id)| {
                if view.healthy(id) {
                    http_api::PreflistEntry {
                        partition: u64::from(p),
                        node: view.name(id),
                        primary: true,
                    }
                } else {
                    let node = fallbacks.next().map_or_else(
                        || format!("{} (down, no fallback)", view.name(id)),
                        |f| view.name(f),
                    );
                    http_api::PreflistEntry {
                        partition: u64::from(p),
                        node,
                        primary: false,
                    }
                }
            })
            .collect()
    }

    /// Lists keys (or buckets) across every healthy member.
    pub async fn list(
        self: &Arc<Self>,
        bucket: Option<Bytes>,
        request_id: Option<RequestId>,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        self.ensure_joined()?;
        let view = self.view();
        let nodes: Vec<u128> = view
            .ring
            .members()
            .iter()
            .map(|m| m.id)
            .filter(|&id| view.healthy(id))
            .collect();
        let deadline = self.deadline(None);
        let mut pending = self.fan_out(&view, &nodes, true, deadline, request_id, |_| {
            Request::List {
                bucket: bucket.as_ref().map(|b| b.to_vec()),
            }
        });
        let mut names: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        while let Some(reply) = pending.next().await {
            match reply.result {
                Ok(Response::Names(found)) => names.extend(found),
                Ok(other) => warn!(?other, "unexpected reply to a listing"),
                Err(err) => {
                    return Err(BackendError::Unavailable(format!(
                        "a node did not answer the listing: {err}"
                    )));
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}

fn too_many_siblings(message: &str) -> BackendError {
    // "... N siblings ... limit M": pull the two numbers out for the client.
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    match numbers.as_slice() {
        [count, max, ..] => BackendError::TooManySiblings {
            count: *count,
            max: *max,
        },
        _ => BackendError::Unavailable(message.to_owned()),
    }
}
