//! The README's walk-through and the sibling rules, against a real
//! `starling` process over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use common::{NodeProcess, agent};

fn vclock(r: &ureq::http::Response<ureq::Body>) -> String {
    r.headers()
        .get("x-riak-vclock")
        .expect("X-Riak-Vclock header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn siblings_are_created_and_resolved_and_deletes_carry_a_context() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n1"), &[]);
    let agent = agent();
    let url = node.url("/buckets/demo/keys/hello");

    let mut r = agent
        .put(&url)
        .header("Content-Type", "text/plain")
        .send("v1")
        .unwrap();
    assert_eq!(
        r.status(),
        204,
        "{}",
        r.body_mut().read_to_string().unwrap_or_default()
    );
    let r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 200);
    let stale = vclock(&r);

    // Two writers that both read v1 write concurrently: two siblings.
    for value in ["v2a", "v2b"] {
        let r = agent
            .put(&url)
            .header("Content-Type", "text/plain")
            .header("X-Riak-Vclock", &stale)
            .send(value)
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let mut r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 300);
    let context = vclock(&r);
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(
        body.lines().filter(|l| !l.is_empty()).count(),
        3,
        "Siblings: + 2 vtags:\n{body}"
    );
    let mut r = agent
        .get(&url)
        .header("Accept", "multipart/mixed")
        .call()
        .unwrap();
    assert_eq!(r.status(), 300);
    let multipart = r.body_mut().read_to_string().unwrap();
    assert!(
        multipart.contains("v2a") && multipart.contains("v2b"),
        "{multipart}"
    );

    // Resolving with the 300's context leaves one value.
    let r = agent
        .put(&url)
        .header("Content-Type", "text/plain")
        .header("X-Riak-Vclock", &context)
        .send("v3")
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body_mut().read_to_string().unwrap(), "v3");
    let context = vclock(&r);

    // A delete leaves a tombstone whose context a later write supersedes.
    let r = agent
        .delete(&url)
        .header("X-Riak-Vclock", &context)
        .call()
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 404);
    let tombstone_context = vclock(&r);
    let r = agent
        .put(&url)
        .header("Content-Type", "text/plain")
        .header("X-Riak-Vclock", &tombstone_context)
        .send("reborn")
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut r = agent
        .get(&url)
        .header("Accept", "multipart/mixed")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "one value, no tombstone sibling");
    assert_eq!(r.body_mut().read_to_string().unwrap(), "reborn");
}

#[test]
fn read_modify_write_cycles_keep_one_sibling_and_blind_writes_hit_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n1"), &[]);
    let agent = agent();
    let url = node.url("/buckets/rmw/keys/counter");
    agent
        .put(&url)
        .header("Content-Type", "text/plain")
        .send("0")
        .unwrap();
    for i in 1..=1000u32 {
        let mut r = agent.get(&url).call().unwrap();
        assert_eq!(r.status(), 200, "cycle {i}");
        let context = vclock(&r);
        let n: u32 = r.body_mut().read_to_string().unwrap().parse().unwrap();
        let r = agent
            .put(&url)
            .header("Content-Type", "text/plain")
            .header("X-Riak-Vclock", &context)
            .send((n + 1).to_string())
            .unwrap();
        assert_eq!(r.status(), 204, "cycle {i}");
    }
    let mut r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 200, "exactly one sibling after 1,000 cycles");
    assert_eq!(r.body_mut().read_to_string().unwrap(), "1000");

    // Blind writes are concurrent with everything: each adds a sibling, up
    // to the limit, and then the store refuses with a clear message.
    let url = node.url("/buckets/rmw/keys/blind");
    let mut accepted = 0;
    let refusal = loop {
        let mut r = agent
            .put(&url)
            .header("Content-Type", "text/plain")
            .send("x")
            .unwrap();
        if r.status() != 204 {
            break (r.status(), r.body_mut().read_to_string().unwrap());
        }
        accepted += 1;
        assert!(accepted <= 100, "the sibling limit never refused a write");
    };
    assert_eq!(accepted, 100);
    assert_eq!(refusal.0, 409);
    assert!(refusal.1.contains("siblings"), "message: {}", refusal.1);
    // Resolving them is still possible: a write with the context replaces all.
    let r = agent.get(&url).call().unwrap();
    let context = vclock(&r);
    let r = agent
        .put(&url)
        .header("Content-Type", "text/plain")
        .header("X-Riak-Vclock", &context)
        .send("resolved")
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(agent.get(&url).call().unwrap().status(), 200);
}

#[test]
fn bad_requests_get_4xx_with_a_message_and_the_node_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n1"), &[]);
    let agent = agent();
    let key_url = node.url("/buckets/bad/keys/k");
    agent
        .put(&key_url)
        .header("Content-Type", "text/plain")
        .send("v")
        .unwrap();
    let good_context = vclock(&agent.get(&key_url).call().unwrap());
    let other_context = {
        let other = node.url("/buckets/bad/keys/other");
        agent
            .put(&other)
            .header("Content-Type", "text/plain")
            .send("v")
            .unwrap();
        vclock(&agent.get(&other).call().unwrap())
    };
    let long_key = "k".repeat(2_000);
    let mut truncated = good_context.clone();
    truncated.truncate(good_context.len() / 2);

    type Case<'a> = (
        &'a str,
        Box<dyn Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error> + 'a>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "garbage context",
            Box::new(|| {
                agent
                    .put(&key_url)
                    .header("Content-Type", "text/plain")
                    .header("X-Riak-Vclock", "!!!")
                    .send("v")
            }),
        ),
        (
            "truncated context",
            Box::new(|| {
                agent
                    .put(&key_url)
                    .header("Content-Type", "text/plain")
                    .header("X-Riak-Vclock", &truncated)
                    .send("v")
            }),
        ),
        (
            "context of another key",
            Box::new(|| {
                agent
                    .put(&key_url)
                    .header("Content-Type", "text/plain")
                    .header("X-Riak-Vclock", &other_context)
                    .send("v")
            }),
        ),
        (
            "forged context",
            Box::new(|| {
                agent
                    .put(&key_url)
                    .header("Content-Type", "text/plain")
                    .header("X-Riak-Vclock", "AQAAAAAAAAAAAAAAAAAAAAAAAA==")
                    .send("v")
            }),
        ),
        (
            "bad quorum",
            Box::new(|| {
                agent
                    .put(&format!("{key_url}?w=most"))
                    .header("Content-Type", "text/plain")
                    .send("v")
            }),
        ),
        (
            "quorum above n_val",
            Box::new(|| agent.get(&format!("{key_url}?r=4")).call()),
        ),
        (
            "bad content type",
            Box::new(|| {
                agent
                    .put(&key_url)
                    .header("Content-Type", "not a type")
                    .send("v")
            }),
        ),
        (
            "oversized key",
            Box::new(|| {
                agent
                    .put(&node.url(&format!("/buckets/bad/keys/{long_key}")))
                    .header("Content-Type", "text/plain")
                    .send("v")
            }),
        ),
        (
            "bad percent-encoding",
            Box::new(|| agent.get(&node.url("/buckets/bad/keys/%ZZ")).call()),
        ),
        (
            "unknown path",
            Box::new(|| agent.get(&node.url("/nothing/here")).call()),
        ),
        (
            "bad props",
            Box::new(|| {
                agent
                    .put(&node.url("/buckets/bad/props"))
                    .header("Content-Type", "application/json")
                    .send("{\"props\":{\"n_val\":\"three\"}}")
            }),
        ),
    ];
    for (name, case) in &cases {
        let mut r = case().unwrap_or_else(|e| panic!("{name}: transport error {e}"));
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        assert!((400..500).contains(&status), "{name}: status {status}");
        assert!(!body.trim().is_empty(), "{name}: no message");
    }
    let r = agent.get(&node.url("/ping")).call().unwrap();
    assert_eq!(r.status(), 200);
    // The good context still works: nothing above changed the object.
    let r = agent
        .put(&key_url)
        .header("Content-Type", "text/plain")
        .header("X-Riak-Vclock", &good_context)
        .send("v2")
        .unwrap();
    assert_eq!(r.status(), 204);
}
