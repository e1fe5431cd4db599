//! The queue of membership updates waiting to be piggy-backed.
//!
//! Like memberlist's `TransmitLimitedQueue`: the least transmitted update
//! goes first (newest first among equals), each is sent at most
//! `retransmit_mult * ceil(log10(n + 1))` times, and a newer update about
//! a member replaces any queued one about the same member.
//!
//! Invariant: at most `capacity` entries; when full, the most transmitted
//! (then oldest) entry is dropped, since it has had the most chances to
//! spread already and push-pull repairs anything gossip misses.

use crate::member::NodeId;
use crate::wire::{Update, encode_update};

/// Retransmissions of each update in a cluster of `n` members.
pub fn retransmit_limit(retransmit_mult: u32, n: usize) -> u32 {
    let node_scale = ((n as f64) + 1.0).log10().ceil().max(1.0);
    retransmit_mult.saturating_mul(node_scale as u32)
}

#[derive(Debug)]
struct Entry {
    member: NodeId,
    bytes: Vec<u8>,
    transmits: u32,
    /// Insertion order; larger is newer.
    order: u64,
}

#[derive(Debug)]
pub(crate) struct BroadcastQueue {
    entries: Vec<Entry>,
    capacity: usize,
    next_order: u64,
    dropped: u64,
}

impl BroadcastQueue {
    pub fn new(capacity: usize) -> Self {
        BroadcastQueue {
            entries: Vec::new(),
            capacity: capacity.max(1),
            next_order: 0,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Updates dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queues `update`, replacing any queued update about the same member.
    pub fn push(&mut self, update: &Update) {
        let member = update.member();
        self.entries.retain(|e| e.member != member);
        if self.entries.len() >= self.capacity {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .max_by_key(|(_, e)| (e.transmits, std::cmp::Reverse(e.order)))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                self.entries.swap_remove(i);
                self.dropped += 1;
            }
        }
        self.entries.push(Entry {
            member,
            bytes: encode_update(update),
            transmits: 0,
            order: self.next_order,
        });
        self.next_order += 1;
        debug_assert!(self.entries.len() <= self.capacity);
    }

    /// Drops every queued update about `member`.
    pub fn forget(&mut self, member: NodeId) {
        self.entries.retain(|e| e.member != member);
    }

    /// Appends to `out` the encoded updates to piggy-back, in priority order,
    /// as long as their total stays within `budget_bytes`; counts a
    /// transmission for each and retires those that reached `limit`.
    pub fn take(&mut self, budget_bytes: usize, limit: u32, out: &mut Vec<Vec<u8>>) {
        if self.entries.is_empty() {
            return;
        }
        self.entries
            .sort_unstable_by_key(|e| (e.transmits, std::cmp::Reverse(e.order)));
        let mut remaining = budget_bytes;
        for entry in &mut self.entries {
            if entry.bytes.len() <= remaining {
                remaining -= entry.bytes.len();
                entry.transmits += 1;
                out.push(entry.bytes.clone());
            }
            if remaining == 0 {
                break;
            }
        }
        self.entries.retain(|e| e.transmits < limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(member: u128, incarnation: u64) -> Update {
        Update::Left {
            member: NodeId(member),
            incarnation,
        }
    }

    #[test]
    fn limit_grows_with_log_n() {
        assert_eq!(retransmit_limit(4, 1), 4);
        assert_eq!(retransmit_limit(4, 9), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
        assert_eq!(retransmit_limit(4, 100), 12);
    }

    #[test]
    fn newer_replaces_older_and_limit_retires() {
        let mut q = BroadcastQueue::new(16);
        q.push(&left(1, 1));
        q.push(&left(1, 2));
        q.push(&left(2, 1));
        assert_eq!(q.len(), 2);
        let mut out = Vec::new();
        q.take(1000, 2, &mut out);
        assert_eq!(out.len(), 2);
        q.take(1000, 2, &mut out);
        assert_eq!(out.len(), 4);
        assert!(q.is_empty());
    }

    #[test]
    fn respects_budget_and_capacity() {
        let mut q = BroadcastQueue::new(16);
        for i in 0..40 {
            q.push(&left(i, 1));
        }
        assert_eq!(q.len(), 16);
        assert_eq!(q.dropped(), 24);
        let one = encode_update(&left(1, 1)).len();
        let mut out = Vec::new();
        q.take(one * 3, 10, &mut out);
        assert_eq!(out.len(), 3);
        // The next take prefers the untransmitted ones.
        let mut again = Vec::new();
        q.take(one * 3, 10, &mut again);
        assert!(again.iter().all(|b| !out.contains(b)));
    }
}
