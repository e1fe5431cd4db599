//! Protocol tunables. The defaults are memberlist's LAN profile with a
//! quicker probe: every 700 ms (timeout 350 ms) instead of 1 s (500 ms).
//! At 100 nodes that takes crash detection from a p99 of about 12 s to about
//! 9 s in the simulator, while 10% packet loss for ten minutes and a 3 s
//! stall of one node still cause no false "dead"; it costs about 40% more
//! probe traffic (about 3 datagrams per node per second). The price: a
//! blackout of the *whole* network for 2 s makes some members declare others
//! dead before the refutations get through (they come back within seconds);
//! memberlist's slower profile, [`Config::memberlist_lan`], rides that out.
//!
//! A [`Config`] is plain data; [`Config::validate`] checks every documented
//! constraint and `Swim::new` refuses a config that fails it, so the state
//! machine never runs with, say, a probe timeout longer than the probe
//! interval. This module does not parse files or flags; the node binary does
//! that and builds a `Config`.

use std::time::Duration;

/// SWIM + Lifeguard tunables. See [`Config::default`] for the values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time between two probes of a healthy node (before the Local Health
    /// Multiplier scales it). Also the deadline for a probe's indirect acks.
    /// Default 700 ms. Must be larger than `probe_timeout` and at most 60 s.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking `indirect_checks`
    /// other members to probe the target. Scaled by the health multiplier
    /// like `probe_interval`. Default 350 ms. Must be non-zero and smaller
    /// than `probe_interval`.
    pub probe_timeout: Duration,
    /// Number of members asked to probe an unresponsive target on our
    /// behalf (ping-req). Default 3. Must be at most 16.
    pub indirect_checks: usize,
    /// Scales the minimum suspicion timeout:
    /// `min = suspicion_mult * max(1, log10(n)) * probe_interval`.
    /// Also sets the confirmations needed to reach that minimum
    /// (`suspicion_mult - 2`). Default 4. Must be between 1 and 100.
    pub suspicion_mult: u32,
    /// The suspicion timeout starts at `suspicion_max_timeout_mult * min` and
    /// shrinks towards `min` as independent confirmations arrive. Default 6.
    /// Must be between 1 and 100.
    pub suspicion_max_timeout_mult: u32,
    /// Upper bound of the Local Health Multiplier: probe interval and timeout
    /// are multiplied by at most this much when this node itself looks
    /// unhealthy. Default 8. Must be between 1 and 64.
    pub awareness_max_multiplier: u32,
    /// Each membership update is piggy-backed at most
    /// `retransmit_mult * ceil(log10(n + 1))` times. Default 4. Must be
    /// between 1 and 100.
    pub retransmit_mult: u32,
    /// Time between two gossip rounds, in which pending updates are sent to
    /// `gossip_nodes` random members. Default 200 ms. Must be non-zero and
    /// at most `probe_interval`.
    pub gossip_interval: Duration,
    /// Members gossiped to per round. Default 3. Must be between 1 and 64.
    pub gossip_nodes: usize,
    /// How long after declaring a member dead we keep gossiping to it, so a
    /// falsely accused member hears about it and refutes. Default 30 s.
    pub gossip_to_the_dead_time: Duration,
    /// Base time between two push-pull full-state exchanges with a random
    /// live member; scaled up above 32 members like memberlist does.
    /// Default 30 s. Must be non-zero.
    pub push_pull_interval: Duration,
    /// Time between two reconnect rounds: a push-pull with a random dead
    /// member (the cluster as a whole makes about one attempt per round), or
    /// with a seed when no member is live. This is what heals partitions and
    /// brings isolated nodes back. Default 10 s. Must be non-zero.
    pub reconnect_interval: Duration,
    /// How long a member that left gracefully stays in the table before it
    /// is forgotten. Dead members are never forgotten automatically: they
    /// keep their ring ownership until an operator removes them (see
    /// `Swim::forget`). Default 24 h. Must be non-zero.
    pub left_reap_timeout: Duration,
    /// Largest datagram this node sends; piggy-backed updates are added only
    /// while they fit. Default 1200 bytes (fits a QUIC datagram on any
    /// path). Must be between 512 and 65 000.
    pub datagram_size_bytes_max: usize,
    /// Most members kept in the table; announcements of further new members
    /// are ignored. Default 10 000. Must be between 2 and 1 000 000.
    pub members_max: usize,
    /// Most membership updates waiting to be piggy-backed; beyond it the
    /// most transmitted one is dropped (push-pull repairs what gossip
    /// dropped). Default 4096. Must be at least 16.
    pub broadcasts_max: usize,
    /// An update about another member whose incarnation is more than this
    /// above the incarnation we know for a live member is ignored as absurd,
    /// and so is a suspicion of ourselves that far above our own incarnation
    /// (except during the first `push_pull_interval` after start, when a
    /// restarted node learns how far its previous life got). Only a member
    /// raises its own incarnation, one step per refutation or metadata
    /// change, so an honest jump this large does not happen. Default 65 536.
    /// Must be at least 1.
    pub incarnation_jump_max: u64,
}

impl Config {
    /// HashiCorp memberlist's LAN profile exactly (probe every 1 s, timeout
    /// 500 ms, suspicion multiplier 4), for comparison and for tests written
    /// against its timings.
    pub fn memberlist_lan() -> Config {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            suspicion_mult: 4,
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_interval: Duration::from_millis(700),
            probe_timeout: Duration::from_millis(350),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(10),
            left_reap_timeout: Duration::from_secs(24 * 3600),
            datagram_size_bytes_max: 1200,
            members_max: 10_000,
            broadcasts_max: 4096,
            incarnation_jump_max: 1 << 16,
        }
    }
}

/// A [`Config`] field outside its documented range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `field` violates `constraint`; fix the configuration.
    #[error("config field `{field}` {constraint}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// The constraint it must satisfy.
        constraint: &'static str,
    },
}

fn check(ok: bool, field: &'static str, constraint: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { field, constraint })
    }
}

impl Config {
    /// Checks every constraint documented on the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let minute = Duration::from_secs(60);
        check(
            self.probe_interval > self.probe_timeout && self.probe_interval <= minute,
            "probe_interval",
            "must be larger than probe_timeout and at most 60 s",
        )?;
        check(
            !self.probe_timeout.is_zero(),
            "probe_timeout",
            "must be non-zero",
        )?;
        check(
            self.indirect_checks <= 16,
            "indirect_checks",
            "must be at most 16",
        )?;
        check(
            (1..=100).contains(&self.suspicion_mult),
            "suspicion_mult",
            "must be between 1 and 100",
        )?;
        check(
            (1..=100).contains(&self.suspicion_max_timeout_mult),
            "suspicion_max_timeout_mult",
            "must be between 1 and 100",
        )?;
        check(
            (1..=64).contains(&self.awareness_max_multiplier),
            "awareness_max_multiplier",
            "must be between 1 and 64",
        )?;
        check(
            (1..=100).contains(&self.retransmit_mult),
            "retransmit_mult",
            "must be between 1 and 100",
        )?;
        check(
            !self.gossip_interval.is_zero() && self.gossip_interval <= self.probe_interval,
            "gossip_interval",
            "must be non-zero and at most probe_interval",
        )?;
        check(
            (1..=64).contains(&self.gossip_nodes),
            "gossip_nodes",
            "must be between 1 and 64",
        )?;
        check(
            !self.push_pull_interval.is_zero(),
            "push_pull_interval",
            "must be non-zero",
        )?;
        check(
            !self.reconnect_interval.is_zero(),
            "reconnect_interval",
            "must be non-zero",
        )?;
        check(
            !self.left_reap_timeout.is_zero(),
            "left_reap_timeout",
            "must be non-zero",
        )?;
        check(
            (512..=65_000).contains(&self.datagram_size_bytes_max),
            "datagram_size_bytes_max",
            "must be between 512 and 65000",
        )?;
        check(
            (2..=1_000_000).contains(&self.members_max),
            "members_max",
            "must be between 2 and 1000000",
        )?;
        check(
            self.broadcasts_max >= 16,
            "broadcasts_max",
            "must be at least 16",
        )?;
        check(
            self.incarnation_jump_max >= 1,
            "incarnation_jump_max",
            "must be at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn probe_timeout_must_be_below_interval() {
        let config = Config {
            probe_timeout: Duration::from_secs(2),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                field: "probe_interval",
                ..
            })
        ));
    }

    #[test]
    fn tiny_datagrams_are_refused() {
        let config = Config {
            datagram_size_bytes_max: 100,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
