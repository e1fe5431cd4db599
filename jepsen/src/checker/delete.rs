//! The delete checker: deleted values stay deleted; nothing else vanishes.
//!
//! Clients write unique values to a few keys *without* a context (each
//! write is a new sibling, concurrent with everything, so a write never
//! supersedes another), and delete by reading a key and deleting with that
//! read's context, which removes exactly the values the read saw. So the
//! only way a value may leave a key is a delete whose read saw it. After
//! the last heal (and whatever reaping and anti-entropy do), one final read
//! per key is judged:
//!
//! - **resurrected**: a value in the final read that an *acknowledged*
//!   delete saw. Invalid: a deleted value came back.
//! - **lost**: an acknowledged write missing from the final read although
//!   no delete (acknowledged or indeterminate) saw it. Invalid.
//! - **unexpected**: a value nobody wrote to that key, or whose write
//!   failed. Invalid.
//!
//! A concurrent write that survives a delete as a sibling is fine: the
//! delete's read did not see it. A key with operations but no successful
//! final read makes the verdict unknown.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{Validity, truncated};
use crate::history::{F, Op, OpType, pairs};

/// What the delete checker found.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    /// The verdict.
    pub valid: Validity,
    /// Writes acknowledged.
    pub writes_acknowledged: usize,
    /// Deletes acknowledged.
    pub deletes_acknowledged: usize,
    /// Keys judged.
    pub keys: usize,
    /// Keys whose final read is empty (deleted, or never written).
    pub keys_empty: usize,
    /// Keys with operations but no successful final read.
    pub keys_unread: Vec<String>,
    /// Deleted values that came back.
    pub resurrected_count: usize,
    /// The first of them, as (key, value).
    pub resurrected: Vec<(String, u64)>,
    /// Acknowledged values gone without a delete that saw them.
    pub lost_count: usize,
    /// The first of them.
    pub lost: Vec<(String, u64)>,
    /// Values never written to that key, or whose write failed.
    pub unexpected_count: usize,
    /// The first of them.
    pub unexpected: Vec<(String, u64)>,
    /// One sentence for people.
    pub summary: String,
}

/// Judges a delete history.
pub fn check(ops: &[Op]) -> anyhow::Result<DeleteReport> {
    let pairs = pairs(ops)?;
    // value -> (key, outcome of its write)
    let mut writes: HashMap<u64, (String, OpType)> = HashMap::new();
    // Values a delete saw, per key: by acknowledged deletes, and by deletes
    // that may have happened (acknowledged or indeterminate).
    let mut deleted_ok: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut deleted_maybe: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut final_reads: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let (mut writes_acknowledged, mut deletes_acknowledged) = (0, 0);
    for pair in &pairs {
        let key = pair.invoke.key.clone().unwrap_or_default();
        let outcome = pair.outcome();
        match pair.invoke.f {
            F::Write => {
                let Some(value) = pair.invoke.value else {
                    anyhow::bail!("op {}: a write without a value", pair.invoke.index);
                };
                if outcome == OpType::Ok {
                    writes_acknowledged += 1;
                }
                anyhow::ensure!(
                    writes.insert(value, (key.clone(), outcome)).is_none(),
                    "op {}: value {value} written twice (values must be unique)",
                    pair.invoke.index
                );
                keys.insert(key);
            }
            F::Delete => {
                // What the delete's read saw travels in its completion; an
                // indeterminate delete whose read never returned saw nothing
                // it could have deleted.
                let seen: Vec<u64> = pair
                    .completion
                    .and_then(|c| c.values.clone())
                    .unwrap_or_default();
                if outcome == OpType::Ok {
                    deletes_acknowledged += 1;
                    deleted_ok.entry(key.clone()).or_default().extend(&seen);
                }
                if outcome != OpType::Fail {
                    deleted_maybe.entry(key.clone()).or_default().extend(&seen);
                }
                keys.insert(key);
            }
            F::FinalRead => {
                if let Some(done) = pair.completion.filter(|c| c.kind == OpType::Ok) {
                    final_reads.insert(
                        key,
                        done.values
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    let keys_unread: Vec<String> = keys
        .iter()
        .filter(|k| !final_reads.contains_key(*k))
        .cloned()
        .collect();

    let mut resurrected = Vec::new();
    let mut unexpected = Vec::new();
    for (key, read) in &final_reads {
        for &v in read {
            if deleted_ok.get(key).is_some_and(|d| d.contains(&v)) {
                resurrected.push((key.clone(), v));
            }
            match writes.get(&v) {
                Some((k, outcome)) if k == key && *outcome != OpType::Fail => {}
                _ => unexpected.push((key.clone(), v)),
            }
        }
    }
    let mut lost = Vec::new();
    let mut acknowledged: Vec<(&u64, &(String, OpType))> = writes
        .iter()
        .filter(|(_, (_, outcome))| *outcome == OpType::Ok)
        .collect();
    acknowledged.sort_by_key(|(v, _)| **v);
    for (&v, (key, _)) in acknowledged {
        let Some(read) = final_reads.get(key) else {
            continue;
        };
        let deleted = deleted_maybe.get(key).is_some_and(|d| d.contains(&v));
        if !read.contains(&v) && !deleted {
            lost.push((key.clone(), v));
        }
    }

    let valid = if !resurrected.is_empty() || !lost.is_empty() || !unexpected.is_empty() {
        Validity::Invalid
    } else if !keys_unread.is_empty() || deletes_acknowledged == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let keys_empty = final_reads.values().filter(|r| r.is_empty()).count();
    let summary = match valid {
        Validity::Valid => format!(
            "{deletes_acknowledged} acknowledged deletes stayed deleted; none of {writes_acknowledged} acknowledged writes vanished"
        ),
        Validity::Invalid => format!(
            "{} resurrected, {} lost, {} unexpected value(s)",
            resurrected.len(),
            lost.len(),
            unexpected.len()
        ),
        Validity::Unknown if deletes_acknowledged == 0 => {
            "no delete was acknowledged: the run proved nothing".to_owned()
        }
        Validity::Unknown => format!(
            "{} key(s) could not be read after the heal",
            keys_unread.len()
        ),
    };
    Ok(DeleteReport {
        valid,
        writes_acknowledged,
        deletes_acknowledged,
        keys: keys.len(),
        keys_empty,
        keys_unread,
        resurrected_count: resurrected.len(),
        resurrected: truncated(&resurrected),
        lost_count: lost.len(),
        lost: truncated(&lost),
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

    fn delete(h: &mut H, process: u64, key: &str, seen: &[u64], kind: OpType) {
        let invoke = h.invoke(process, F::Delete, key, None);
        h.complete(&invoke, kind, Some(seen.to_vec()));
    }

    #[test]
    fn deleted_values_gone_and_concurrent_writes_kept_is_valid() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.op(0, F::Write, "k", 2, OpType::Ok);
        delete(&mut h, 1, "k", &[1, 2], OpType::Ok);
        h.op(0, F::Write, "k", 3, OpType::Ok); // after, or concurrent: survives
        h.op(0, F::Write, "j", 4, OpType::Ok);
        delete(&mut h, 1, "j", &[4], OpType::Info); // may or may not have happened
        h.read(99, F::FinalRead, "k", &[3]);
        h.read(99, F::FinalRead, "j", &[]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Valid, "{r:?}");
        assert_eq!(r.keys_empty, 1);
    }

    #[test]
    fn a_deleted_value_that_comes_back_is_invalid() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        delete(&mut h, 1, "k", &[1], OpType::Ok);
        h.read(99, F::FinalRead, "k", &[1]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.resurrected, vec![("k".to_owned(), 1)]);
    }

    #[test]
    fn an_acknowledged_write_no_delete_saw_must_survive() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        delete(&mut h, 1, "k", &[1], OpType::Ok);
        h.op(0, F::Write, "k", 2, OpType::Ok);
        h.read(99, F::FinalRead, "k", &[]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.lost, vec![("k".to_owned(), 2)]);
    }

    #[test]
    fn a_failed_write_that_appears_is_unexpected() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.op(0, F::Write, "k", 2, OpType::Fail);
        delete(&mut h, 1, "k", &[1], OpType::Ok);
        h.read(99, F::FinalRead, "k", &[2]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Invalid);
    }

    #[test]
    fn no_acknowledged_delete_or_an_unread_key_is_unknown() {
        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        h.read(99, F::FinalRead, "k", &[1]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Unknown);

        let mut h = H::new();
        h.op(0, F::Write, "k", 1, OpType::Ok);
        delete(&mut h, 1, "k", &[1], OpType::Ok);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Unknown);
    }
}
