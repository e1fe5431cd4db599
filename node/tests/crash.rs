//! Durability across crashes, with real processes: an acknowledged write
//! survives SIGKILL, and no dot is handed out twice across restarts.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{NodeProcess, agent, wait_until};

#[test]
fn acknowledged_writes_survive_sigkill_during_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let base = node.url("/buckets/crash/keys/");
            let stop = stop.clone();
            let acked_count = acked_count.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut acked = Vec::new();
                // Bounded: the node is killed long before this runs out.
                for i in 0..100_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{w}-{i}");
                    let sent = agent
                        .put(&format!("{base}{key}"))
                        .header("Content-Type", "text/plain")
                        .send(format!("value {key}"));
                    match sent {
                        Ok(r) if r.status() == 204 => {
                            acked.push(key);
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                        // Connection reset or refused: the node is gone.
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    // Kill the node once a good number of writes were acknowledged, while
    // the writers are still going.
    wait_until("2,000 acknowledged writes", Duration::from_secs(60), || {
        acked_count.load(Ordering::Relaxed) >= 2000
    });
    node.kill();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() >= 2000,
        "only {} writes acknowledged",
        acked.len()
    );

    node.restart();
    let agent = agent();
    let mut missing = Vec::new();
    for key in &acked {
        let mut r = agent
            .get(&node.url(&format!("/buckets/crash/keys/{key}")))
            .call()
            .unwrap();
        if r.status() != 200 || r.body_mut().read_to_string().unwrap() != format!("value {key}") {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} acknowledged writes all read back after SIGKILL",
        acked.len()
    );
}

#[test]
fn restarts_never_reuse_a_dot() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &[]);
    let agent = agent();
    let url = node.url("/buckets/dots/keys/k");
    const RESTARTS: usize = 12;
    let started = Instant::now();
    for round in 0..RESTARTS {
        // A blind write: concurrent with everything, so each must stay as
        // its own sibling. A reused dot would make the store refuse it or
        // make an older sibling vanish.
        let r = agent
            .put(&url)
            .header("Content-Type", "text/plain")
            .send(format!("round {round}"))
            .unwrap();
        assert_eq!(r.status(), 204, "write in round {round}");
        if round % 2 == 0 {
            node.kill();
        } else {
            assert!(node.terminate().success());
        }
        node.restart();
    }
    let mut r = agent.get(&url).call().unwrap();
    assert_eq!(r.status(), 300);
    let body = r.body_mut().read_to_string().unwrap();
    let vtags: HashSet<&str> = body.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(
        vtags.len(),
        RESTARTS,
        "expected one sibling per write, got:\n{body}"
    );
    for round in 0..RESTARTS {
        let found = vtags.iter().any(|vtag| {
            let mut r = agent.get(&format!("{url}?vtag={vtag}")).call().unwrap();
            r.body_mut().read_to_string().unwrap() == format!("round {round}")
        });
        assert!(found, "the write of round {round} is gone");
    }
    eprintln!(
        "{RESTARTS} restarts (half SIGKILL) in {:?}: {RESTARTS} distinct siblings",
        started.elapsed()
    );
}

#[test]
fn sigterm_finishes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(&dir.path().join("n1"), &[]);
    let status = node.terminate();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        node.log()
    );
    assert!(node.log().contains("store closed"), "log:\n{}", node.log());
}
