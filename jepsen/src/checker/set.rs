//! The set checker: every acknowledged add must be in the final read.
//!
//! Clients add unique elements to a few keys by read-modify-write; after
//! the last heal, one successful final read per key is judged:
//!
//! - **lost**: an `ok` add missing from its key's final read. Invalid.
//! - **unexpected**: an element in a final read that no client tried to add
//!   to that key. Invalid (corruption, or an element on the wrong key).
//! - **failed but present**: an element whose add *failed* (certainly not
//!   applied, such as a refused connection or a 4xx) yet is there. Invalid:
//!   the client was told something false.
//! - **recovered**: an indeterminate (`info`) add that landed. Fine, and
//!   reported, since it shows how much "info" really happened.
//!
//! A key with adds but no successful final read makes the verdict unknown,
//! as does a history with no acknowledged add at all (a test that proved
//! nothing).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Validity, truncated};
use crate::history::Op;
use crate::history::{F, OpType, pairs};

/// What the set checker found.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    /// The verdict.
    pub valid: Validity,
    /// Adds invoked.
    pub attempts: usize,
    /// Adds acknowledged.
    pub acknowledged: usize,
    /// Adds that ended `info` (or never ended).
    pub indeterminate: usize,
    /// Adds that failed.
    pub failed: usize,
    /// Keys judged.
    pub keys: usize,
    /// Keys with adds but no successful final read.
    pub keys_unread: Vec<String>,
    /// Acknowledged adds missing from the final read, as (key, element).
    pub lost_count: usize,
    /// The first of them.
    pub lost: Vec<(String, u64)>,
    /// Indeterminate adds that are present.
    pub recovered_count: usize,
    /// Elements read that were never attempted on that key.
    pub unexpected_count: usize,
    /// The first of them.
    pub unexpected: Vec<(String, u64)>,
    /// Failed adds that are present anyway.
    pub failed_present_count: usize,
    /// The first of them.
    pub failed_present: Vec<(String, u64)>,
    /// One sentence for people.
    pub summary: String,
}

/// Judges a set history.
pub fn check(ops: &[Op]) -> anyhow::Result<SetReport> {
    let pairs = pairs(ops)?;
    // element -> (key, outcome of its add)
    let mut adds: BTreeMap<u64, (String, OpType)> = BTreeMap::new();
    let mut final_reads: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let (mut acknowledged, mut indeterminate, mut failed) = (0, 0, 0);
    for pair in &pairs {
        let invoke = pair.invoke;
        match invoke.f {
            F::Add => {
                let (Some(key), Some(element)) = (&invoke.key, invoke.value) else {
                    anyhow::bail!("op {}: an add without key or element", invoke.index);
                };
                let outcome = pair.outcome();
                match outcome {
                    OpType::Ok => acknowledged += 1,
                    OpType::Fail => failed += 1,
                    _ => indeterminate += 1,
                }
                let previous = adds.insert(element, (key.clone(), outcome));
                anyhow::ensure!(
                    previous.is_none(),
                    "op {}: element {element} added twice (elements must be unique)",
                    invoke.index
                );
            }
            F::FinalRead => {
                if let Some(done) = pair.completion.filter(|c| c.kind == OpType::Ok) {
                    let key = invoke.key.clone().unwrap_or_default();
                    let values = done.values.clone().unwrap_or_default();
                    // The last successful final read of a key is the one
                    // judged; they all happen after the heal and the wait.
                    final_reads.insert(key, values.into_iter().collect());
                }
            }
            _ => {}
        }
    }

    let mut keys: BTreeSet<String> = adds.values().map(|(k, _)| k.clone()).collect();
    keys.extend(final_reads.keys().cloned());
    let keys_unread: Vec<String> = keys
        .iter()
        .filter(|k| !final_reads.contains_key(*k))
        .cloned()
        .collect();

    let mut lost = Vec::new();
    let mut failed_present = Vec::new();
    let mut recovered_count = 0;
    for (&element, (key, outcome)) in &adds {
        let Some(read) = final_reads.get(key) else {
            continue;
        };
        let present = read.contains(&element);
        match (outcome, present) {
            (OpType::Ok, false) => lost.push((key.clone(), element)),
            (OpType::Fail, true) => failed_present.push((key.clone(), element)),
            (OpType::Info | OpType::Invoke, true) => recovered_count += 1,
            _ => {}
        }
    }
    let mut unexpected = Vec::new();
    for (key, read) in &final_reads {
        for &element in read {
            if adds.get(&element).is_none_or(|(k, _)| k != key) {
                unexpected.push((key.clone(), element));
            }
        }
    }

    let valid = if !lost.is_empty() || !unexpected.is_empty() || !failed_present.is_empty() {
        Validity::Invalid
    } else if !keys_unread.is_empty() || acknowledged == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let summary = match valid {
        Validity::Valid => format!(
            "all {acknowledged} acknowledged adds are present; {recovered_count} of {indeterminate} indeterminate adds landed"
        ),
        Validity::Invalid => format!(
            "{} acknowledged add(s) lost, {} unexpected element(s), {} failed add(s) present",
            lost.len(),
            unexpected.len(),
            failed_present.len()
        ),
        Validity::Unknown if acknowledged == 0 => {
            "no add was acknowledged: the run proved nothing".to_owned()
        }
        Validity::Unknown => format!(
            "{} key(s) could not be read after the heal",
            keys_unread.len()
        ),
    };
    Ok(SetReport {
        valid,
        attempts: adds.len(),
        acknowledged,
        indeterminate,
        failed,
        keys: keys.len(),
        keys_unread,
        lost_count: lost.len(),
        lost: truncated(&lost),
        recovered_count,
        unexpected_count: unexpected.len(),
        unexpected: truncated(&unexpected),
        failed_present_count: failed_present.len(),
        failed_present: truncated(&failed_present),
        summary,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checker::test_history::H;

    #[test]
    fn every_acknowledged_add_present_is_valid() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.op(1, F::Add, "a", 2, OpType::Ok);
        h.op(2, F::Add, "b", 3, OpType::Info); // landed
        h.op(3, F::Add, "b", 4, OpType::Info); // did not
        h.op(4, F::Add, "b", 5, OpType::Fail);
        h.read(99, F::FinalRead, "a", &[1, 2]);
        h.read(99, F::FinalRead, "b", &[3]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Valid, "{r:?}");
        assert_eq!((r.acknowledged, r.indeterminate, r.failed), (2, 2, 1));
        assert_eq!(r.recovered_count, 1);
    }

    #[test]
    fn a_lost_acknowledged_add_is_invalid() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.op(1, F::Add, "a", 2, OpType::Ok);
        h.read(99, F::FinalRead, "a", &[2]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.lost, vec![("a".to_owned(), 1)]);
    }

    #[test]
    fn unexpected_and_failed_elements_are_invalid() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.op(1, F::Add, "b", 2, OpType::Ok);
        h.read(99, F::FinalRead, "a", &[1, 2, 77]); // 2 belongs to b, 77 to nobody
        h.read(99, F::FinalRead, "b", &[2]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(
            r.unexpected,
            vec![("a".to_owned(), 2), ("a".to_owned(), 77)]
        );

        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.op(1, F::Add, "a", 2, OpType::Fail);
        h.read(99, F::FinalRead, "a", &[1, 2]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.failed_present, vec![("a".to_owned(), 2)]);
    }

    #[test]
    fn an_unread_key_or_nothing_acknowledged_is_unknown() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.op(0, F::Add, "b", 2, OpType::Ok);
        h.read(99, F::FinalRead, "a", &[1]);
        let failed_read = h.invoke(99, F::FinalRead, "b", None);
        h.complete(&failed_read, OpType::Fail, None);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Unknown);
        assert_eq!(r.keys_unread, vec!["b".to_owned()]);

        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Info);
        h.read(99, F::FinalRead, "a", &[]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Unknown);
    }

    #[test]
    fn a_lost_add_is_invalid_even_when_another_key_is_unread() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.op(0, F::Add, "b", 2, OpType::Ok);
        h.read(99, F::FinalRead, "a", &[]);
        assert_eq!(check(&h.ops).unwrap().valid, Validity::Invalid);
    }

    #[test]
    fn an_add_that_never_completed_counts_as_indeterminate() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.invoke(1, F::Add, "a", Some(2));
        h.read(99, F::FinalRead, "a", &[1, 2]);
        let r = check(&h.ops).unwrap();
        assert_eq!(r.valid, Validity::Valid);
        assert_eq!((r.indeterminate, r.recovered_count), (1, 1));
    }
}
