//! Lifeguard's Local Health Multiplier (memberlist's "awareness").
//!
//! A score in `0..max` that rises when this node misses acks or nacks it
//! should have received, or has to refute a suspicion of itself, and falls
//! with every successful probe. Probe interval and timeout are multiplied by
//! `score + 1`, so a node that is itself slow (overloaded, paused, losing
//! packets) probes more patiently instead of accusing healthy members.
//! Invariant: the score stays within `0..max`.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    /// `max` is `awareness_max_multiplier` (at least 1).
    pub fn new(max: u32) -> Self {
        Awareness {
            score: 0,
            max: max.max(1),
        }
    }

    pub fn apply_delta(&mut self, delta: i64) {
        let score = i64::from(self.score).saturating_add(delta);
        let score = score.clamp(0, i64::from(self.max - 1));
        self.score = u32::try_from(score).expect("clamped to 0..max, which fits in u32");
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    pub fn scale(&self, timeout: Duration) -> Duration {
        timeout.saturating_mul(self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_bounded_and_scales() {
        let mut a = Awareness::new(8);
        a.apply_delta(-3);
        assert_eq!(a.score(), 0);
        a.apply_delta(3);
        assert_eq!(a.scale(Duration::from_secs(1)), Duration::from_secs(4));
        a.apply_delta(100);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_millis(500)), Duration::from_secs(4));
    }
}
