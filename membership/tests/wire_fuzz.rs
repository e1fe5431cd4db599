//! Bytes from the network are untrusted: whatever arrives, the state
//! machine returns an error or accepts it, and never panics.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use membership::{Config, Meta, NodeId, Output, RingState, Swim, Time};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

fn node(i: u8) -> Swim<StdRng> {
    let meta = Meta {
        addr: addr(i),
        http_addr: format!("10.0.0.{i}:8098"),
        zone: "a".into(),
        ring: RingState::Joining,
    };
    Swim::new(
        Config::default(),
        NodeId(u128::from(i) << 100 | 12345),
        meta,
        0,
        StdRng::seed_from_u64(u64::from(i)),
        Time::ZERO,
    )
    .unwrap()
}

/// Real messages: node 2's join request, node 1's reply, and the
/// datagrams they exchange for a while.
fn real_messages() -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let (mut a, mut b) = (node(1), node(2));
    b.join(Time::ZERO, &[addr(1)]);
    let mut request = None;
    while let Some(out) = b.poll_output() {
        if let Output::PushPull { bytes, .. } = out {
            request = Some(bytes);
        }
    }
    let request = request.unwrap();
    let reply = a
        .handle_stream_request(Time::ZERO, addr(2), &request)
        .unwrap();
    b.handle_stream_reply(Time::ZERO, addr(1), &reply).unwrap();
    let mut datagrams = Vec::new();
    let mut timers = Vec::new();
    for (swim, list) in [(&mut a, 0), (&mut b, 1)] {
        while let Some(out) = swim.poll_output() {
            if let Output::Timer { at, timer } = out {
                timers.push((at, list, timer));
            }
        }
    }
    timers.sort_by_key(|(at, _, _)| *at);
    for (at, which, timer) in timers.into_iter().take(20) {
        let swim = if which == 0 { &mut a } else { &mut b };
        swim.handle_timer(at, timer);
        while let Some(out) = swim.poll_output() {
            if let Output::Datagram { bytes, .. } = out {
                datagrams.push(bytes);
            }
        }
    }
    (request, reply, datagrams)
}

fn feed_everything(bytes: &[u8]) {
    let mut swim = node(9);
    let _ = swim.handle_datagram(Time::ZERO, addr(3), bytes);
    let _ = swim.handle_stream_request(Time::ZERO, addr(3), bytes);
    let _ = swim.handle_stream_reply(Time::ZERO, addr(3), bytes);
    while swim.poll_output().is_some() {}
}

#[test]
fn real_messages_are_accepted_and_garbage_refused() {
    let (request, reply, datagrams) = real_messages();
    assert!(!datagrams.is_empty());
    let mut swim = node(9);
    assert!(
        swim.handle_stream_request(Time::ZERO, addr(2), &request)
            .is_ok()
    );
    assert!(
        swim.handle_stream_reply(Time::ZERO, addr(1), &reply)
            .is_ok()
    );
    for d in &datagrams {
        assert!(swim.handle_datagram(Time::ZERO, addr(1), d).is_ok());
    }
    assert!(
        swim.handle_datagram(Time::ZERO, addr(1), b"GET / HTTP/1.1\r\n")
            .is_err()
    );
}

#[test]
fn every_truncation_of_real_messages_is_handled() {
    let (request, reply, datagrams) = real_messages();
    for message in datagrams.iter().chain([&request, &reply]) {
        for len in 0..message.len() {
            feed_everything(&message[..len]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        feed_everything(&bytes);
    }

    #[test]
    fn versioned_random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = vec![membership::wire::WIRE_VERSION];
        bytes.extend(body);
        feed_everything(&bytes);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (request, reply, datagrams) = real_messages();
        let mut all = datagrams;
        all.push(request);
        all.push(reply);
        let mut message = which.get(&all).clone();
        for (at, value) in flips {
            let i = at.index(message.len());
            message[i] ^= value;
        }
        feed_everything(&message);
    }
}
