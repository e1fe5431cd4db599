//! Request ids across nodes: a client request's id comes back in
//! `X-Request-Id`, and the log lines of the node that coordinated it and of
//! the replicas that served it carry the same `request_id`, so one search
//! finds its whole trail.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{NodeProcess, agent, cluster_logging, wait_until};
use serde_json::Value;

/// The HTTP request line (`http_api`) and what replicas serve (`node::rpc`)
/// are debug lines; everything else stays at info.
const LOG_FILTER: &str = "info,http_api=debug,node::rpc=debug";

/// Whether `value` holds `"request_id": id` anywhere (an event's fields or
/// one of its spans).
fn carries(value: &Value, id: &str) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == "request_id" && v == id) || carries(v, id)),
        Value::Array(items) => items.iter().any(|v| carries(v, id)),
        _ => false,
    }
}

/// The JSON log lines of `node` that carry `id`.
fn lines_with(node: &NodeProcess, id: &str) -> Vec<Value> {
    node.log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| carries(line, id))
        .collect()
}

/// Whether `node` logged serving a replica operation `ops` for `id`.
fn served(node: &NodeProcess, id: &str, ops: &[&str]) -> bool {
    lines_with(node, id).iter().any(|line| {
        line["target"] == "node::rpc"
            && ops.iter().any(|op| line["fields"]["op"] == *op)
            && line["fields"]["message"] == "replica serving"
    })
}

fn describe(nodes: &[NodeProcess], id: &str) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("node {i}: {:#?}", lines_with(n, id)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn one_request_id_is_answered_and_logged_by_its_coordinator_and_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster_logging(dir.path(), 3, &["--log-format", "json"], LOG_FILTER);
    let coordinator = &nodes[0];
    let replicas = &nodes[1..];

    let write_id = "test-req-42";
    let r = agent()
        .put(&coordinator.url("/buckets/traced/keys/k"))
        .header("Content-Type", "text/plain")
        .header("X-Request-Id", write_id)
        .send("v1")
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers().get("x-request-id").unwrap().to_str().unwrap(),
        write_id
    );
    // Three members, n_val 3: every node holds the key. The coordinator
    // logs the HTTP request in the request's span; each other node logs
    // serving its copy of the write (in a lane batch).
    wait_until(
        "the coordinator to log the request with its id",
        Duration::from_secs(10),
        || {
            lines_with(coordinator, write_id)
                .iter()
                .any(|line| line["target"] == "http_api::server")
        },
    );
    for replica in replicas {
        wait_until(
            "each replica to log serving the write with its id",
            Duration::from_secs(10),
            || served(replica, write_id, &["put", "merge"]),
        );
    }

    // A read fans out to every replica, and so does its id.
    let read_id = "test-read-7";
    let r = agent()
        .get(&coordinator.url("/buckets/traced/keys/k"))
        .header("X-Request-Id", read_id)
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-request-id").unwrap().to_str().unwrap(),
        read_id
    );
    for replica in replicas {
        wait_until(
            "each replica to log serving the read with its id",
            Duration::from_secs(10),
            || served(replica, read_id, &["get"]),
        );
    }
    // The ids stay apart: no node logged the read under the write's id.
    for node in &nodes {
        assert!(
            !served(node, write_id, &["get"]),
            "{}",
            describe(&nodes, write_id)
        );
    }
}

#[test]
fn a_request_without_an_id_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n0"), &[]);
    let id_of = |r: &ureq::http::Response<ureq::Body>| {
        r.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let put = agent()
        .put(&node.url("/buckets/b/keys/k"))
        .header("Content-Type", "text/plain")
        .send("v")
        .unwrap();
    assert_eq!(put.status(), 204);
    let missing = agent()
        .get(&node.url("/buckets/b/keys/missing"))
        .call()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let refused = agent()
        .get(&node.url("/buckets/b/keys/k"))
        .header("X-Request-Id", "not a sane id")
        .call()
        .unwrap();
    assert_eq!(refused.status(), 200);
    let ids: Vec<String> = [&put, &missing, &refused]
        .into_iter()
        .map(|r| id_of(r).expect("an X-Request-Id on every answer"))
        .collect();
    for id in &ids {
        assert!(
            id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{id:?}"
        );
    }
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
}
