//! Starling's storage layer: versioned objects on fjall.
//!
//! What it does: keeps every key's [`dvv::Object`] (siblings, dots, version
//! vector) durable on local disk, mints dots that are never reused, persists
//! bucket properties and the node's identity, and makes writes durable with
//! group commit.
//!
//! What it does not do: it knows nothing of the network, of other replicas or
//! of quorums. Replication code calls [`dvv::Object::merge`] through the store
//! and decides where copies go.
//!
//! Invariants: an object read back from disk is checked (format version and
//! the dvv invariants) before use; a dot is handed out once per actor, ever.
//!
//! Code map:
//! - [`dvv`]: dotted version vectors, [`Object::update`] and [`Object::merge`].
//! - [`context`]: the sealed causal context clients carry.
//! - [`props`]: bucket properties and quorum arithmetic.
//! - [`store`]: the fjall-backed [`Store`] and its read-modify-write paths.
//! - [`commit`]: [`SyncPolicy`], group commit, and poisoning after a failed
//!   fsync or journal append.
//! - [`space`]: the disk reserve below which writes are refused.
//! - [`identity`]: the node's [`Identity`] and the leased dot counter.
//! - [`limits`]: [`Limits`] and their checks.
//! - [`merkle`]: Merkle (tictac) trees, key hashing and digests for
//!   anti-entropy; the store keeps them current (`aae`: placed keys and
//!   the entry each object carries).
//! - [`stats`]: the [`StoreStats`] counters.
//! - [`error`]: the one error type, [`StoreError`].
//! - [`layout`]: key layout and record encodings on disk.

mod aae;
pub mod commit;
pub mod context;
pub mod dvv;
pub mod error;
pub mod identity;
pub mod layout;
pub mod limits;
pub mod merkle;
pub mod props;
pub mod space;
pub mod stats;
pub mod store;

pub use commit::{DEFAULT_FSYNC_SPACING, SPACING_FSYNCS, SyncPolicy};
pub use context::{ContextError, ContextKey};
pub use dvv::{ActorId, Content, Dot, DvvError, Link, Metadata, Object, Sibling, VersionVector};
pub use error::{PoisonCause, StoreError};
pub use identity::Identity;
pub use limits::Limits;
pub use merkle::{KeyDigest, TreeId};
pub use props::{BucketProps, PropsError, Quorum};
pub use space::DEFAULT_DISK_RESERVE_BYTES;
pub use stats::StoreStats;
pub use store::{
    Deferred, Hint, KeyPage, Keys, MaintenanceReport, Objects, Store, StoreConfig, TreeSummary,
    WriteOptions, Written,
};
