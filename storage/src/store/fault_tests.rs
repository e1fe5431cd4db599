//! Storage faults: a disk below the reserve, a journal append that meets
//! ENOSPC, and (on a real, small filesystem) the journal, the committer's
//! hand-over of a group of small writes and a memtable flush running out
//! of space.
//!
//! The real-filesystem tests mount a 16 MiB ext4 image on a loop device (a
//! size-limited tmpfs when loop devices are missing), which needs root.
//! Without it they print SKIP and pass, except with `CI=true`, where they
//! fail: CI runs as root and must not skip them unnoticed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::dvv::Metadata;
use crate::error::PoisonCause;

const PUT: WriteOptions = WriteOptions {
    resolve_by_time: false,
    repair: false,
};

fn content(value: &[u8]) -> Content {
    Content {
        value: value.to_vec(),
        meta: Metadata {
            content_type: "application/octet-stream".into(),
            last_modified_us: 1,
            ..Metadata::default()
        },
        deleted: false,
    }
}

fn put(store: &Store, key: &str, value: &[u8]) -> Result<Written, StoreError> {
    store.put(
        b"b",
        key.as_bytes(),
        &VersionVector::new(),
        content(value),
        PUT,
    )
}

fn value_of(store: &Store, key: &str) -> Option<Vec<u8>> {
    let object = store.get(b"b", key.as_bytes()).unwrap()?;
    let mut live = object.live_siblings();
    let value = live.next().map(|s| s.content.value.clone());
    assert!(live.next().is_none(), "{key} has siblings");
    value
}

fn open_with_reserve(dir: &Path, sync: SyncPolicy, disk_reserve_bytes: u64) -> Store {
    Store::open(StoreConfig {
        sync,
        disk_reserve_bytes,
        ..StoreConfig::new(dir)
    })
    .unwrap()
}

// ---------------------------------------------------------------------------
// Injected faults.
// ---------------------------------------------------------------------------

#[test]
fn a_disk_below_the_reserve_refuses_writes_until_space_returns() {
    const RESERVE: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_reserve(dir.path(), SyncPolicy::Always, RESERVE);
    let acked = put(&store, "k1", b"v1").unwrap();
    assert!(acked.durable);
    let hint = acked.object.clone();
    store.put_hint(7, b"b", b"k1", &hint).unwrap();
    let before = store.stats();

    store.set_disk_available(Some(RESERVE - 1));
    let refused_at = |available: u64, result: Result<(), StoreError>| {
        assert!(
            matches!(
                result,
                Err(StoreError::DiskFull {
                    available_bytes,
                    reserve_bytes: RESERVE,
                }) if available_bytes == available
            ),
            "{result:?}"
        );
    };
    let refused = |result| refused_at(RESERVE - 1, result);
    refused(put(&store, "k2", b"v2").map(drop));
    refused(
        store
            .delete(b"b", b"k1", &acked.object.version, PUT)
            .map(drop),
    );
    refused(store.merge(b"b", b"k3", &hint, PUT).map(drop));
    refused(store.put_hint(8, b"b", b"k1", &hint).map(drop));
    refused(store.set_bucket_props(b"b", &BucketProps::default()));
    // The message says what is wrong and that it passes.
    let message = put(&store, "k2", b"v2").unwrap_err().to_string();
    assert!(message.starts_with("disk full: "), "{message}");
    assert!(message.contains("resume once space is freed"), "{message}");

    // Nothing of the refused writes was made: no dot, no record.
    let during = store.stats();
    assert_eq!(during.dots_minted, before.dots_minted);
    assert_eq!(during.keys_written, before.keys_written);
    assert!(during.disk_full);
    assert!(!during.poisoned);
    assert_eq!(during.write_refusals_disk_full, 6);
    assert_eq!(during.disk_available_bytes, RESERVE - 1);
    assert_eq!(during.disk_reserve_bytes, RESERVE);
    // Reads go on, and removals too: they are how space comes back. So
    // does the node's own small cluster state, which a leave needs.
    assert_eq!(value_of(&store, "k1").unwrap(), b"v1");
    assert_eq!(value_of(&store, "k2"), None);
    assert!(store.remove_hint(7, b"b", b"k1", &hint).unwrap());
    store.set_cluster_meta("ring", b"x").unwrap();

    // Back at the reserve is not enough: an eighth more is needed.
    store.set_disk_available(Some(RESERVE));
    refused_at(RESERVE, put(&store, "k2", b"v2").map(drop));
    store.set_disk_available(Some(RESERVE + RESERVE / 8));
    assert!(put(&store, "k2", b"v2").unwrap().durable);
    store
        .set_bucket_props(b"b", &BucketProps::default())
        .unwrap();
    let after = store.stats();
    assert!(!after.disk_full && !after.poisoned);
    assert_eq!(value_of(&store, "k1").unwrap(), b"v1");

    // And a restart finds every acknowledged write.
    store.close().unwrap();
    let store = open_with_reserve(dir.path(), SyncPolicy::Always, RESERVE);
    assert_eq!(value_of(&store, "k1").unwrap(), b"v1");
    assert_eq!(value_of(&store, "k2").unwrap(), b"v2");
}

#[test]
fn a_journal_append_meeting_enospc_poisons_the_store_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_reserve(dir.path(), SyncPolicy::Always, 0);
    assert!(put(&store, "k1", b"v1").unwrap().durable);
    store.fail_next_append();
    let no_space = |result: Result<(), StoreError>| {
        assert!(
            matches!(
                result,
                Err(StoreError::Poisoned {
                    cause: PoisonCause::NoSpace
                })
            ),
            "{result:?}"
        );
    };
    // The write that met ENOSPC is not acknowledged, nor is any after it.
    no_space(put(&store, "k2", b"v2").map(drop));
    no_space(put(&store, "k3", b"v3").map(drop));
    let k1 = store.get(b"b", b"k1").unwrap().unwrap();
    no_space(store.merge(b"b", b"k4", &k1, PUT).map(drop));
    no_space(store.set_bucket_props(b"b", &BucketProps::default()));
    no_space(store.sync_all());
    let message = put(&store, "k3", b"v3").unwrap_err().to_string();
    assert_eq!(
        message,
        "storage refuses writes until the node restarts: the disk filled up during a journal write"
    );
    // Reads go on.
    assert_eq!(value_of(&store, "k1").unwrap(), b"v1");
    let stats = store.stats();
    assert!(stats.poisoned && !stats.disk_full);
    assert_eq!(stats.poison_cause, Some(PoisonCause::NoSpace));
    assert_eq!(stats.write_errors_no_space, 1);
    assert_eq!(stats.write_refusals_poisoned, 4);
    assert!(store.close().is_err());

    // A restart recovers from the journal and takes writes again.
    let store = open_with_reserve(dir.path(), SyncPolicy::Always, 0);
    assert_eq!(value_of(&store, "k1").unwrap(), b"v1");
    assert_eq!(value_of(&store, "k2"), None);
    assert!(put(&store, "k2", b"v2").unwrap().durable);
    assert!(!store.stats().poisoned);
}

#[test]
fn writes_waiting_for_their_fsync_when_an_append_fails_are_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // `Never` leaves the first write's durability to a later fsync, so it
    // is surely still waiting when the second write's append fails.
    let store = open_with_reserve(dir.path(), SyncPolicy::Never, 0);
    let waiting = store
        .put_deferred(b"b", b"k1", &VersionVector::new(), content(b"v1"), PUT)
        .unwrap();
    store.fail_next_append();
    assert!(put(&store, "k2", b"v2").is_err());
    assert!(matches!(
        store.await_durable(waiting.seq),
        Err(StoreError::Poisoned {
            cause: PoisonCause::NoSpace
        })
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    store.on_durable(waiting.seq, move |result| tx.send(result).unwrap());
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(store.sync_all(), Err(StoreError::Poisoned { .. })));
}

// ---------------------------------------------------------------------------
// A real, small filesystem.
// ---------------------------------------------------------------------------

/// A small filesystem mounted for one test; unmounted (and its image
/// removed) on drop, also when the test fails.
struct SmallFs {
    /// Where it is mounted.
    mount: tempfile::TempDir,
    /// Holds the ext4 image, outside the mount.
    _image_dir: tempfile::TempDir,
    kind: &'static str,
}

impl SmallFs {
    fn mount(size_bytes: u64) -> Result<SmallFs, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("mounting a small filesystem needs root".into());
        }
        let mount = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = image_dir.path().join("fs.img");
        let ext4 = Self::mount_ext4(&image, mount.path(), size_bytes);
        let kind = match ext4 {
            Ok(()) => "ext4 on a loop device",
            Err(ext4_failed) => {
                let size = format!("size={size_bytes}");
                run(Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                    .arg(mount.path()))
                .map_err(|tmpfs_failed| {
                    format!("no small filesystem: ext4 ({ext4_failed}), tmpfs ({tmpfs_failed})")
                })?;
                "tmpfs"
            }
        };
        Ok(SmallFs {
            mount,
            _image_dir: image_dir,
            kind,
        })
    }

    fn mount_ext4(image: &Path, at: &Path, size_bytes: u64) -> Result<(), String> {
        let file = std::fs::File::create(image).map_err(|e| e.to_string())?;
        file.set_len(size_bytes).map_err(|e| e.to_string())?;
        drop(file);
        // No blocks kept for root: the test runs as root, and the store
        // counts only what unprivileged users may use.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at))
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn available_bytes(&self) -> u64 {
        let stat = rustix::fs::statvfs(self.path()).unwrap();
        stat.f_bavail * stat.f_frsize
    }

    /// Writes a file of zeros until the filesystem is full (or `limit`
    /// bytes), fsynced; returns its path.
    fn fill(&self, name: &str, limit: u64) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        while written < limit {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err) if err.kind() == std::io::ErrorKind::StorageFull => break,
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
        // On a full disk the fsync may fail too; the bytes count anyway.
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = run(Command::new("umount").arg(self.mount.path()))
            .or_else(|_| run(Command::new("umount").arg("-l").arg(self.mount.path())));
        if let Err(err) = unmounted {
            eprintln!("could not unmount {}: {err}", self.mount.path().display());
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?}: {}",
            command,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A small filesystem, or `None` after printing why the test skips. With
/// `CI=true` a missing filesystem fails the test instead.
fn small_fs(test: &str, size_bytes: u64) -> Option<SmallFs> {
    match SmallFs::mount(size_bytes) {
        Ok(fs) => {
            eprintln!("{test}: {} of {size_bytes} bytes", fs.kind);
            Some(fs)
        }
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} must run in CI (CI=true), but: {why}")
        }
        Err(why) => {
            println!("SKIP {test}: {why}");
            None
        }
    }
}

/// A store with no reserve (`sync=always`) on a fresh 16 MiB filesystem;
/// with the filesystem and the store's directory. `None`: skipped.
fn store_on_small_fs(test: &str) -> Option<(SmallFs, PathBuf, Store)> {
    let fs = small_fs(test, 16 << 20)?;
    let data_dir = fs.path().join("store");
    let store = open_with_reserve(&data_dir, SyncPolicy::Always, 0);
    Some((fs, data_dir, store))
}

/// A value that does not compress, so it takes its size on disk.
fn random_value(size_bytes: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut value = vec![0u8; size_bytes];
    rand::rng().fill_bytes(&mut value);
    value
}

/// Puts values of `value_bytes` until the store refuses one; returns what
/// it acknowledged and the refusal. Bounded: the tests call it with far
/// less room left than 10,000 values take.
fn write_until_refused(
    store: &Store,
    prefix: &str,
    value_bytes: usize,
) -> (BTreeMap<String, Vec<u8>>, StoreError) {
    let mut acked = BTreeMap::new();
    for i in 0..10_000u32 {
        let key = format!("{prefix}{i:05}");
        let value = random_value(value_bytes);
        match put(store, &key, &value) {
            Ok(written) => {
                assert!(written.durable);
                acked.insert(key, value);
            }
            Err(err) => return (acked, err),
        }
    }
    panic!("10,000 writes of {value_bytes} bytes fit on a small filesystem");
}

fn assert_all_readable(store: &Store, acked: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in acked {
        assert_eq!(
            value_of(store, key).as_ref(),
            Some(value),
            "acknowledged {key} lost"
        );
    }
}

#[test]
fn a_real_full_disk_with_no_reserve_poisons_and_a_restart_recovers() {
    let test = "a_real_full_disk_with_no_reserve_poisons_and_a_restart_recovers";
    let Some(fs) = small_fs(test, 16 << 20) else {
        return;
    };
    let data_dir = fs.path().join("store");
    // Room to give back later; it also leaves less to fill with fsynced
    // writes, which are slow on a loop device.
    let filler = fs.fill("filler", 8 << 20);
    let store = open_with_reserve(&data_dir, SyncPolicy::Always, 0);
    let (acked, err) = write_until_refused(&store, "k", 32 << 10);
    eprintln!("{} writes acknowledged, then: {err}", acked.len());
    assert!(acked.len() > 20, "only {} writes fit", acked.len());
    // ENOSPC reaches the journal append on ext4 (delayed allocation
    // reserves blocks at write time) and on tmpfs.
    assert!(
        matches!(
            err,
            StoreError::Poisoned {
                cause: PoisonCause::NoSpace
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        put(&store, "after", b"x"),
        Err(StoreError::Poisoned { .. })
    ));
    assert_all_readable(&store, &acked);
    let stats = store.stats();
    assert!(stats.poisoned);
    assert_eq!(stats.write_errors_no_space, 1);
    assert!(store.close().is_err());

    // A restart on the still-full disk recovers every acknowledged write
    // (opening an existing store writes nothing of ours).
    let store = open_with_reserve(&data_dir, SyncPolicy::Always, 0);
    assert_all_readable(&store, &acked);
    assert!(!store.stats().poisoned);
    drop(store);

    // With space back, a restart takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let store = open_with_reserve(&data_dir, SyncPolicy::Always, 0);
    assert_all_readable(&store, &acked);
    assert!(put(&store, "after", b"x").unwrap().durable);
    assert_eq!(value_of(&store, "after").unwrap(), b"x");
    store.close().unwrap();
}

/// Small writes stay in fjall's journal buffer until the committer hands
/// the group to the OS before its fsync, so on a full disk their ENOSPC
/// comes from that hand-over, not from an append: it must still read as
/// no space, and no write of the failed group may count.
#[test]
fn small_writes_meeting_enospc_at_the_committers_flush_read_as_no_space() {
    let Some((fs, data_dir, store)) =
        store_on_small_fs("small_writes_meeting_enospc_at_the_committers_flush_read_as_no_space")
    else {
        return;
    };
    let filler = fs.fill("filler", u64::MAX);
    eprintln!("{} bytes left after the filler", fs.available_bytes());
    // 1 KiB values, far below fjall's 8 KiB journal buffer.
    let (acked, err) = write_until_refused(&store, "s", 1 << 10);
    eprintln!("{} writes acknowledged, then: {err}", acked.len());
    assert!(
        matches!(
            err,
            StoreError::Poisoned {
                cause: PoisonCause::NoSpace
            }
        ),
        "{err:?}"
    );
    let stats = store.stats();
    assert_eq!(stats.poison_cause, Some(PoisonCause::NoSpace), "{stats:?}");
    assert_eq!(stats.write_errors_no_space, 1);
    assert_eq!(stats.fsync_errors, 0);
    assert_all_readable(&store, &acked);
    drop(store);

    // With space back, a restart has every acknowledged write.
    std::fs::remove_file(&filler).unwrap();
    let store = open_with_reserve(&data_dir, SyncPolicy::Always, 0);
    assert_all_readable(&store, &acked);
    assert!(put(&store, "after", b"x").unwrap().durable);
    store.close().unwrap();
}

#[test]
fn a_flush_failing_for_lack_of_space_keeps_reads_and_a_restart_recovers() {
    let Some((fs, data_dir, store)) =
        store_on_small_fs("a_flush_failing_for_lack_of_space_keeps_reads_and_a_restart_recovers")
    else {
        return;
    };
    let mut acked = BTreeMap::new();
    for i in 0..64u32 {
        let key = format!("k{i:04}");
        let value = random_value(16 << 10);
        assert!(put(&store, &key, &value).unwrap().durable);
        acked.insert(key, value);
    }
    // Fill what is left, then make the engine flush its memtable to a
    // table file: the flush runs out of space in the background.
    let filler = fs.fill("filler", u64::MAX);
    eprintln!("{} bytes left after the filler", fs.available_bytes());
    store.rotate_objects_memtable();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        store.check_disk();
        if store.stats().poisoned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed flush never showed as refused writes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = store.stats();
    assert_eq!(stats.poison_cause, Some(PoisonCause::Engine), "{stats:?}");
    assert!(stats.engine_failures >= 1);
    assert!(matches!(
        put(&store, "after", b"x"),
        Err(StoreError::Poisoned {
            cause: PoisonCause::Engine
        })
    ));
    // Reads go on from the memtable the flush could not write.
    assert_all_readable(&store, &acked);
    drop(store);

    // With space back, a restart recovers from the journal and flushes.
    std::fs::remove_file(&filler).unwrap();
    let store = open_with_reserve(&data_dir, SyncPolicy::Always, 0);
    assert_all_readable(&store, &acked);
    assert!(put(&store, "after", b"x").unwrap().durable);
    store.rotate_objects_memtable();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.objects.sealed_memtable_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the flush after restart never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!store.stats().poisoned);
    assert_all_readable(&store, &acked);
    store.close().unwrap();
}
