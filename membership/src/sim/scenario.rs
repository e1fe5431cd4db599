//! The acceptance scenarios, shared by `tests/` and the `swim_figures`
//! example so that what is asserted is exactly what is printed.
//!
//! Each scenario builds a cluster, lets it converge, applies one fault and
//! measures the outcome in virtual time. They panic only on a broken
//! simulator invariant (a cluster that never converges before the fault),
//! never on a protocol outcome: outcomes are returned for the caller to
//! judge.

use std::time::Duration;

use crate::config::Config;
use crate::member::MemberState;
use crate::sim::{Sim, SimConfig};
use crate::swim::Event;
use crate::time::Time;

/// Time given to a fresh cluster to converge, and then to settle.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(30);

/// A converged cluster of `nodes` that then ran for another 30 s.
pub fn warmed_up(nodes: usize, seed: u64, swim: Config) -> Sim {
    let mut sim = Sim::new(SimConfig {
        swim,
        ..SimConfig::new(nodes, seed)
    });
    assert!(
        sim.run_until_converged(CONVERGE_TIMEOUT).is_some(),
        "a fault-free cluster of {nodes} did not converge (seed {seed})"
    );
    sim.run_for(SETTLE);
    sim
}

fn since(t: Time, origin: Time) -> Duration {
    t.saturating_duration_since(origin)
}

/// Outcome of [`crash_detection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashDetection {
    /// The node crashed.
    pub victim: usize,
    /// From the crash to the first node marking it dead.
    pub first: Duration,
    /// From the crash to the last running node marking it dead.
    pub last: Duration,
}

/// Crashes one node (chosen from the seed) and measures how long until
/// the first and the last running node mark it dead. `None` if some node
/// still has not after two minutes.
pub fn crash_detection(nodes: usize, seed: u64, swim: Config) -> Option<CrashDetection> {
    let mut sim = warmed_up(nodes, seed, swim);
    let victim = (seed as usize).wrapping_mul(7919) % nodes;
    let crashed_at = sim.now();
    sim.crash(victim);
    sim.run_until_true(Duration::from_millis(50), Duration::from_secs(120), |s| {
        s.all_see(victim, MemberState::Dead)
    })?;
    let times = sim.times_marked(victim, MemberState::Dead, crashed_at)?;
    Some(CrashDetection {
        victim,
        first: since(*times.iter().min()?, crashed_at),
        last: since(*times.iter().max()?, crashed_at),
    })
}

/// Outcome of [`steady_state`] and [`stall`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteadyState {
    /// Dead events about nodes that were running the whole time.
    pub false_dead: usize,
    /// Dead events about the stalled node (always 0 without a stall).
    pub stalled_dead: usize,
    /// Suspect events about running nodes (later refuted), counted once
    /// per observer.
    pub false_suspicions: usize,
    /// Distinct suspicions behind them (member and incarnation).
    pub distinct_suspicions: usize,
    /// Datagrams sent per node per second.
    pub datagrams_per_node_s: f64,
    /// Datagram bytes sent per node per second.
    pub datagram_bytes_per_node_s: f64,
    /// Push-pull bytes sent per node per second.
    pub stream_bytes_per_node_s: f64,
    /// Highest local health score seen at the end.
    pub health_score_max: u32,
}

fn measure(sim: &mut Sim, duration: Duration, stalled: Option<usize>) -> SteadyState {
    let start = sim.now();
    let before = sim.total_stats();
    let first_event = sim.events().len();
    sim.run_for(duration);
    let after = sim.total_stats();
    let mut state = SteadyState {
        false_dead: 0,
        stalled_dead: 0,
        false_suspicions: 0,
        distinct_suspicions: 0,
        datagrams_per_node_s: 0.0,
        datagram_bytes_per_node_s: 0.0,
        stream_bytes_per_node_s: 0.0,
        health_score_max: (0..sim.len())
            .filter_map(|i| sim.swim(i).map(|s| s.health_score()))
            .max()
            .unwrap_or(0),
    };
    let stalled_id = stalled.map(|i| sim.id(i));
    let mut distinct = std::collections::BTreeSet::new();
    for record in &sim.events()[first_event..] {
        match &record.event {
            Event::Dead(m) if Some(m.id) == stalled_id => state.stalled_dead += 1,
            Event::Dead(_) => state.false_dead += 1,
            Event::Suspect(m) => {
                state.false_suspicions += 1;
                distinct.insert((m.id, m.incarnation));
            }
            _ => {}
        }
    }
    state.distinct_suspicions = distinct.len();
    let scale = sim.len() as f64 * since(sim.now(), start).as_secs_f64();
    state.datagrams_per_node_s = (after.datagrams_sent - before.datagrams_sent) as f64 / scale;
    state.datagram_bytes_per_node_s =
        (after.datagram_bytes_sent - before.datagram_bytes_sent) as f64 / scale;
    state.stream_bytes_per_node_s =
        (after.stream_bytes_sent - before.stream_bytes_sent) as f64 / scale;
    state
}

/// Runs a converged cluster for `duration` with uniform datagram `loss`;
/// nobody fails, so every dead event is a false positive.
pub fn steady_state(nodes: usize, seed: u64, loss: f64, duration: Duration) -> SteadyState {
    let mut sim = warmed_up(nodes, seed, Config::default());
    sim.set_loss(loss);
    measure(&mut sim, duration, None)
}

/// Stalls one node for `pause` (a GC pause) and runs one more minute.
pub fn stall(nodes: usize, seed: u64, pause: Duration) -> SteadyState {
    let mut sim = warmed_up(nodes, seed, Config::default());
    let victim = (seed as usize).wrapping_mul(31) % nodes;
    sim.stall(victim, pause);
    measure(&mut sim, pause + Duration::from_secs(60), Some(victim))
}

/// Outcome of [`partition_halves`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOutcome {
    /// From the split until every node sees every node of the other half
    /// dead (`None`: not within the partition).
    pub split_seen_after: Option<Duration>,
    /// From the heal until every node sees every node alive (`None`: not
    /// within two minutes).
    pub healed_after: Option<Duration>,
}

/// Splits the cluster into two halves for `split_for`, then heals it.
pub fn partition_halves(nodes: usize, seed: u64, split_for: Duration) -> PartitionOutcome {
    let mut sim = warmed_up(nodes, seed, Config::default());
    let (a, b): (Vec<usize>, Vec<usize>) = (0..nodes).partition(|&i| i % 2 == 0);
    let split_at = sim.now();
    sim.partition(&[a.clone(), b.clone()]);
    let seen = sim.run_until_true(Duration::from_millis(100), split_for, |s| {
        a.iter().all(|&x| {
            b.iter()
                .all(|&y| s.state_seen(x, y) == Some(MemberState::Dead))
        }) && b.iter().all(|&y| {
            a.iter()
                .all(|&x| s.state_seen(y, x) == Some(MemberState::Dead))
        })
    });
    sim.run_until(split_at + split_for);
    let heal_at = sim.now();
    sim.heal();
    let healed = sim.run_until_converged(Duration::from_secs(120));
    PartitionOutcome {
        split_seen_after: seen.map(|t| since(t, split_at)),
        healed_after: healed.map(|t| since(t, heal_at)),
    }
}

/// Outcome of [`leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaveOutcome {
    /// From the leave until every running node sees it as left.
    pub seen_by_all_after: Option<Duration>,
    /// Dead events about the node that left (it left, it did not die).
    pub dead_events: usize,
}

/// One node leaves gracefully.
pub fn leave(nodes: usize, seed: u64) -> LeaveOutcome {
    let mut sim = warmed_up(nodes, seed, Config::default());
    let victim = (seed as usize).wrapping_mul(13) % nodes;
    let left_at = sim.now();
    let first_event = sim.events().len();
    sim.leave(victim);
    let seen = sim.run_until_true(Duration::from_millis(50), Duration::from_secs(60), |s| {
        s.all_see(victim, MemberState::Left)
    });
    // Keep running: the node that left must not be declared dead later.
    sim.run_for(Duration::from_secs(60));
    let id = sim.id(victim);
    let dead_events = sim.events()[first_event..]
        .iter()
        .filter(|r| matches!(&r.event, Event::Dead(m) if m.id == id))
        .count();
    LeaveOutcome {
        seen_by_all_after: seen.map(|t| since(t, left_at)),
        dead_events,
    }
}

/// Outcome of [`restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartOutcome {
    /// The incarnation the cluster knew when it declared the node dead.
    pub dead_incarnation: u64,
    /// The lowest incarnation running nodes hold for it after it came back.
    pub back_incarnation: u64,
    /// From the restart until every running node sees it alive again.
    pub back_after: Option<Duration>,
}

/// Crashes a node, waits until all see it dead, restarts it with fresh
/// state (incarnation 0), optionally on a new address.
pub fn restart(nodes: usize, seed: u64, new_addr: bool) -> RestartOutcome {
    let mut sim = warmed_up(nodes, seed, Config::default());
    let victim = (seed as usize).wrapping_mul(17) % nodes;
    let id = sim.id(victim);
    sim.crash(victim);
    sim.run_until_true(Duration::from_millis(100), Duration::from_secs(120), |s| {
        s.all_see(victim, MemberState::Dead)
    });
    let incarnation_seen = |s: &Sim| {
        (0..s.len())
            .filter(|&o| o != victim && s.is_running(o))
            .filter_map(|o| s.swim(o)?.member(id).map(|m| m.incarnation))
            .min()
            .unwrap_or(0)
    };
    let dead_incarnation = incarnation_seen(&sim);
    let restarted_at = sim.now();
    sim.restart(victim, new_addr);
    let back = sim.run_until_true(Duration::from_millis(50), Duration::from_secs(60), |s| {
        s.all_see(victim, MemberState::Alive)
    });
    RestartOutcome {
        dead_incarnation,
        back_incarnation: incarnation_seen(&sim),
        back_after: back.map(|t| since(t, restarted_at)),
    }
}

/// The `q`-quantile (0..=1) of `values` by nearest rank.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
