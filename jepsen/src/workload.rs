//! Workloads: what the clients do, and how each operation is recorded.
//!
//! - `set`: add a unique element to one of a few keys by read-modify-write
//!   (read every sibling, take the union, add, write with the read's
//!   context). Keys rotate after a number of elements, so values stay
//!   small and several generations of keys are judged.
//! - `convergence`: the same adds over many keys chosen at random, so that
//!   faults leave many keys with differing replicas.
//! - `register`: read or write unique values on independent keys with
//!   strict quorums (`r`/`pr`/`w`/`pw` = quorum); writes carry the context
//!   of a read just before.
//! - `delete`: blind writes (no context: always a new sibling) and deletes
//!   with the context of a read, which delete exactly what the read saw.
//!
//! Recording rules: a read that fails in the middle of an add is a *fail*
//! (nothing was written). A write that could not be sent, or was refused
//! with a 4xx, is a *fail*; a write that timed out, was cut after sending,
//! or answered 5xx (503 quorum not met, 504, 500) is *info*. Nothing is
//! retried.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::client::{CallError, Client, Response, decode_set, encode_set};
use crate::history::{F, Op, OpType, Process, Recorder};

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Set adds, checked against the final reads.
    Set,
    /// Strict-quorum registers, checked for stale reads.
    Register,
    /// Blind writes and contextual deletes, checked for resurrections.
    Delete,
    /// Set adds over many keys, for replica convergence.
    Convergence,
}

impl Kind {
    /// Parses a workload name.
    pub fn parse(name: &str) -> anyhow::Result<Kind> {
        Ok(match name {
            "set" => Kind::Set,
            "register" => Kind::Register,
            "delete" => Kind::Delete,
            "convergence" => Kind::Convergence,
            other => bail!("unknown workload {other:?}: use set, register, delete or convergence"),
        })
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Set => "set",
            Kind::Register => "register",
            Kind::Delete => "delete",
            Kind::Convergence => "convergence",
        }
    }

    /// Keys written at a time when `--keys` is not given.
    pub fn default_keys(self) -> usize {
        match self {
            Kind::Set => 3,
            Kind::Register => 8,
            Kind::Delete => 8,
            Kind::Convergence => 48,
        }
    }

    /// Whether values are element sets (their acknowledged elements must
    /// be on every replica once they converge).
    pub fn has_elements(self) -> bool {
        matches!(self, Kind::Set | Kind::Convergence)
    }
}

/// Set workload: elements per key before clients move to the next key,
/// unless the run says otherwise.
pub const SET_ELEMENTS_PER_KEY: u64 = 400;

/// A workload's shared state.
#[derive(Debug)]
pub struct Workload {
    /// Which.
    pub kind: Kind,
    /// The bucket.
    pub bucket: String,
    keys: usize,
    elements_per_key: u64,
    next_value: AtomicU64,
    touched: Mutex<BTreeSet<String>>,
}

fn read_query(kind: Kind) -> &'static str {
    match kind {
        Kind::Register => "r=quorum&pr=quorum",
        _ => "",
    }
}

fn write_query(kind: Kind) -> &'static str {
    match kind {
        Kind::Register => "w=quorum&pw=quorum",
        _ => "",
    }
}

/// The outcome of a write's response, by the recording rules.
fn write_outcome(result: &Result<Response, CallError>) -> (OpType, Option<u16>, Option<String>) {
    match result {
        Err(CallError::NotSent(e)) => (OpType::Fail, None, Some(e.clone())),
        Err(CallError::Indeterminate(e)) => (OpType::Info, None, Some(e.clone())),
        Ok(r) if (200..300).contains(&r.status) || r.status == 300 => {
            (OpType::Ok, Some(r.status), None)
        }
        Ok(r) if r.status >= 500 => (OpType::Info, Some(r.status), Some(r.text())),
        Ok(r) => (OpType::Fail, Some(r.status), Some(r.text())),
    }
}

/// What a read saw: its context and the union of its siblings' elements.
struct Seen {
    context: Option<String>,
    elements: BTreeSet<u64>,
}

/// Reads a key as a set of elements; `Err` is the completion to record.
fn read_elements(
    client: &Client,
    bucket: &str,
    key: &str,
    query: &str,
) -> Result<Seen, (OpType, Option<u16>, String)> {
    let response = match client.get(bucket, key, query) {
        Ok(r) => r,
        Err(CallError::NotSent(e)) => return Err((OpType::Fail, None, format!("read: {e}"))),
        Err(CallError::Indeterminate(e)) => {
            return Err((OpType::Info, None, format!("read: {e}")));
        }
    };
    let values = response
        .sibling_values()
        .map_err(|e| (OpType::Fail, Some(response.status), format!("read: {e:#}")))?;
    let mut elements = BTreeSet::new();
    for value in values {
        let set = decode_set(&value).map_err(|e| {
            (
                OpType::Fail,
                Some(response.status),
                format!("read: unparseable sibling: {e:#}"),
            )
        })?;
        elements.extend(set);
    }
    Ok(Seen {
        context: response.context,
        elements,
    })
}

impl Workload {
    /// A workload over `keys` keys (0: the workload's default); the set
    /// workload moves on to new keys after `elements_per_key` elements
    /// each (0: [`SET_ELEMENTS_PER_KEY`]).
    pub fn new(kind: Kind, keys: usize, elements_per_key: u64) -> Workload {
        Workload {
            kind,
            bucket: format!("jepsen-{}", kind.name()),
            keys: if keys == 0 { kind.default_keys() } else { keys },
            elements_per_key: if elements_per_key == 0 {
                SET_ELEMENTS_PER_KEY
            } else {
                elements_per_key
            },
            next_value: AtomicU64::new(0),
            touched: Mutex::new(BTreeSet::new()),
        }
    }

    /// Keys written at a time.
    pub fn key_count(&self) -> usize {
        self.keys
    }

    /// Every key an operation was invoked on.
    pub fn touched(&self) -> Vec<String> {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn touch(&self, key: &str) {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned());
    }

    fn value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// The key of set element `e`: `keys` keys at a time (the slot chosen
    /// at random, so clients contend on keys as independent users do), a
    /// new generation of keys every `keys * elements_per_key` elements.
    fn set_key(&self, e: u64, slot: usize) -> String {
        let k = self.keys as u64;
        let generation = e / (k * self.elements_per_key);
        format!("s{}", generation * k + slot as u64 % k)
    }

    /// Runs one operation of `process` against `client`, recording its
    /// invocation and completion. Returns how it ended.
    pub fn step(&self, client: &Client, process: u64, rng: &mut StdRng, rec: &Recorder) -> OpType {
        match self.kind {
            Kind::Set => {
                let e = self.value();
                let key = self.set_key(e, rng.random_range(0..self.keys));
                self.add(client, process, &key, e, rec)
            }
            Kind::Convergence => {
                let e = self.value();
                let key = format!("c{}", rng.random_range(0..self.keys));
                self.add(client, process, &key, e, rec)
            }
            Kind::Register => {
                let key = format!("r{}", rng.random_range(0..self.keys));
                if rng.random_bool(0.5) {
                    self.read(client, process, &key, F::Read, rec)
                } else {
                    let v = self.value();
                    self.register_write(client, process, &key, v, rec)
                }
            }
            Kind::Delete => {
                let key = format!("d{}", rng.random_range(0..self.keys));
                if rng.random_bool(0.6) {
                    let v = self.value();
                    self.blind_write(client, process, &key, v, rec)
                } else {
                    self.delete(client, process, &key, rec)
                }
            }
        }
    }

    fn add(&self, client: &Client, process: u64, key: &str, e: u64, rec: &Recorder) -> OpType {
        self.touch(key);
        let invoke = rec.record(
            Op::invoke(Process::Client(process), F::Add)
                .key(key)
                .value(e)
                .node(&client.node),
        );
        let seen = match read_elements(client, &self.bucket, key, "") {
            Ok(seen) => seen,
            Err((_, status, error)) => {
                // Nothing was written: whatever happened to the read, the
                // add certainly did not.
                rec.record(invoke.complete(OpType::Fail).status(status).error(error));
                return OpType::Fail;
            }
        };
        let mut elements = seen.elements;
        elements.insert(e);
        let result = client.put(
            &self.bucket,
            key,
            "",
            seen.context.as_deref(),
            encode_set(&elements).as_bytes(),
        );
        let (kind, status, error) = write_outcome(&result);
        let mut done = invoke.complete(kind).status(status);
        if let Some(error) = error {
            done = done.error(error);
        }
        rec.record(done);
        kind
    }

    fn read(&self, client: &Client, process: u64, key: &str, f: F, rec: &Recorder) -> OpType {
        self.touch(key);
        let invoke = rec.record(
            Op::invoke(Process::Client(process), f)
                .key(key)
                .node(&client.node),
        );
        match read_elements(client, &self.bucket, key, read_query(self.kind)) {
            Ok(seen) => {
                rec.record(
                    invoke
                        .complete(OpType::Ok)
                        .values(seen.elements.into_iter().collect()),
                );
                OpType::Ok
            }
            Err((kind, status, error)) => {
                rec.record(invoke.complete(kind).status(status).error(error));
                kind
            }
        }
    }

    fn register_write(
        &self,
        client: &Client,
        process: u64,
        key: &str,
        v: u64,
        rec: &Recorder,
    ) -> OpType {
        self.touch(key);
        let invoke = rec.record(
            Op::invoke(Process::Client(process), F::Write)
                .key(key)
                .value(v)
                .node(&client.node),
        );
        let context = match client.get(&self.bucket, key, read_query(self.kind)) {
            Ok(r) if matches!(r.status, 200 | 300 | 404) => r.context,
            Ok(r) => {
                rec.record(
                    invoke
                        .complete(OpType::Fail)
                        .status(Some(r.status))
                        .error(format!("read: {}", r.text())),
                );
                return OpType::Fail;
            }
            Err(e) => {
                rec.record(invoke.complete(OpType::Fail).error(format!("read: {e}")));
                return OpType::Fail;
            }
        };
        let result = client.put(
            &self.bucket,
            key,
            write_query(self.kind),
            context.as_deref(),
            v.to_string().as_bytes(),
        );
        self.finish_write(invoke, &result, rec)
    }

    fn blind_write(
        &self,
        client: &Client,
        process: u64,
        key: &str,
        v: u64,
        rec: &Recorder,
    ) -> OpType {
        self.touch(key);
        let invoke = rec.record(
            Op::invoke(Process::Client(process), F::Write)
                .key(key)
                .value(v)
                .node(&client.node),
        );
        let result = client.put(&self.bucket, key, "", None, v.to_string().as_bytes());
        self.finish_write(invoke, &result, rec)
    }

    fn finish_write(
        &self,
        invoke: Op,
        result: &Result<Response, CallError>,
        rec: &Recorder,
    ) -> OpType {
        let (kind, status, error) = write_outcome(result);
        let mut done = invoke.complete(kind).status(status);
        if let Some(error) = error {
            done = done.error(error);
        }
        rec.record(done);
        kind
    }

    fn delete(&self, client: &Client, process: u64, key: &str, rec: &Recorder) -> OpType {
        self.touch(key);
        let invoke = rec.record(
            Op::invoke(Process::Client(process), F::Delete)
                .key(key)
                .node(&client.node),
        );
        let seen = match read_elements(client, &self.bucket, key, "") {
            Ok(seen) => seen,
            Err((_, status, error)) => {
                rec.record(invoke.complete(OpType::Fail).status(status).error(error));
                return OpType::Fail;
            }
        };
        let observed: Vec<u64> = seen.elements.iter().copied().collect();
        if observed.is_empty() {
            rec.record(
                invoke
                    .complete(OpType::Fail)
                    .values(Vec::new())
                    .error("nothing to delete"),
            );
            return OpType::Fail;
        }
        let result = client.delete(&self.bucket, key, "", seen.context.as_deref());
        let (kind, status, error) = write_outcome(&result);
        let mut done = invoke.complete(kind).status(status).values(observed);
        if let Some(error) = error {
            done = done.error(error);
        }
        rec.record(done);
        kind
    }

    /// One final read of `key` (with `r=all`), recorded under the `final`
    /// process. Returns whether it succeeded.
    pub fn final_read(&self, client: &Client, key: &str, rec: &Recorder) -> bool {
        let invoke = rec.record(
            Op::invoke(Process::final_reader(), F::FinalRead)
                .key(key)
                .node(&client.node),
        );
        match read_elements(client, &self.bucket, key, "r=all") {
            Ok(seen) => {
                rec.record(
                    invoke
                        .complete(OpType::Ok)
                        .values(seen.elements.into_iter().collect()),
                );
                true
            }
            Err((kind, status, error)) => {
                rec.record(invoke.complete(kind).status(status).error(error));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_elements_rotate_over_a_few_keys_at_a_time() {
        let w = Workload::new(Kind::Set, 3, 10);
        assert_eq!(w.set_key(0, 0), "s0");
        assert_eq!(w.set_key(1, 2), "s2");
        assert_eq!(w.set_key(29, 1), "s1");
        // Thirty elements later, the next three keys.
        assert_eq!(w.set_key(30, 0), "s3");
        assert_eq!(w.set_key(59, 2), "s5");
    }

    #[test]
    fn writes_are_ok_fail_or_info_by_what_the_client_knows() {
        let response = |status| {
            Ok(Response {
                status,
                context: None,
                content_type: None,
                body: Vec::new(),
            })
        };
        assert_eq!(write_outcome(&response(204)).0, OpType::Ok);
        assert_eq!(write_outcome(&response(503)).0, OpType::Info);
        assert_eq!(write_outcome(&response(504)).0, OpType::Info);
        assert_eq!(write_outcome(&response(500)).0, OpType::Info);
        assert_eq!(write_outcome(&response(400)).0, OpType::Fail);
        assert_eq!(write_outcome(&response(409)).0, OpType::Fail);
        assert_eq!(
            write_outcome(&Err(CallError::NotSent("refused".into()))).0,
            OpType::Fail
        );
        assert_eq!(
            write_outcome(&Err(CallError::Indeterminate("timeout".into()))).0,
            OpType::Info
        );
    }
}
