//! The register checker: no stale reads under strict quorums.
//!
//! Independent keys; every write puts a unique value with the context of a
//! read just before it; reads return the values of every sibling. With
//! R + W > N (the workload asks for `pr`/`pw` = quorum, so the overlap is
//! among primaries and sloppy quorums cannot dodge it), a read that starts
//! after a write was acknowledged must see that write or something not
//! older than it.
//!
//! "Older" is real time: value `v` is older than write `w` if `v`'s write
//! ended (acknowledged, or given up as indeterminate) before `w` was
//! invoked. Such a write's context was fixed before `w` existed, so it can
//! never supersede `w`, however late it lands. A read is **stale** if some
//! write `w` was acknowledged before the read was invoked, the read does
//! not contain `w`'s value, and every value it does contain is older than
//! `w` (an empty read counts: nothing removes a register's value). Values
//! of concurrent writes, and of writes whose end the history never saw,
//! are never older, so siblings cannot make a valid history look stale.
//!
//! It suffices to test, per read, the acknowledged-before-it write with the
//! latest invocation: if the read holds a value not older than that one, it
//! holds one not older than any earlier-invoked write.
//!
//! A value read that no write attempted, or only a failed one, is
//! **unexpected**: invalid.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Validity, truncated};
use crate::history::{F, Op, OpType, pairs};

/// One stale read, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct StaleRead {
    /// The key.
    pub key: String,
    /// Index of the read's invocation in the history.
    pub read_index: u64,
    /// What it returned.
    pub values: Vec<u64>,
    /// The write it missed.
    pub missed_value: u64,
    /// Index of that write's invocation.
    pub missed_write_index: u64,
}

/// What the register checker found.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterReport {
    /// The verdict.
    pub valid: Validity,
    /// Successful reads judged.
    pub reads: usize,
    /// Writes acknowledged.
    pub writes_acknowledged: usize,
    /// Writes indeterminate.
    pub writes_indeterminate: usize,
    /// Stale reads found.
    pub stale_count: usize,
    /// The first of them.
    pub stale: Vec<StaleRead>,
    /// Values read that were never (successfully or indeterminately) written.
    pub unexpected_count: usize,
    /// The first of them, as (key, value).
    pub unexpected: Vec<(String, u64)>,
    /// One sentence for people.
    pub summary: String,
}

#[derive(Debug, Clone, Copy)]
struct Write {
    value: u64,
    invoke_ns: u64,
    /// When it was acknowledged; `None` unless it was.
    ok_ns: Option<u64>,
    /// When the client gave up on it or saw it acknowledged: its context
    /// was fixed by then. `None` if the history never saw it end.
    ended_ns: Option<u64>,
    index: u64,
    failed: bool,
}

/// Judges a register history.
pub fn check(ops: &[Op]) -> anyhow::Result<RegisterReport> {
    let pairs = pairs(ops)?;
    let mut writes: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut by_value: HashMap<u64, Write> = HashMap::new();
    let (mut acknowledged, mut indeterminate) = (0, 0);
    for pair in pairs.iter().filter(|p| p.invoke.f == F::Write) {
        let (Some(key), Some(value)) = (&pair.invoke.key, pair.invoke.value) else {
            anyhow::bail!("op {}: a write without key or value", pair.invoke.index);
        };
        let outcome = pair.outcome();
        let write = Write {
            value,
            invoke_ns: pair.invoke.time_ns,
            ok_ns: (outcome == OpType::Ok)
                .then(|| pair.completed_ns())
                .flatten(),
            ended_ns: pair.completed_ns(),
            index: pair.invoke.index,
            failed: outcome == OpType::Fail,
        };
        match outcome {
            OpType::Ok => acknowledged += 1,
            OpType::Fail => {}
            _ => indeterminate += 1,
        }
        anyhow::ensure!(
            by_value.insert(value, write).is_none(),
            "op {}: value {value} written twice (values must be unique)",
            pair.invoke.index
        );
        writes.entry(key.clone()).or_default().push(write);
    }
    // Per key, acknowledged writes sorted by acknowledgement time, with a
    // running "latest invocation so far" so each read is a binary search.
    let mut acked: BTreeMap<String, Vec<(u64, Write)>> = BTreeMap::new();
    for (key, ws) in &writes {
        let mut list: Vec<Write> = ws.iter().filter(|w| w.ok_ns.is_some()).copied().collect();
        list.sort_by_key(|w| w.ok_ns);
        let mut latest: Option<Write> = None;
        let prefix: Vec<(u64, Write)> = list
            .into_iter()
            .map(|w| {
                if latest.is_none_or(|l| w.invoke_ns > l.invoke_ns) {
                    latest = Some(w);
                }
                (w.ok_ns.unwrap_or(u64::MAX), latest.unwrap_or(w))
            })
            .collect();
        acked.insert(key.clone(), prefix);
    }

    let mut reads = 0;
    let mut stale = Vec::new();
    let mut unexpected = Vec::new();
    for pair in pairs
        .iter()
        .filter(|p| matches!(p.invoke.f, F::Read | F::FinalRead))
    {
        let Some(done) = pair.completion.filter(|c| c.kind == OpType::Ok) else {
            continue;
        };
        reads += 1;
        let key = pair.invoke.key.clone().unwrap_or_default();
        let values = done.values.clone().unwrap_or_default();
        for &v in &values {
            let known = by_value.get(&v);
            let belongs = writes
                .get(&key)
                .is_some_and(|ws| ws.iter().any(|w| w.value == v));
            if known.is_none_or(|w| w.failed) || !belongs {
                unexpected.push((key.clone(), v));
            }
        }
        let Some(list) = acked.get(&key) else {
            continue;
        };
        // Acknowledged strictly before the read was invoked.
        let before = list.partition_point(|(ok_ns, _)| *ok_ns < pair.invoke.time_ns);
        if before == 0 {
            continue;
        }
        let w = list[before - 1].1;
        if values.contains(&w.value) {
            continue;
        }
        let all_older = values.iter().all(|v| {
            by_value
                .get(v)
                .and_then(|x| x.ended_ns)
                .is_some_and(|ended| ended < w.invoke_ns)
        });
        if all_older {
            stale.push(StaleRead {
                key,
                read_index: pair.invoke.index,
                values,
                missed_value: w.value,
                missed_write_index: w.index,
            });
        }
    }

    let valid = if !stale.is_empty() || !unexpected.is_empty() {
        Validity::Invalid
    } else if reads == 0 || acknowledged == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let summary = match valid {
        Validity::Valid => {
            format!("{reads} reads, none stale, against {acknowledged} acknowledged writes")
        }
        Validity::Invalid => format!(
            "{} stale read(s), {} unexpected value(s)",
            stale.len(),
            unexpected.len()
        ),
        Validity::Unknown => "no successful read or no acknowledged write to judge".to_owned(),
    };
    Ok(RegisterReport {
        valid,
        reads,
        writes_acknowledged: acknowledged,
        writes_indeterminate: indeterminate,
        stale_count: stale.len(),
        stale: truncated(&stale),
        unexpected_count: unexpected.len(),
        unexpected: truncated(&unexpected),
        summary,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checker::test_history::H;

    #[test]
    fn reads_of_the_latest_or_concurrent_values_are_valid() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.read(1, F::Read, "k", &[1]);
        // Two concurrent writes: a read after both may see either or both.
        let a = h.invoke(0, F::Write, "k", Some(2));
        let b = h.invoke(1, F::Write, "k", Some(3));
        h.complete(&a, OpType::Ok, None);
        h.complete(&b, OpType::Ok, None);
        h.read(2, F::Read, "k", &[3]);
        h.read(2, F::Read, "k", &[2, 3]);
        // A read concurrent with a write may miss it.
        let c = h.invoke(0, F::Write, "k", Some(4));
        h.read(1, F::Read, "k", &[2]);
        h.complete(&c, OpType::Ok, None);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Valid, "{r:?}");
        assert_eq!(r.reads, 4);
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_stale() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.op(0, F::Write, "k", 2, OpType::Ok);
        h.read(1, F::Read, "k", &[1]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.stale.len(), 1);
        assert_eq!(r.stale[0].missed_value, 2);
    }

    #[test]
    fn an_empty_read_after_an_acknowledged_write_is_stale() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.read(1, F::Read, "k", &[]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Invalid);
    }

    #[test]
    fn an_indeterminate_write_concurrent_with_the_missed_one_is_not_older() {
        // 1 is still in flight when 2 starts: it may land after 2, with a
        // context that covers 2, so reading only 1 is not provably stale.
        let mut h = H::new();
        let one = h.invoke(0, F::Write, "k", Some(1));
        h.op(1, F::Write, "k", 2, OpType::Ok);
        h.complete(&one, OpType::Info, None);
        h.read(2, F::Read, "k", &[1]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Valid, "{r:?}");
    }

    #[test]
    fn an_indeterminate_write_that_ended_before_the_missed_one_is_older() {
        // 1's context was fixed before 2 was invoked: landing late, it is a
        // sibling of 2 at best, so a read of 1 alone missed 2.
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Info);
        h.op(1, F::Write, "k", 2, OpType::Ok);
        h.read(2, F::Read, "k", &[1]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Invalid);
    }

    #[test]
    fn values_nobody_wrote_or_failed_writes_are_unexpected() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.op(0, F::Write, "k", 2, OpType::Fail);
        h.read(1, F::Read, "k", &[1, 2]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.unexpected, vec![("k".to_owned(), 2)]);

        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.op(0, F::Write, "j", 2, OpType::Ok);
        h.read(1, F::Read, "k", &[1, 2]); // j's value on k
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Invalid);
    }

    #[test]
    fn keys_are_independent() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.op(0, F::Write, "j", 2, OpType::Ok);
        h.read(1, F::Read, "k", &[1]);
        h.read(1, F::Read, "j", &[2]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Valid);
    }

    #[test]
    fn no_reads_is_unknown() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Unknown);
    }
}
