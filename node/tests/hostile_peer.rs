//! A peer that holds the cluster's credentials but speaks nonsense: garbage
//! datagrams and garbage stream requests are errors the node counts and
//! drops; it never panics, never acts on them, and keeps serving.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{NodeProcess, TEST_SECRET, agent, cluster};
use node::cluster::{TAG_RPC, TAG_SWIM};
use node::tls::ClusterTls;
use node::transport::{Transport, TransportConfig};
use rand::{Rng, SeedableRng};

#[test]
fn garbage_from_an_authenticated_peer_is_dropped_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2, &[]);
    let target = nodes[0].cluster;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answered = runtime.block_on(async move {
        let tls = ClusterTls::from_secret("starling", TEST_SECRET).unwrap();
        let config = TransportConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            reset_key: [7; 32],
        };
        let (peer, _inbound) = Transport::bind(&config, &tls).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let max = peer.max_datagram_size(target).await.unwrap().unwrap();
        for i in 0..500usize {
            let len = rng.random_range(0..max);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Some start like real messages to get past the first checks.
            if i % 3 == 0 && !bytes.is_empty() {
                bytes[0] = 1;
            }
            peer.send_datagram(target, Bytes::from(bytes))
                .await
                .unwrap();
        }
        let mut answered = 0;
        for i in 0..200usize {
            let len = rng.random_range(0..2048);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            match (i % 3, bytes.first_mut()) {
                (0, Some(b)) => *b = TAG_SWIM,
                (1, Some(b)) => *b = TAG_RPC,
                _ => {}
            }
            // A refused request closes its stream or answers an error; it
            // must not hang past the deadline or take the node down.
            // An answer, if any, is an error or empty: never a success.
            if let Ok(answer) = peer.request(target, &bytes, Duration::from_secs(2)).await {
                answered += 1;
                if let Ok(response) = node::rpc::decode_response(&answer) {
                    assert!(
                        matches!(response, node::rpc::Response::Error { .. }),
                        "{response:?}"
                    );
                }
            }
        }
        peer.close().await;
        answered
    });
    eprintln!(
        "700 garbage messages sent; {answered} of 200 stream requests got an answer, none a success"
    );
    // The node still serves clients and still sees its peer.
    assert_eq!(
        agent().get(&nodes[0].url("/ping")).call().unwrap().status(),
        200
    );
    let (status, _) = nodes[0].put("hostile", "k", "?w=2", "fine");
    assert_eq!(status, 204);
    let alive = nodes[0]
        .members()
        .iter()
        .filter(|(_, s, _)| s == "alive")
        .count();
    assert_eq!(alive, 2);
    assert!(!nodes[0].log().contains("panicked"), "{}", nodes[0].log());
    let _: &NodeProcess = &nodes[1];
}
