//! Free space on the data directory's filesystem, and the reserve below
//! which the store refuses writes.
//!
//! Why refuse early instead of waiting for ENOSPC: fjall treats a failed
//! journal write as fatal. It cannot know how much of the entry reached the
//! file, so it poisons itself and takes no write until the database is
//! opened again. Its background memtable flushes and compactions need room
//! too, and a failed one poisons it the same way. So the store stops taking
//! writes while some space is left: a write refused here leaves nothing
//! behind, reads go on, and writes resume by themselves once space is freed.
//! ENOSPC that gets past the check anyway (another process filled the disk
//! between two probes, or a compaction needed more than the reserve) poisons
//! the store until restart (see [`crate::commit`]).
//!
//! The probe is `statvfs` on the data directory and counts the bytes
//! available to unprivileged users (`f_bavail`), so blocks a filesystem
//! keeps for root count as used. It is not taken on every write: a probe
//! holds for [`PROBE_INTERVAL`] and for half of the margin it found above
//! the reserve, counted in bytes this store appended since. Writes seen
//! refused are answered from the last probe, so a full disk costs one
//! `statvfs` per interval, not one per request.
//!
//! Once refusing, writes resume only when the space available exceeds the
//! reserve by an eighth more, so a disk hovering at the line does not flip
//! (and log) on every write.
//!
//! Invariant: with a nonzero reserve, `full` is true whenever the last
//! successful probe saw less than the reserve available, and the store
//! admits no write that grows it while `full`.
//!
//! This module does not know what is written; the store calls
//! `SpaceGuard::admit` before a write and `SpaceGuard::note_appended`
//! after it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::StoreError;
use crate::stats::{Counters, bump};

/// How long one probe of the free space holds.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The default reserve: room for fjall to flush a full memtable of every
/// keyspace and to compact, plus the writes of one probe interval.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 512 << 20;

/// Refuses writes while the data directory's filesystem has less than the
/// reserve available; see the module documentation.
pub(crate) struct SpaceGuard {
    path: PathBuf,
    /// 0 turns the check off.
    reserve_bytes: u64,
    /// Bytes that may still be appended before a new probe is due.
    budget_bytes: AtomicI64,
    /// When the last probe was taken, in milliseconds since `started`.
    probed_at_ms: AtomicU64,
    started: Instant,
    /// Writes are refused for lack of space.
    full: AtomicBool,
    /// What the last probe saw.
    available_bytes: AtomicU64,
    /// The last probe failed (logged once per run of failures).
    probe_failing: AtomicBool,
    /// One probe at a time; taken only when a probe is due.
    probing: Mutex<()>,
    counters: Arc<Counters>,
    /// Test hook: the space available, instead of asking the filesystem.
    #[cfg(test)]
    available_override: Mutex<Option<u64>>,
}

impl std::fmt::Debug for SpaceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceGuard")
            .field("path", &self.path)
            .field("reserve_bytes", &self.reserve_bytes)
            .field("full", &self.full.load(Ordering::Relaxed))
            .field(
                "available_bytes",
                &self.available_bytes.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl SpaceGuard {
    /// A guard for the filesystem holding `path`; probes it once now, so a
    /// store opened on a full disk refuses writes from the start.
    pub(crate) fn new(path: PathBuf, reserve_bytes: u64, counters: Arc<Counters>) -> SpaceGuard {
        let guard = SpaceGuard {
            path,
            reserve_bytes,
            budget_bytes: AtomicI64::new(0),
            probed_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            full: AtomicBool::new(false),
            available_bytes: AtomicU64::new(0),
            probe_failing: AtomicBool::new(false),
            probing: Mutex::new(()),
            counters,
            #[cfg(test)]
            available_override: Mutex::new(None),
        };
        if reserve_bytes > 0 {
            guard.probe();
        }
        guard
    }

    /// Admits a write that grows the store, or refuses it with
    /// [`StoreError::DiskFull`] (counted) while space is below the reserve.
    pub(crate) fn admit(&self) -> Result<(), StoreError> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let fast = !self.full.load(Ordering::Acquire)
            && self.budget_bytes.load(Ordering::Relaxed) > 0
            && self.fresh();
        if !fast {
            self.probe_if_due();
        }
        if self.full.load(Ordering::Acquire) {
            bump(&self.counters.write_refusals_disk_full);
            return Err(StoreError::DiskFull {
                available_bytes: self.available_bytes.load(Ordering::Relaxed),
                reserve_bytes: self.reserve_bytes,
            });
        }
        Ok(())
    }

    /// Counts bytes appended since the last probe against its budget.
    pub(crate) fn note_appended(&self, size_bytes: u64) {
        if self.reserve_bytes > 0 {
            let size = i64::try_from(size_bytes).unwrap_or(i64::MAX);
            self.budget_bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Probes if the last probe is older than [`PROBE_INTERVAL`], so the
    /// figures (and the end of a refusal) show without a write.
    pub(crate) fn refresh(&self) {
        if self.reserve_bytes > 0 && !self.fresh() {
            self.probe_if_due();
        }
    }

    /// The configured reserve (0: no check).
    pub(crate) fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// Whether writes are refused for lack of space.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Bytes available at the last probe (0 with no check).
    pub(crate) fn available_bytes(&self) -> u64 {
        self.available_bytes.load(Ordering::Relaxed)
    }

    /// Test hook: makes probes see `available` bytes (`None`: the
    /// filesystem's figure again) and probes at once.
    #[cfg(test)]
    pub(crate) fn set_available(&self, available: Option<u64>) {
        *self.available_override.lock() = available;
        self.probe();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fresh(&self) -> bool {
        let age_ms = self
            .now_ms()
            .saturating_sub(self.probed_at_ms.load(Ordering::Relaxed));
        u128::from(age_ms) < PROBE_INTERVAL.as_millis()
    }

    /// Probes unless another thread just did and its answer still holds.
    fn probe_if_due(&self) {
        let _probing = self.probing.lock();
        let exhausted =
            !self.full.load(Ordering::Acquire) && self.budget_bytes.load(Ordering::Relaxed) <= 0;
        if self.fresh() && !exhausted {
            return;
        }
        self.probe_locked();
    }

    fn probe(&self) {
        let _probing = self.probing.lock();
        self.probe_locked();
    }

    /// Asks the filesystem and moves the state; the caller holds `probing`.
    fn probe_locked(&self) {
        self.probed_at_ms.store(self.now_ms(), Ordering::Relaxed);
        let available = match self.available() {
            Ok(available) => {
                if self.probe_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "free space can be probed again");
                }
                available
            }
            Err(err) => {
                // Keep the last state: without a figure, neither start nor
                // stop refusing. Allow a probe interval's worth of writes.
                if !self.probe_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %self.path.display(),
                        %err,
                        "cannot probe the free space of the data directory; \
                         the disk reserve is not enforced until it can"
                    );
                }
                let budget = i64::try_from(self.reserve_bytes / 2).unwrap_or(i64::MAX);
                self.budget_bytes.store(budget, Ordering::Relaxed);
                return;
            }
        };
        self.available_bytes.store(available, Ordering::Relaxed);
        let was_full = self.full.load(Ordering::Acquire);
        let resume_bytes = self.reserve_bytes.saturating_add(self.reserve_bytes / 8);
        let full = if was_full {
            available < resume_bytes
        } else {
            available < self.reserve_bytes
        };
        let margin = available.saturating_sub(self.reserve_bytes) / 2;
        let budget = if full {
            0
        } else {
            i64::try_from(margin).unwrap_or(i64::MAX)
        };
        self.budget_bytes.store(budget, Ordering::Relaxed);
        if full == was_full {
            return;
        }
        self.full.store(full, Ordering::Release);
        if full {
            tracing::error!(
                path = %self.path.display(),
                available_bytes = available,
                reserve_bytes = self.reserve_bytes,
                "disk space is below the reserve: refusing writes until space is freed \
                 (reads go on; nothing was lost)"
            );
        } else {
            tracing::info!(
                path = %self.path.display(),
                available_bytes = available,
                reserve_bytes = self.reserve_bytes,
                "disk space is back above the reserve: taking writes again"
            );
        }
    }

    fn available(&self) -> std::io::Result<u64> {
        #[cfg(test)]
        if let Some(available) = *self.available_override.lock() {
            return Ok(available);
        }
        let stat = rustix::fs::statvfs(&self.path)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}
