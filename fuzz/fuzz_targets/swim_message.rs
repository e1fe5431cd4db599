//! SWIM messages from peers, through the state machine's own entry points:
//! `Swim::handle_datagram`, `handle_stream_request` and
//! `handle_stream_reply` on a node that already knows two peers, with time
//! advancing and timers firing between messages (frames, see
//! `starling_fuzz::frames`). Bad bytes are a `WireError`, never a panic;
//! every datagram the node sends stays within the configured size.

#![no_main]

use libfuzzer_sys::fuzz_target;
use membership::{Config, Time};
use starling_fuzz::{SWIM_STEP, drain, fire_due, frames, swim_addr, swim_node};

fuzz_target!(|data: &[u8]| {
    let datagram_size_bytes_max = Config::default().datagram_size_bytes_max;
    let mut target = swim_node(1);
    let mut timers = drain(&mut target).timers;
    // Two peers introduce themselves with genuine push-pulls.
    for peer in [2, 3] {
        let mut node = swim_node(peer);
        node.join(Time::ZERO, &[swim_addr(1)]);
        for request in drain(&mut node).push_pulls {
            target
                .handle_stream_request(Time::ZERO, swim_addr(peer), &request)
                .expect("a genuine push-pull is accepted");
        }
    }
    let mut now = Time::ZERO;
    for (kind, payload) in frames(data, 64) {
        let from = swim_addr(2 + kind / 4 % 3);
        match kind % 4 {
            0 => {
                let _ = target.handle_datagram(now, from, payload);
            }
            1 => {
                let _ = target.handle_stream_request(now, from, payload);
            }
            2 => {
                let _ = target.handle_stream_reply(now, from, payload);
            }
            _ => {
                let steps = 1 + u32::from(payload.first().copied().unwrap_or(0) % 16);
                now = now + SWIM_STEP * steps;
                fire_due(&mut target, &mut timers, now);
            }
        }
        let out = drain(&mut target);
        for datagram in &out.datagrams {
            assert!(datagram.len() <= datagram_size_bytes_max);
        }
        timers.extend(out.timers);
    }
});
