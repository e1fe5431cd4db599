//! Who is in the cluster: node identities, per-member metadata and the
//! SWIM state of each member as this node believes it.
//!
//! Identity is the [`NodeId`], never the address: the cluster address is
//! metadata, so a node that comes back on a new address is the same member
//! (it announces the new address with a higher incarnation).
//!
//! This module does not decide anything; the transition rules live in
//! `swim`. Invariant: every [`Meta`] that enters the member table has passed
//! [`Meta::validate`], so its strings are bounded.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// A node's stable identity: 16 bytes, mapped by the driver from the
/// node's persisted identity. Two processes with the same id are the same
/// member, wherever they listen.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

impl NodeId {
    /// The id whose big-endian bytes are `bytes`.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        NodeId(u128::from_be_bytes(bytes))
    }

    /// The big-endian bytes of this id.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:x})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A member's incarnation number. Only the member itself ever raises it:
/// to refute a suspicion, or to announce new metadata.
pub type Incarnation = u64;

/// Where a member stands in the ring's ownership. This is membership, not
/// liveness: a dead `Member` still owns its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RingState {
    /// Known to the cluster but not yet owning partitions.
    Joining,
    /// Owns partitions.
    Member,
    /// Handing its partitions off before leaving.
    Leaving,
    /// No longer owns anything (left, or removed by an operator).
    Removed,
}

/// The liveness of a member as this node believes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes (or not yet suspected).
    Alive,
    /// Missed a probe; declared dead when the suspicion timeout runs out
    /// unless the member refutes with a higher incarnation.
    Suspect,
    /// Failed and did not refute in time. Keeps its ring ownership.
    Dead,
    /// Announced a graceful leave. Distinct from `Dead`: nobody reconnects
    /// to a member that left.
    Left,
}

impl MemberState {
    /// Alive or suspect: a member we still probe and gossip to.
    pub const fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// Longest string accepted in [`Meta`], in bytes.
pub const META_STRING_BYTES_MAX: usize = 255;

/// What a member announces about itself, disseminated with its incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// The cluster (QUIC) address SWIM datagrams and push-pull streams go to.
    pub addr: SocketAddr,
    /// The HTTP API address, as clients should reach it.
    pub http_addr: String,
    /// Failure zone (rack, availability zone) for replica placement.
    pub zone: String,
    /// Ring ownership state.
    pub ring: RingState,
}

/// Metadata that cannot be announced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// A string field is longer than [`META_STRING_BYTES_MAX`]; it would
    /// crowd every datagram that carries it. Shorten it.
    #[error(
        "metadata field `{field}` is {len_bytes} bytes, above the limit of {META_STRING_BYTES_MAX}"
    )]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len_bytes: usize,
    },
}

impl Meta {
    /// Checks the bounds every announced `Meta` must respect.
    pub fn validate(&self) -> Result<(), MetaError> {
        for (field, value) in [("http_addr", &self.http_addr), ("zone", &self.zone)] {
            if value.len() > META_STRING_BYTES_MAX {
                return Err(MetaError::TooLong {
                    field,
                    len_bytes: value.len(),
                });
            }
        }
        Ok(())
    }
}

/// One member as this node believes it to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable identity.
    pub id: NodeId,
    /// Highest incarnation heard of.
    pub incarnation: Incarnation,
    /// Liveness.
    pub state: MemberState,
    /// Last announced metadata.
    pub meta: Meta,
    /// When `state` last changed on this node.
    pub state_changed_at: Time,
}
