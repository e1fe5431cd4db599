//! Operators' views against a running cluster: Prometheus metrics move as
//! requests are made, and the admin endpoints answer.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{agent, cluster};

/// Scrapes `/metrics` and parses it with a Prometheus text parser: sample
/// name plus sorted labels -> value.
fn scrape(node: &common::NodeProcess) -> HashMap<String, f64> {
    let mut r = agent().get(&node.url("/metrics")).call().unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = r.body_mut().read_to_string().unwrap();
    common::parse_metrics(&body)
}

fn value(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or_else(|| {
        let mut names: Vec<&String> = metrics.keys().collect();
        names.sort();
        panic!("no sample {name}; have {names:#?}")
    })
}

#[test]
fn metrics_move_as_requests_are_made() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let node = &nodes[0];
    let before = scrape(node);
    assert_eq!(value(&before, "starling_members{state=alive}"), 3.0);
    for i in 0..3 {
        assert_eq!(node.put("m", &format!("k{i}"), "", "0123456789").0, 204);
    }
    assert_eq!(node.get("m", "k0", "").0, 200);
    assert_eq!(node.get("m", "missing", "").0, 404);
    assert_eq!(node.put("m", "k0", "?w=9", "x").0, 400);
    let after = scrape(node);
    assert_eq!(
        value(&after, "starling_requests_total{op=put,outcome=ok}"),
        3.0
    );
    assert_eq!(
        value(&after, "starling_requests_total{op=get,outcome=ok}"),
        1.0
    );
    assert_eq!(
        value(&after, "starling_requests_total{op=get,outcome=not_found}"),
        1.0
    );
    // The bad quorum never reached the backend: http-api refused it.
    assert!(!after.contains_key("starling_requests_total{op=put,outcome=bad_request}"));
    assert_eq!(value(&after, "starling_object_size_bytes_count{}"), 3.0);
    assert_eq!(value(&after, "starling_object_siblings_count{}"), 1.0);
    assert!(value(&after, "starling_fsyncs_total{}") > value(&before, "starling_fsyncs_total{}"));
    assert!(value(&after, "starling_storage_disk_bytes{}") > 0.0);
    assert_eq!(value(&after, "starling_hints_pending{}"), 0.0);
}

#[test]
fn admin_views_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    for path in ["/admin/members", "/admin/ring", "/admin/hints"] {
        let mut r = agent().get(&nodes[2].url(path)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert!(body.is_object(), "{path}: {body}");
    }
    let mut r = agent().get(&nodes[2].url("/admin/ring")).call().unwrap();
    let ring: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(ring["partition_count"], 64);
    let owned: u64 = ring["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["partitions"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, 64);
}

#[test]
fn starling_admin_commands_work_against_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("admin")
            .arg("--node")
            .arg(nodes[0].url(""))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let status = admin(&["status"]);
    assert!(status.contains("members alive 3"), "{status}");
    let ring = admin(&["ring"]);
    assert!(ring.contains("64 partitions"), "{ring}");
    for node in &nodes {
        assert!(ring.contains(&node.http.to_string()), "{ring}");
    }
    let hints = admin(&["hints"]);
    assert!(hints.contains("pending 0"), "{hints}");
    admin(&["bucket", "set", "cfg", "allow_mult=false", "n_val=2"]);
    let props = admin(&["bucket", "get", "cfg"]);
    assert!(
        props.contains("allow_mult = false") && props.contains("n_val = 2"),
        "{props}"
    );
    // Set through one node, visible through every other.
    for node in &nodes[1..] {
        let mut r = agent().get(&node.url("/buckets/cfg/props")).call().unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["props"]["n_val"], 2, "{body}");
    }
    let json: serde_json::Value = serde_json::from_str(&admin(&["--json", "ring"])).unwrap();
    assert_eq!(json["partition_count"], 64);
}
