//! The 100-node acceptance scenarios, on the deterministic simulator.
//!
//! Bounds are a little looser than the figures `swim_figures` prints for
//! the same seeds, so that a small change of timing shows up there first
//! and a real regression fails here.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use membership::Config;
use membership::sim::scenario::{self, quantile};

const NODES: usize = 100;

#[test]
fn crash_is_detected_by_every_node_within_bounds() {
    // The same 20 seeds as the swim_figures example.
    let seeds: u64 = 20;
    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    for seed in 1..=seeds {
        let d = scenario::crash_detection(NODES, seed, Config::default())
            .unwrap_or_else(|| panic!("seed {seed}: some node never marked the crash dead"));
        // Never faster than the minimum suspicion timeout
        // (4 * log10(100) * 700 ms = 5.6 s): nobody is declared dead on a
        // hunch.
        assert!(
            d.first >= Duration::from_millis(5_600),
            "seed {seed}: {d:?}"
        );
        firsts.push(d.first);
        lasts.push(d.last);
    }
    let median = quantile(&lasts, 0.5);
    let p99 = quantile(&lasts, 0.99);
    // The target is a p99 within 10 s; the figures are a median of about
    // 6.9 s and a p99 of about 9.1 s.
    assert!(median <= Duration::from_millis(7_500), "median {median:?}");
    assert!(p99 <= Duration::from_secs(10), "p99 {p99:?}");
    // Once one node declares it, the rest follow through gossip quickly.
    for (first, last) in firsts.iter().zip(&lasts) {
        assert!(
            *last - *first <= Duration::from_secs(2),
            "{first:?} -> {last:?}"
        );
    }
}

#[test]
fn ten_percent_loss_for_ten_minutes_kills_nobody() {
    let s = scenario::steady_state(NODES, 1, 0.10, Duration::from_secs(600));
    assert_eq!(s.false_dead, 0, "{s:?}");
    // Loss does cause (refuted) suspicions, and costs traffic, but bounded.
    assert!(s.false_suspicions > 0, "{s:?}");
    assert!(s.datagrams_per_node_s < 20.0, "{s:?}");
    assert!(s.datagram_bytes_per_node_s < 2_000.0, "{s:?}");
}

#[test]
fn steady_state_traffic_is_small() {
    let s = scenario::steady_state(NODES, 2, 0.0, Duration::from_secs(120));
    assert_eq!((s.false_dead, s.false_suspicions), (0, 0), "{s:?}");
    // One probe and its ack per probe interval (700 ms), plus push-pull.
    assert!(s.datagrams_per_node_s < 3.5, "{s:?}");
    assert!(s.datagram_bytes_per_node_s < 150.0, "{s:?}");
    assert!(s.stream_bytes_per_node_s < 300.0, "{s:?}");
}

#[test]
fn a_three_second_stall_kills_nobody() {
    let s = scenario::stall(NODES, 1, Duration::from_secs(3));
    assert_eq!(s.false_dead, 0, "{s:?}");
    assert_eq!(s.stalled_dead, 0, "{s:?}");
}

#[test]
fn partition_into_halves_is_seen_and_heals_within_15_s() {
    let p = scenario::partition_halves(NODES, 1, Duration::from_secs(120));
    let seen = p.split_seen_after.expect("each half sees the other dead");
    assert!(seen <= Duration::from_secs(60), "{p:?}");
    let healed = p.healed_after.expect("the cluster heals");
    assert!(healed <= Duration::from_secs(15), "{p:?}");
}

#[test]
fn leave_is_seen_by_all_quickly_and_is_not_a_death() {
    let l = scenario::leave(NODES, 1);
    let seen = l.seen_by_all_after.expect("everyone sees the leave");
    assert!(seen <= Duration::from_secs(3), "{l:?}");
    assert_eq!(l.dead_events, 0, "{l:?}");
}

#[test]
fn restarted_node_comes_back_with_a_higher_incarnation() {
    for new_addr in [false, true] {
        let r = scenario::restart(NODES, 1, new_addr);
        let back = r
            .back_after
            .expect("the restarted node is alive everywhere");
        assert!(back <= Duration::from_secs(5), "{r:?}");
        assert!(r.back_incarnation > r.dead_incarnation, "{r:?}");
    }
}
