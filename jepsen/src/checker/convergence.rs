//! The convergence checker: after the last heal, how long until every
//! replica of every key holds the same data?
//!
//! The harness stops the clients, heals every fault, and then polls each
//! primary replica's *own* copy of each key the workload touched
//! (`GET /admin/local`, which asks no other replica and so repairs
//! nothing). The first polling round in which, for every key, all primaries
//! hold identical copies (same siblings by vtag, deletion flag and value,
//! same number of actors in the version vector) is the convergence time.
//! Hints delivered by hand-off, Merkle anti-entropy, or anything else the
//! node does on its own count; client reads do not happen meanwhile.
//!
//! If the wait ends first the verdict is **unknown**, not valid: replicas
//! still differ, and the report names the keys and what each replica
//! holds. (Without anti-entropy, a replica that missed a write while it
//! was unreachable but not yet declared dead catches up only through read
//! repair, so this is what a build without it should show.)
//!
//! When the workload's values are element sets, the agreed copy must also
//! hold every acknowledged element: replicas that agree on a state missing
//! an acknowledged write are **invalid**.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{LIST_ITEMS_MAX, Validity, truncated};

/// One sibling of a replica's own copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalSibling {
    /// The sibling's vtag (derived from its dot).
    pub vtag: String,
    /// A tombstone.
    pub deleted: bool,
    /// The value, as text.
    pub value: String,
}

/// A replica's own copy of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalCopy {
    /// The replica holds nothing for the key.
    Missing,
    /// The replica's object: siblings sorted by vtag, and the number of
    /// actors in its version vector.
    Held {
        /// Siblings, sorted.
        siblings: Vec<LocalSibling>,
        /// Actors in the version vector.
        actors: u64,
    },
}

impl LocalCopy {
    /// A copy with its siblings put in canonical order.
    pub fn held(mut siblings: Vec<LocalSibling>, actors: u64) -> LocalCopy {
        siblings.sort();
        LocalCopy::Held { siblings, actors }
    }

    /// The elements of every live sibling, for element-set workloads.
    pub fn elements(&self) -> BTreeSet<u64> {
        match self {
            LocalCopy::Missing => BTreeSet::new(),
            LocalCopy::Held { siblings, .. } => siblings
                .iter()
                .filter(|s| !s.deleted)
                .flat_map(|s| s.value.split_ascii_whitespace())
                .filter_map(|t| t.parse().ok())
                .collect(),
        }
    }
}

/// What one replica said about one key in one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCopy {
    /// The node (`n1`...).
    pub node: String,
    /// Its copy, or why it could not be read.
    pub copy: Result<LocalCopy, String>,
}

/// One polling round: every key's primaries, as they answered.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Milliseconds since the heal.
    pub elapsed_ms: u64,
    /// Key to its replicas' copies; a key whose replica set could not be
    /// determined has an `Err`.
    pub keys: BTreeMap<String, Result<Vec<ReplicaCopy>, String>>,
}

/// A key whose replicas differ, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Differing {
    /// The key.
    pub key: String,
    /// What each replica holds (sibling vtags and sizes, not whole values).
    pub replicas: Vec<serde_json::Value>,
}

/// Whether a key's replicas agree: every one of them answered, with the
/// same copy. A key with no replica list (or an empty one) does not.
pub fn agrees(replicas: &Result<Vec<ReplicaCopy>, String>) -> bool {
    let Ok(list) = replicas else { return false };
    let Some(first) = list.first() else {
        return false;
    };
    let Ok(first) = &first.copy else { return false };
    list.iter()
        .all(|r| r.copy.as_ref().is_ok_and(|c| c == first))
}

/// Follows the rounds of one convergence wait.
#[derive(Debug, Default)]
pub struct Convergence {
    rounds: usize,
    converged_after_ms: Option<u64>,
    last: Round,
}

impl Convergence {
    /// A wait that has seen nothing yet.
    pub fn new() -> Convergence {
        Convergence::default()
    }

    /// Takes one round; returns whether every key agrees in it (the wait
    /// can stop). Rounds after the first agreeing one are ignored.
    pub fn observe(&mut self, round: Round) -> bool {
        if self.converged_after_ms.is_some() {
            return true;
        }
        self.rounds += 1;
        let all = round.keys.values().all(agrees);
        if all {
            self.converged_after_ms = Some(round.elapsed_ms);
        }
        self.last = round;
        all
    }

    /// The verdict. `acked` holds, per key, the acknowledged elements the
    /// agreed copies must contain (empty for workloads without element
    /// sets); `waited_ms` is how long the wait lasted.
    pub fn finish(
        self,
        acked: &BTreeMap<String, BTreeSet<u64>>,
        waited_ms: u64,
    ) -> ConvergenceReport {
        let keys = self.last.keys.len();
        let mut differing = Vec::new();
        let mut missing = Vec::new();
        for (key, replicas) in &self.last.keys {
            if !agrees(replicas) {
                if differing.len() < LIST_ITEMS_MAX {
                    differing.push(describe(key, replicas));
                }
                continue;
            }
            let Ok(list) = replicas else { continue };
            let Some(Ok(copy)) = list.first().map(|r| &r.copy) else {
                continue;
            };
            if let Some(want) = acked.get(key) {
                let have = copy.elements();
                missing.extend(want.difference(&have).map(|e| (key.clone(), *e)));
            }
        }
        let differing_count = self.last.keys.values().filter(|r| !agrees(r)).count();
        let valid = if !missing.is_empty() {
            Validity::Invalid
        } else if self.converged_after_ms.is_none() || keys == 0 {
            Validity::Unknown
        } else {
            Validity::Valid
        };
        let summary = match (valid, self.converged_after_ms) {
            (Validity::Invalid, _) => format!(
                "replicas agree on states missing {} acknowledged element(s)",
                missing.len()
            ),
            (_, Some(ms)) if keys > 0 => {
                format!("all replicas of {keys} key(s) agreed {ms} ms after the heal")
            }
            (_, _) if keys == 0 => "no keys to compare".to_owned(),
            _ => format!(
                "replicas of {differing_count} of {keys} key(s) still differed after {waited_ms} ms; \
                 convergence is unknown (without anti-entropy a replica that missed a write \
                 catches up only through read repair)"
            ),
        };
        ConvergenceReport {
            valid,
            keys,
            rounds: self.rounds,
            converged_after_ms: self.converged_after_ms,
            waited_ms,
            differing_count,
            differing,
            missing_count: missing.len(),
            missing: truncated(&missing),
            summary,
        }
    }
}

fn describe(key: &str, replicas: &Result<Vec<ReplicaCopy>, String>) -> Differing {
    let replicas = match replicas {
        Err(e) => vec![serde_json::json!({ "error": e })],
        Ok(list) => list
            .iter()
            .map(|r| match &r.copy {
                Err(e) => serde_json::json!({ "node": r.node, "error": e }),
                Ok(LocalCopy::Missing) => serde_json::json!({ "node": r.node, "missing": true }),
                Ok(copy @ LocalCopy::Held { siblings, actors }) => serde_json::json!({
                    "node": r.node,
                    "actors": actors,
                    "siblings": siblings.iter().map(|s| serde_json::json!({
                        "vtag": s.vtag,
                        "deleted": s.deleted,
                        "value_bytes": s.value.len(),
                    })).collect::<Vec<_>>(),
                    "elements": copy.elements().len(),
                }),
            })
            .collect(),
    };
    Differing {
        key: key.to_owned(),
        replicas,
    }
}

/// What the convergence checker found.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergenceReport {
    /// The verdict.
    pub valid: Validity,
    /// Keys compared.
    pub keys: usize,
    /// Polling rounds.
    pub rounds: usize,
    /// Milliseconds from the heal to the first round where all agreed.
    pub converged_after_ms: Option<u64>,
    /// How long the wait lasted.
    pub waited_ms: u64,
    /// Keys whose replicas differed in the last round.
    pub differing_count: usize,
    /// The first of them, with what each replica held.
    pub differing: Vec<Differing>,
    /// Acknowledged elements missing from agreed copies.
    pub missing_count: usize,
    /// The first of them, as (key, element).
    pub missing: Vec<(String, u64)>,
    /// One sentence for people.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn copy(values: &[&str]) -> Result<LocalCopy, String> {
        Ok(LocalCopy::held(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| LocalSibling {
                    vtag: format!("t{i}"),
                    deleted: false,
                    value: (*v).to_owned(),
                })
                .collect(),
            1,
        ))
    }

    fn round(ms: u64, keys: &[(&str, Vec<Result<LocalCopy, String>>)]) -> Round {
        Round {
            elapsed_ms: ms,
            keys: keys
                .iter()
                .map(|(k, copies)| {
                    let replicas = copies
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ReplicaCopy {
                            node: format!("n{}", i + 1),
                            copy: c.clone(),
                        })
                        .collect();
                    ((*k).to_owned(), Ok(replicas))
                })
                .collect(),
        }
    }

    #[test]
    fn the_first_round_where_every_key_agrees_is_the_convergence_time() {
        let mut c = Convergence::new();
        assert!(!c.observe(round(
            0,
            &[("a", vec![copy(&["1 2"]), copy(&["1"]), copy(&["1 2"])])]
        )));
        assert!(!c.observe(round(
            500,
            &[(
                "a",
                vec![copy(&["1 2"]), Err("timeout".into()), copy(&["1 2"])]
            )]
        )));
        assert!(c.observe(round(1000, &[("a", vec![copy(&["1 2"]); 3])])));
        let acked = BTreeMap::from([("a".to_owned(), BTreeSet::from([1, 2]))]);
        let r = c.finish(&acked, 1000);
        assert_eq!(r.valid, Validity::Valid, "{r:?}");
        assert_eq!(r.converged_after_ms, Some(1000));
        assert_eq!(r.rounds, 3);
    }

    #[test]
    fn replicas_that_never_agree_are_unknown_not_valid() {
        let mut c = Convergence::new();
        c.observe(round(
            0,
            &[(
                "a",
                vec![copy(&["1"]), Ok(LocalCopy::Missing), copy(&["1"])],
            )],
        ));
        let r = c.finish(&BTreeMap::new(), 30_000);
        assert_eq!(r.valid, Validity::Unknown);
        assert_eq!(r.differing_count, 1);
        assert_eq!(r.differing[0].key, "a");
    }

    #[test]
    fn agreeing_on_a_state_without_an_acknowledged_element_is_invalid() {
        let mut c = Convergence::new();
        c.observe(round(0, &[("a", vec![copy(&["1"]); 3])]));
        let acked = BTreeMap::from([("a".to_owned(), BTreeSet::from([1, 2]))]);
        let r = c.finish(&acked, 0);
        assert_eq!(r.valid, Validity::Invalid);
        assert_eq!(r.missing, vec![("a".to_owned(), 2)]);
    }

    #[test]
    fn sibling_order_does_not_matter_but_tombstones_and_actors_do() {
        let a = LocalSibling {
            vtag: "x".into(),
            deleted: false,
            value: "1".into(),
        };
        let b = LocalSibling {
            vtag: "y".into(),
            deleted: false,
            value: "2".into(),
        };
        let one = LocalCopy::held(vec![a.clone(), b.clone()], 2);
        let two = LocalCopy::held(vec![b.clone(), a.clone()], 2);
        assert_eq!(one, two);
        assert_ne!(one, LocalCopy::held(vec![a.clone(), b.clone()], 3));
        let tomb = LocalSibling {
            deleted: true,
            ..a.clone()
        };
        assert_ne!(one, LocalCopy::held(vec![tomb, b], 2));
        assert_eq!(one.elements(), BTreeSet::from([1, 2]));
    }

    #[test]
    fn a_key_without_a_replica_list_does_not_agree() {
        assert!(!agrees(&Err("no preflist".into())));
        assert!(!agrees(&Ok(Vec::new())));
    }
}
