//! A deterministic simulator: many [`Swim`] nodes in one process on virtual
//! time.
//!
//! Everything is driven from one event queue (a `BinaryHeap` ordered by
//! virtual time, then by insertion), and all randomness (loss, delay, each
//! node's RNG) derives from one seed, so a run is a pure function of its
//! seed and the script of faults applied to it. The network model:
//! datagrams are dropped with a uniform probability and delayed uniformly
//! within `[delay_min, delay_max]`; push-pull streams are reliable but
//! delayed the same way; partitions (symmetric or one-way) drop whatever
//! crosses them at send time. Nodes can crash (state lost), restart (fresh
//! state, same id, optionally a new address), leave, and stall (a pause like
//! a GC: everything addressed to the node, its timers included, queues up and
//! is handled when the stall ends).
//!
//! What it does not model: bandwidth, reordering beyond what random delay
//! gives, stream failures other than partitions and crashes, clock drift.
//!
//! The driving code is the same a real driver runs (`poll_output` after
//! each input), so the simulator doubles as the reference driver.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::member::{MemberState, Meta, NodeId, RingState};
use crate::swim::{Event, Output, Swim, Timer};
use crate::time::Time;

/// Most queued inputs of one stalled node; beyond it inputs are dropped, as
/// a real receive buffer would.
const BACKLOG_MAX: usize = 100_000;

/// Life value for work that is not bound to one process life (datagrams and
/// stream requests find whoever listens on the address).
const ANY_LIFE: u32 = u32::MAX;

/// Cluster and network parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes, at most 50 000.
    pub nodes: usize,
    /// Seed from which every random choice derives.
    pub seed: u64,
    /// Protocol configuration of every node.
    pub swim: Config,
    /// Probability that a datagram is lost, in `[0, 1]`.
    pub loss: f64,
    /// Shortest one-way delay.
    pub delay_min: Duration,
    /// Longest one-way delay.
    pub delay_max: Duration,
}

impl SimConfig {
    /// `nodes` nodes with the default protocol config, no loss, and 1–5 ms
    /// delay (a LAN).
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            swim: Config::default(),
            loss: 0.0,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
        }
    }
}

/// One member event observed by one node.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// When.
    pub at: Time,
    /// The index of the node that observed it.
    pub observer: usize,
    /// What it observed.
    pub event: Event,
}

/// Traffic sent by one node (all its lives together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Datagrams sent, lost ones included.
    pub datagrams_sent: u64,
    /// Their total size.
    pub datagram_bytes_sent: u64,
    /// Push-pull messages sent (requests and replies).
    pub streams_sent: u64,
    /// Their total size.
    pub stream_bytes_sent: u64,
    /// Messages this node rejected as malformed.
    pub decode_errors: u64,
}

impl NodeStats {
    fn add(&mut self, other: &NodeStats) {
        self.datagrams_sent += other.datagrams_sent;
        self.datagram_bytes_sent += other.datagram_bytes_sent;
        self.streams_sent += other.streams_sent;
        self.stream_bytes_sent += other.stream_bytes_sent;
        self.decode_errors += other.decode_errors;
    }
}

#[derive(Debug)]
enum Work {
    Datagram {
        from_addr: SocketAddr,
        bytes: Vec<u8>,
    },
    StreamRequest {
        from: usize,
        from_life: u32,
        from_addr: SocketAddr,
        bytes: Vec<u8>,
    },
    StreamReply {
        from_addr: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer(Timer),
    Resume,
}

#[derive(Debug)]
struct Scheduled {
    at: Time,
    order: u64,
    node: usize,
    life: u32,
    work: Work,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

#[derive(Debug)]
struct SimNode {
    id: NodeId,
    addr: SocketAddr,
    swim: Option<Swim<StdRng>>,
    life: u32,
    stalled_until: Option<Time>,
    backlog: VecDeque<Work>,
    group: u32,
    stats: NodeStats,
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    now: Time,
    rng: StdRng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    order: u64,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Directed (from group, to group) pairs that drop traffic.
    blocked: Vec<(u32, u32)>,
    events: Vec<EventRecord>,
}

fn node_addr(index: usize, port_offset: u16) -> SocketAddr {
    let index = u32::try_from(index).expect("node count is bounded by SimConfig");
    let [_, a, b, c] = index.to_be_bytes();
    SocketAddr::from(([10, a, b, c], 7946 + port_offset))
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over the combined inputs: distinct, well spread
    // seeds for each node life.
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Sim {
    /// Starts `config.nodes` nodes at time 0; node 0 is alone, every other
    /// node joins through node 0. Run it for a while (see
    /// [`run_until_converged`](Self::run_until_converged)) before
    /// injecting faults.
    pub fn new(config: SimConfig) -> Self {
        assert!(config.nodes <= 50_000, "SimConfig::nodes above 50 000");
        assert!((0.0..=1.0).contains(&config.loss), "loss outside [0, 1]");
        assert!(
            config.delay_min <= config.delay_max,
            "delay_min above delay_max"
        );
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(mix(config.seed, u64::MAX, 0)),
            now: Time::ZERO,
            queue: BinaryHeap::new(),
            order: 0,
            nodes: Vec::with_capacity(config.nodes),
            by_addr: HashMap::new(),
            blocked: Vec::new(),
            events: Vec::new(),
            config,
        };
        for i in 0..sim.config.nodes {
            let addr = node_addr(i, 0);
            sim.by_addr.insert(addr, i);
            sim.nodes.push(SimNode {
                // Full-width ids, like the persisted identities of real
                // nodes, so that message sizes are realistic.
                id: NodeId(
                    u128::from(mix(0x5EED, i as u64, 1)) << 64
                        | u128::from(mix(0x5EED, i as u64, 2)),
                ),
                addr,
                swim: None,
                life: 0,
                stalled_until: None,
                backlog: VecDeque::new(),
                group: 0,
                stats: NodeStats::default(),
            });
        }
        let seed = [node_addr(0, 0)];
        for i in 0..sim.config.nodes {
            sim.boot(i, if i == 0 { &[] } else { &seed });
        }
        sim
    }

    fn meta(&self, i: usize) -> Meta {
        let addr = self.nodes[i].addr;
        Meta {
            addr,
            http_addr: format!("{}:8098", addr.ip()),
            zone: ["a", "b", "c"][i % 3].to_string(),
            ring: RingState::Member,
        }
    }

    fn boot(&mut self, i: usize, seeds: &[SocketAddr]) {
        let rng = StdRng::seed_from_u64(mix(
            self.config.seed,
            i as u64,
            u64::from(self.nodes[i].life),
        ));
        let mut swim = Swim::new(
            self.config.swim.clone(),
            self.nodes[i].id,
            self.meta(i),
            0,
            rng,
            self.now,
        )
        .expect("SimConfig::swim must be a valid config");
        swim.join(self.now, seeds);
        self.nodes[i].swim = Some(swim);
        self.drain(i);
    }

    // ----- Time -----

    /// Current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Processes everything scheduled up to `until`, then sets the clock to
    /// `until`.
    pub fn run_until(&mut self, until: Time) {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(Reverse(item)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(item.at);
            self.step(item);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Runs in steps of `step` until `done` holds or `timeout` passed.
    /// Returns the time at which `done` first held (at step granularity).
    pub fn run_until_true(
        &mut self,
        step: Duration,
        timeout: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Time> {
        let end = self.now + timeout;
        loop {
            if done(self) {
                return Some(self.now);
            }
            if self.now >= end {
                return None;
            }
            self.run_until((self.now + step).min(end));
        }
    }

    /// Runs until every running node sees every other running node alive,
    /// checking every 100 ms. Returns when that happened.
    pub fn run_until_converged(&mut self, timeout: Duration) -> Option<Time> {
        self.run_until_true(Duration::from_millis(100), timeout, Sim::converged)
    }

    // ----- Faults -----

    /// Crashes node `i`: its state is lost and nothing reaches it.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.swim = None;
        node.life += 1;
        node.stalled_until = None;
        node.backlog.clear();
    }

    /// Restarts a crashed node `i` with fresh state (incarnation 0) and the
    /// same id, on its old address or, with `new_addr`, on a new port. It
    /// joins through up to three running nodes.
    pub fn restart(&mut self, i: usize, new_addr: bool) {
        assert!(self.nodes[i].swim.is_none(), "restart of a running node");
        self.nodes[i].life += 1;
        if new_addr {
            let old = self.nodes[i].addr;
            self.by_addr.remove(&old);
            let port_offset = old.port() - 7946 + 1;
            let addr = node_addr(i, port_offset);
            self.nodes[i].addr = addr;
            self.by_addr.insert(addr, i);
        }
        let seeds: Vec<SocketAddr> = (0..self.nodes.len())
            .filter(|&j| j != i && self.is_running(j))
            .take(3)
            .map(|j| self.nodes[j].addr)
            .collect();
        self.boot(i, &seeds);
    }

    /// Node `i` leaves gracefully (and keeps running to spread it).
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            swim.leave(now);
            self.drain(i);
        }
    }

    /// Node `i` announces new metadata.
    pub fn set_meta(&mut self, i: usize, meta: Meta) {
        let now = self.now;
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            swim.set_meta(now, meta)
                .expect("the simulator announces bounded metadata");
            self.drain(i);
        }
    }

    /// Node `i` stops processing for `duration`: what reaches it meanwhile,
    /// timers included, is handled late, in order, when the stall ends.
    pub fn stall(&mut self, i: usize, duration: Duration) {
        if self.nodes[i].swim.is_none() {
            return;
        }
        let until = self.now + duration;
        self.nodes[i].stalled_until = Some(until);
        let life = self.nodes[i].life;
        self.schedule(until, i, life, Work::Resume);
    }

    /// Splits the cluster: `groups[g]` can only talk within itself. Nodes
    /// in no group form one more group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        for node in &mut self.nodes {
            node.group = 0;
        }
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                self.nodes[i].group = g as u32 + 1;
            }
        }
        let count = groups.len() as u32 + 1;
        self.blocked = (0..count)
            .flat_map(|a| (0..count).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect();
    }

    /// Drops traffic from `from` nodes to `to` nodes only; the reverse
    /// direction still works.
    pub fn partition_one_way(&mut self, from: &[usize], to: &[usize]) {
        for node in &mut self.nodes {
            node.group = 0;
        }
        for &i in from {
            self.nodes[i].group = 1;
        }
        for &i in to {
            self.nodes[i].group = 2;
        }
        self.blocked = vec![(1, 2)];
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
        self.blocked.clear();
    }

    /// Changes the datagram loss probability.
    pub fn set_loss(&mut self, loss: f64) {
        assert!((0.0..=1.0).contains(&loss), "loss outside [0, 1]");
        self.config.loss = loss;
    }

    // ----- Queries -----

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a simulation without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// The state machine of node `i`, unless it is crashed.
    pub fn swim(&self, i: usize) -> Option<&Swim<StdRng>> {
        self.nodes[i].swim.as_ref()
    }

    /// Node `i` runs (not crashed) and has not left.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i]
            .swim
            .as_ref()
            .is_some_and(|s| s.local().state != MemberState::Left)
    }

    /// What node `observer` believes of node `subject`.
    pub fn state_seen(&self, observer: usize, subject: usize) -> Option<MemberState> {
        let swim = self.swim(observer)?;
        if observer == subject {
            return Some(swim.local().state);
        }
        swim.member(self.id(subject)).map(|m| m.state)
    }

    /// Every running node other than `subject` sees `subject` in `state`.
    pub fn all_see(&self, subject: usize, state: MemberState) -> bool {
        (0..self.len())
            .filter(|&o| o != subject && self.is_running(o))
            .all(|o| self.state_seen(o, subject) == Some(state))
    }

    /// Every running node sees every other running node alive.
    pub fn converged(&self) -> bool {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.is_running(i)).collect();
        running.iter().all(|&o| {
            running
                .iter()
                .all(|&s| s == o || self.state_seen(o, s) == Some(MemberState::Alive))
        })
    }

    /// Every member event observed so far, in time order.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    /// Traffic sent by node `i`.
    pub fn stats(&self, i: usize) -> NodeStats {
        self.nodes[i].stats
    }

    /// Traffic sent by all nodes together.
    pub fn total_stats(&self) -> NodeStats {
        let mut total = NodeStats::default();
        for node in &self.nodes {
            total.add(&node.stats);
        }
        total
    }

    /// For each running observer other than `subject`, the first time at or
    /// after `since` it recorded `subject` entering `state`. `None` if some
    /// observer has not yet.
    pub fn times_marked(
        &self,
        subject: usize,
        state: MemberState,
        since: Time,
    ) -> Option<Vec<Time>> {
        let id = self.id(subject);
        let mut first: Vec<Option<Time>> = vec![None; self.len()];
        for record in self.events.iter().filter(|r| r.at >= since) {
            let member = match (&record.event, state) {
                (Event::Dead(m), MemberState::Dead)
                | (Event::Left(m), MemberState::Left)
                | (Event::Suspect(m), MemberState::Suspect)
                | (Event::Up(m), MemberState::Alive) => m,
                _ => continue,
            };
            if member.id == id && first[record.observer].is_none() {
                first[record.observer] = Some(record.at);
            }
        }
        (0..self.len())
            .filter(|&o| o != subject && self.is_running(o))
            .map(|o| first[o])
            .collect()
    }

    // ----- Machinery -----

    fn schedule(&mut self, at: Time, node: usize, life: u32, work: Work) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at: at.max(self.now),
            order: self.order,
            node,
            life,
            work,
        }));
    }

    fn delay(&mut self) -> Duration {
        let (min, max) = (self.config.delay_min, self.config.delay_max);
        if min == max {
            min
        } else {
            min + (max - min).mul_f64(self.rng.random::<f64>())
        }
    }

    fn blocked(&self, from: usize, to: usize) -> bool {
        let pair = (self.nodes[from].group, self.nodes[to].group);
        self.blocked.contains(&pair)
    }

    fn step(&mut self, item: Scheduled) {
        let node = &mut self.nodes[item.node];
        if (item.life != ANY_LIFE && item.life != node.life) || node.swim.is_none() {
            return;
        }
        if let Work::Resume = item.work {
            if node.stalled_until.is_some_and(|t| t <= self.now) {
                node.stalled_until = None;
                let backlog = std::mem::take(&mut node.backlog);
                for work in backlog {
                    self.process(item.node, work);
                }
            }
            return;
        }
        if node.stalled_until.is_some() {
            if node.backlog.len() < BACKLOG_MAX {
                node.backlog.push_back(item.work);
            }
            return;
        }
        self.process(item.node, item.work);
    }

    fn process(&mut self, i: usize, work: Work) {
        let now = self.now;
        let my_addr = self.nodes[i].addr;
        let Some(swim) = self.nodes[i].swim.as_mut() else {
            return;
        };
        let mut reply = None;
        let ok = match work {
            Work::Datagram { from_addr, bytes } => {
                swim.handle_datagram(now, from_addr, &bytes).is_ok()
            }
            Work::StreamRequest {
                from,
                from_life,
                from_addr,
                bytes,
            } => match swim.handle_stream_request(now, from_addr, &bytes) {
                Ok(bytes) => {
                    reply = Some((from, from_life, bytes));
                    true
                }
                Err(_) => false,
            },
            Work::StreamReply { from_addr, bytes } => {
                swim.handle_stream_reply(now, from_addr, &bytes).is_ok()
            }
            Work::Timer(timer) => {
                swim.handle_timer(now, timer);
                true
            }
            Work::Resume => true,
        };
        if !ok {
            self.nodes[i].stats.decode_errors += 1;
        }
        self.drain(i);
        if let Some((to, to_life, bytes)) = reply {
            self.nodes[i].stats.streams_sent += 1;
            self.nodes[i].stats.stream_bytes_sent += bytes.len() as u64;
            if !self.blocked(i, to) {
                let at = self.now + self.delay();
                self.schedule(
                    at,
                    to,
                    to_life,
                    Work::StreamReply {
                        from_addr: my_addr,
                        bytes,
                    },
                );
            }
        }
    }

    fn drain(&mut self, i: usize) {
        let mut outputs = Vec::new();
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            while let Some(out) = swim.poll_output() {
                outputs.push(out);
            }
        }
        let (my_addr, my_life) = (self.nodes[i].addr, self.nodes[i].life);
        for out in outputs {
            match out {
                Output::Datagram { addr, bytes, .. } => {
                    let stats = &mut self.nodes[i].stats;
                    stats.datagrams_sent += 1;
                    stats.datagram_bytes_sent += bytes.len() as u64;
                    let lost =
                        self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss;
                    let Some(&to) = self.by_addr.get(&addr) else {
                        continue;
                    };
                    if lost || self.blocked(i, to) {
                        continue;
                    }
                    let at = self.now + self.delay();
                    let work = Work::Datagram {
                        from_addr: my_addr,
                        bytes,
                    };
                    self.schedule(at, to, ANY_LIFE, work);
                }
                Output::PushPull { addr, bytes, .. } => {
                    let stats = &mut self.nodes[i].stats;
                    stats.streams_sent += 1;
                    stats.stream_bytes_sent += bytes.len() as u64;
                    let Some(&to) = self.by_addr.get(&addr) else {
                        continue;
                    };
                    if self.blocked(i, to) {
                        continue;
                    }
                    let at = self.now + self.delay();
                    let work = Work::StreamRequest {
                        from: i,
                        from_life: my_life,
                        from_addr: my_addr,
                        bytes,
                    };
                    self.schedule(at, to, ANY_LIFE, work);
                }
                Output::Timer { at, timer } => self.schedule(at, i, my_life, Work::Timer(timer)),
                Output::Event(event) => self.events.push(EventRecord {
                    at: self.now,
                    observer: i,
                    event,
                }),
            }
        }
    }
}

pub mod scenario;
