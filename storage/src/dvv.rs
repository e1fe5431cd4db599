//! Dotted version vectors: the causal history of one key.
//!
//! An [`Object`] is a set of [`Sibling`]s, each tagged with the [`Dot`] that
//! created it, plus a [`VersionVector`] that summarises every dot the object
//! has seen. A client reads the vector as an opaque causal context and hands
//! it back on its next write; the write then removes exactly the siblings whose
//! dots the context covers and adds one new sibling. Two replicas' copies are
//! combined with [`Object::merge`], which is commutative, associative and
//! idempotent, so replicas converge whatever order repairs arrive in.
//!
//! This module does not mint dots, touch the disk or know about buckets: the
//! store hands in a fresh dot and persists the result.
//!
//! # Invariants
//!
//! - Every sibling's dot is covered by the object's version vector.
//! - No two siblings share a dot.
//! - A dot is minted only by replica `actor`, against its durable local copy
//!   of the key, with a counter never handed out before. Because every copy of
//!   an object that contains dot `(a, n)` descends from the copy `a` held when
//!   it minted it, the per-actor maximum is a sound summary: any real dot of
//!   `a` below `n` for this key was either seen or superseded by that copy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A replica that mints dots: a node plus the epoch of its data directory.
///
/// A new data directory gets a new epoch, so a node that lost its disk can
/// never hand out a dot it handed out before (Riak's kv679).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// Stable id of the node (survives restarts, not a new data directory).
    pub node: u64,
    /// Random id of the data directory's lifetime.
    pub epoch: u64,
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{:x}", self.node, self.epoch)
    }
}

/// One event in the history of a key: the `counter`-th dot minted by `actor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The replica that minted the dot.
    pub actor: ActorId,
    /// Strictly increasing per actor, never reused (persisted in blocks).
    pub counter: u64,
}

/// A summary of seen dots: for each actor, the highest counter seen.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector {
    entries: BTreeMap<ActorId, u64>,
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl VersionVector {
    /// The empty vector: has seen nothing.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// Whether `dot` is part of the history this vector summarises.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.entries
            .get(&dot.actor)
            .is_some_and(|&max| max >= dot.counter)
    }

    /// Records `dot` as seen.
    pub fn add(&mut self, dot: Dot) {
        let entry = self.entries.entry(dot.actor).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }

    /// The least upper bound of both vectors.
    pub fn join(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.entries {
            let entry = self.entries.entry(actor).or_insert(0);
            *entry = (*entry).max(counter);
        }
    }

    /// Whether this vector has seen everything `other` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|(actor, &counter)| self.entries.get(actor).is_some_and(|&max| max >= counter))
    }

    /// The highest counter seen from `actor` (0 if none).
    pub fn counter(&self, actor: &ActorId) -> u64 {
        self.entries.get(actor).copied().unwrap_or(0)
    }

    /// Number of actors in the vector.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the vector has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `(actor, max counter)` entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, &u64)> {
        self.entries.iter()
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> VersionVector {
        let mut vv = VersionVector::new();
        for (actor, counter) in iter {
            vv.add(Dot { actor, counter });
        }
        vv
    }
}

/// A link to another object, as Riak's `Link` header carries them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    /// Bucket of the target object.
    pub bucket: String,
    /// Key of the target object; `None` links to the bucket itself.
    pub key: Option<String>,
    /// The `riaktag` of the link.
    pub tag: String,
}

/// Metadata stored with each sibling's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Metadata {
    /// MIME type, e.g. `application/json`.
    pub content_type: String,
    /// `charset` parameter of the content type, if the client gave one.
    pub charset: Option<String>,
    /// `Content-Encoding` as the client sent it (the value is stored as is).
    pub content_encoding: Option<String>,
    /// `X-Riak-Meta-*` headers, names lower-cased without the prefix.
    pub user_meta: Vec<(String, String)>,
    /// `Link` header entries.
    pub links: Vec<Link>,
    /// When the coordinating replica accepted the write, in microseconds
    /// since the Unix epoch.
    pub last_modified_us: u64,
}

/// What one write stored: a value with its metadata, or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Content {
    /// The value's bytes (empty for a tombstone).
    pub value: Vec<u8>,
    /// Metadata of the value.
    pub meta: Metadata,
    /// Whether this sibling records a delete.
    pub deleted: bool,
}

impl Content {
    /// A tombstone written at `last_modified_us`.
    pub fn tombstone(last_modified_us: u64) -> Content {
        Content {
            value: Vec::new(),
            meta: Metadata {
                last_modified_us,
                ..Metadata::default()
            },
            deleted: true,
        }
    }
}

/// One concurrent version of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that created this sibling.
    pub dot: Dot,
    /// What that write stored.
    pub content: Content,
}

impl Sibling {
    /// A short tag naming this sibling, stable across replicas (Riak's vtag).
    ///
    /// Derived from the dot, which is unique, so it needs no storage.
    pub fn vtag(&self) -> String {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.dot.actor.node.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.dot.actor.epoch.to_be_bytes());
        bytes[16..].copy_from_slice(&self.dot.counter.to_be_bytes());
        let hash = xxhash_rust::xxh3::xxh3_128(&bytes);
        base62(hash)
    }
}

fn base62(mut n: u128) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(22);
    // 22 base-62 digits hold any u128; emitting a fixed width keeps vtags
    // the same length.
    for _ in 0..22 {
        out.push(ALPHABET[(n % 62) as usize]);
        n /= 62;
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// Why an update could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DvvError {
    /// The new dot is already part of the object's history: a counter was
    /// handed out twice. Applying it would silently drop the write, so the
    /// write is refused instead.
    #[error("dot {0:?} was already seen by this object; refusing to reuse it")]
    DotReuse(Dot),
}

/// Every version of one key that a replica knows of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Every dot this object has seen (the causal context handed to clients).
    pub version: VersionVector,
    /// The concurrent versions, sorted by dot.
    pub siblings: Vec<Sibling>,
}

impl Object {
    /// An object that has seen nothing.
    pub fn new() -> Object {
        Object::default()
    }

    /// Applies a write of `content` made with causal `context`, tagged `dot`.
    ///
    /// Removes exactly the siblings whose dots `context` covers and adds one
    /// new sibling; siblings the writer had not seen stay.
    pub fn update(
        &mut self,
        context: &VersionVector,
        dot: Dot,
        content: Content,
    ) -> Result<(), DvvError> {
        if self.version.covers(&dot) || context.covers(&dot) {
            return Err(DvvError::DotReuse(dot));
        }
        self.siblings.retain(|s| !context.covers(&s.dot));
        self.version.join(context);
        self.version.add(dot);
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(at, Sibling { dot, content });
        self.debug_check();
        Ok(())
    }

    /// Combines two replicas' copies of the same key.
    ///
    /// A sibling survives if both copies hold it, or if the other copy has not
    /// seen its dot. The result's version is the join of both versions. The
    /// operation is commutative, associative and idempotent.
    pub fn merge(&self, other: &Object) -> Object {
        let mut siblings: Vec<Sibling> = Vec::with_capacity(self.siblings.len());
        let (mut a, mut b) = (
            self.siblings.iter().peekable(),
            other.siblings.iter().peekable(),
        );
        // Both lists are sorted by dot: walk them together like a merge sort.
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.dot == y.dot => {
                    // The same dot always carries the same content; should two
                    // ever differ (a corrupted peer), pick one deterministically
                    // so merge stays commutative.
                    siblings.push(if x.content >= y.content {
                        (*x).clone()
                    } else {
                        (*y).clone()
                    });
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.dot < y.dot => {
                    if !other.version.covers(&x.dot) {
                        siblings.push((*x).clone());
                    }
                    a.next();
                }
                (Some(_), Some(y)) => {
                    if !self.version.covers(&y.dot) {
                        siblings.push((*y).clone());
                    }
                    b.next();
                }
                (Some(x), None) => {
                    if !other.version.covers(&x.dot) {
                        siblings.push((*x).clone());
                    }
                    a.next();
                }
                (None, Some(y)) => {
                    if !self.version.covers(&y.dot) {
                        siblings.push((*y).clone());
                    }
                    b.next();
                }
                (None, None) => break,
            }
        }
        let mut version = self.version.clone();
        version.join(&other.version);
        let merged = Object { version, siblings };
        merged.debug_check();
        merged
    }

    /// Whether every sibling is a tombstone (and there is at least one).
    pub fn is_deleted(&self) -> bool {
        !self.siblings.is_empty() && self.siblings.iter().all(|s| s.content.deleted)
    }

    /// The siblings that hold values, not tombstones.
    pub fn live_siblings(&self) -> impl Iterator<Item = &Sibling> {
        self.siblings.iter().filter(|s| !s.content.deleted)
    }

    /// Keeps only the sibling with the latest `last_modified_us` (ties broken
    /// by dot), as `last_write_wins` / `allow_mult=false` buckets do.
    ///
    /// This throws away concurrent writes by design: it is the known-unsafe
    /// mode Riak offers for compatibility.
    pub fn resolve_last_write_wins(&mut self) {
        if self.siblings.len() <= 1 {
            return;
        }
        let winner = self
            .siblings
            .iter()
            .max_by_key(|s| (s.content.meta.last_modified_us, s.dot))
            .cloned();
        self.siblings = winner.into_iter().collect();
    }

    /// Whether the structural invariants hold; used on decode of untrusted
    /// or stored bytes.
    pub fn is_well_formed(&self) -> bool {
        self.siblings.iter().all(|s| self.version.covers(&s.dot))
            && self.siblings.windows(2).all(|w| w[0].dot < w[1].dot)
    }

    fn debug_check(&self) {
        debug_assert!(self.is_well_formed(), "object invariant broken: {self:?}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn actor(n: u64) -> ActorId {
        ActorId { node: n, epoch: 1 }
    }

    fn dot(a: u64, c: u64) -> Dot {
        Dot {
            actor: actor(a),
            counter: c,
        }
    }

    fn content(v: &str) -> Content {
        Content {
            value: v.as_bytes().to_vec(),
            meta: Metadata::default(),
            deleted: false,
        }
    }

    #[test]
    fn stale_context_writes_become_siblings_and_a_fresh_one_resolves_them() {
        let mut o = Object::new();
        o.update(&VersionVector::new(), dot(1, 1), content("a"))
            .unwrap();
        let stale = o.version.clone();
        o.update(&stale, dot(1, 2), content("b")).unwrap();
        o.update(&stale, dot(1, 3), content("c")).unwrap();
        assert_eq!(o.siblings.len(), 2);
        let fresh = o.version.clone();
        o.update(&fresh, dot(1, 4), content("d")).unwrap();
        assert_eq!(o.siblings.len(), 1);
        assert_eq!(o.siblings[0].content.value, b"d");
    }

    #[test]
    fn reused_dot_is_refused() {
        let mut o = Object::new();
        o.update(&VersionVector::new(), dot(1, 5), content("a"))
            .unwrap();
        assert_eq!(
            o.update(&VersionVector::new(), dot(1, 3), content("b")),
            Err(DvvError::DotReuse(dot(1, 3)))
        );
    }

    #[test]
    fn vtags_are_distinct_per_dot_and_fixed_width() {
        let s1 = Sibling {
            dot: dot(1, 1),
            content: content("x"),
        };
        let s2 = Sibling {
            dot: dot(1, 2),
            content: content("x"),
        };
        assert_ne!(s1.vtag(), s2.vtag());
        assert_eq!(s1.vtag().len(), 22);
    }

    /// Builds replica copies by replaying random writes at random replicas
    /// and occasional merges, as the cluster would.
    fn arb_objects() -> impl Strategy<Value = Vec<Object>> {
        // Each step: (replica index, kind, context source replica).
        prop::collection::vec((0usize..3, 0u8..3, 0usize..3), 0..24).prop_map(|steps| {
            let mut replicas = vec![Object::new(); 3];
            let mut counters = [0u64; 3];
            for (i, (r, kind, src)) in steps.into_iter().enumerate() {
                match kind {
                    0 => {
                        // Write with the context read from replica `src`.
                        let ctx = replicas[src].version.clone();
                        // The minting replica holds everything it minted
                        // before, as the store guarantees.
                        counters[r] += 1;
                        let d = Dot {
                            actor: actor(r as u64),
                            counter: counters[r],
                        };
                        let mut base = replicas[r].merge(&Object::new());
                        base.update(&ctx, d, content(&format!("v{i}"))).unwrap();
                        replicas[r] = base;
                    }
                    1 => {
                        counters[r] += 1;
                        let d = Dot {
                            actor: actor(r as u64),
                            counter: counters[r],
                        };
                        replicas[r]
                            .update(&VersionVector::new(), d, content(&format!("b{i}")))
                            .unwrap();
                    }
                    _ => {
                        let merged = replicas[r].merge(&replicas[src]);
                        replicas[r] = merged;
                    }
                }
            }
            replicas
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(objs in arb_objects()) {
            let (a, b, c) = (&objs[0], &objs[1], &objs[2]);
            prop_assert_eq!(a.merge(b), b.merge(a));
            prop_assert_eq!(a.merge(b).merge(c), a.merge(&b.merge(c)));
            prop_assert_eq!(a.merge(a), a.clone());
            prop_assert!(a.merge(b).is_well_formed());
        }

        #[test]
        fn write_removes_exactly_the_covered_siblings(objs in arb_objects(), src in 0usize..3) {
            let mut o = objs[0].merge(&objs[1]);
            let ctx = objs[src].version.clone();
            let before = o.siblings.clone();
            let d = Dot { actor: actor(9), counter: 1 };
            o.update(&ctx, d, content("new")).unwrap();
            let expected: Vec<Dot> = before.iter().map(|s| s.dot).filter(|d| !ctx.covers(d)).collect();
            let kept: Vec<Dot> = o.siblings.iter().map(|s| s.dot).filter(|x| *x != d).collect();
            prop_assert_eq!(kept, expected);
            prop_assert!(o.siblings.iter().any(|s| s.dot == d));
        }

        #[test]
        fn merge_never_loses_a_write_no_one_has_superseded(objs in arb_objects()) {
            // A sibling of one copy that the other copy has not seen must
            // survive the merge.
            let (a, b) = (&objs[0], &objs[1]);
            let m = a.merge(b);
            for s in &a.siblings {
                if !b.version.covers(&s.dot) || b.siblings.contains(s) {
                    prop_assert!(m.siblings.contains(s));
                }
            }
        }
    }
}
