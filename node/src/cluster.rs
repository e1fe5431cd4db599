//! The SWIM driver: runs the sans-IO `membership::Swim` over the QUIC
//! transport.
//!
//! One task owns the state machine. It feeds it datagrams and push-pull
//! streams from the transport, fires its timers from a heap, and carries out
//! its outputs: datagrams and push-pull requests go out through the
//! transport (each send in a task of its own, so a slow connect never stalls
//! the loop), member events update the shared view the rest of the node
//! reads. Streams whose first byte is not [`TAG_SWIM`] are handed to the node
//! through the returned channel (replica RPCs).
//!
//! Seeds may be DNS names; they are resolved again on every reconnect round,
//! so a seed that comes back on a new address is found.
//!
//! Boundary: no protocol decisions are made here; the driver only moves
//! bytes and time between the transport and the state machine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use membership::{Event, Member, MemberState, Meta, NodeId, Output, RingState, Swim, Time, Timer};
use parking_lot::RwLock;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::transport::{Inbound, Transport};

/// First byte of a stream request that carries a SWIM push-pull.
pub const TAG_SWIM: u8 = 1;
/// First byte of a stream request that carries a replica RPC.
pub const TAG_RPC: u8 = 2;
/// How long the endpoint stays open after the leave was gossiped.
const LEAVE_LINGER: Duration = Duration::from_millis(300);
/// How often seeds are resolved and, while alone, contacted.
const SEED_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How long a graceful leave keeps gossiping before giving up.
const LEAVE_DRAIN_MAX: Duration = Duration::from_secs(3);

/// Settings of the cluster layer.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Cluster name; part of the TLS ALPN, so clusters never mix.
    pub cluster_name: String,
    /// The address other nodes reach this node's QUIC endpoint at.
    pub advertise: SocketAddr,
    /// This node's HTTP address as clients should reach it.
    pub http_addr: String,
    /// Failure zone ("" when unset).
    pub zone: String,
    /// Seeds to join through, as `host:port` (DNS names allowed).
    pub seeds: Vec<String>,
    /// SWIM tunables.
    pub swim: membership::Config,
    /// Ring state to announce at start (persisted by the node).
    pub ring_state: RingState,
}

/// A member as the rest of the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Stable id, hex.
    pub id: String,
    /// Cluster (QUIC) address.
    pub addr: SocketAddr,
    /// HTTP address.
    pub http_addr: String,
    /// Failure zone.
    pub zone: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: &'static str,
    /// The member's incarnation.
    pub incarnation: u64,
    /// `joining`, `member`, `leaving` or `removed`.
    pub ring_state: &'static str,
    /// Whether this is the node answering.
    pub local: bool,
}

/// The admin name of a liveness state.
pub fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

/// The admin name of a ring state.
pub fn ring_name(ring: RingState) -> &'static str {
    match ring {
        RingState::Joining => "joining",
        RingState::Member => "member",
        RingState::Leaving => "leaving",
        RingState::Removed => "removed",
    }
}

#[derive(Debug)]
enum Command {
    Leave(oneshot::Sender<()>),
    SetRing(RingState, oneshot::Sender<()>),
}

/// Counters of the membership layer, for metrics.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Members this node came to suspect.
    pub suspect_events: AtomicU64,
    /// Members this node declared or learned dead.
    pub dead_events: AtomicU64,
    /// Malformed cluster messages dropped.
    pub bad_messages: AtomicU64,
}

/// Handle to the running membership layer.
#[derive(Debug, Clone)]
pub struct Cluster {
    counters: Arc<ClusterCounters>,
    local_id: NodeId,
    transport: Transport,
    members: Arc<RwLock<BTreeMap<NodeId, Member>>>,
    /// Bumped every time `members` is republished.
    generation: Arc<AtomicU64>,
    commands: mpsc::Sender<Command>,
    joined: Arc<AtomicBool>,
}

impl Cluster {
    /// Starts the driver on `transport` and joins through the seeds.
    pub fn start(
        config: ClusterConfig,
        local_id: NodeId,
        transport: Transport,
        inbound: mpsc::Receiver<Inbound>,
    ) -> anyhow::Result<Cluster> {
        let origin = Instant::now();
        let meta = Meta {
            addr: config.advertise,
            http_addr: config.http_addr.clone(),
            zone: config.zone.clone(),
            ring: config.ring_state,
        };
        let swim = Swim::new(
            config.swim.clone(),
            local_id,
            meta,
            0,
            StdRng::from_os_rng(),
            Time::ZERO,
        )
        .map_err(|err| anyhow::anyhow!("starting membership: {err}"))?;
        // The local member is known now: publish it before anyone can ask,
        // so a request that arrives before the driver first runs still sees
        // this node (and, alone, a ring).
        let members = Arc::new(RwLock::new(BTreeMap::from([(
            local_id,
            swim.local().clone(),
        )])));
        let generation = Arc::new(AtomicU64::new(1));
        let counters = Arc::new(ClusterCounters::default());
        let (commands, commands_rx) = mpsc::channel(16);
        // With seeds to join, the node has not joined until it hears of
        // another member (see `Cluster::joined`).
        let joined = Arc::new(AtomicBool::new(config.seeds.is_empty()));
        let driver = Driver {
            swim,
            origin,
            transport: transport.clone(),
            members: members.clone(),
            generation: generation.clone(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            seeds: config.seeds,
            seed_addrs: Vec::new(),
            counters: counters.clone(),
            push_pulls_in_flight: Arc::new(AtomicUsize::new(0)),
            joined: joined.clone(),
        };
        tokio::spawn(driver.run(inbound, commands_rx));
        Ok(Cluster {
            counters,
            local_id,
            transport,
            members,
            generation,
            commands,
            joined,
        })
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &ClusterCounters {
        &self.counters
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    /// The transport, for replica RPCs.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Changes whenever the member table does: callers may cache what they
    /// derive from [`Cluster::members`] under it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the node has joined its cluster: it was given no seeds (or
    /// only itself), or it has heard of another member. Membership is not
    /// persisted, so a node that starts (or restarts) with seeds knows only
    /// itself until a seed answers; its ring would then be a ring of one,
    /// which caps every quorum at 1 and makes it the only replica of every
    /// key. Client requests must wait for the join, or they would be
    /// acknowledged on a node the real ring does not place them on.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Every member this node knows of, itself included, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.read().values().cloned().collect()
    }

    /// The members as the admin API shows them.
    pub fn member_views(&self) -> Vec<MemberView> {
        self.members()
            .into_iter()
            .map(|m| MemberView {
                id: format!("{:032x}", m.id.0),
                addr: m.meta.addr,
                http_addr: m.meta.http_addr.clone(),
                zone: m.meta.zone.clone(),
                state: state_name(m.state),
                incarnation: m.incarnation,
                ring_state: ring_name(m.meta.ring),
                local: m.id == self.local_id,
            })
            .collect()
    }

    /// This node's ring state as it announces it.
    pub fn ring_state(&self) -> RingState {
        self.members
            .read()
            .get(&self.local_id)
            .map_or(RingState::Joining, |m| m.meta.ring)
    }

    /// Announces a new ring state for this node (with a higher incarnation)
    /// and returns once the state machine took it.
    pub async fn set_ring_state(&self, ring: RingState) {
        let (done, wait) = oneshot::channel();
        if self
            .commands
            .send(Command::SetRing(ring, done))
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Announces a graceful leave and waits until it has been gossiped (or
    /// a few seconds passed), then closes the transport.
    pub async fn leave(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = wait.await;
        }
        // The last datagrams were handed to QUIC but may still sit in its
        // send queue; closing the endpoint now would drop them. Give them
        // one gossip interval to leave (a linger, as SO_LINGER does).
        tokio::time::sleep(LEAVE_LINGER).await;
        self.transport.close().await;
    }
}

struct Driver {
    swim: Swim,
    origin: Instant,
    transport: Transport,
    members: Arc<RwLock<BTreeMap<NodeId, Member>>>,
    generation: Arc<AtomicU64>,
    timers: BinaryHeap<Reverse<(Time, u64, TimerSlot)>>,
    timer_seq: u64,
    seeds: Vec<String>,
    /// What the seeds resolved to last time.
    seed_addrs: Vec<SocketAddr>,
    counters: Arc<ClusterCounters>,
    /// Push-pull exchanges still running (a leave waits for them).
    push_pulls_in_flight: Arc<AtomicUsize>,
    /// Set once another member is known (or the seeds name only this node).
    joined: Arc<AtomicBool>,
}

/// Wraps a timer so the heap orders by time and sequence only.
struct TimerSlot(Timer);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &TimerSlot) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &TimerSlot) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &TimerSlot) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Driver {
    fn now(&self) -> Time {
        Time::from_duration(self.origin.elapsed())
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let (replies_tx, mut replies) = mpsc::channel::<(SocketAddr, Bytes)>(256);
        // Seeds are resolved again (and contacted, while this node is alone)
        // every couple of seconds: a node that starts before its seeds, or
        // whose first join attempt is lost, joins soon after they answer.
        let mut resolve = tokio::time::interval(SEED_RETRY_INTERVAL);
        let mut leaving: Option<(oneshot::Sender<()>, Instant)> = None;
        self.publish();
        loop {
            self.flush(&replies_tx);
            if let Some((_, deadline)) = &leaving
                && ((self.swim.pending_broadcasts() == 0
                    && self.push_pulls_in_flight.load(Ordering::Relaxed) == 0)
                    || Instant::now() >= *deadline)
            {
                if let Some((done, _)) = leaving.take() {
                    let _ = done.send(());
                }
                return;
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let sleep_until = match next_timer {
                Some(at) => self.origin + at.as_duration(),
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                message = inbound.recv() => match message {
                    Some(message) => self.inbound(message),
                    None => return,
                },
                Some((from, bytes)) = replies.recv() => {
                    let now = self.now();
                    if let Err(err) = self.swim.handle_stream_reply(now, from, &bytes) {
                        self.bad(from, &err);
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        info!("leaving the cluster");
                        let now = self.now();
                        self.swim.leave(now);
                        // Gossip alone may miss a member (each update is
                        // sent a bounded number of times to random members);
                        // a push-pull to every live member carries the leave
                        // reliably.
                        let live: Vec<SocketAddr> = self
                            .swim
                            .members()
                            .filter(|m| m.state.is_live())
                            .map(|m| m.meta.addr)
                            .collect();
                        self.swim.join(now, &live);
                        leaving = Some((done, Instant::now() + LEAVE_DRAIN_MAX));
                    }
                    Some(Command::SetRing(ring, done)) => {
                        let now = self.now();
                        let meta = Meta { ring, ..self.swim.local().meta.clone() };
                        match self.swim.set_meta(now, meta) {
                            Ok(()) => info!(ring = ring_name(ring), "ring state announced"),
                            Err(err) => warn!(%err, "could not announce the ring state"),
                        }
                        self.publish();
                        let _ = done.send(());
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(sleep_until.into()) => {
                    let now = self.now();
                    while let Some(Reverse((at, _, _))) = self.timers.peek() {
                        if *at > now {
                            break;
                        }
                        let Some(Reverse((_, _, TimerSlot(timer)))) = self.timers.pop() else { break };
                        self.swim.handle_timer(now, timer);
                    }
                }
                _ = resolve.tick() => self.rejoin().await,
            }
        }
    }

    fn inbound(&mut self, message: Inbound) {
        let now = self.now();
        match message {
            Inbound::Datagram { from, bytes } => {
                if let Err(err) = self.swim.handle_datagram(now, from, &bytes) {
                    self.bad(from, &err);
                }
            }
            Inbound::Request { from, bytes, reply } => match bytes.first() {
                Some(&TAG_SWIM) => match self.swim.handle_stream_request(now, from, &bytes[1..]) {
                    Ok(answer) => {
                        tokio::spawn(async move { reply.send(&answer).await });
                    }
                    Err(err) => {
                        reply.refuse();
                        self.bad(from, &err);
                    }
                },
                // Replica RPCs are answered by the coordinator where they
                // arrive (`Transport::serve_directly`); one gets here only
                // before the coordinator is serving.
                Some(&TAG_RPC) => {
                    debug!(%from, "refused a replica request: not serving them yet");
                    reply.refuse();
                }
                _ => {
                    reply.refuse();
                    self.bad(from, &"unknown stream tag");
                }
            },
        }
    }

    fn bad(&mut self, from: SocketAddr, err: &dyn std::fmt::Display) {
        let total = self.counters.bad_messages.fetch_add(1, Ordering::Relaxed) + 1;
        debug!(%from, %err, total, "dropped a malformed cluster message");
    }

    /// Resolves the seeds again and, if they are known, hands them to SWIM
    /// (it only contacts them when this node is alone).
    async fn rejoin(&mut self) {
        if self.seeds.is_empty() {
            return;
        }
        let mut addrs = Vec::new();
        let mut unresolved = 0;
        for seed in &self.seeds {
            match tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host(seed.as_str()),
            )
            .await
            {
                Ok(Ok(found)) => addrs.extend(found),
                Ok(Err(err)) => {
                    unresolved += 1;
                    debug!(%seed, %err, "could not resolve seed")
                }
                Err(_) => {
                    unresolved += 1;
                    debug!(%seed, "resolving seed timed out")
                }
            }
        }
        let advertise = self.swim.local().meta.addr;
        addrs.retain(|a| *a != advertise);
        if addrs.is_empty() && unresolved == 0 && !self.joined.swap(true, Ordering::AcqRel) {
            info!("the seeds name only this node: serving as a cluster of its own");
        }
        addrs.sort();
        addrs.dedup();
        // Announce to every seed while alone; otherwise only to seeds whose
        // address is new (SWIM's own reconnect rounds cover the rest).
        let alone = self.swim.live_members() <= 1;
        let fresh: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| alone || !self.seed_addrs.contains(a))
            .collect();
        if !fresh.is_empty() {
            let now = self.now();
            self.swim.join(now, &fresh);
        }
        self.seed_addrs = addrs;
    }

    /// Carries out every pending output of the state machine.
    fn flush(&mut self, replies: &mpsc::Sender<(SocketAddr, Bytes)>) {
        let mut changed = false;
        while let Some(output) = self.swim.poll_output() {
            match output {
                Output::Datagram { addr, bytes, .. } => {
                    let transport = self.transport.clone();
                    tokio::spawn(async move {
                        if let Err(err) = transport.send_datagram(addr, Bytes::from(bytes)).await {
                            debug!(%addr, %err, "datagram not sent");
                        }
                    });
                }
                Output::PushPull { addr, bytes, .. } => {
                    let transport = self.transport.clone();
                    let replies = replies.clone();
                    let timeout = self.swim.config().probe_interval * 5;
                    let in_flight = self.push_pulls_in_flight.clone();
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let mut request = Vec::with_capacity(bytes.len() + 1);
                        request.push(TAG_SWIM);
                        request.extend_from_slice(&bytes);
                        match transport.request(addr, &request, timeout).await {
                            Ok(reply) => {
                                let _ = replies.send((addr, reply)).await;
                            }
                            Err(err) => debug!(%addr, %err, "push-pull failed"),
                        }
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Output::Timer { at, timer } => {
                    self.timer_seq += 1;
                    self.timers
                        .push(Reverse((at, self.timer_seq, TimerSlot(timer))));
                }
                Output::Event(event) => {
                    log_event(&event);
                    match &event {
                        Event::Suspect(_) => {
                            self.counters.suspect_events.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::Dead(_) => {
                            self.counters.dead_events.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    if let Event::Dead(m) | Event::Left(m) = &event {
                        self.transport.forget(m.meta.addr);
                    }
                    changed = true;
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        let mut view: BTreeMap<NodeId, Member> =
            self.swim.members().map(|m| (m.id, m.clone())).collect();
        let local = self.swim.local().clone();
        view.insert(local.id, local);
        let others = view.len() > 1;
        *self.members.write() = view;
        self.generation.fetch_add(1, Ordering::Release);
        if others && !self.joined.swap(true, Ordering::AcqRel) {
            info!("joined the cluster: serving client requests");
        }
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Up(m) => {
            info!(member = format_args!("{:032x}", m.id.0), addr = %m.meta.addr, incarnation = m.incarnation, "member up")
        }
        Event::Suspect(m) => {
            warn!(member = format_args!("{:032x}", m.id.0), addr = %m.meta.addr, "member suspect")
        }
        Event::Dead(m) => {
            warn!(member = format_args!("{:032x}", m.id.0), addr = %m.meta.addr, "member dead")
        }
        Event::Left(m) => {
            info!(member = format_args!("{:032x}", m.id.0), addr = %m.meta.addr, "member left")
        }
        Event::MetaChanged(m) => info!(
            member = format_args!("{:032x}", m.id.0),
            "member metadata changed"
        ),
        Event::Forgotten(id) => info!(member = format_args!("{:032x}", id.0), "member forgotten"),
    }
}
