//! Group commit in numbers: writes per second and writes per fsync for 1, 8,
//! 32 and 128 writer threads with `SyncPolicy::Always`, on a temporary
//! directory (so on whatever disk backs `$TMPDIR`).
//!
//! Run with `cargo run -p storage --example group_commit [--release]
//! [seconds per run]`. It prints figures; it asserts nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use storage::{Content, Metadata, Store, StoreConfig, SyncPolicy, VersionVector, WriteOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 2.0,
    };
    let run_for = Duration::from_secs_f64(seconds);
    println!(
        "{:>7} {:>10} {:>8} {:>10} {:>10} {:>14}",
        "threads", "writes/s", "fsyncs", "avg batch", "max batch", "avg fsync µs"
    );
    for threads in [1usize, 8, 32, 128] {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(Store::open(StoreConfig {
            sync: SyncPolicy::Always,
            ..StoreConfig::new(dir.path())
        })?);
        // Lease the first block of dots so its fsync is not measured.
        store.put(
            b"bench",
            b"warm",
            &VersionVector::new(),
            value(),
            WriteOptions::default(),
        )?;
        let before = store.stats();
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(threads + 1));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, stop, writes, barrier) =
                    (store.clone(), stop.clone(), writes.clone(), barrier.clone());
                std::thread::spawn(move || -> Result<(), storage::StoreError> {
                    barrier.wait();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("t{t}-{i}");
                        let written = store.put(
                            b"bench",
                            key.as_bytes(),
                            &VersionVector::new(),
                            value(),
                            WriteOptions::default(),
                        )?;
                        assert!(written.durable);
                        writes.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            handle.join().map_err(|_| "writer panicked")??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = store.stats();
        let fsyncs = after.fsyncs - before.fsyncs;
        let synced = after.fsync_writes_sum - before.fsync_writes_sum;
        let latency_us = after.fsync_latency_us_sum - before.fsync_latency_us_sum;
        let writes = writes.load(Ordering::Relaxed);
        println!(
            "{:>7} {:>10.0} {:>8} {:>10.1} {:>10} {:>14.0}",
            threads,
            writes as f64 / elapsed,
            fsyncs,
            synced as f64 / fsyncs.max(1) as f64,
            after.fsync_batch_max,
            latency_us as f64 / fsyncs.max(1) as f64,
        );
    }
    Ok(())
}

fn value() -> Content {
    Content {
        value: vec![b'x'; 100],
        meta: Metadata {
            content_type: "application/octet-stream".into(),
            ..Metadata::default()
        },
        deleted: false,
    }
}
