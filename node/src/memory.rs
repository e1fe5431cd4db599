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
//! The price is the start-up time (on that VM 0.97 s for 192 MiB the
//! host had not backed yet, 40–80 ms for memory it had) and a resident
//! set that starts near its working size instead of growing into it.
//!
//! The memory is touched in 4 KiB blocks, the size the node's own
//! allocations come in, so that it lands in the allocator's shared pages
//! and not in a large block of its own that would be returned whole.
//!
//! Boundary: this module only touches and frees memory; whether freed
//! memory stays in the process is the allocator's setting, made by the
//! binary.

use std::path::Path;
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
    /// Bytes touched and freed: fewer than asked when capped by the
    /// available memory.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Touches `bytes` of heap (at most half of the memory available to the
/// process, the machine's or its container's) and frees it again.
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

/// Memory the process may still take: the kernel's `MemAvailable`, and
/// in a cgroup with a memory limit (a container), at most the room left
/// under that limit. `None` where neither can be read.
fn available_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| parse_mem_available(&meminfo));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| cgroup_room(&own, Path::new("/sys/fs/cgroup")));
    machine.into_iter().chain(cgroup).min()
}

/// The room left under the memory limit of the cgroup named in
/// `own_cgroup` (the text of `/proc/self/cgroup`), with the cgroup file
/// system mounted at `root`: v2's `memory.max` less `memory.current`, or
/// v1's `memory.limit_in_bytes` less `memory.usage_in_bytes`. `None`
/// without a limit (v2's `max`) or when the files cannot be read; v1's
/// "no limit" is a number larger than any machine's memory.
fn cgroup_room(own_cgroup: &str, root: &Path) -> Option<u64> {
    for line in own_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let (dir, limit, usage) = if controllers.is_empty() {
            (root.join(path), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory").join(path),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        if let (Some(limit), Some(usage)) = (read(limit), read(usage)) {
            return Some(limit.saturating_sub(usage));
        }
    }
    None
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn touches_what_is_asked_in_whole_blocks() {
        let done = prefault(8 << 20);
        if available_bytes().is_none_or(|a| a / 2 >= 8 << 20) {
            assert_eq!(done.bytes, 8 << 20);
        }
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
    fn a_cgroup_limit_leaves_its_room_unlimited_ones_none() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // v2: one line, no controllers.
        write("pod/memory.max", "536870912\n");
        write("pod/memory.current", "104857600\n");
        assert_eq!(
            cgroup_room("0::/pod\n", root.path()),
            Some(536_870_912 - 104_857_600)
        );
        write("free/memory.max", "max\n");
        write("free/memory.current", "104857600\n");
        assert_eq!(cgroup_room("0::/free\n", root.path()), None);
        // v1: the memory controller's own hierarchy.
        write("memory/box/memory.limit_in_bytes", "268435456\n");
        write("memory/box/memory.usage_in_bytes", "300000000\n");
        let v1 = "5:cpu,cpuacct:/\n4:memory:/box\n0::/\n";
        assert_eq!(cgroup_room(v1, root.path()), Some(0));
        assert_eq!(cgroup_room("0::/missing\n", root.path()), None);
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
