//! Histories: what every client and the nemesis did, as Jepsen records it.
//!
//! Every operation appears twice: an `invoke` when a process starts it and a
//! completion when it ends — `ok` (it happened), `fail` (it certainly did
//! not happen) or `info` (nobody knows: a timeout, a 503, a connection cut
//! after the request was sent). A process with an `info` operation
//! outstanding is considered crashed and never issues another operation;
//! its client continues under a new process number, as in Jepsen, so that
//! each process has at most one operation open at a time.
//!
//! The recorder appends each operation to `history.jsonl` as it happens, so
//! a history survives a crash of the harness up to its last line.
//!
//! Invariant: indices are dense and in recording order; times are
//! nanoseconds since the start of the test on a monotonic clock.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How an operation ended, or that it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation started.
    Invoke,
    /// It took effect.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Indeterminate: it may or may not have taken effect.
    Info,
}

/// Who ran an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    /// A client process (Jepsen's integer processes).
    Client(u64),
    /// `"nemesis"` or `"final"` (the reads after the last heal).
    Named(String),
}

impl Process {
    /// The nemesis.
    pub fn nemesis() -> Process {
        Process::Named("nemesis".to_owned())
    }

    /// The process that does the final reads.
    pub fn final_reader() -> Process {
        Process::Named("final".to_owned())
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// Set workload: add an element by read-modify-write.
    Add,
    /// A read (register, or a set read during the run).
    Read,
    /// Register and delete workloads: write a value.
    Write,
    /// Delete workload: delete what a read saw, with its context.
    Delete,
    /// A read after the final heal, which the checkers judge.
    FinalRead,
    /// The nemesis starts a fault.
    Start,
    /// The nemesis ends a fault.
    Stop,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: u64,
    /// Nanoseconds since the test started.
    pub time_ns: u64,
    /// Who ran it.
    pub process: Process,
    /// Invoke or how it ended.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// What it does.
    pub f: F,
    /// The key, for client operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The element added or the value written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// What a read returned (elements of every sibling, sorted), or what a
    /// delete's read saw and so deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u64>>,
    /// The node a client talked to (`n1`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The HTTP status of the decisive request, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed or is indeterminate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Nemesis operations: the fault, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

impl Op {
    /// An invocation with no payload yet; the builders below add it.
    pub fn invoke(process: Process, f: F) -> Op {
        Op {
            index: 0,
            time_ns: 0,
            process,
            kind: OpType::Invoke,
            f,
            key: None,
            value: None,
            values: None,
            node: None,
            status: None,
            error: None,
            fault: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Op {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: u64) -> Op {
        self.value = Some(value);
        self
    }

    /// Sets the values read.
    pub fn values(mut self, mut values: Vec<u64>) -> Op {
        values.sort_unstable();
        values.dedup();
        self.values = Some(values);
        self
    }

    /// Sets the node.
    pub fn node(mut self, node: impl Into<String>) -> Op {
        self.node = Some(node.into());
        self
    }

    /// Sets the fault description.
    pub fn fault(mut self, fault: impl Into<String>) -> Op {
        self.fault = Some(fault.into());
        self
    }

    /// The completion of this invocation: same process, f, key and value.
    pub fn complete(&self, kind: OpType) -> Op {
        debug_assert_eq!(self.kind, OpType::Invoke);
        Op {
            kind,
            values: None,
            status: None,
            error: None,
            ..self.clone()
        }
    }

    /// Sets the error.
    pub fn error(mut self, error: impl Into<String>) -> Op {
        self.error = Some(error.into());
        self
    }

    /// Sets the status.
    pub fn status(mut self, status: Option<u16>) -> Op {
        self.status = status;
        self
    }

    /// Whether this is a client operation (not the nemesis).
    pub fn is_client(&self) -> bool {
        !matches!(self.f, F::Start | F::Stop)
    }
}

/// The recorder: assigns indices and times and appends to the file.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    ops: Vec<Op>,
    file: Option<BufWriter<File>>,
    /// The first error writing the file, reported by `flush`.
    write_error: Option<String>,
}

impl Recorder {
    /// A recorder writing to `path` (if given), timing from `start`.
    pub fn new(start: Instant, path: Option<&Path>) -> anyhow::Result<Recorder> {
        let file = match path {
            Some(path) => Some(BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Recorder {
            start,
            inner: Mutex::new(Inner {
                ops: Vec::new(),
                file,
                write_error: None,
            }),
        })
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records `op` now; returns it with its index and time.
    pub fn record(&self, mut op: Op) -> Op {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        op.index = inner.ops.len() as u64;
        op.time_ns = self.now_ns();
        if let Some(file) = inner.file.as_mut() {
            // A history that cannot be written is not worth a panic in the
            // middle of a fault: the in-memory copy is still judged, and
            // the final flush reports the error.
            let written = serde_json::to_string(&op)
                .map_err(|e| e.to_string())
                .and_then(|line| writeln!(file, "{line}").map_err(|e| e.to_string()));
            if let Err(e) = written {
                inner.write_error.get_or_insert(e);
            }
        }
        inner.ops.push(op.clone());
        op
    }

    /// Flushes the file.
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &inner.write_error {
            anyhow::bail!("writing history.jsonl: {e}");
        }
        if let Some(file) = inner.file.as_mut() {
            file.flush().context("writing history.jsonl")?;
        }
        Ok(())
    }

    /// Everything recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ops
            .clone()
    }
}

/// Reads a `history.jsonl`.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ops = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?,
        );
    }
    Ok(ops)
}

/// An invocation and its completion (`None` if the history ended first,
/// which counts as indeterminate).
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    /// The invocation.
    pub invoke: &'a Op,
    /// Its completion.
    pub completion: Option<&'a Op>,
}

impl Pair<'_> {
    /// How it ended; an operation that never completed is `info`.
    pub fn outcome(&self) -> OpType {
        self.completion.map_or(OpType::Info, |c| c.kind)
    }

    /// When it completed, if it did.
    pub fn completed_ns(&self) -> Option<u64> {
        self.completion.map(|c| c.time_ns)
    }
}

/// Pairs every client invocation with its completion, in invocation order.
/// A completion without an invocation, or a second invocation on a process
/// with one outstanding, is a malformed history: an error, not a guess.
pub fn pairs(ops: &[Op]) -> anyhow::Result<Vec<Pair<'_>>> {
    use std::collections::HashMap;
    let mut open: HashMap<&Process, usize> = HashMap::new();
    let mut out: Vec<Pair<'_>> = Vec::new();
    for op in ops.iter().filter(|o| o.is_client()) {
        match op.kind {
            OpType::Invoke => {
                anyhow::ensure!(
                    !open.contains_key(&op.process),
                    "op {}: process {:?} invoked while its op {} is open",
                    op.index,
                    op.process,
                    open[&op.process]
                );
                open.insert(&op.process, out.len());
                out.push(Pair {
                    invoke: op,
                    completion: None,
                });
            }
            _ => {
                let at = open.remove(&op.process).with_context(|| {
                    format!(
                        "op {}: completion for process {:?} with nothing open",
                        op.index, op.process
                    )
                })?;
                anyhow::ensure!(
                    out[at].invoke.f == op.f,
                    "op {}: completes a {:?} with a {:?}",
                    op.index,
                    out[at].invoke.f,
                    op.f
                );
                out[at].completion = Some(op);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ops_round_trip_through_jsonl_lines() {
        let op = Op::invoke(Process::Client(3), F::Add).key("k").value(7);
        let line = serde_json::to_string(&op).unwrap();
        assert_eq!(
            line,
            r#"{"index":0,"time_ns":0,"process":3,"type":"invoke","f":"add","key":"k","value":7}"#
        );
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), op);
        let nemesis = Op::invoke(Process::nemesis(), F::Start).fault("kill n1");
        let line = serde_json::to_string(&nemesis).unwrap();
        assert!(line.contains(r#""process":"nemesis""#), "{line}");
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), nemesis);
    }

    #[test]
    fn pairs_match_completions_and_refuse_malformed_histories() {
        let a = Op::invoke(Process::Client(0), F::Add).value(1);
        let b = Op::invoke(Process::Client(1), F::Add).value(2);
        let ops = vec![
            a.clone(),
            b.clone(),
            b.complete(OpType::Ok),
            a.complete(OpType::Info),
        ];
        let p = pairs(&ops).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].outcome(), OpType::Info);
        assert_eq!(p[1].outcome(), OpType::Ok);

        let twice = vec![a.clone(), a.clone()];
        assert!(pairs(&twice).is_err());
        let orphan = vec![a.complete(OpType::Ok)];
        assert!(pairs(&orphan).is_err());
        // An invocation the history never completes is indeterminate.
        let open = vec![a.clone()];
        assert_eq!(pairs(&open).unwrap()[0].outcome(), OpType::Info);
    }
}
