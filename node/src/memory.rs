//! Memory faulted in at start, before the node takes requests.
//!
//! A node's heap grows with its store until it holds its memtables (the
//! active one and those being flushed), fjall's block cache and the
//! requests in flight; freed memory stays in the process for reuse (the
//! binary sets the allocator so). While it grows, the first touch of
//! every new page is a page fault, and where the allocator's huge pages
//! are granted (the kernel's THP setting `madvise` or `always`) the kernel
//! zeroes a whole 2 MiB page at once, on the thread that touched it. For
//! the write path that thread is usually the applier, so every write
//! queued behind it waits. On our test VM, whose host backs guest memory
//! only when it is first touched, that is about 13 µs per 4 KiB and
//! several milliseconds per huge page: in a fresh node's first minute
//! under writes, a tenth of the machine's CPU time went to zeroing pages
//! and the slowest write of every second took 50–100 ms.
//!
//! So the node touches the memory it expects to grow into once at start
//! and frees it (JVM databases do the same with `-XX:+AlwaysPreTouch`,
//! which Cassandra and Elasticsearch ship enabled). The allocator keeps
//! the pages, and the store's allocations reuse them without a fault.
//! The price is the start-up time (about a second per 256 MiB on that VM,
//! a tenth of that on bare metal) and a resident set that starts near
//! its working size instead of growing into it.
//!
//! The memory is touched in 4 KiB blocks, the size the node's own
//! allocations come in, so that it lands in the allocator's shared pages
//! and not in a large block of its own that would be returned whole.
//!
//! Boundary: this module only touches and frees memory; whether freed
//! memory stays in the process is the allocator's setting, made by the
//! binary.

use std::time::{Duration, Instant};

/// Memory a node touches at start unless configured otherwise: two
/// memtables of the largest size a keyspace draws (64 MiB), fjall's block
/// cache (32 MiB), and room for requests in flight. A node of the dev
/// cluster under a sustained write load grew to 210–225 MiB.
pub const DEFAULT_PREFAULT_BYTES: u64 = 192 << 20;

/// The block touched at a time.
const BLOCK_BYTES: usize = 4096;

/// What [`prefault`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefaulted {
    /// Bytes touched and freed.
    pub bytes: u64,
    /// Bytes asked for; more than `bytes` when capped by available memory.
    pub requested: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Touches `bytes` of heap (at most half of the memory the kernel reports
/// available) and frees it again.
pub fn prefault(bytes: u64) -> Prefaulted {
    let started = Instant::now();
    let target = capped(bytes, available_bytes());
    let blocks = usize::try_from(target / BLOCK_BYTES as u64).unwrap_or(usize::MAX);
    let mut held: Vec<Box<[u8]>> = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let mut block = vec![0u8; BLOCK_BYTES].into_boxed_slice();
        // Fresh memory may be handed out as known zeros without a touch;
        // a non-zero fill (one memset) writes every page of the block.
        block.fill(1);
        held.push(block);
    }
    // Keep the compiler from eliding the allocations.
    std::hint::black_box(&held);
    drop(held);
    Prefaulted {
        bytes: blocks as u64 * BLOCK_BYTES as u64,
        requested: bytes,
        elapsed: started.elapsed(),
    }
}

/// `requested`, but at most half of `available`: touching memory the
/// machine does not have would make the kernel swap or kill the node for
/// an optimisation.
fn capped(requested: u64, available: Option<u64>) -> u64 {
    match available {
        Some(available) => requested.min(available / 2),
        None => requested,
    }
}

/// `MemAvailable` from `/proc/meminfo`, where there is one.
fn available_bytes() -> Option<u64> {
    parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_what_is_asked_in_whole_blocks() {
        let done = prefault(8 << 20);
        if available_bytes().is_none_or(|a| a / 2 >= 8 << 20) {
            assert_eq!(done.bytes, 8 << 20);
        }
        assert_eq!(done.requested, 8 << 20);
        assert_eq!(prefault(0).bytes, 0);
        assert_eq!(prefault(BLOCK_BYTES as u64 + 1).bytes, BLOCK_BYTES as u64);
    }

    #[test]
    fn never_more_than_half_the_available_memory() {
        assert_eq!(capped(1 << 30, Some(1 << 30)), 512 << 20);
        assert_eq!(capped(64 << 20, Some(1 << 30)), 64 << 20);
        assert_eq!(capped(64 << 20, None), 64 << 20);
    }

    #[test]
    fn reads_mem_available_from_meminfo() {
        let meminfo = "MemTotal:       24596180 kB\nMemFree:        23000000 kB\n\
                       MemAvailable:   23456789 kB\nBuffers:            1234 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(23_456_789 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
    }
}
