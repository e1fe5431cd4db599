//! Anti-entropy, ownership transfer and reaping with real `starling`
//! processes on loopback.
//!
//! - A replica cut off (SIGSTOP) while 1,000 of 101,000 keys are written,
//!   with hinted hand-off and read repair off, converges by Merkle exchange
//!   alone within 30 s of the heal, for under 5% of the bytes of a full copy.
//! - A fourth node joins a cluster of 100,000 keys: afterwards each node
//!   holds exactly the partitions the ring gives it and every key reads back
//!   from every replica; then a node leaves and no key is lost.
//! - A node is SIGKILLed and removed: every key is back on N replicas.
//! - A key deleted while a replica is down is not reaped until the replica
//!   is back and holds the tombstone; after reaping and anti-entropy it
//!   stays 404 on every node.
//!
//! Every wait polls a condition against a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{NodeProcess, cluster, load, missing, wait_until};

const VALUE_SIZE_BYTES: usize = 100;
const CLIENT_THREADS: usize = 32;

/// Whether every node answers with the same Merkle roots.
fn roots_agree(nodes: &[&NodeProcess]) -> bool {
    let roots: Vec<_> = nodes.iter().map(|n| n.roots()).collect();
    roots.iter().all(Option::is_some) && roots.windows(2).all(|w| w[0] == w[1])
}

/// Whether, for every tree, the nodes holding it agree on its root, and
/// no node holds a tree it is not a replica of or has transfers pending.
fn settled(nodes: &[&NodeProcess]) -> bool {
    let mut by_tree: BTreeMap<(u64, u64), BTreeSet<String>> = BTreeMap::new();
    for node in nodes {
        let aae = node.aae();
        if aae["ready"] != serde_json::Value::Bool(true) || aae["transfers_pending"] != 0 {
            return false;
        }
        for t in aae["trees"].as_array().into_iter().flatten() {
            if t["role"] != "replica" {
                return false;
            }
            by_tree
                .entry((
                    t["partition"].as_u64().unwrap(),
                    t["n_val"].as_u64().unwrap(),
                ))
                .or_default()
                .insert(t["root"].as_str().unwrap().to_owned());
        }
    }
    by_tree.values().all(|roots| roots.len() == 1)
}

/// One line per node of what anti-entropy says, for failure reports.
fn describe(nodes: &[&NodeProcess]) -> String {
    nodes
        .iter()
        .map(|n| {
            let aae = n.aae();
            let mut roles: BTreeMap<String, usize> = BTreeMap::new();
            for t in aae["trees"].as_array().into_iter().flatten() {
                *roles.entry(t["role"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
            }
            format!(
                "{}: ring {:?} state {} keys {} pending {} roles {roles:?} exchanges {} failures {} repaired {}",
                n.http,
                n.ring_states(),
                aae["ring_state"],
                aae["keys"],
                aae["transfers_pending"],
                aae["exchanges_total"],
                aae["failures_total"],
                aae["keys_repaired_total"],
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls like [`wait_until`], printing [`describe`] every 10 s.
fn wait_reporting(
    what: &str,
    deadline: Duration,
    nodes: &[&NodeProcess],
    mut condition: impl FnMut() -> bool,
) {
    let start = Instant::now();
    let mut reported = Instant::now();
    wait_until(what, deadline, || {
        if reported.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{:?} waiting for {what}:\n{}",
                start.elapsed(),
                describe(nodes)
            );
            reported = Instant::now();
        }
        condition()
    });
}

/// Sum of a counter of `/admin/aae` over `nodes`.
fn aae_sum(nodes: &[&NodeProcess], field: &str) -> u64 {
    nodes
        .iter()
        .map(|n| n.aae()[field].as_u64().unwrap_or(0))
        .sum()
}

/// Runs `starling admin --node <node> ARGS...` and returns its stdout.
fn admin(node: &NodeProcess, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("admin")
        .arg("--node")
        .arg(node.url(""))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "starling admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every node sees `count` members in ring state `member`.
fn ring_of(nodes: &[&NodeProcess], count: usize) -> bool {
    nodes
        .iter()
        .all(|n| n.ring_states().iter().filter(|s| *s == "member").count() == count)
}

/// The partitions each node should hold (N=3, no zones), computed from
/// `/admin/ring` the way the ring does: the owner of the key's partition and
/// of its successors until three distinct members are found.
fn expected_partitions(node: &NodeProcess) -> BTreeMap<String, BTreeSet<u64>> {
    let ring = node.json("/admin/ring");
    let owners: Vec<String> = ring["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["owner"].as_str().unwrap().to_owned())
        .collect();
    let q = owners.len();
    let mut held: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for p in 0..q {
        let mut list: Vec<&String> = Vec::new();
        for step in 0..q {
            let owner = &owners[(p + step) % q];
            if !list.contains(&owner) {
                list.push(owner);
            }
            if list.len() == 3 {
                break;
            }
        }
        for owner in list {
            held.entry(owner.clone()).or_default().insert(p as u64);
        }
    }
    held
}

fn held_partitions(node: &NodeProcess) -> BTreeSet<u64> {
    node.aae()["trees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["partition"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_cut_off_replica_converges_by_merkle_exchange_for_a_fraction_of_a_full_copy() {
    const KEYS: usize = 100_000;
    const CUT_KEYS: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(
        dir.path(),
        3,
        &["--hinted-handoff", "false", "--read-repair", "false"],
    );
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let started = Instant::now();
    load(
        &all,
        "aae",
        0..KEYS,
        VALUE_SIZE_BYTES,
        "?w=all",
        CLIENT_THREADS,
    );
    eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());
    wait_until("the replicas to agree", Duration::from_secs(60), || {
        roots_agree(&all)
    });

    // Cut the third node off and write elsewhere: only anti-entropy can
    // bring it these keys (no hand-off, no read repair).
    let traffic = |n: &NodeProcess| {
        let aae = n.aae();
        aae["bytes_sent_total"].as_u64().unwrap() + aae["bytes_received_total"].as_u64().unwrap()
    };
    let before_cut = traffic(&nodes[2]);
    nodes[2].signal("STOP");
    // Once the others declare it dead, no write is sent its way any more
    // (it gets hints, which are not delivered here), so nothing in flight
    // can reach it when it resumes.
    let stopped = nodes[2].http.to_string();
    wait_until(
        "the others to declare it dead",
        Duration::from_secs(30),
        || {
            nodes[..2].iter().all(|n| {
                n.members()
                    .iter()
                    .any(|(http, state, _)| *http == stopped && state == "dead")
            })
        },
    );
    load(
        &all[..2],
        "aae",
        KEYS..KEYS + CUT_KEYS,
        VALUE_SIZE_BYTES,
        "?w=2",
        CLIENT_THREADS,
    );
    let before = traffic(&nodes[0]) + traffic(&nodes[1]) + before_cut;
    nodes[2].signal("CONT");
    let healed = Instant::now();
    wait_until(
        "every replica's Merkle roots to be equal after the heal",
        Duration::from_secs(30),
        || roots_agree(&all),
    );
    let converged = healed.elapsed();
    let exchanged = all.iter().map(|n| traffic(n)).sum::<u64>() - before;
    let full_copy = nodes[2].aae()["size_bytes"].as_u64().unwrap();
    eprintln!(
        "converged {converged:?} after the heal; anti-entropy moved {exchanged} bytes, \
         a full copy of the healed replica is {full_copy} bytes ({:.2}%)",
        exchanged as f64 * 100.0 / full_copy as f64
    );
    // The healed node holds the keys written while it was away, in its own
    // store.
    for i in (KEYS..KEYS + CUT_KEYS).step_by(97) {
        assert!(
            nodes[2].local_values("aae", &format!("k{i}")).is_some(),
            "k{i} is not on the healed node"
        );
    }
    assert!(
        exchanged * 20 < full_copy,
        "anti-entropy moved {exchanged} bytes, not under 5% of {full_copy}"
    );
}

#[test]
fn a_joining_node_gets_exactly_its_partitions_and_a_leaving_node_loses_nothing() {
    const KEYS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3, &[]);
    {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let started = Instant::now();
        load(
            &all,
            "join",
            0..KEYS,
            VALUE_SIZE_BYTES,
            "?w=all",
            CLIENT_THREADS,
        );
        eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());
        wait_until("the replicas to agree", Duration::from_secs(60), || {
            settled(&all)
        });
    }

    let join = nodes[0].cluster.to_string();
    let joined = Instant::now();
    nodes.push(NodeProcess::start(
        &dir.path().join("n3"),
        &["--join", &join],
    ));
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    wait_reporting(
        "the fourth node to become a member and every transfer to finish",
        Duration::from_secs(240),
        &all,
        || ring_of(&all, 4) && settled(&all),
    );
    eprintln!(
        "the fourth node joined and the ring settled in {:?}",
        joined.elapsed()
    );
    let handed_off = aae_sum(&all, "keys_handed_off_total");
    eprintln!("{handed_off} keys were handed off by their old owners");

    let expected = expected_partitions(&nodes[0]);
    for node in &nodes {
        let name = node.http.to_string();
        assert_eq!(
            held_partitions(node),
            expected.get(&name).cloned().unwrap_or_default(),
            "{name} does not hold exactly the partitions the ring gives it"
        );
    }
    let keys_held: u64 = nodes
        .iter()
        .map(|n| n.aae()["keys"].as_u64().unwrap())
        .sum();
    assert_eq!(
        keys_held,
        3 * KEYS as u64,
        "every key on exactly three nodes"
    );
    let started = Instant::now();
    let lost = missing(
        &nodes[3],
        "join",
        0..KEYS,
        VALUE_SIZE_BYTES,
        "?r=all&notfound_ok=false",
        16,
    );
    eprintln!("read {KEYS} keys with r=all in {:?}", started.elapsed());
    assert!(
        lost.is_empty(),
        "{} keys did not read back: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // The second node leaves; afterwards no key is lost and the three left
    // hold everything.
    let out = admin(&nodes[1], &["leave"]);
    assert!(out.contains("handing partitions"), "{out}");
    let leaving = Instant::now();
    wait_until(
        "the leaving node to hand off and stop",
        Duration::from_secs(240),
        || nodes[1].exited(),
    );
    eprintln!("the leave completed in {:?}", leaving.elapsed());
    let rest: Vec<&NodeProcess> = [0, 2, 3].iter().map(|&i| &nodes[i]).collect();
    wait_reporting(
        "the remaining ring to settle",
        Duration::from_secs(120),
        &rest,
        || ring_of(&rest, 3) && settled(&rest),
    );
    let lost = missing(
        &nodes[0],
        "join",
        0..KEYS,
        VALUE_SIZE_BYTES,
        "?r=all&notfound_ok=false",
        16,
    );
    assert!(
        lost.is_empty(),
        "{} keys lost in the leave: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn a_removed_node_s_data_is_replicated_back_to_n() {
    const KEYS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 4, &[]);
    {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        load(
            &all,
            "rm",
            0..KEYS,
            VALUE_SIZE_BYTES,
            "?w=all",
            CLIENT_THREADS,
        );
        wait_until("the replicas to agree", Duration::from_secs(60), || {
            settled(&all)
        });
    }
    let gone = nodes[3].id();
    nodes[3].kill();
    let rest: Vec<&NodeProcess> = nodes[..3].iter().collect();
    wait_until("the others to see it dead", Duration::from_secs(30), || {
        rest.iter().all(|n| {
            n.members()
                .iter()
                .any(|(http, state, _)| *http == nodes[3].http.to_string() && state == "dead")
        })
    });
    // Writes while it is dead leave hints for it on the others.
    const LATE: usize = 500;
    load(
        &rest,
        "rm",
        KEYS..KEYS + LATE,
        VALUE_SIZE_BYTES,
        "?w=2",
        CLIENT_THREADS,
    );
    assert!(rest.iter().map(|n| n.hints_pending().unwrap()).sum::<u64>() > 0);
    let suffix = &gone[gone.len() - 12..];
    let out = admin(&nodes[0], &["remove", suffix]);
    assert!(out.contains("removed"), "{out}");
    let removed = Instant::now();
    wait_reporting(
        "the remaining nodes to re-replicate every key to three copies",
        Duration::from_secs(180),
        &rest,
        || {
            ring_of(&rest, 3)
                && settled(&rest)
                && rest.iter().all(|n| {
                    n.aae()["keys"].as_u64() == Some((KEYS + LATE) as u64)
                        && n.hints_pending() == Some(0)
                })
        },
    );
    eprintln!(
        "re-replicated to N=3 in {:?} after the remove",
        removed.elapsed()
    );
    let lost = missing(
        &nodes[0],
        "rm",
        0..KEYS + LATE,
        VALUE_SIZE_BYTES,
        "?r=all&notfound_ok=false",
        16,
    );
    assert!(
        lost.is_empty(),
        "{} keys not on three replicas: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn a_key_deleted_while_a_replica_is_down_stays_deleted_through_reaping_and_anti_entropy() {
    // A short grace period (above the request deadline, as the config
    // insists) and quick anti-entropy rounds.
    let args = [
        "--delete-mode",
        "3000",
        "--request-timeout-ms",
        "2000",
        "--aae-interval-ms",
        "1000",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3, &args);
    let (status, _) = nodes[0].put("del", "k", "?w=all", "doomed");
    assert!(matches!(status, 200 | 204));
    let (status, _) = nodes[0].put("del", "other", "?w=all", "stays");
    assert!(matches!(status, 200 | 204));
    nodes[2].kill();
    let ctx = nodes[0].context("del", "k").unwrap();
    let url = nodes[0].url("/buckets/del/keys/k");
    let status = common::agent()
        .delete(&url)
        .header("X-Riak-Vclock", &ctx)
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 204);

    // While the third replica is down (and holds the old value), the
    // tombstone must not be reaped, however old it gets.
    let observed = Instant::now();
    while observed.elapsed() < Duration::from_secs(12) {
        for node in &nodes[..2] {
            let local = node.json("/admin/local?bucket=del&key=k");
            assert!(
                local["siblings"][0]["deleted"] == serde_json::Value::Bool(true),
                "the tombstone left {} while a replica was down: {local}",
                node.http
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    nodes[2].restart();
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let healed = Instant::now();
    wait_until(
        "the tombstone to be reaped on every node",
        Duration::from_secs(90),
        || {
            all.iter().all(|n| {
                n.json("/admin/local?bucket=del&key=k").is_null() && n.aae()["tombstones"] == 0
            })
        },
    );
    eprintln!("reaped {:?} after the heal", healed.elapsed());
    assert!(aae_sum(&all, "reaped_total") >= 1);
    // Let every node run a few more anti-entropy rounds: nothing brings the
    // key back.
    let rounds: Vec<u64> = all
        .iter()
        .map(|n| n.aae()["rounds"].as_u64().unwrap())
        .collect();
    wait_until(
        "three more anti-entropy rounds everywhere",
        Duration::from_secs(30),
        || {
            all.iter()
                .zip(&rounds)
                .all(|(n, r)| n.aae()["rounds"].as_u64().unwrap() >= r + 3)
        },
    );
    wait_until("the replicas to agree", Duration::from_secs(30), || {
        roots_agree(&all)
    });
    for node in &all {
        let (status, body) = node.get("del", "k", "?r=all");
        assert_eq!(status, 404, "{} answered {status}: {body}", node.http);
        assert!(node.json("/admin/local?bucket=del&key=k").is_null());
        let (status, body) = node.get("del", "other", "");
        assert_eq!((status, body.contains("stays")), (200, true), "{body}");
    }
}
