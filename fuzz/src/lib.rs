//! Helpers shared by the fuzz targets and the seed generator
//! (`examples/seeds.rs`): how an input is split into framed messages, and the
//! fixed SWIM node the `swim_message` target feeds.
//!
//! Nothing here links libFuzzer, so the seed generator builds as a plain
//! program.

use std::net::SocketAddr;
use std::time::Duration;

use membership::{Config, Meta, NodeId, Output, RingState, Swim, Time};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The secret every target seals contexts with.
pub const CLUSTER_SECRET: &[u8] = b"fuzzing cluster secret";

/// Splits `data` into `(kind, payload)` frames: one kind byte, a
/// little-endian `u16` length, then the payload (cut short at the end of the
/// input). At most `frames_max` frames, so one input stays cheap.
pub fn frames(mut data: &[u8], frames_max: usize) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while out.len() < frames_max && data.len() >= 3 {
        let kind = data[0];
        let len = usize::from(u16::from_le_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let len = len.min(rest.len());
        out.push((kind, &rest[..len]));
        data = &rest[len..];
    }
    out
}

/// Builds one frame (the inverse of [`frames`] for a single message).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("a seed frame fits in 64 KiB");
    let mut out = vec![kind];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Address of SWIM node number `n` in the fuzzed cluster.
pub fn swim_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7946))
}

/// SWIM node number `n`, deterministic (fixed RNG seed), alive at time zero.
pub fn swim_node(n: u8) -> Swim<StdRng> {
    let meta = Meta {
        addr: swim_addr(n),
        http_addr: format!("10.0.0.{n}:8098"),
        zone: format!("zone-{}", n % 2),
        ring: RingState::Member,
    };
    Swim::new(
        Config::default(),
        NodeId(u128::from(n)),
        meta,
        0,
        StdRng::seed_from_u64(u64::from(n)),
        Time::ZERO,
    )
    .expect("the default config and short metadata are valid")
}

/// Everything a node asked the driver to do, split by kind.
#[derive(Debug, Default)]
pub struct Drained {
    /// Datagrams to send.
    pub datagrams: Vec<Vec<u8>>,
    /// Push-pull requests to send.
    pub push_pulls: Vec<Vec<u8>>,
    /// Timers armed, with their deadlines.
    pub timers: Vec<(Time, membership::Timer)>,
}

/// Drains `swim`'s outputs.
pub fn drain(swim: &mut Swim<StdRng>) -> Drained {
    let mut drained = Drained::default();
    // Outputs are bounded by the state machine; the cap guards the fuzzer
    // against a bug that would make them unbounded.
    for _ in 0..100_000 {
        match swim.poll_output() {
            Some(Output::Datagram { bytes, .. }) => drained.datagrams.push(bytes),
            Some(Output::PushPull { bytes, .. }) => drained.push_pulls.push(bytes),
            Some(Output::Timer { at, timer }) => drained.timers.push((at, timer)),
            Some(Output::Event(_)) => {}
            None => return drained,
        }
    }
    panic!("a SWIM node produced more than 100000 outputs in one go");
}

/// Fires every timer due by `now` (one round: timers armed by the firing are
/// kept for the next round).
pub fn fire_due(swim: &mut Swim<StdRng>, timers: &mut Vec<(Time, membership::Timer)>, now: Time) {
    let (due, later): (Vec<_>, Vec<_>) = timers.drain(..).partition(|(at, _)| *at <= now);
    *timers = later;
    for (_, timer) in due {
        swim.handle_timer(now, timer);
    }
}

/// Time step of one `advance` frame of the `swim_message` target.
pub const SWIM_STEP: Duration = Duration::from_millis(250);
