//! Bucket properties: replication and conflict settings of one bucket.
//!
//! Properties are cluster-wide metadata. This module only defines them, their
//! defaults, validation and the quorum arithmetic; the store persists them and
//! the node spreads them through the cluster.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A quorum setting as Riak spells it: `one`, `quorum`, `all`, `default`
/// (the bucket's own value) or a number of replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quorum {
    /// Use the bucket's setting (in a request) or the default (in a bucket).
    Default,
    /// One replica.
    One,
    /// `floor(n_val / 2) + 1` replicas.
    Quorum,
    /// Every replica.
    All,
    /// Exactly this many replicas.
    Count(u32),
}

/// Why a quorum value or property set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropsError {
    /// Not `one`, `quorum`, `all`, `default` or a non-negative integer.
    #[error("invalid quorum value {0:?}: expected one, quorum, all, default or an integer")]
    BadQuorum(String),
    /// A quorum asks for more replicas than the bucket keeps.
    #[error("{name}={value} is larger than n_val={n_val}")]
    QuorumAboveN {
        /// Which parameter (`r`, `w`, ...).
        name: &'static str,
        /// The number asked for.
        value: u32,
        /// The bucket's replica count.
        n_val: u32,
    },
    /// `n_val` must be between 1 and [`N_VAL_MAX`].
    #[error("n_val must be between 1 and {N_VAL_MAX}, got {0}")]
    BadNVal(u32),
}

/// The most replicas a bucket may ask for.
pub const N_VAL_MAX: u32 = 16;

impl Quorum {
    /// Parses Riak's spelling. Integers are taken as they are; whether they
    /// fit `n_val` is checked by [`Quorum::resolve`].
    pub fn parse(text: &str) -> Result<Quorum, PropsError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(Quorum::Default),
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Quorum),
            "all" => Ok(Quorum::All),
            other => other
                .parse::<u32>()
                .map(Quorum::Count)
                .map_err(|_| PropsError::BadQuorum(text.to_owned())),
        }
    }

    /// The number of replicas this setting asks for, given `n_val` and the
    /// setting to use for `Default`.
    pub fn resolve(
        self,
        name: &'static str,
        n_val: u32,
        fallback: Quorum,
    ) -> Result<u32, PropsError> {
        let quorum = if self == Quorum::Default {
            fallback
        } else {
            self
        };
        let value = match quorum {
            // A default that points at itself means the usual `quorum`.
            Quorum::Default | Quorum::Quorum => n_val / 2 + 1,
            Quorum::One => 1,
            Quorum::All => n_val,
            Quorum::Count(count) => count,
        };
        if value > n_val {
            return Err(PropsError::QuorumAboveN { name, value, n_val });
        }
        Ok(value)
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Default => f.write_str("default"),
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The properties of one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Replicas of each key.
    pub n_val: u32,
    /// Replies a read waits for.
    pub r: Quorum,
    /// Acknowledgements a write waits for.
    pub w: Quorum,
    /// Primary replicas among the read replies.
    pub pr: Quorum,
    /// Primary replicas among the write acknowledgements.
    pub pw: Quorum,
    /// Durable (fsynced) acknowledgements a write waits for.
    pub dw: Quorum,
    /// Acknowledgements a delete waits for.
    pub rw: Quorum,
    /// Keep concurrent writes as siblings (true) or resolve them by
    /// last-modified time (false, unsafe).
    pub allow_mult: bool,
    /// Resolve every write by last-modified time without reading (unsafe).
    pub last_write_wins: bool,
    /// A replica's "not found" counts towards R.
    pub notfound_ok: bool,
    /// Answer "not found" early once a quorum of replicas said so.
    pub basic_quorum: bool,
}

impl Default for BucketProps {
    fn default() -> BucketProps {
        BucketProps {
            n_val: 3,
            r: Quorum::Quorum,
            w: Quorum::Quorum,
            // Riak's defaults: no primary requirement.
            pr: Quorum::Count(0),
            pw: Quorum::Count(0),
            dw: Quorum::Quorum,
            rw: Quorum::Quorum,
            // Safer than Riak's legacy default (DESIGN.md).
            allow_mult: true,
            last_write_wins: false,
            notfound_ok: true,
            basic_quorum: false,
        }
    }
}

impl BucketProps {
    /// Checks that every quorum fits `n_val`.
    pub fn validate(&self) -> Result<(), PropsError> {
        if self.n_val == 0 || self.n_val > N_VAL_MAX {
            return Err(PropsError::BadNVal(self.n_val));
        }
        for (name, q) in [
            ("r", self.r),
            ("w", self.w),
            ("pr", self.pr),
            ("pw", self.pw),
            ("dw", self.dw),
            ("rw", self.rw),
        ] {
            q.resolve(name, self.n_val, Quorum::Quorum)?;
        }
        Ok(())
    }

    /// Whether siblings are collapsed to the latest write.
    pub fn resolves_by_time(&self) -> bool {
        !self.allow_mult || self.last_write_wins
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quorum_arithmetic() {
        assert_eq!(Quorum::Quorum.resolve("r", 3, Quorum::Quorum), Ok(2));
        assert_eq!(Quorum::Quorum.resolve("r", 5, Quorum::Quorum), Ok(3));
        assert_eq!(Quorum::All.resolve("r", 3, Quorum::Quorum), Ok(3));
        assert_eq!(Quorum::Default.resolve("r", 3, Quorum::One), Ok(1));
        assert_eq!(
            Quorum::Count(4).resolve("w", 3, Quorum::Quorum),
            Err(PropsError::QuorumAboveN {
                name: "w",
                value: 4,
                n_val: 3
            })
        );
        assert_eq!(Quorum::parse("QUORUM"), Ok(Quorum::Quorum));
        assert_eq!(Quorum::parse("2"), Ok(Quorum::Count(2)));
        assert!(Quorum::parse("-1").is_err());
        assert!(Quorum::parse("most").is_err());
    }

    #[test]
    fn defaults_validate() {
        BucketProps::default().validate().unwrap();
        let bad = BucketProps {
            n_val: 0,
            ..BucketProps::default()
        };
        assert!(bad.validate().is_err());
    }
}
