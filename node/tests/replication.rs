//! Replication with real processes: quorums, sloppy quorum with hinted
//! hand-off, read repair, and concurrent writers through different nodes.
//! Every wait polls a condition against a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{NodeProcess, cluster, wait_until};

/// Waits until every node in `observers` sees `target` as neither alive nor
/// suspect... that is, until requests stop going to it.
fn wait_down(observers: &[&NodeProcess], target: std::net::SocketAddr) {
    wait_until(
        "the stopped node to be seen dead",
        Duration::from_secs(20),
        || {
            observers.iter().all(|o| {
                o.state_of(target)
                    .is_some_and(|(s, _)| s == "dead" || s == "left")
            })
        },
    );
}

fn wait_alive(observers: &[&NodeProcess], target: std::net::SocketAddr) {
    wait_until(
        "the restarted node to be seen alive",
        Duration::from_secs(20),
        || {
            observers
                .iter()
                .all(|o| o.state_of(target).is_some_and(|(s, _)| s == "alive"))
        },
    );
}

/// Counts the parts of a multipart/mixed sibling answer (or 1 for a 200).
fn sibling_values(status: u16, body: &str) -> Vec<String> {
    if status == 200 {
        return vec![body.to_owned()];
    }
    assert_eq!(status, 300, "{body}");
    // Each part: headers, a blank line, the value, then the next boundary.
    body.split("\r\n--")
        .filter_map(|part| {
            part.split_once("\r\n\r\n")
                .map(|(_, v)| v.trim_end().to_owned())
        })
        .filter(|v| !v.is_empty() && !v.starts_with("--"))
        .collect()
}

#[test]
fn a_write_through_one_node_is_read_through_another_and_held_by_all_three() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let (status, body) = nodes[0].put("rep", "k1", "?w=2", "hello");
    assert_eq!(status, 204, "{body}");
    let (status, body) = nodes[2].get("rep", "k1", "?r=2");
    assert_eq!((status, body.as_str()), (200, "hello"));
    wait_until(
        "all three replicas to hold the write",
        Duration::from_secs(10),
        || {
            nodes
                .iter()
                .all(|n| n.local_values("rep", "k1") == Some(vec!["hello".to_owned()]))
        },
    );
}

#[test]
fn writes_while_a_node_is_down_reach_it_by_hinted_handoff_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Read repair off: only hand-off may bring the node up to date.
    let mut nodes = cluster(
        dir.path(),
        3,
        &["--read-repair", "false", "--anti-entropy", "false"],
    );
    nodes[2].kill();
    let down = nodes[2].http;
    wait_down(&[&nodes[0], &nodes[1]], down);
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let (status, body) = nodes[i % 2].put("hh", key, "?w=2", &format!("v{i}"));
        assert_eq!(status, 204, "write {key} while a node is down: {body}");
    }
    let hints: u64 = nodes[..2].iter().map(|n| n.hints_pending().unwrap()).sum();
    assert!(
        hints >= keys.len() as u64,
        "only {hints} hints kept for {} writes",
        keys.len()
    );
    let restarted = Instant::now();
    nodes[2].restart();
    wait_until(
        "hand-off to deliver every write",
        Duration::from_secs(10),
        || {
            keys.iter()
                .enumerate()
                .all(|(i, key)| nodes[2].local_values("hh", key) == Some(vec![format!("v{i}")]))
        },
    );
    eprintln!(
        "{} writes handed off {:?} after the restart",
        keys.len(),
        restarted.elapsed()
    );
    wait_until("the hint stores to empty", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.hints_pending() == Some(0))
    });
}

#[test]
fn quorums_are_enforced_when_two_of_three_are_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3, &[]);
    nodes[1].kill();
    nodes[2].kill();
    wait_down(&[&nodes[0]], nodes[1].http);
    wait_down(&[&nodes[0]], nodes[2].http);
    let (status, body) = nodes[0].put("q", "k", "?w=2", "first");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("1 of 2"), "{body}");
    let (status, body) = nodes[0].put("q", "k", "?w=1", "second");
    assert_eq!(status, 204, "{body}");
    // The refused write's outcome is indeterminate (the surviving replica
    // applied it before the quorum failed), so it may stand beside the
    // acknowledged one as a sibling; the acknowledged one must be there.
    let (status, body) = nodes[0].get("q", "k", "?r=1");
    let values = sibling_values(status, &body);
    assert!(values.contains(&"second".to_owned()), "{values:?}");
    assert!(
        values.iter().all(|v| v == "first" || v == "second"),
        "{values:?}"
    );
}

#[test]
fn pw_refuses_even_when_fallbacks_are_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 4, &[]);
    // Find the key's primaries, then stop two of them.
    let mut r = common::agent()
        .get(&nodes[0].url("/buckets/pw/keys/k/preflist"))
        .call()
        .unwrap();
    let preflist: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let primaries: Vec<String> = preflist["preflist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(primaries.len(), 3);
    let victims: Vec<usize> = (0..4)
        .filter(|&i| primaries.contains(&nodes[i].http.to_string()))
        .take(2)
        .collect();
    let survivor = (0..4).find(|i| !victims.contains(i)).unwrap();
    for &v in &victims {
        nodes[v].kill();
    }
    for &v in &victims {
        wait_down(&[&nodes[survivor]], nodes[v].http);
    }
    // W=2 is met by the remaining primary and a fallback...
    let (status, body) = nodes[survivor].put("pw", "k", "?w=2", "x");
    assert_eq!(status, 204, "{body}");
    // ...but PW=2 needs two primaries.
    let (status, body) = nodes[survivor].put("pw", "k", "?w=2&pw=2", "y");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("pw"), "{body}");
}

#[test]
fn a_stale_replica_is_repaired_by_one_read() {
    let dir = tempfile::tempdir().unwrap();
    // Hand-off off: only the read may repair.
    let mut nodes = cluster(
        dir.path(),
        3,
        &["--hinted-handoff", "false", "--anti-entropy", "false"],
    );
    let (status, _) = nodes[0].put("rr", "k", "?w=3", "old");
    assert_eq!(status, 204);
    nodes[2].kill();
    wait_down(&[&nodes[0], &nodes[1]], nodes[2].http);
    let context = nodes[0].context("rr", "k").unwrap();
    let (status, _) = nodes[0].put_with_context("rr", "k", "?w=2", &context, "new");
    assert_eq!(status, 204);
    nodes[2].restart();
    wait_alive(&[&nodes[0], &nodes[1]], nodes[2].http);
    assert_eq!(
        nodes[2].local_values("rr", "k"),
        Some(vec!["old".to_owned()]),
        "stale before the read"
    );
    let (status, body) = nodes[1].get("rr", "k", "?r=3");
    assert_eq!((status, body.as_str()), (200, "new"));
    wait_until(
        "read repair to update the stale replica",
        Duration::from_secs(5),
        || nodes[2].local_values("rr", "k") == Some(vec!["new".to_owned()]),
    );
}

#[test]
fn concurrent_blind_writers_through_three_nodes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let acked: Vec<String> = std::thread::scope(|scope| {
        let writers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(w, node)| {
                scope.spawn(move || {
                    (0..30)
                        .filter_map(|i| {
                            let value = format!("w{w}-{i}");
                            let (status, _) = node.put("blind", "k", "", &value);
                            (status == 204).then_some(value)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(acked.len(), 90, "every write should be acknowledged");
    let (status, body) = nodes[1].get("blind", "k", "?r=3");
    let mut values = sibling_values(status, &body);
    values.sort();
    let mut expected = acked.clone();
    expected.sort();
    assert_eq!(values, expected, "one sibling per acknowledged write");
}
