//! Counters the store keeps about itself, and the snapshot it hands out.
//!
//! Counters are relaxed atomics: a snapshot is not a consistent cut across
//! counters, which is fine for metrics. This module does not export them to
//! Prometheus; the node does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::PoisonCause;

/// Buckets of the fsync batch size histogram: bucket `i` counts batches of
/// `2^i ..= 2^(i+1) - 1` writes; the last bucket takes everything larger.
pub const FSYNC_BATCH_BUCKETS: usize = 10;

/// A snapshot of the store's counters. Counters count since the store opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Calls to `get`.
    pub gets: u64,
    /// Successful `put`s (including deletes).
    pub puts: u64,
    /// Successful `merge`s.
    pub merges: u64,
    /// Merges that changed nothing and so wrote nothing.
    pub merges_unchanged: u64,
    /// Object records written.
    pub keys_written: u64,
    /// Bytes of object records written.
    pub bytes_written: u64,
    /// Dots handed out.
    pub dots_minted: u64,
    /// The next counter this replica's actor will hand out.
    pub dot_counter_next: u64,
    /// Fsyncs that persisted a new dot counter ceiling.
    pub dot_leases: u64,
    /// Times the dot counter had to jump past an object that already held a
    /// dot of ours at or above it (should stay 0; see the log).
    pub dot_counter_jumps: u64,
    /// Fsyncs of the journal (group commits, interval syncs, leases, props).
    pub fsyncs: u64,
    /// Writes made durable by fsyncs, summed (divide by `fsyncs` for the mean
    /// batch size).
    pub fsync_writes_sum: u64,
    /// Most writes one fsync made durable.
    pub fsync_batch_max: u64,
    /// Histogram of writes per fsync: see [`FSYNC_BATCH_BUCKETS`].
    pub fsync_batch_histogram: [u64; FSYNC_BATCH_BUCKETS],
    /// Time spent in fsync, summed.
    pub fsync_latency_us_sum: u64,
    /// Longest fsync.
    pub fsync_latency_us_max: u64,
    /// Writes refused for exceeding the sibling limit.
    pub sibling_limit_refusals: u64,
    /// Writes that left an object above the sibling warning threshold.
    pub sibling_warnings: u64,
    /// Writes refused for exceeding the object size limit.
    pub object_size_refusals: u64,
    /// Writes that left an object above the size warning threshold.
    pub object_size_warnings: u64,
    /// Keys removed by reaping or after hand-off.
    pub keys_removed: u64,
    /// Whether a failed write to disk poisoned the store: it refuses writes
    /// until restart.
    pub poisoned: bool,
    /// What poisoned it.
    pub poison_cause: Option<PoisonCause>,
    /// Writes refused because the disk was below the reserve (nothing was
    /// written; they resume once space is freed).
    pub write_refusals_disk_full: u64,
    /// Writes refused because the store was poisoned.
    pub write_refusals_poisoned: u64,
    /// Journal appends that failed for lack of space (ENOSPC, EDQUOT).
    pub write_errors_no_space: u64,
    /// Journal appends that failed with another I/O error.
    pub write_errors_io: u64,
    /// Fsyncs that failed.
    pub fsync_errors: u64,
    /// Times fjall was found to have stopped taking writes on its own (a
    /// background flush or compaction failed).
    pub engine_failures: u64,
    /// Whether writes are refused because the disk is below the reserve.
    pub disk_full: bool,
    /// Bytes available on the data directory's filesystem at the last
    /// probe (0 when the reserve is off).
    pub disk_available_bytes: u64,
    /// The reserve below which writes are refused (0: off).
    pub disk_reserve_bytes: u64,
    /// Disk space used by the store (journal and tables), from fjall.
    pub disk_space_bytes: u64,
}

/// The live counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) merges_unchanged: AtomicU64,
    pub(crate) keys_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) dots_minted: AtomicU64,
    pub(crate) dot_leases: AtomicU64,
    pub(crate) dot_counter_jumps: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_writes_sum: AtomicU64,
    pub(crate) fsync_batch_max: AtomicU64,
    pub(crate) fsync_batch_histogram: [AtomicU64; FSYNC_BATCH_BUCKETS],
    pub(crate) fsync_latency_us_sum: AtomicU64,
    pub(crate) fsync_latency_us_max: AtomicU64,
    pub(crate) sibling_limit_refusals: AtomicU64,
    pub(crate) sibling_warnings: AtomicU64,
    pub(crate) object_size_refusals: AtomicU64,
    pub(crate) object_size_warnings: AtomicU64,
    pub(crate) keys_removed: AtomicU64,
    pub(crate) poisoned: AtomicBool,
    /// Set once, with `poisoned`.
    pub(crate) poison_cause: Mutex<Option<PoisonCause>>,
    pub(crate) write_refusals_disk_full: AtomicU64,
    pub(crate) write_refusals_poisoned: AtomicU64,
    pub(crate) write_errors_no_space: AtomicU64,
    pub(crate) write_errors_io: AtomicU64,
    pub(crate) fsync_errors: AtomicU64,
    pub(crate) engine_failures: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Records one fsync that made `writes` writes durable in `latency`.
    pub(crate) fn record_fsync(&self, writes: u64, latency: Duration) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        bump(&self.fsyncs);
        self.fsync_writes_sum.fetch_add(writes, Ordering::Relaxed);
        self.fsync_batch_max.fetch_max(writes, Ordering::Relaxed);
        self.fsync_latency_us_sum
            .fetch_add(latency_us, Ordering::Relaxed);
        self.fsync_latency_us_max
            .fetch_max(latency_us, Ordering::Relaxed);
        if writes > 0 {
            let bucket = (writes.ilog2() as usize).min(FSYNC_BATCH_BUCKETS - 1);
            bump(&self.fsync_batch_histogram[bucket]);
        }
    }

    /// A snapshot; the disk figures and `dot_counter_next` are filled by
    /// the store.
    pub(crate) fn snapshot(&self) -> StoreStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            gets: load(&self.gets),
            puts: load(&self.puts),
            merges: load(&self.merges),
            merges_unchanged: load(&self.merges_unchanged),
            keys_written: load(&self.keys_written),
            bytes_written: load(&self.bytes_written),
            dots_minted: load(&self.dots_minted),
            dot_counter_next: 0,
            dot_leases: load(&self.dot_leases),
            dot_counter_jumps: load(&self.dot_counter_jumps),
            fsyncs: load(&self.fsyncs),
            fsync_writes_sum: load(&self.fsync_writes_sum),
            fsync_batch_max: load(&self.fsync_batch_max),
            fsync_batch_histogram: std::array::from_fn(|i| load(&self.fsync_batch_histogram[i])),
            fsync_latency_us_sum: load(&self.fsync_latency_us_sum),
            fsync_latency_us_max: load(&self.fsync_latency_us_max),
            sibling_limit_refusals: load(&self.sibling_limit_refusals),
            sibling_warnings: load(&self.sibling_warnings),
            object_size_refusals: load(&self.object_size_refusals),
            object_size_warnings: load(&self.object_size_warnings),
            keys_removed: load(&self.keys_removed),
            poisoned: self.poisoned.load(Ordering::Relaxed),
            poison_cause: *self.poison_cause.lock(),
            write_refusals_disk_full: load(&self.write_refusals_disk_full),
            write_refusals_poisoned: load(&self.write_refusals_poisoned),
            write_errors_no_space: load(&self.write_errors_no_space),
            write_errors_io: load(&self.write_errors_io),
            fsync_errors: load(&self.fsync_errors),
            engine_failures: load(&self.engine_failures),
            disk_full: false,
            disk_available_bytes: 0,
            disk_reserve_bytes: 0,
            disk_space_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_batches_land_in_log2_buckets() {
        let counters = Counters::default();
        for writes in [1, 2, 3, 4, 100, 100_000] {
            counters.record_fsync(writes, Duration::from_micros(10));
        }
        let stats = counters.snapshot();
        assert_eq!(stats.fsyncs, 6);
        assert_eq!(stats.fsync_writes_sum, 100_110);
        assert_eq!(stats.fsync_batch_max, 100_000);
        assert_eq!(stats.fsync_batch_histogram[0], 1);
        assert_eq!(stats.fsync_batch_histogram[1], 2);
        assert_eq!(stats.fsync_batch_histogram[2], 1);
        assert_eq!(stats.fsync_batch_histogram[6], 1);
        assert_eq!(stats.fsync_batch_histogram[9], 1);
        assert_eq!(stats.fsync_latency_us_sum, 60);
    }
}
