//! Real `starling` processes whose data directory sits on a small
//! filesystem that fills up:
//!
//! - a node refuses writes with `503` saying the disk is full, logs it once,
//!   shows it in `/metrics`, keeps serving every write it acknowledged
//!   (across a restart too), and takes writes again once space is freed;
//! - a replica on a full disk refuses its copy, and the coordinator does not
//!   count it towards W: `w=all` fails naming the refusal, `w=2` succeeds.
//!
//! The filesystem is a 32 MiB ext4 image on a loop device (a size-limited
//! tmpfs where loop devices are missing): mounting needs root. Without it
//! the tests print SKIP and pass, except with `CI=true`, where they fail:
//! CI runs as root and must not skip them unnoticed. The mount is removed
//! by a drop guard, also when a test fails. Every wait has a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{NodeProcess, agent, wait_until};

/// The disk reserve the nodes here keep: small, to match the filesystem.
const RESERVE_BYTES: u64 = 4 << 20;

/// A small filesystem mounted for one test; unmounted on drop.
struct SmallFs {
    mount: tempfile::TempDir,
    /// Holds the ext4 image, outside the mount.
    _image_dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size_bytes: u64) -> Result<(SmallFs, &'static str), String> {
        if !rustix::process::geteuid().is_root() {
            return Err("mounting a small filesystem needs root".into());
        }
        let mount = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = image_dir.path().join("fs.img");
        let kind = match mount_ext4(&image, mount.path(), size_bytes) {
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
        let fs = SmallFs {
            mount,
            _image_dir: image_dir,
        };
        Ok((fs, kind))
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn available_bytes(&self) -> u64 {
        let stat = rustix::fs::statvfs(self.path()).unwrap();
        stat.f_bavail * stat.f_frsize
    }

    /// Writes a file of `size_bytes` zeros (less if the disk fills first),
    /// fsynced; returns its path.
    fn fill(&self, name: &str, size_bytes: u64) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        while written < size_bytes {
            let n = chunk.len().min((size_bytes - written) as usize);
            match file.write(&chunk[..n]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err) if err.kind() == std::io::ErrorKind::StorageFull => break,
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
        let _ = file.sync_all();
        path
    }

    /// Fills the disk until `left_bytes` are available.
    fn fill_leaving(&self, name: &str, left_bytes: u64) -> PathBuf {
        let available = self.available_bytes();
        assert!(
            available > left_bytes,
            "only {available} bytes available, wanted {left_bytes} left"
        );
        self.fill(name, available - left_bytes)
    }
}

fn mount_ext4(image: &Path, at: &Path, size_bytes: u64) -> Result<(), String> {
    let file = std::fs::File::create(image).map_err(|e| e.to_string())?;
    file.set_len(size_bytes).map_err(|e| e.to_string())?;
    drop(file);
    // No blocks kept for root: the node runs as root here, and the store
    // counts only what unprivileged users may use.
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(image))?;
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(image)
        .arg(at))
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
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A small filesystem, or `None` after printing why the test skips. With
/// `CI=true` a missing filesystem fails the test instead.
fn small_fs(test: &str) -> Option<SmallFs> {
    match SmallFs::mount(32 << 20) {
        Ok((fs, kind)) => {
            eprintln!("{test}: {kind} of 32 MiB at {}", fs.path().display());
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

/// A value that does not compress (the journal compresses large values),
/// so it takes its size on disk.
fn random_value(size_bytes: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(size_bytes)
        .map(char::from)
        .collect()
}

/// Scrapes `/metrics`: sample name plus sorted labels -> value.
fn scrape(node: &NodeProcess) -> HashMap<String, f64> {
    let mut r = agent().get(&node.url("/metrics")).call().unwrap();
    assert_eq!(r.status(), 200);
    let body = r.body_mut().read_to_string().unwrap();
    common::parse_metrics(&body)
}

fn metric(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    *metrics
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

fn assert_all_readable(node: &NodeProcess, acked: &BTreeMap<String, String>) {
    for (key, value) in acked {
        let (status, body) = node.get("full", key, "");
        assert_eq!(status, 200, "acknowledged {key} unreadable: {body}");
        assert!(body == *value, "acknowledged {key} came back different");
    }
}

/// How often the node logged that it started refusing for lack of space.
fn refusal_lines(node: &NodeProcess) -> usize {
    node.log()
        .lines()
        .filter(|l| l.contains("disk space is below the reserve"))
        .count()
}

#[test]
fn a_node_on_a_full_disk_refuses_writes_keeps_what_it_acknowledged_and_resumes() {
    let test = "a_node_on_a_full_disk_refuses_writes_keeps_what_it_acknowledged_and_resumes";
    let Some(fs) = small_fs(test) else {
        return;
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let reserve = RESERVE_BYTES.to_string();
    let mut node = NodeProcess::start_logging_to(
        &fs.path().join("node"),
        &elsewhere.path().join("node.log"),
        &["--disk-reserve-bytes", &reserve],
    );
    // Leave about 3 MiB above the reserve, so the disk fills within a few
    // dozen writes of 64 KiB.
    let filler = fs.fill_leaving("filler", RESERVE_BYTES + (3 << 20));

    let mut acked = BTreeMap::new();
    let (status, body) = loop {
        assert!(
            acked.len() < 1000,
            "1,000 writes of 64 KiB never filled 3 MiB"
        );
        let key = format!("k{:04}", acked.len());
        let value = random_value(64 << 10);
        let (status, body) = node.put("full", &key, "", &value);
        if status != 204 {
            break (status, body);
        }
        acked.insert(key, value);
    };
    eprintln!("{} writes acknowledged, then {status}: {body}", acked.len());
    assert!(acked.len() >= 10, "only {} writes fit", acked.len());
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk full"), "{body}");
    assert!(body.contains("writes resume once space is freed"), "{body}");
    // Still refused, and every acknowledged write reads back.
    let (status, body) = node.put("full", "one-more", "", "x");
    assert_eq!((status, body.contains("disk full")), (503, true), "{body}");
    assert_all_readable(&node, &acked);

    let metrics = scrape(&node);
    assert_eq!(metric(&metrics, "starling_storage_refusing_writes{}"), 1.0);
    assert_eq!(metric(&metrics, "starling_storage_poisoned{}"), 0.0);
    assert!(
        metric(
            &metrics,
            "starling_storage_write_refusals_total{reason=disk_full}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "starling_storage_write_errors_total{kind=no_space}"
        ),
        0.0,
        "ENOSPC reached the journal: the reserve did not hold"
    );
    assert!(metric(&metrics, "starling_storage_disk_available_bytes{}") < RESERVE_BYTES as f64);
    assert_eq!(
        metric(&metrics, "starling_storage_disk_reserve_bytes{}"),
        RESERVE_BYTES as f64
    );
    let stats = node.json("/stats");
    assert_eq!(stats["storage"]["disk_full"], true, "{stats}");
    // Logged once, however many writes were refused.
    assert_eq!(refusal_lines(&node), 1, "{}", node.log());

    // A restart on the still-full disk serves every acknowledged write and
    // still refuses new ones. (Fill it further first: the refusal came just
    // below the reserve, and the filesystem hands back blocks it had set
    // aside for the journal when the process closes it.)
    assert!(node.terminate().success());
    let more_filler = fs.fill_leaving("more-filler", RESERVE_BYTES / 2);
    node.restart();
    assert_all_readable(&node, &acked);
    let (status, body) = node.put("full", "one-more", "", "x");
    assert_eq!((status, body.contains("disk full")), (503, true), "{body}");
    assert_eq!(refusal_lines(&node), 2, "once per run");

    // Space back: writes are taken again without a restart.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&more_filler).unwrap();
    wait_until("writes to be taken again", Duration::from_secs(20), || {
        node.put("full", "after", "", "back").0 == 204
    });
    acked.insert("after".into(), "back".into());
    for i in 0..5 {
        let key = format!("again{i}");
        let value = random_value(64 << 10);
        assert_eq!(node.put("full", &key, "", &value).0, 204);
        acked.insert(key, value);
    }
    assert_all_readable(&node, &acked);
    assert!(node.log().contains("disk space is back above the reserve"));
    let metrics = scrape(&node);
    assert_eq!(metric(&metrics, "starling_storage_refusing_writes{}"), 0.0);
    assert_eq!(metric(&metrics, "starling_storage_poisoned{}"), 0.0);

    // And a restart keeps all of it.
    assert!(node.terminate().success());
    node.restart();
    assert_all_readable(&node, &acked);
    assert!(node.terminate().success());
}

#[test]
fn a_replica_on_a_full_disk_refuses_its_copy_and_does_not_count_towards_w() {
    let test = "a_replica_on_a_full_disk_refuses_its_copy_and_does_not_count_towards_w";
    let Some(fs) = small_fs(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reserve = RESERVE_BYTES.to_string();
    let args = ["--disk-reserve-bytes", reserve.as_str()];
    let seed = NodeProcess::start(&dir.path().join("n0"), &args);
    let join = seed.cluster.to_string();
    let with_join = ["--join", join.as_str(), args[0], args[1]];
    let n1 = NodeProcess::start(&dir.path().join("n1"), &with_join);
    let full = NodeProcess::start_logging_to(
        &fs.path().join("n2"),
        &dir.path().join("n2.log"),
        &with_join,
    );
    let nodes = [&seed, &n1, &full];
    wait_until(
        "every node to see the whole cluster alive and owning partitions",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                n.members().iter().filter(|(_, s, _)| s == "alive").count() == 3
                    && n.ring_states().iter().filter(|s| *s == "member").count() == 3
            })
        },
    );
    // Three nodes, n_val 3: every node holds every key, and the seed mints
    // what it coordinates.
    assert_eq!(seed.put("full", "before", "?w=3", "v").0, 204);
    let filler = fs.fill_leaving("filler", RESERVE_BYTES / 2);
    wait_until(
        "the full node to see its disk below the reserve",
        Duration::from_secs(20),
        || full.json("/stats")["storage"]["disk_full"] == true,
    );

    // All three acknowledgements asked for: the full replica's refusal does
    // not count, and the answer says why.
    let (status, body) = seed.put("full", "k", "?w=3&dw=3", "v");
    assert_eq!(status, 503, "{body}");
    // The coordinator gives up as soon as W is out of reach, so how many
    // acknowledged by then depends on timing.
    assert!(body.contains("quorum not met"), "{body}");
    assert!(body.contains("of 3 replicas acknowledged"), "{body}");
    assert!(body.contains("disk full"), "{body}");
    assert!(body.contains(&full.http.to_string()), "{body}");
    // Two are enough: the write is acknowledged by the two others.
    assert_eq!(seed.put("full", "k2", "?w=2&dw=2", "v2").0, 204);
    for node in [&seed, &n1] {
        wait_until(
            "the healthy replicas to hold k2",
            Duration::from_secs(10),
            || node.local_values("full", "k2") == Some(vec!["v2".to_owned()]),
        );
    }
    assert_eq!(full.local_values("full", "k2"), None);
    // Reads still work on the full node, and it coordinates them.
    assert_eq!(
        full.local_values("full", "before"),
        Some(vec!["v".to_owned()])
    );
    assert_eq!(full.get("full", "k2", "?r=2").0, 200);
    // As a coordinator it mints with its own store, which refuses.
    let (status, body) = full.put("full", "k3", "", "v3");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refused the write: disk full"), "{body}");

    // Space back: the replica takes copies again.
    std::fs::remove_file(&filler).unwrap();
    wait_until(
        "the full node to take writes again",
        Duration::from_secs(20),
        || full.json("/stats")["storage"]["disk_full"] == false,
    );
    assert_eq!(seed.put("full", "k4", "?w=3&dw=3", "v4").0, 204);
    assert_eq!(full.local_values("full", "k4"), Some(vec!["v4".to_owned()]));
}
