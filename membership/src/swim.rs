//! The SWIM + Lifeguard state machine.
//!
//! [`Swim`] owns this node's view of the cluster. It is driven entirely by
//! its caller: received datagrams and stream messages, fired timers and
//! local commands (`join`, `leave`, `set_meta`) go in, each with the current
//! [`Time`]; [`Output`]s (datagrams, push-pull stream requests, timers to
//! arm, member events) come out of [`Swim::poll_output`]. Randomness comes
//! from the RNG handed to [`Swim::new`], so a seeded run is reproducible.
//!
//! What it does not do: sockets, clocks, threads, retries of failed streams,
//! persistence. Timers cannot be cancelled; a timer that has become stale
//! is recognised and ignored when it fires.
//!
//! Invariants:
//! - Only this node raises its own incarnation (to refute, or to announce
//!   new metadata). Updates about others carry the incarnation their
//!   accuser saw, and one more than `incarnation_jump_max` above what we know
//!   of a live member is ignored, so a corrupt or forged update cannot force
//!   a member out.
//! - The member table holds at most `members_max` members, the broadcast
//!   queue at most `broadcasts_max` updates, the relay table at most
//!   [`RELAYS_MAX`] indirect probes; every datagram is at most
//!   `datagram_size_bytes_max` bytes.
//! - Nothing a peer sends can panic this code: bad bytes are a
//!   [`WireError`], odd content is ignored and counted in [`Stats`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, IteratorRandom, SliceRandom};

use crate::awareness::Awareness;
use crate::broadcast::{BroadcastQueue, retransmit_limit};
use crate::config::{Config, ConfigError};
use crate::member::{Incarnation, Member, MemberState, Meta, MetaError, NodeId};
use crate::suspicion::{Suspicion, confirmations_needed, suspicion_timeout_min};
use crate::time::Time;
use crate::wire::{self, Message, Record, StreamPacket, Update, WireError};

/// Most indirect probes this node runs for others at once; further
/// ping-reqs are dropped (their origin counts a missed nack).
pub const RELAYS_MAX: usize = 1024;

/// Seeds kept for re-announcing.
const SEEDS_MAX: usize = 64;

/// Above this many members, push-pull happens less often (memberlist).
const PUSH_PULL_SCALE_THRESHOLD: usize = 32;

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` as one unreliable datagram to `addr` (member `to`).
    Datagram {
        /// The member addressed.
        to: NodeId,
        /// Where to send it.
        addr: SocketAddr,
        /// The datagram, at most `datagram_size_bytes_max` bytes.
        bytes: Vec<u8>,
    },
    /// Open a reliable stream to `addr`, write `bytes`, read the reply (at
    /// most [`wire::STREAM_BYTES_MAX`] bytes) and hand it to
    /// [`Swim::handle_stream_reply`]. `to` is `None` for a seed whose id is
    /// not known yet. A failed stream needs no report: reconnect rounds
    /// retry.
    PushPull {
        /// The member addressed, if known.
        to: Option<NodeId>,
        /// Where to connect.
        addr: SocketAddr,
        /// The request.
        bytes: Vec<u8>,
    },
    /// Call [`Swim::handle_timer`] with `timer` at `at` (or as soon as
    /// possible after). Timers are never cancelled.
    Timer {
        /// When it fires.
        at: Time,
        /// What to hand back.
        timer: Timer,
    },
    /// A member changed state in this node's view.
    Event(Event),
}

/// A change in this node's view of the cluster. Each carries the member as
/// it is after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member became alive: first heard of, or back from suspect, dead or
    /// left.
    Up(Member),
    /// A member is suspected of having failed.
    Suspect(Member),
    /// A member is considered failed. It keeps its ring ownership.
    Dead(Member),
    /// A member left gracefully.
    Left(Member),
    /// An alive member announced new metadata.
    MetaChanged(Member),
    /// A member was dropped from the table (left long ago, or forgotten by
    /// the operator).
    Forgotten(NodeId),
}

/// An opaque timer token; hand it back to [`Swim::handle_timer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timer(TimerKind);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TimerKind {
    /// Time to probe the next member (and judge the previous probe).
    Probe,
    /// No direct ack for probe `seq`: go indirect.
    ProbeTimeout {
        seq: u32,
    },
    /// An indirect probe we run for someone else expires (nack if asked).
    Relay {
        seq: u32,
    },
    /// Maybe declare `member` dead.
    Suspicion {
        member: NodeId,
        incarnation: Incarnation,
    },
    Gossip,
    PushPull,
    Reconnect,
}

/// Counters for metrics and tests. They only ever grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Probes started.
    pub probes: u64,
    /// Probes that got no ack by their deadline.
    pub probes_failed: u64,
    /// Suspicions of ourselves we refuted.
    pub refutations: u64,
    /// Updates ignored for an absurd incarnation jump.
    pub absurd_updates: u64,
    /// New members ignored because the table was full.
    pub members_refused: u64,
    /// Ping-reqs dropped because the relay table was full.
    pub relays_refused: u64,
    /// Datagrams from ourselves or for another node.
    pub misdirected: u64,
    /// Updates dropped from the full broadcast queue.
    pub broadcasts_dropped: u64,
}

#[derive(Debug, Clone)]
struct Probe {
    seq: u32,
    target: NodeId,
    incarnation: Incarnation,
    deadline: Time,
    acked: bool,
    ping_reqs: u32,
    nacks: u32,
}

#[derive(Debug, Clone)]
struct Relay {
    origin: NodeId,
    origin_addr: SocketAddr,
    origin_seq: u32,
    nack: bool,
}

/// The membership state machine of one node. See the crate docs for how a
/// driver uses it.
pub struct Swim<R = StdRng> {
    config: Config,
    rng: R,
    local: Member,
    left: bool,
    started_at: Time,
    members: BTreeMap<NodeId, Member>,
    /// Alive or suspect members in `members`, kept in step with it.
    live_count: usize,
    probe_order: Vec<NodeId>,
    probe_index: usize,
    probe: Option<Probe>,
    relays: BTreeMap<u32, Relay>,
    suspicions: BTreeMap<NodeId, Suspicion>,
    broadcasts: BroadcastQueue,
    awareness: Awareness,
    seeds: Vec<SocketAddr>,
    next_seq: u32,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl<R> fmt::Debug for Swim<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swim")
            .field("local", &self.local)
            .field("members", &self.members.len())
            .field("live", &self.live_count)
            .field("health_score", &self.awareness.score())
            .finish_non_exhaustive()
    }
}

impl<R: Rng> Swim<R> {
    /// A node `id` announcing `meta` at `incarnation`, alone until it
    /// [`join`](Self::join)s. A restarted node may pass 0: it learns how far
    /// its previous life got from its peers and refutes above that. Arms
    /// the periodic timers (with random phase) as its first outputs.
    pub fn new(
        config: Config,
        id: NodeId,
        meta: Meta,
        incarnation: Incarnation,
        mut rng: R,
        now: Time,
    ) -> Result<Self, NewError> {
        config.validate()?;
        meta.validate()?;
        let jitter = |rng: &mut R, d: Duration| d.mul_f64(rng.random::<f64>());
        let probe_at = now + jitter(&mut rng, config.probe_interval);
        let gossip_at = now + jitter(&mut rng, config.gossip_interval);
        let push_pull_at = now + jitter(&mut rng, config.push_pull_interval);
        let reconnect_at =
            now + config.reconnect_interval / 2 + jitter(&mut rng, config.reconnect_interval);
        let mut swim = Swim {
            awareness: Awareness::new(config.awareness_max_multiplier),
            broadcasts: BroadcastQueue::new(config.broadcasts_max),
            config,
            rng,
            local: Member {
                id,
                incarnation,
                state: MemberState::Alive,
                meta,
                state_changed_at: now,
            },
            left: false,
            started_at: now,
            members: BTreeMap::new(),
            live_count: 0,
            probe_order: Vec::new(),
            probe_index: 0,
            probe: None,
            relays: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            seeds: Vec::new(),
            next_seq: 0,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        };
        swim.arm(probe_at, TimerKind::Probe);
        swim.arm(gossip_at, TimerKind::Gossip);
        swim.arm(push_pull_at, TimerKind::PushPull);
        swim.arm(reconnect_at, TimerKind::Reconnect);
        Ok(swim)
    }

    // ----- Queries -----

    /// This node as it announces itself.
    pub fn local(&self) -> &Member {
        &self.local
    }

    /// Every other member known, in id order, whatever its state.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One other member, if known.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Alive or suspect members, this node included (it counts itself while
    /// it has not left).
    pub fn live_members(&self) -> usize {
        self.live_count + usize::from(!self.left)
    }

    /// Lifeguard's local health score: 0 is healthy; probe interval and
    /// timeout are multiplied by `score + 1`.
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// Updates waiting to be piggy-backed. After [`leave`](Self::leave) a
    /// driver can wait for this to reach 0 (bounded by a timeout) before
    /// shutting down, so the leave has spread.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            broadcasts_dropped: self.broadcasts.dropped(),
            ..self.stats.clone()
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next thing the driver must do, if any. Drain it after every call
    /// into the state machine; each call queues a bounded number of outputs.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ----- Commands -----

    /// Announces this node to `seeds` with a push-pull each and remembers
    /// them (up to 64) for re-announcing when this node finds itself alone.
    /// Can be called again with new seeds.
    pub fn join(&mut self, _now: Time, seeds: &[SocketAddr]) {
        for &addr in seeds {
            if addr == self.local.meta.addr {
                continue;
            }
            if !self.seeds.contains(&addr) && self.seeds.len() < SEEDS_MAX {
                self.seeds.push(addr);
            }
            self.push_pull_to(None, addr, true);
        }
    }

    /// Leaves gracefully: announces `Left` and stops probing. Keep driving
    /// the node (timers and incoming datagrams) until
    /// [`pending_broadcasts`](Self::pending_broadcasts) is 0 or a few
    /// gossip intervals passed, then drop it. A node that left does not
    /// come back; start a new `Swim` (which refutes the leave) instead.
    pub fn leave(&mut self, now: Time) {
        if self.left {
            return;
        }
        self.left = true;
        self.local.state = MemberState::Left;
        self.local.state_changed_at = now;
        self.probe = None;
        self.broadcasts.push(&Update::Left {
            member: self.local.id,
            incarnation: self.local.incarnation,
        });
    }

    /// Announces new metadata (address, zone, ring state) with a higher
    /// incarnation.
    pub fn set_meta(&mut self, _now: Time, meta: Meta) -> Result<(), MetaError> {
        meta.validate()?;
        if meta != self.local.meta {
            self.local.meta = meta;
            self.local.incarnation = self.local.incarnation.saturating_add(1);
            self.broadcast_local_alive();
        }
        Ok(())
    }

    /// Drops a dead or left member from the table, e.g. after an operator
    /// removed it from the ring. Does nothing to a live member (a live
    /// member would be re-learned at once). Returns whether it was dropped.
    pub fn forget(&mut self, id: NodeId) -> bool {
        match self.members.get(&id) {
            Some(m) if !m.state.is_live() => {
                self.members.remove(&id);
                self.suspicions.remove(&id);
                self.broadcasts.forget(id);
                self.emit(Event::Forgotten(id));
                true
            }
            _ => false,
        }
    }

    // ----- Inputs -----

    /// A datagram arrived from `from_addr`.
    pub fn handle_datagram(
        &mut self,
        now: Time,
        from_addr: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        let packet = wire::decode_packet(bytes)?;
        let from = packet.from;
        if from == self.local.id {
            self.stats.misdirected += 1;
            return Ok(());
        }
        // Updates first, so that an ack we send in answer already carries
        // our refutation of any suspicion it brought.
        for update in packet.updates {
            self.apply_update(now, update);
        }
        match packet.msg {
            Message::Ping { seq, target } => {
                if target == self.local.id {
                    let lead = self.death_of(from);
                    self.send(from, from_addr, Message::Ack { seq }, lead);
                } else {
                    self.stats.misdirected += 1;
                }
            }
            Message::Ack { seq } => {
                if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    probe.acked = true;
                } else if let Some(relay) = self.relays.remove(&seq) {
                    self.send(
                        relay.origin,
                        relay.origin_addr,
                        Message::Ack {
                            seq: relay.origin_seq,
                        },
                        None,
                    );
                }
            }
            Message::Nack { seq } => {
                if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    probe.nacks = probe.nacks.saturating_add(1);
                }
            }
            Message::PingReq {
                seq,
                target,
                target_addr,
                nack_after_ms,
            } => self.relay_probe(
                now,
                from,
                from_addr,
                seq,
                target,
                target_addr,
                nack_after_ms,
            ),
            Message::Gossip => {}
        }
        Ok(())
    }

    /// A push-pull request arrived on a stream from `from_addr`. Merges the
    /// sender's state and returns the reply to write back on the stream.
    pub fn handle_stream_request(
        &mut self,
        now: Time,
        _from_addr: SocketAddr,
        bytes: &[u8],
    ) -> Result<Vec<u8>, WireError> {
        let packet = wire::decode_stream(bytes, self.config.members_max)?;
        if packet.reply {
            return Err(WireError::Invalid("push-pull reply sent as a request"));
        }
        if packet.from != self.local.id {
            self.merge(now, packet.from, packet.members);
        }
        Ok(self.encode_state(false, true))
    }

    /// The reply to a push-pull request of ours arrived.
    pub fn handle_stream_reply(
        &mut self,
        now: Time,
        _from_addr: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        let packet = wire::decode_stream(bytes, self.config.members_max)?;
        if !packet.reply {
            return Err(WireError::Invalid("push-pull request sent as a reply"));
        }
        if packet.from != self.local.id {
            self.merge(now, packet.from, packet.members);
        }
        Ok(())
    }

    /// A timer armed through [`Output::Timer`] fired.
    pub fn handle_timer(&mut self, now: Time, timer: Timer) {
        match timer.0 {
            TimerKind::Probe => self.probe_tick(now),
            TimerKind::ProbeTimeout { seq } => self.probe_indirect(now, seq),
            TimerKind::Relay { seq } => {
                if let Some(relay) = self.relays.remove(&seq)
                    && relay.nack
                {
                    self.send(
                        relay.origin,
                        relay.origin_addr,
                        Message::Nack {
                            seq: relay.origin_seq,
                        },
                        None,
                    );
                }
            }
            TimerKind::Suspicion {
                member,
                incarnation,
            } => self.suspicion_expired(now, member, incarnation),
            TimerKind::Gossip => self.gossip_tick(now),
            TimerKind::PushPull => self.push_pull_tick(now),
            TimerKind::Reconnect => self.reconnect_tick(now),
        }
    }

    // ----- Probing -----

    fn probe_tick(&mut self, now: Time) {
        self.finish_probe(now);
        self.arm(
            now + self.awareness.scale(self.config.probe_interval),
            TimerKind::Probe,
        );
        if self.left {
            return;
        }
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let Some(member) = self.members.get(&target) else {
            return;
        };
        let (addr, incarnation, state) = (member.meta.addr, member.incarnation, member.state);
        let seq = self.next_seq();
        // Buddy system: a suspect learns of its suspicion from our ping and
        // can refute at once.
        let lead = (state == MemberState::Suspect).then_some(Update::Suspect {
            member: target,
            incarnation,
            from: self.local.id,
        });
        self.send(target, addr, Message::Ping { seq, target }, lead);
        self.stats.probes += 1;
        self.probe = Some(Probe {
            seq,
            target,
            incarnation,
            deadline: now + self.awareness.scale(self.config.probe_interval),
            acked: false,
            ping_reqs: 0,
            nacks: 0,
        });
        self.arm(
            now + self.awareness.scale(self.config.probe_timeout),
            TimerKind::ProbeTimeout { seq },
        );
    }

    /// Round-robin over a shuffled list, reshuffled at the end of each
    /// round, skipping members that are no longer live.
    fn next_probe_target(&mut self) -> Option<NodeId> {
        for _ in 0..2 {
            while self.probe_index < self.probe_order.len() {
                let id = self.probe_order[self.probe_index];
                self.probe_index += 1;
                if self.members.get(&id).is_some_and(|m| m.state.is_live()) {
                    return Some(id);
                }
            }
            self.probe_order = self
                .members
                .values()
                .filter(|m| m.state.is_live())
                .map(|m| m.id)
                .collect();
            self.probe_order.shuffle(&mut self.rng);
            self.probe_index = 0;
        }
        None
    }

    /// Puts a newly live member at a random place in the probe order, as
    /// memberlist does, so it is probed within the current round.
    fn add_to_probe_order(&mut self, id: NodeId) {
        if self.probe_order.contains(&id) {
            return;
        }
        let at = self.rng.random_range(0..=self.probe_order.len());
        self.probe_order.insert(at, id);
        if at < self.probe_index {
            self.probe_index += 1;
        }
    }

    fn probe_indirect(&mut self, now: Time, seq: u32) {
        let Some(probe) = self.probe.as_ref().filter(|p| p.seq == seq && !p.acked) else {
            return;
        };
        let (target, deadline) = (probe.target, probe.deadline);
        let Some(target_addr) = self.members.get(&target).map(|m| m.meta.addr) else {
            return;
        };
        let helpers: Vec<(NodeId, SocketAddr)> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Alive && m.id != target)
            .map(|m| (m.id, m.meta.addr))
            .choose_multiple(&mut self.rng, self.config.indirect_checks);
        // Ask for a nack well before our deadline so that it can arrive.
        let window = deadline.saturating_duration_since(now);
        let nack_after_ms = u32::try_from(window.mul_f64(0.7).as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        for &(helper, addr) in &helpers {
            self.send(
                helper,
                addr,
                Message::PingReq {
                    seq,
                    target,
                    target_addr,
                    nack_after_ms,
                },
                None,
            );
        }
        if let Some(probe) = self.probe.as_mut() {
            probe.ping_reqs = u32::try_from(helpers.len()).unwrap_or(u32::MAX);
        }
    }

    /// Judges the probe in flight when the next one is due (its deadline).
    fn finish_probe(&mut self, now: Time) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.acked {
            self.awareness.apply_delta(-1);
            return;
        }
        self.stats.probes_failed += 1;
        // Lifeguard: if the helpers could not answer us either, the
        // problem may be ours. Every missed nack raises our health score.
        let delta = if probe.ping_reqs > 0 {
            i64::from(probe.ping_reqs.saturating_sub(probe.nacks))
        } else {
            1
        };
        self.awareness.apply_delta(delta);
        let from = self.local.id;
        self.on_suspect(now, probe.target, probe.incarnation, from);
    }

    #[allow(clippy::too_many_arguments)]
    fn relay_probe(
        &mut self,
        now: Time,
        origin: NodeId,
        origin_addr: SocketAddr,
        origin_seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
        nack_after_ms: u32,
    ) {
        if target == self.local.id {
            self.send(origin, origin_addr, Message::Ack { seq: origin_seq }, None);
            return;
        }
        if self.relays.len() >= RELAYS_MAX {
            self.stats.relays_refused += 1;
            return;
        }
        let seq = self.next_seq();
        self.relays.insert(
            seq,
            Relay {
                origin,
                origin_addr,
                origin_seq,
                nack: nack_after_ms > 0,
            },
        );
        self.send(target, target_addr, Message::Ping { seq, target }, None);
        let expire_after = if nack_after_ms > 0 {
            Duration::from_millis(u64::from(nack_after_ms)).min(self.config.probe_interval)
        } else {
            self.config.probe_timeout
        };
        self.arm(now + expire_after, TimerKind::Relay { seq });
    }

    // ----- Gossip, push-pull, reconnect -----

    fn gossip_tick(&mut self, now: Time) {
        self.arm(now + self.config.gossip_interval, TimerKind::Gossip);
        if self.broadcasts.is_empty() {
            return;
        }
        let dead_horizon = self.config.gossip_to_the_dead_time;
        let targets: Vec<(NodeId, SocketAddr)> = self
            .members
            .values()
            .filter(|m| match m.state {
                MemberState::Alive | MemberState::Suspect => true,
                MemberState::Dead => {
                    now.saturating_duration_since(m.state_changed_at) < dead_horizon
                }
                MemberState::Left => false,
            })
            .map(|m| (m.id, m.meta.addr))
            .choose_multiple(&mut self.rng, self.config.gossip_nodes);
        for (id, addr) in targets {
            if self.broadcasts.is_empty() {
                break;
            }
            self.send(id, addr, Message::Gossip, None);
        }
    }

    fn push_pull_tick(&mut self, now: Time) {
        let n = self.live_members();
        let interval = push_pull_scale(self.config.push_pull_interval, n);
        self.arm(now + interval, TimerKind::PushPull);
        if self.left {
            return;
        }
        let target = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| (m.id, m.meta.addr))
            .choose(&mut self.rng);
        if let Some((id, addr)) = target {
            self.push_pull_to(Some(id), addr, false);
        }
    }

    fn reconnect_tick(&mut self, now: Time) {
        self.arm(now + self.config.reconnect_interval, TimerKind::Reconnect);
        if self.left {
            return;
        }
        self.reap_left(now);
        if self.live_count == 0
            && let Some(&seed) = self.seeds.choose(&mut self.rng)
        {
            self.push_pull_to(None, seed, true);
        }
        let dead: Vec<(NodeId, SocketAddr)> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Dead)
            .map(|m| (m.id, m.meta.addr))
            .collect();
        if dead.is_empty() {
            return;
        }
        // Serf's rule: attempt with probability dead/alive, so the cluster
        // as a whole makes about one attempt per dead member and round.
        let probability = dead.len() as f64 / (self.live_count.max(1)) as f64;
        if self.rng.random::<f64>() < probability
            && let Some(&(id, addr)) = dead.choose(&mut self.rng)
        {
            self.push_pull_to(Some(id), addr, false);
        }
    }

    fn reap_left(&mut self, now: Time) {
        let timeout = self.config.left_reap_timeout;
        let reaped: Vec<NodeId> = self
            .members
            .values()
            .filter(|m| {
                m.state == MemberState::Left
                    && now.saturating_duration_since(m.state_changed_at) >= timeout
            })
            .map(|m| m.id)
            .collect();
        for id in reaped {
            self.forget(id);
        }
    }

    fn push_pull_to(&mut self, to: Option<NodeId>, addr: SocketAddr, join: bool) {
        let bytes = self.encode_state(join, false);
        self.outputs.push_back(Output::PushPull { to, addr, bytes });
    }

    fn encode_state(&self, join: bool, reply: bool) -> Vec<u8> {
        let members = std::iter::once(&self.local)
            .chain(self.members.values())
            .map(Record::from)
            .collect();
        wire::encode_stream(&StreamPacket {
            from: self.local.id,
            join,
            reply,
            members,
        })
    }

    /// Merges a full state from `sender` (memberlist's `mergeState`).
    fn merge(&mut self, now: Time, sender: NodeId, records: Vec<Record>) {
        for r in records {
            if r.id == self.local.id {
                match r.state {
                    MemberState::Alive => self.on_alive(now, r.id, r.incarnation, r.meta),
                    _ => self.refute(now, r.incarnation),
                }
                continue;
            }
            if !self.members.contains_key(&r.id) {
                // Learn every member, dead and left ones included: a dead
                // member still owns its part of the ring.
                match r.state {
                    MemberState::Alive | MemberState::Suspect => {
                        self.on_alive(now, r.id, r.incarnation, r.meta);
                    }
                    MemberState::Dead | MemberState::Left => {
                        self.insert_member(now, r.id, r.incarnation, r.state, r.meta);
                    }
                }
                continue;
            }
            match r.state {
                MemberState::Alive => self.on_alive(now, r.id, r.incarnation, r.meta),
                // A remote belief that a member is dead only makes us
                // suspect it: it may be stale, and the member can refute.
                MemberState::Suspect | MemberState::Dead => {
                    self.on_suspect(now, r.id, r.incarnation, sender);
                }
                MemberState::Left => self.on_dead(now, r.id, r.incarnation, r.id, true),
            }
        }
    }

    // ----- Applying updates -----

    fn apply_update(&mut self, now: Time, update: Update) {
        match update {
            Update::Alive {
                member,
                incarnation,
                meta,
            } => self.on_alive(now, member, incarnation, meta),
            Update::Suspect {
                member,
                incarnation,
                from,
            } => self.on_suspect(now, member, incarnation, from),
            Update::Dead {
                member,
                incarnation,
                from,
            } => self.on_dead(now, member, incarnation, from, false),
            Update::Left {
                member,
                incarnation,
            } => self.on_dead(now, member, incarnation, member, true),
        }
    }

    /// Is `incarnation` an absurd jump above what we know of `member`?
    fn absurd(&mut self, member: &Member, incarnation: Incarnation) -> bool {
        let absurd = member.state.is_live()
            && incarnation
                > member
                    .incarnation
                    .saturating_add(self.config.incarnation_jump_max);
        if absurd {
            self.stats.absurd_updates += 1;
        }
        absurd
    }

    fn on_alive(&mut self, now: Time, id: NodeId, incarnation: Incarnation, meta: Meta) {
        if id == self.local.id {
            // Someone holds an old or foreign picture of us: announce ours
            // above it.
            if incarnation > self.local.incarnation
                || (incarnation == self.local.incarnation && meta != self.local.meta)
            {
                self.refute(now, incarnation);
            }
            return;
        }
        let Some(member) = self.members.get(&id) else {
            if self.insert_member(now, id, incarnation, MemberState::Alive, meta.clone()) {
                self.broadcasts.push(&Update::Alive {
                    member: id,
                    incarnation,
                    meta,
                });
            }
            return;
        };
        if incarnation <= member.incarnation {
            return;
        }
        let member = member.clone();
        if self.absurd(&member, incarnation) {
            return;
        }
        let meta_changed = member.meta != meta;
        self.suspicions.remove(&id);
        self.set_member(now, id, incarnation, MemberState::Alive, Some(meta.clone()));
        self.broadcasts.push(&Update::Alive {
            member: id,
            incarnation,
            meta,
        });
        if member.state != MemberState::Alive {
            if !member.state.is_live() {
                self.add_to_probe_order(id);
            }
            self.emit_member(id, Event::Up);
        } else if meta_changed {
            self.emit_member(id, Event::MetaChanged);
        }
    }

    fn on_suspect(&mut self, now: Time, id: NodeId, incarnation: Incarnation, from: NodeId) {
        if id == self.local.id {
            self.refute(now, incarnation);
            return;
        }
        let Some(member) = self.members.get(&id).cloned() else {
            return;
        };
        if incarnation < member.incarnation || self.absurd(&member, incarnation) {
            return;
        }
        if member.state == MemberState::Suspect {
            if let Some(suspicion) = self.suspicions.get_mut(&id)
                && suspicion.confirm(from)
            {
                let (deadline, inc) = (suspicion.deadline(), suspicion.incarnation);
                self.arm(
                    deadline,
                    TimerKind::Suspicion {
                        member: id,
                        incarnation: inc,
                    },
                );
                self.broadcasts.push(&Update::Suspect {
                    member: id,
                    incarnation,
                    from,
                });
            }
            return;
        }
        if member.state != MemberState::Alive {
            return;
        }
        let n = self.live_members();
        let k = confirmations_needed(self.config.suspicion_mult, n);
        let min = suspicion_timeout_min(self.config.suspicion_mult, n, self.config.probe_interval);
        let max = min.saturating_mul(self.config.suspicion_max_timeout_mult);
        let suspicion = Suspicion::new(from, incarnation, k, min, max, now);
        self.arm(
            suspicion.deadline(),
            TimerKind::Suspicion {
                member: id,
                incarnation,
            },
        );
        self.suspicions.insert(id, suspicion);
        self.set_member(now, id, incarnation, MemberState::Suspect, None);
        self.broadcasts.push(&Update::Suspect {
            member: id,
            incarnation,
            from,
        });
        self.emit_member(id, Event::Suspect);
    }

    fn suspicion_expired(&mut self, now: Time, id: NodeId, incarnation: Incarnation) {
        let Some(suspicion) = self.suspicions.get(&id) else {
            return;
        };
        if suspicion.incarnation != incarnation || now < suspicion.deadline() {
            // Stale, or superseded by a timer for an earlier deadline.
            return;
        }
        let still_suspect = self
            .members
            .get(&id)
            .is_some_and(|m| m.state == MemberState::Suspect);
        if !still_suspect {
            self.suspicions.remove(&id);
            return;
        }
        let inc = self.members.get(&id).map_or(incarnation, |m| m.incarnation);
        let from = self.local.id;
        self.on_dead(now, id, inc, from, false);
    }

    fn on_dead(
        &mut self,
        now: Time,
        id: NodeId,
        incarnation: Incarnation,
        from: NodeId,
        left: bool,
    ) {
        if id == self.local.id {
            self.refute(now, incarnation);
            return;
        }
        let Some(member) = self.members.get(&id).cloned() else {
            return;
        };
        if incarnation < member.incarnation || self.absurd(&member, incarnation) {
            return;
        }
        let new_state = if left {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        // Dead may still turn into Left (the member announced its leave),
        // never the other way round.
        if member.state == MemberState::Left || (member.state == MemberState::Dead && !left) {
            return;
        }
        self.suspicions.remove(&id);
        self.set_member(now, id, incarnation, new_state, None);
        self.broadcasts.push(&if left {
            Update::Left {
                member: id,
                incarnation,
            }
        } else {
            Update::Dead {
                member: id,
                incarnation,
                from,
            }
        });
        self.emit_member(id, if left { Event::Left } else { Event::Dead });
    }

    /// Someone believes we are suspect, dead or left at `incarnation`, or
    /// holds a stale picture of us: announce ourselves alive above it.
    fn refute(&mut self, now: Time, incarnation: Incarnation) {
        if self.left || incarnation < self.local.incarnation {
            return;
        }
        let in_bootstrap =
            now.saturating_duration_since(self.started_at) < self.config.push_pull_interval;
        if !in_bootstrap
            && incarnation
                > self
                    .local
                    .incarnation
                    .saturating_add(self.config.incarnation_jump_max)
        {
            self.stats.absurd_updates += 1;
            return;
        }
        let Some(next) = incarnation.checked_add(1) else {
            self.stats.absurd_updates += 1;
            return;
        };
        self.local.incarnation = next;
        self.stats.refutations += 1;
        // Lifeguard: having to refute hints that we are the slow one.
        self.awareness.apply_delta(1);
        self.broadcast_local_alive();
    }

    fn broadcast_local_alive(&mut self) {
        self.broadcasts.push(&Update::Alive {
            member: self.local.id,
            incarnation: self.local.incarnation,
            meta: self.local.meta.clone(),
        });
    }

    // ----- Member table -----

    /// Adds an unknown member. Returns false if the table is full.
    fn insert_member(
        &mut self,
        now: Time,
        id: NodeId,
        incarnation: Incarnation,
        state: MemberState,
        meta: Meta,
    ) -> bool {
        debug_assert!(!self.members.contains_key(&id) && id != self.local.id);
        if self.members.len() >= self.config.members_max {
            self.stats.members_refused += 1;
            return false;
        }
        self.members.insert(
            id,
            Member {
                id,
                incarnation,
                state,
                meta,
                state_changed_at: now,
            },
        );
        if state.is_live() {
            self.live_count += 1;
            self.add_to_probe_order(id);
        }
        self.emit_member(
            id,
            match state {
                MemberState::Alive | MemberState::Suspect => Event::Up,
                MemberState::Dead => Event::Dead,
                MemberState::Left => Event::Left,
            },
        );
        true
    }

    /// Changes a known member, keeping `live_count` in step.
    fn set_member(
        &mut self,
        now: Time,
        id: NodeId,
        incarnation: Incarnation,
        state: MemberState,
        meta: Option<Meta>,
    ) {
        let Some(member) = self.members.get_mut(&id) else {
            debug_assert!(false, "set_member on unknown member {id}");
            return;
        };
        match (member.state.is_live(), state.is_live()) {
            (true, false) => self.live_count -= 1,
            (false, true) => self.live_count += 1,
            _ => {}
        }
        if member.state != state {
            member.state_changed_at = now;
        }
        member.state = state;
        member.incarnation = incarnation;
        if let Some(meta) = meta {
            member.meta = meta;
        }
        debug_assert!(self.live_count <= self.members.len());
    }

    // ----- Output helpers -----

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn emit_member(&mut self, id: NodeId, make: fn(Member) -> Event) {
        if let Some(member) = self.members.get(&id) {
            let event = make(member.clone());
            self.emit(event);
        }
    }

    fn arm(&mut self, at: Time, kind: TimerKind) {
        self.outputs.push_back(Output::Timer {
            at,
            timer: Timer(kind),
        });
    }

    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// Our death or leave record of `id`, to lead the ack of its ping with.
    /// A member that pings us while we hold it dead has restarted or
    /// refuted, and its refutation may sit at or below the incarnation we
    /// hold (an update it made just before a crash may have reached only
    /// some of us); without this it would learn why we ignore it only when
    /// a push-pull happens to pass between us.
    fn death_of(&self, id: NodeId) -> Option<Update> {
        let member = self.members.get(&id)?;
        match member.state {
            MemberState::Alive | MemberState::Suspect => None,
            MemberState::Dead => Some(Update::Dead {
                member: id,
                incarnation: member.incarnation,
                from: self.local.id,
            }),
            MemberState::Left => Some(Update::Left {
                member: id,
                incarnation: member.incarnation,
            }),
        }
    }

    /// Sends `msg` with `lead` and then as many queued updates as fit.
    fn send(&mut self, to: NodeId, addr: SocketAddr, msg: Message, lead: Option<Update>) {
        let header = wire::encode_header(self.local.id, &msg);
        let size_max = self.config.datagram_size_bytes_max;
        let mut budget = wire::update_budget(header.len(), size_max);
        let mut updates = Vec::new();
        if let Some(lead) = lead {
            let bytes = wire::encode_update(&lead);
            if bytes.len() <= budget {
                budget -= bytes.len();
                updates.push(bytes);
            }
        }
        let limit = retransmit_limit(self.config.retransmit_mult, self.live_members());
        self.broadcasts.take(budget, limit, &mut updates);
        let bytes = wire::assemble_packet(header, &updates);
        debug_assert!(bytes.len() <= size_max, "datagram over the size limit");
        self.outputs.push_back(Output::Datagram { to, addr, bytes });
    }
}

/// Error from [`Swim::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// The configuration violates a documented constraint.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local metadata cannot be announced.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// memberlist's `pushPullScale`: slower full-state exchanges in big
/// clusters, so their total cost grows like n log n instead of n².
pub fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    if n <= PUSH_PULL_SCALE_THRESHOLD {
        return interval;
    }
    let multiplier = ((n as f64).log2() - (PUSH_PULL_SCALE_THRESHOLD as f64).log2()).ceil() + 1.0;
    interval.mul_f64(multiplier)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::member::RingState;
    use crate::wire::{Packet, assemble_packet, decode_packet, encode_header, encode_update};
    use rand::SeedableRng;

    fn addr(i: u128) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8], 7946))
    }

    fn meta(i: u128) -> Meta {
        Meta {
            addr: addr(i),
            http_addr: format!("10.0.0.{i}:8098"),
            zone: "a".into(),
            ring: RingState::Member,
        }
    }

    fn alive(i: u128, incarnation: u64) -> Update {
        Update::Alive {
            member: NodeId(i),
            incarnation,
            meta: meta(i),
        }
    }

    fn datagram(from: u128, msg: Message, updates: &[Update]) -> Vec<u8> {
        let encoded: Vec<Vec<u8>> = updates.iter().map(encode_update).collect();
        assemble_packet(encode_header(NodeId(from), &msg), &encoded)
    }

    /// Node 1 plus a tiny driver that records outputs and fires timers.
    struct Harness {
        swim: Swim<StdRng>,
        now: Time,
        timers: Vec<(Time, Timer)>,
        sent: Vec<(NodeId, Packet)>,
        events: Vec<Event>,
        push_pulls: Vec<Vec<u8>>,
    }

    impl Harness {
        fn new(config: Config) -> Self {
            let swim = Swim::new(
                config,
                NodeId(1),
                meta(1),
                0,
                StdRng::seed_from_u64(7),
                Time::ZERO,
            )
            .unwrap();
            let mut h = Harness {
                swim,
                now: Time::ZERO,
                timers: Vec::new(),
                sent: Vec::new(),
                events: Vec::new(),
                push_pulls: Vec::new(),
            };
            h.drain();
            h
        }

        fn drain(&mut self) {
            while let Some(out) = self.swim.poll_output() {
                match out {
                    Output::Datagram { to, bytes, .. } => {
                        assert!(bytes.len() <= self.swim.config().datagram_size_bytes_max);
                        self.sent.push((to, decode_packet(&bytes).unwrap()));
                    }
                    Output::PushPull { bytes, .. } => self.push_pulls.push(bytes),
                    Output::Timer { at, timer } => self.timers.push((at, timer)),
                    Output::Event(e) => self.events.push(e),
                }
            }
        }

        fn receive(&mut self, from: u128, msg: Message, updates: &[Update]) {
            let bytes = datagram(from, msg, updates);
            self.swim
                .handle_datagram(self.now, addr(from), &bytes)
                .unwrap();
            self.drain();
        }

        /// Fires every timer due up to `until`, in time order.
        fn advance(&mut self, until: Time) {
            loop {
                self.timers.sort_by_key(|(at, _)| *at);
                if self.timers.first().is_none_or(|(at, _)| *at > until) {
                    break;
                }
                let (at, timer) = self.timers.remove(0);
                self.now = self.now.max(at);
                self.swim.handle_timer(self.now, timer);
                self.drain();
            }
            self.now = until;
        }

        fn state(&self, i: u128) -> Option<MemberState> {
            self.swim.member(NodeId(i)).map(|m| m.state)
        }
    }

    #[test]
    fn refutes_a_suspicion_of_itself_in_its_next_message() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.receive(2, Message::Gossip, &[alive(2, 0)]);
        let suspect = Update::Suspect {
            member: NodeId(1),
            incarnation: 0,
            from: NodeId(2),
        };
        h.receive(
            2,
            Message::Ping {
                seq: 9,
                target: NodeId(1),
            },
            &[suspect],
        );
        assert_eq!(h.swim.local().incarnation, 1);
        assert_eq!(h.swim.stats().refutations, 1);
        assert_eq!(h.swim.health_score(), 1);
        let (to, ack) = h.sent.last().unwrap();
        assert_eq!(*to, NodeId(2));
        assert_eq!(ack.msg, Message::Ack { seq: 9 });
        assert!(ack.updates.contains(&alive(1, 1)));
    }

    #[test]
    fn absurd_incarnations_are_ignored() {
        let config = Config::memberlist_lan();
        let jump = config.incarnation_jump_max;
        let mut h = Harness::new(config);
        h.receive(2, Message::Gossip, &[alive(2, 3)]);
        let forged = Update::Dead {
            member: NodeId(2),
            incarnation: 3 + jump + 1,
            from: NodeId(3),
        };
        h.receive(3, Message::Gossip, &[forged]);
        assert_eq!(h.state(2), Some(MemberState::Alive));
        assert_eq!(h.swim.stats().absurd_updates, 1);

        // Within the bootstrap window a restarted node accepts any
        // incarnation claimed about itself and refutes above it.
        let stale = Update::Suspect {
            member: NodeId(1),
            incarnation: 5 * jump,
            from: NodeId(2),
        };
        h.receive(2, Message::Gossip, std::slice::from_ref(&stale));
        assert_eq!(h.swim.local().incarnation, 5 * jump + 1);
        // After it, an absurd accusation does not move it.
        h.advance(Time::from_millis(60_000));
        let forged_self = Update::Suspect {
            member: NodeId(1),
            incarnation: 20 * jump,
            from: NodeId(2),
        };
        h.receive(2, Message::Gossip, &[forged_self]);
        assert_eq!(h.swim.local().incarnation, 5 * jump + 1);
    }

    #[test]
    fn dead_member_needs_a_higher_incarnation_to_come_back() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.receive(2, Message::Gossip, &[alive(2, 2)]);
        let dead = Update::Dead {
            member: NodeId(2),
            incarnation: 2,
            from: NodeId(3),
        };
        h.receive(3, Message::Gossip, &[dead]);
        assert_eq!(h.state(2), Some(MemberState::Dead));
        h.receive(3, Message::Gossip, &[alive(2, 2)]);
        assert_eq!(h.state(2), Some(MemberState::Dead));
        h.receive(2, Message::Gossip, &[alive(2, 3)]);
        assert_eq!(h.state(2), Some(MemberState::Alive));
        assert!(matches!(h.events.last(), Some(Event::Up(m)) if m.incarnation == 3));
    }

    #[test]
    fn a_ping_from_a_member_held_dead_is_answered_with_its_death() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.receive(2, Message::Gossip, &[alive(2, 0), alive(3, 0)]);
        let dead = Update::Dead {
            member: NodeId(2),
            incarnation: 1,
            from: NodeId(3),
        };
        h.receive(3, Message::Gossip, std::slice::from_ref(&dead));
        assert_eq!(h.state(2), Some(MemberState::Dead));
        // Node 2 restarted at 0 and refuted to 1 because another member held
        // it dead at 0: that does not bring it back here.
        h.receive(
            2,
            Message::Ping {
                seq: 4,
                target: NodeId(1),
            },
            &[alive(2, 1)],
        );
        assert_eq!(h.state(2), Some(MemberState::Dead));
        let (to, ack) = h.sent.last().unwrap();
        assert_eq!(*to, NodeId(2));
        assert_eq!(ack.msg, Message::Ack { seq: 4 });
        let ours = Update::Dead {
            member: NodeId(2),
            incarnation: 1,
            from: NodeId(1),
        };
        assert_eq!(ack.updates.first(), Some(&ours));

        // Such an ack makes a restarted node (here node 1 of a harness of
        // its own) refute above it, and that brings it back.
        let mut restarted = Harness::new(Config::memberlist_lan());
        let its_death = Update::Dead {
            member: NodeId(1),
            incarnation: 1,
            from: NodeId(3),
        };
        restarted.receive(3, Message::Ack { seq: 4 }, &[its_death]);
        assert_eq!(restarted.swim.local().incarnation, 2);
        h.receive(2, Message::Gossip, &[alive(2, 2)]);
        assert_eq!(h.state(2), Some(MemberState::Alive));

        // A live member's ping gets no such lead.
        h.receive(
            3,
            Message::Ping {
                seq: 5,
                target: NodeId(1),
            },
            &[],
        );
        let (_, ack) = h.sent.last().unwrap();
        assert!(
            !ack.updates
                .iter()
                .any(|u| matches!(u, Update::Dead { member, .. } if *member == NodeId(3)))
        );
    }

    #[test]
    fn left_is_distinct_from_dead_and_final_at_its_incarnation() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.receive(2, Message::Gossip, &[alive(2, 4)]);
        let left = Update::Left {
            member: NodeId(2),
            incarnation: 4,
        };
        h.receive(2, Message::Gossip, &[left]);
        assert_eq!(h.state(2), Some(MemberState::Left));
        assert!(matches!(h.events.last(), Some(Event::Left(_))));
        let dead = Update::Dead {
            member: NodeId(2),
            incarnation: 4,
            from: NodeId(3),
        };
        h.receive(3, Message::Gossip, &[dead]);
        assert_eq!(h.state(2), Some(MemberState::Left));
        assert_eq!(h.swim.live_members(), 1);
    }

    #[test]
    fn metadata_and_address_changes_keep_the_identity() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.receive(2, Message::Gossip, &[alive(2, 1)]);
        let mut moved = meta(2);
        moved.addr = SocketAddr::from(([192, 168, 1, 2], 9000));
        moved.ring = RingState::Leaving;
        let update = Update::Alive {
            member: NodeId(2),
            incarnation: 2,
            meta: moved.clone(),
        };
        h.receive(2, Message::Gossip, &[update]);
        assert_eq!(h.swim.members().count(), 1);
        assert_eq!(h.swim.member(NodeId(2)).unwrap().meta, moved);
        assert!(matches!(h.events.last(), Some(Event::MetaChanged(m)) if m.meta == moved));

        let mut mine = meta(1);
        mine.zone = "b".into();
        h.swim.set_meta(h.now, mine.clone()).unwrap();
        assert_eq!(h.swim.local().incarnation, 1);
        mine.zone = "z".repeat(300);
        assert!(h.swim.set_meta(h.now, mine).is_err());
    }

    #[test]
    fn unanswered_probes_suspect_then_kill_and_raise_health_score() {
        let mut h = Harness::new(Config::memberlist_lan());
        // Members 2, 3, 4; only 2 is probed without answer, helpers 3 and 4
        // never nack either.
        h.receive(2, Message::Gossip, &[alive(2, 0), alive(3, 0), alive(4, 0)]);
        let mut t = Time::ZERO;
        let mut saw_ping_req = false;
        while h.state(2) == Some(MemberState::Alive) && t < Time::from_millis(20_000) {
            t = t + Duration::from_millis(100);
            h.advance(t);
            // Members 3 and 4 answer their own pings, never ping-reqs.
            let pings: Vec<(NodeId, u32)> = h
                .sent
                .drain(..)
                .filter_map(|(to, p)| match p.msg {
                    Message::Ping { seq, .. } if to != NodeId(2) => Some((to, seq)),
                    Message::PingReq { target, .. } => {
                        assert_eq!(target, NodeId(2));
                        saw_ping_req = true;
                        None
                    }
                    _ => None,
                })
                .collect();
            for (to, seq) in pings {
                h.receive(to.0, Message::Ack { seq }, &[]);
            }
        }
        assert!(saw_ping_req);
        assert_eq!(h.state(2), Some(MemberState::Suspect));
        // Two helpers asked, no nack: the score rises by two (minus the
        // successful probes of 3 and 4 that may have come before).
        assert!(h.swim.health_score() >= 1, "{}", h.swim.health_score());
        // n = 4: k = 2 confirmations needed, none come, so the timeout is
        // the maximum: 6 * 4 s.
        h.advance(t + Duration::from_secs(23));
        assert_eq!(h.state(2), Some(MemberState::Suspect));
        h.advance(t + Duration::from_secs(25));
        assert_eq!(h.state(2), Some(MemberState::Dead));
        assert!(
            h.events
                .iter()
                .any(|e| matches!(e, Event::Dead(m) if m.id == NodeId(2)))
        );
    }

    #[test]
    fn nacks_from_helpers_keep_the_health_score_down() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.receive(2, Message::Gossip, &[alive(2, 0), alive(3, 0), alive(4, 0)]);
        let mut t = Time::ZERO;
        let mut nacked = 0;
        while h.state(2) == Some(MemberState::Alive) && t < Time::from_millis(20_000) {
            t = t + Duration::from_millis(100);
            h.advance(t);
            let replies: Vec<(NodeId, Message)> = h
                .sent
                .drain(..)
                .filter_map(|(to, p)| match p.msg {
                    Message::Ping { seq, .. } if to != NodeId(2) => {
                        Some((to, Message::Ack { seq }))
                    }
                    // The helpers are fine but cannot reach 2 either.
                    Message::PingReq { seq, .. } => Some((to, Message::Nack { seq })),
                    _ => None,
                })
                .collect();
            for (to, msg) in replies {
                nacked += usize::from(matches!(msg, Message::Nack { .. }));
                h.receive(to.0, msg, &[]);
            }
        }
        assert_eq!(nacked, 2);
        assert_eq!(h.state(2), Some(MemberState::Suspect));
        assert_eq!(h.swim.health_score(), 0);
    }

    #[test]
    fn confirmations_shorten_the_suspicion() {
        let mut h = Harness::new(Config::memberlist_lan());
        let members: Vec<Update> = (2..=20).map(|i| alive(i, 0)).collect();
        h.receive(2, Message::Gossip, &members);
        let suspect = |from| Update::Suspect {
            member: NodeId(5),
            incarnation: 0,
            from: NodeId(from),
        };
        h.receive(6, Message::Gossip, &[suspect(6)]);
        h.receive(7, Message::Gossip, &[suspect(7)]);
        h.receive(8, Message::Gossip, &[suspect(8)]);
        // n = 20: min = 4 * log10(20) s = 5.2 s, reached with 2 confirmations.
        h.advance(Time::from_millis(5_100));
        assert_eq!(h.state(5), Some(MemberState::Suspect));
        h.advance(Time::from_millis(5_300));
        assert_eq!(h.state(5), Some(MemberState::Dead));
    }

    #[test]
    fn datagrams_stay_under_the_size_limit() {
        let mut h = Harness::new(Config::memberlist_lan());
        for chunk in (2..400u128).collect::<Vec<_>>().chunks(10) {
            let updates: Vec<Update> = chunk.iter().map(|&i| alive(i, 0)).collect();
            h.receive(2, Message::Gossip, &updates);
        }
        assert_eq!(h.swim.members().count(), 398);
        h.receive(
            3,
            Message::Ping {
                seq: 1,
                target: NodeId(1),
            },
            &[],
        );
        let (_, ack) = h.sent.last().unwrap();
        // The harness already checked the size; a full datagram carries many.
        assert!(ack.updates.len() > 10, "{}", ack.updates.len());
    }

    #[test]
    fn restarted_node_refutes_its_stale_death_from_push_pull() {
        let mut h = Harness::new(Config::memberlist_lan());
        h.swim.join(h.now, &[addr(2)]);
        h.drain();
        assert_eq!(h.push_pulls.len(), 1);
        let reply = wire::encode_stream(&StreamPacket {
            from: NodeId(2),
            join: false,
            reply: true,
            members: vec![
                Record {
                    id: NodeId(1),
                    incarnation: 7,
                    state: MemberState::Dead,
                    meta: meta(1),
                },
                Record {
                    id: NodeId(2),
                    incarnation: 3,
                    state: MemberState::Alive,
                    meta: meta(2),
                },
                Record {
                    id: NodeId(3),
                    incarnation: 1,
                    state: MemberState::Dead,
                    meta: meta(3),
                },
            ],
        });
        h.swim.handle_stream_reply(h.now, addr(2), &reply).unwrap();
        h.drain();
        assert_eq!(h.swim.local().incarnation, 8);
        assert_eq!(h.state(2), Some(MemberState::Alive));
        // A dead member is learnt too: it still owns its ring partitions.
        assert_eq!(h.state(3), Some(MemberState::Dead));
        // A reply where a request belongs is refused.
        assert!(
            h.swim
                .handle_stream_request(h.now, addr(2), &reply)
                .is_err()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut h = Harness::new(Config::memberlist_lan());
        for bytes in [&[][..], &[1], &[1, 0xff, 0xff, 0xff], &[2, 1, 2, 3]] {
            assert!(h.swim.handle_datagram(h.now, addr(9), bytes).is_err());
            assert!(h.swim.handle_stream_request(h.now, addr(9), bytes).is_err());
        }
    }
}
