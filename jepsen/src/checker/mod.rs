//! Checkers: pure functions from a history (and, for convergence, from the
//! replicas' own copies polled after the last heal) to a verdict.
//!
//! A verdict is `valid`, `invalid` or `unknown`. Unknown is not a polite
//! word for valid: it means the test could not decide (a key that could not
//! be read back, replicas that had not converged when the wait ended,
//! nothing acknowledged at all), and the harness exits with 2 for it.
//!
//! Boundary: checkers know the history's shape and the workloads' value
//! encodings; they know nothing of HTTP, namespaces or processes, so they
//! are tested on hand-made histories.

pub mod convergence;
pub mod delete;
pub mod register;
pub mod set;

use serde::{Serialize, Serializer};

/// A checker's verdict. Ordered so that the worst one is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Validity {
    /// Everything the checker looked for held.
    Valid,
    /// The checker could not decide.
    Unknown,
    /// The history shows a violation.
    Invalid,
}

impl Validity {
    /// The worst of several verdicts (`valid` for none).
    pub fn worst(all: impl IntoIterator<Item = Validity>) -> Validity {
        all.into_iter().max().unwrap_or(Validity::Valid)
    }

    /// The harness's exit code for this verdict.
    pub fn exit_code(self) -> i32 {
        match self {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 2,
        }
    }

    /// `true`, `false` or `"unknown"`, as `results.json` writes it.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Validity::Valid => true.into(),
            Validity::Invalid => false.into(),
            Validity::Unknown => "unknown".into(),
        }
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl std::fmt::Display for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Validity::Valid => "valid",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "unknown",
        })
    }
}

/// At most this many items of a list go into `results.json` (the counts
/// are always complete; the history has everything).
pub const LIST_ITEMS_MAX: usize = 200;

/// The first [`LIST_ITEMS_MAX`] items.
pub fn truncated<T: Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(LIST_ITEMS_MAX).cloned().collect()
}

#[cfg(test)]
pub(crate) mod test_history {
    //! Builders for hand-made histories.
    use crate::history::{F, Op, OpType, Process};

    /// A history under construction; each call advances time by 1 ms.
    #[derive(Debug, Default)]
    pub struct H {
        pub ops: Vec<Op>,
        now_ns: u64,
    }

    impl H {
        pub fn new() -> H {
            H::default()
        }

        pub fn push(&mut self, mut op: Op) -> Op {
            self.now_ns += 1_000_000;
            op.index = self.ops.len() as u64;
            op.time_ns = self.now_ns;
            self.ops.push(op.clone());
            op
        }

        pub fn invoke(&mut self, process: u64, f: F, key: &str, value: Option<u64>) -> Op {
            let mut op = Op::invoke(Process::Client(process), f).key(key);
            op.value = value;
            self.push(op)
        }

        pub fn complete(&mut self, invoke: &Op, kind: OpType, values: Option<Vec<u64>>) -> Op {
            let mut op = invoke.complete(kind);
            if let Some(values) = values {
                op = op.values(values);
            }
            self.push(op)
        }

        /// An add (or write) that completes at once.
        pub fn op(&mut self, process: u64, f: F, key: &str, value: u64, kind: OpType) -> Op {
            let invoke = self.invoke(process, f, key, Some(value));
            self.complete(&invoke, kind, None)
        }

        /// A read that returns `values` at once.
        pub fn read(&mut self, process: u64, f: F, key: &str, values: &[u64]) -> Op {
            let invoke = self.invoke(process, f, key, None);
            self.complete(&invoke, OpType::Ok, Some(values.to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_verdict_wins_and_maps_to_the_exit_code() {
        use Validity::*;
        assert_eq!(Validity::worst([Valid, Valid]), Valid);
        assert_eq!(Validity::worst([Valid, Unknown]), Unknown);
        assert_eq!(Validity::worst([Unknown, Invalid, Valid]), Invalid);
        assert_eq!(Validity::worst([]), Valid);
        assert_eq!(
            [Valid, Invalid, Unknown].map(Validity::exit_code),
            [0, 1, 2]
        );
        assert_eq!(
            serde_json::to_string(&[Valid, Invalid, Unknown]).ok(),
            Some(r#"[true,false,"unknown"]"#.to_owned())
        );
    }
}
