//! A peer that holds the cluster's credentials but speaks nonsense: garbage
//! datagrams and garbage stream requests are errors the node counts and
//! drops; it never panics, never acts on them, and keeps serving. And the
//! same peer speaking sense: its replica writes get the answers the RPC
//! format promises.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{NodeProcess, TEST_SECRET, agent, cluster};
use node::cluster::{TAG_RPC, TAG_SWIM};
use node::rpc::{Apply, Envelope, RPC_FORMAT, Request, Response};
use node::tls::ClusterTls;
use node::transport::{Transport, TransportConfig};
use rand::{Rng, SeedableRng};
use storage::{Content, Metadata, VersionVector};

/// A transport of our own, with the cluster's credentials.
fn peer_transport() -> Transport {
    let tls = ClusterTls::from_secret("starling", TEST_SECRET).unwrap();
    let config = TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        reset_key: [7; 32],
    };
    Transport::bind(&config, &tls).unwrap().0
}

#[test]
fn garbage_from_an_authenticated_peer_is_dropped_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2, &[]);
    let target = nodes[0].cluster;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answered = runtime.block_on(async move {
        let peer = peer_transport();
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

/// Sends one replica request and decodes the answer.
async fn ask(peer: &Transport, to: SocketAddr, request: Request) -> Response {
    let envelope = Envelope {
        format: RPC_FORMAT,
        request_ids: Vec::new(),
        budget_ms: 5_000,
        request,
    };
    let mut bytes = vec![TAG_RPC];
    bytes.extend_from_slice(&node::rpc::encode(&envelope));
    let answer = peer
        .request(to, &bytes, Duration::from_secs(5))
        .await
        .unwrap();
    node::rpc::decode_response(&answer).unwrap()
}

#[test]
fn a_put_is_answered_with_the_stored_copy_and_a_merge_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2, &[]);
    let (first, second) = (nodes[0].cluster, nodes[1].cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let peer = peer_transport();
        let apply = Apply {
            resolve_by_time: false,
            sync: true,
        };
        let put = Request::Put {
            bucket: b"rpc".to_vec(),
            key: b"k".to_vec(),
            context: VersionVector::default(),
            content: Content {
                value: b"minted".to_vec(),
                meta: Metadata::default(),
                deleted: false,
            },
            apply,
        };
        // The coordinator replicates what the minting replica stored, so a
        // put comes back with it.
        let Response::Written { object, durable } = ask(&peer, first, put).await else {
            panic!("a put must answer with the stored copy");
        };
        assert!(durable);
        assert_eq!(object.siblings.len(), 1);
        // Its sender already has a merged object: the answer is only the
        // acknowledgement, alone and in a batch.
        let merge = Request::Merge {
            bucket: b"rpc".to_vec(),
            key: b"k".to_vec(),
            object,
            apply,
        };
        assert!(matches!(
            ask(&peer, second, merge.clone()).await,
            Response::Applied { durable: true }
        ));
        let Response::Batch(answers) = ask(&peer, second, Request::Batch(vec![merge])).await else {
            panic!("a batch must answer with a batch");
        };
        assert!(
            matches!(answers[..], [Response::Applied { durable: true }]),
            "{answers:?}"
        );
        peer.close().await;
    });
    // A client reads the minted value back through the second node.
    let (status, body) = nodes[1].get("rpc", "k", "?r=1");
    assert_eq!((status, body.as_str()), (200, "minted"));
}
