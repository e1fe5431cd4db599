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

pub mod context;
pub mod dvv;
pub mod props;

pub use context::{ContextError, ContextKey};
pub use dvv::{ActorId, Content, Dot, DvvError, Link, Metadata, Object, Sibling, VersionVector};
pub use props::{BucketProps, PropsError, Quorum};
