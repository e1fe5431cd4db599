//! Lifeguard's dynamic suspicion timeout.
//!
//! A suspicion starts with the longest timeout and shrinks towards the
//! shortest as independent members confirm it, following memberlist's
//! formula:
//!
//! ```text
//! min     = suspicion_mult * max(1, log10(n)) * probe_interval
//! max     = suspicion_max_timeout_mult * min
//! timeout = max - (max - min) * ln(c + 1) / ln(k + 1)      (c confirmations)
//! ```
//!
//! with `k = suspicion_mult - 2` confirmations needed to reach `min` (0 in a
//! cluster too small to provide them, in which case the timeout is `min`).
//! This module only computes deadlines; `swim` arms the timers and declares
//! the member dead. Invariant: the deadline never moves later as
//! confirmations arrive, and never earlier than `start + min`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::member::{Incarnation, NodeId};
use crate::time::Time;

/// The shortest suspicion timeout for a cluster of `n` members.
pub fn suspicion_timeout_min(suspicion_mult: u32, n: usize, probe_interval: Duration) -> Duration {
    let node_scale = (n.max(1) as f64).log10().max(1.0);
    probe_interval.mul_f64(f64::from(suspicion_mult) * node_scale)
}

/// Confirmations needed to shrink the timeout to its minimum.
pub fn confirmations_needed(suspicion_mult: u32, n: usize) -> u32 {
    let k = suspicion_mult.saturating_sub(2);
    if (n.saturating_sub(2) as u64) < u64::from(k) {
        0
    } else {
        k
    }
}

/// The timeout after `confirmations` of the `k` needed.
pub fn suspicion_timeout(confirmations: u32, k: u32, min: Duration, max: Duration) -> Duration {
    if k == 0 {
        return min;
    }
    let frac = (f64::from(confirmations) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    // Millisecond precision like memberlist; never below min.
    Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64).max(min)
}

/// An open suspicion of one member at one incarnation.
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    pub incarnation: Incarnation,
    started_at: Time,
    k: u32,
    min: Duration,
    max: Duration,
    /// Who has accused the member so far, the first accuser included, so a
    /// repeated accusation is not counted twice.
    accusers: BTreeSet<NodeId>,
}

impl Suspicion {
    pub fn new(
        from: NodeId,
        incarnation: Incarnation,
        k: u32,
        min: Duration,
        max: Duration,
        now: Time,
    ) -> Self {
        Suspicion {
            incarnation,
            started_at: now,
            k,
            min,
            max: max.max(min),
            accusers: BTreeSet::from([from]),
        }
    }

    fn confirmations(&self) -> u32 {
        u32::try_from(self.accusers.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Records an independent accusation. Returns true when it was new and
    /// counted (the caller then re-gossips it and re-arms the timer).
    pub fn confirm(&mut self, from: NodeId) -> bool {
        if self.confirmations() >= self.k {
            return false;
        }
        self.accusers.insert(from)
    }

    /// When the member is to be declared dead.
    pub fn deadline(&self) -> Time {
        self.started_at + suspicion_timeout(self.confirmations(), self.k, self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberlist_figures_at_100_nodes() {
        let min = suspicion_timeout_min(4, 100, Duration::from_secs(1));
        assert_eq!(min, Duration::from_secs(8));
        let max = min * 6;
        let k = confirmations_needed(4, 100);
        assert_eq!(k, 2);
        assert_eq!(suspicion_timeout(0, k, min, max), Duration::from_secs(48));
        let one = suspicion_timeout(1, k, min, max);
        assert!(
            one > Duration::from_secs(22) && one < Duration::from_secs(23),
            "{one:?}"
        );
        assert_eq!(suspicion_timeout(2, k, min, max), min);
    }

    #[test]
    fn small_clusters_use_the_minimum() {
        assert_eq!(confirmations_needed(4, 3), 0);
        let min = suspicion_timeout_min(4, 3, Duration::from_secs(1));
        assert_eq!(min, Duration::from_secs(4));
        assert_eq!(suspicion_timeout(0, 0, min, min * 6), min);
    }

    #[test]
    fn deadline_shrinks_monotonically_and_ignores_repeats() {
        let min = Duration::from_secs(8);
        let mut s = Suspicion::new(NodeId(1), 3, 2, min, min * 6, Time::ZERO);
        let first = s.deadline();
        assert!(!s.confirm(NodeId(1)));
        assert!(s.confirm(NodeId(2)));
        let second = s.deadline();
        assert!(second < first);
        assert!(s.confirm(NodeId(3)));
        assert_eq!(s.deadline(), Time::ZERO + min);
        assert!(!s.confirm(NodeId(4)));
    }
}
