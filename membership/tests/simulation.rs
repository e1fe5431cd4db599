//! Behaviour of small simulated clusters: determinism, asymmetric links,
//! isolation and recovery, metadata, leave versus crash.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use membership::sim::{Sim, SimConfig};
use membership::{Config, Event, MemberState, RingState};

fn converged(nodes: usize, seed: u64) -> Sim {
    converged_with(nodes, seed, Config::default())
}

fn converged_with(nodes: usize, seed: u64, swim: Config) -> Sim {
    let mut sim = Sim::new(SimConfig {
        swim,
        ..SimConfig::new(nodes, seed)
    });
    assert!(sim.run_until_converged(Duration::from_secs(30)).is_some());
    sim
}

fn dead_events(sim: &Sim) -> usize {
    sim.events()
        .iter()
        .filter(|r| matches!(r.event, Event::Dead(_)))
        .count()
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig {
            loss: 0.05,
            ..SimConfig::new(30, seed)
        });
        sim.run_for(Duration::from_secs(20));
        sim.crash(3);
        sim.stall(4, Duration::from_secs(2));
        sim.run_for(Duration::from_secs(60));
        let events: Vec<String> = sim.events().iter().map(|r| format!("{r:?}")).collect();
        (events, sim.total_stats())
    };
    let (a, stats_a) = run(11);
    let (b, stats_b) = run(11);
    assert_eq!(stats_a, stats_b);
    assert_eq!(a, b);
    let (c, _) = run(12);
    assert_ne!(a, c);
}

#[test]
fn a_one_way_broken_link_is_routed_around() {
    let mut sim = converged(10, 3);
    // Node 0 cannot send to node 1; indirect probes through the others
    // still reach it, so nobody is declared dead.
    sim.partition_one_way(&[0], &[1]);
    sim.run_for(Duration::from_secs(180));
    assert_eq!(dead_events(&sim), 0);
    assert!(sim.converged());
}

#[test]
fn an_isolated_node_finds_its_way_back() {
    let mut sim = converged(12, 5);
    let others: Vec<usize> = (1..12).collect();
    sim.partition(&[vec![0], others]);
    assert!(
        sim.run_until_true(Duration::from_millis(500), Duration::from_secs(120), |s| {
            (1..12).all(|i| s.state_seen(0, i) == Some(MemberState::Dead))
                && s.all_see(0, MemberState::Dead)
        })
        .is_some()
    );
    // Long enough that gossip to the dead has stopped: only reconnect
    // rounds (to dead members and seeds) can bring it back.
    sim.run_for(Duration::from_secs(120));
    let incarnation_before = sim.swim(0).unwrap().local().incarnation;
    sim.heal();
    let back = sim.run_until_converged(Duration::from_secs(60));
    assert!(back.is_some(), "no reconvergence after the heal");
    assert!(sim.swim(0).unwrap().local().incarnation > incarnation_before);
}

#[test]
fn metadata_changes_reach_everyone() {
    let mut sim = converged(20, 7);
    let now = sim.now();
    let id = sim.id(5);
    let mut meta = sim.swim(5).unwrap().local().meta.clone();
    meta.ring = RingState::Leaving;
    meta.zone = "c".into();
    sim.set_meta(5, meta.clone());
    assert!(
        sim.run_until_true(Duration::from_millis(100), Duration::from_secs(10), |s| {
            (0..20)
                .filter(|&o| o != 5)
                .all(|o| s.swim(o).unwrap().member(id).unwrap().meta == meta)
        })
        .is_some()
    );
    let changes = sim
        .events()
        .iter()
        .filter(|r| r.at >= now && matches!(&r.event, Event::MetaChanged(m) if m.id == id))
        .count();
    assert_eq!(changes, 19);
}

#[test]
fn a_crash_in_a_tiny_cluster_is_detected() {
    // Three nodes: no confirmations possible (k = 0), the minimum timeout
    // (4 s) applies.
    let mut sim = converged(3, 9);
    let crashed_at = sim.now();
    sim.crash(2);
    let done = sim
        .run_until_true(Duration::from_millis(100), Duration::from_secs(30), |s| {
            s.all_see(2, MemberState::Dead)
        })
        .unwrap();
    let took = done.saturating_duration_since(crashed_at);
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn losing_every_datagram_briefly_is_survivable() {
    // memberlist's profile rides out a 2 s blackout of the whole network
    // without a single false "dead".
    let mut sim = converged_with(30, 13, Config::memberlist_lan());
    sim.set_loss(1.0);
    sim.run_for(Duration::from_secs(2));
    sim.set_loss(0.0);
    sim.run_for(Duration::from_secs(120));
    assert_eq!(dead_events(&sim), 0);
    assert!(sim.converged());
}

#[test]
fn a_blackout_under_the_default_profile_heals() {
    // The quicker default profile declares some members dead during a 2 s
    // blackout of the whole network; every one of them refutes and the
    // cluster is whole again.
    let mut sim = converged(30, 13);
    sim.set_loss(1.0);
    sim.run_for(Duration::from_secs(2));
    sim.set_loss(0.0);
    sim.run_for(Duration::from_secs(120));
    assert!(sim.converged());
}

#[test]
fn custom_config_is_respected() {
    let config = Config {
        probe_interval: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig {
        swim: config,
        ..SimConfig::new(10, 17)
    });
    assert!(sim.run_until_converged(Duration::from_secs(30)).is_some());
    let crashed_at = sim.now();
    sim.crash(4);
    let done = sim
        .run_until_true(Duration::from_millis(100), Duration::from_secs(60), |s| {
            s.all_see(4, MemberState::Dead)
        })
        .unwrap();
    // min = 4 * log10(10) * 0.5 s = 2 s, reached with 2 confirmations.
    assert!(done.saturating_duration_since(crashed_at) < Duration::from_secs(8));
}
