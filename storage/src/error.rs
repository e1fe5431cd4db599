//! The one error type of the store, [`StoreError`].
//!
//! Each variant says what happened and what the caller should do about it:
//! a client mistake (map to 4xx), a limit (413 / 409-ish), a peer that sent
//! something malformed, a broken disk, or a broken internal invariant.
//!
//! This module does not map errors to HTTP statuses; the node does.

use crate::dvv::Dot;
use crate::props::PropsError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bucket name is empty. A client mistake: answer 400.
    #[error("bucket name is empty")]
    EmptyBucket,
    /// The key is empty. A client mistake: answer 400.
    #[error("key is empty")]
    EmptyKey,
    /// The bucket name is longer than [`crate::Limits::bucket_size_bytes_max`].
    /// A client mistake: answer 400.
    #[error("bucket name is {size_bytes} bytes, the limit is {size_bytes_max}")]
    BucketTooLarge {
        /// Length of the bucket name given.
        size_bytes: u64,
        /// The configured limit.
        size_bytes_max: u64,
    },
    /// The key is longer than [`crate::Limits::key_size_bytes_max`]. A client
    /// mistake: answer 400.
    #[error("key is {size_bytes} bytes, the limit is {size_bytes_max}")]
    KeyTooLarge {
        /// Length of the key given.
        size_bytes: u64,
        /// The configured limit.
        size_bytes_max: u64,
    },
    /// The object, with all its siblings, would encode to more than
    /// [`crate::Limits::object_size_bytes_max`]. Nothing was written: answer
    /// 413. (Repair traffic is exempt; see [`crate::WriteOptions::repair`].)
    #[error("object would be {size_bytes} bytes, the limit is {size_bytes_max}")]
    ObjectTooLarge {
        /// Encoded size the object would have had.
        size_bytes: u64,
        /// The configured limit.
        size_bytes_max: u64,
    },
    /// The write would leave the object with more than
    /// [`crate::Limits::siblings_max`] siblings. Nothing was written; the
    /// client should read, resolve the siblings and write with the context it
    /// read. Repair traffic is exempt.
    #[error("object would have {count} siblings, the limit is {max}; resolve them first")]
    TooManySiblings {
        /// Sibling count the write would have produced.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// An object handed to [`crate::Store::merge`] breaks the dotted version
    /// vector invariants (a sibling's dot not covered by its version, or
    /// siblings out of order). The peer that sent it is buggy or hostile;
    /// nothing was written.
    #[error("incoming object is malformed: {0}")]
    InvalidObject(&'static str),
    /// Bucket properties that do not validate; nothing was written. Answer 400.
    #[error("invalid bucket properties: {0}")]
    InvalidProps(#[from] PropsError),
    /// The [`crate::StoreConfig`] is inconsistent (for example limits whose
    /// sum exceeds what the key layout can hold). Fix the configuration.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The data directory belongs to another node: its stored node id differs
    /// from the one configured. Refusing to open protects both nodes' dots.
    #[error(
        "data directory belongs to node {stored:016x}, but node id {configured:016x} was configured"
    )]
    IdentityMismatch {
        /// Node id found in the data directory.
        stored: u64,
        /// Node id given in the configuration.
        configured: u64,
    },
    /// Bytes read from disk are not what this store wrote: unknown format
    /// version, a decode failure, or a decoded object that breaks the dvv
    /// invariants. The key (or record) is unreadable until repaired from
    /// another replica; the disk or a bug is to blame.
    #[error("corrupt stored record {record}: {reason}")]
    Corrupt {
        /// Which record: `object <bucket>/<key>`, `props <bucket>` or
        /// `meta <name>`, with non-printable bytes escaped.
        record: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A freshly minted dot was already part of the object's history. This
    /// cannot happen unless counters were reused (a restored backup of the
    /// data directory, or a bug); the write was refused rather than silently
    /// dropped.
    #[error("internal invariant broken: dot {0:?} would be reused")]
    DotReuse(Dot),
    /// The dot counter of this actor is exhausted (it reached `u64::MAX`, or
    /// a peer claimed a counter absurdly far ahead of ours). Start the node
    /// with a fresh data directory, which gives it a new actor.
    #[error("dot counter exhausted or implausibly far ahead: {0}")]
    CounterExhausted(String),
    /// The store refuses writes until the process restarts, because a write
    /// to disk failed (`cause` says which): an fsync, a journal append (the
    /// disk filled up under it, or an I/O error), or the engine's own
    /// background work. The write that met the failure, and every write not
    /// yet durable then, was not acknowledged; its outcome is indeterminate
    /// (the journal may hold it whole or torn, and recovery keeps whole
    /// batches only). Reads keep working; a restart recovers from the
    /// journal (answer 503). Never retry the fsync: after a failure the
    /// kernel may have dropped the dirty pages.
    #[error("storage refuses writes until the node restarts: {cause}")]
    Poisoned {
        /// What failed.
        cause: PoisonCause,
    },
    /// The store is shutting down ([`crate::Store::seal`]): it mints no
    /// more dots, so it takes no more puts (answer 503).
    #[error("storage is shutting down and takes no new writes")]
    Closed,
    /// The filesystem of the data directory has less space available than
    /// the reserve ([`crate::StoreConfig::disk_reserve_bytes`]), so the write
    /// was refused before anything was written. Nothing needs repair:
    /// writes resume by themselves once space is freed (answer 503).
    #[error(
        "disk full: storage refuses writes while the data directory's filesystem has \
         {available_bytes} bytes available, below the reserve of {reserve_bytes} bytes; \
         writes resume once space is freed"
    )]
    DiskFull {
        /// Bytes available at the last probe.
        available_bytes: u64,
        /// The configured reserve.
        reserve_bytes: u64,
    },
    /// The hint store holds as many hints as it may; the caller should find
    /// another replica or fail the write.
    #[error("the hint store is full ({count} hints)")]
    HintStoreFull {
        /// Hints stored.
        count: u64,
    },
    /// An I/O error outside fjall (creating the data directory).
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// fjall failed (I/O error, corrupt journal or table, lock held by
    /// another process).
    #[error("storage engine error: {0}")]
    Fjall(fjall::Error),
}

/// What made the store refuse writes until restart; see
/// [`StoreError::Poisoned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoisonCause {
    /// An fsync of the journal failed (whatever its errno, ENOSPC included):
    /// writes since the previous fsync may not be on disk.
    Fsync,
    /// A journal append failed because the filesystem or the quota was full
    /// (ENOSPC, EDQUOT): space ran out faster than the reserve check saw.
    NoSpace,
    /// A journal append failed with another I/O error.
    Append,
    /// fjall stopped taking writes on its own: a background memtable flush
    /// or compaction failed (for lack of space, or an I/O error; fjall logs
    /// which just before), or one of its threads panicked.
    Engine,
}

impl std::fmt::Display for PoisonCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoisonCause::Fsync => "an fsync of the journal failed",
            PoisonCause::NoSpace => "the disk filled up during a journal write",
            PoisonCause::Append => "a journal write failed",
            PoisonCause::Engine => {
                "the storage engine stopped taking writes after a background flush or \
                 compaction failed"
            }
        })
    }
}

impl PoisonCause {
    /// The cause a failed journal append stands for.
    pub(crate) fn of_append(err: &fjall::Error) -> PoisonCause {
        let io = match err {
            fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => Some(io),
            fjall::Error::Poisoned => return PoisonCause::Engine,
            _ => None,
        };
        match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => {
                PoisonCause::NoSpace
            }
            _ => PoisonCause::Append,
        }
    }
}

impl From<fjall::Error> for StoreError {
    fn from(err: fjall::Error) -> StoreError {
        // fjall poisons itself when a journal write, an fsync or a
        // background flush fails. Write paths classify their own failures
        // (`commit::Syncer::write_journal`); anything else that meets the
        // poison can only say the engine refused.
        match err {
            fjall::Error::Poisoned => StoreError::Poisoned {
                cause: PoisonCause::Engine,
            },
            other => StoreError::Fjall(other),
        }
    }
}

/// Renders bytes for error messages and logs: printable ASCII as is, the rest
/// as `\xNN`, cut at a bounded length so a 64 KiB key does not flood logs.
pub(crate) fn escape(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 128;
    let mut out = String::with_capacity(bytes.len().min(SHOWN_BYTES_MAX) + 8);
    for &b in bytes.iter().take(SHOWN_BYTES_MAX) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > SHOWN_BYTES_MAX {
        out.push_str("...");
    }
    out
}
