//! Store tests: one behaviour suite run against every [`SyncPolicy`], then
//! policy-specific tests (group commit, poisoning, identity, a real SIGKILL).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::*;
use crate::dvv::{ActorId, Metadata};

fn config(dir: &Path, sync: SyncPolicy) -> StoreConfig {
    StoreConfig {
        sync,
        ..StoreConfig::new(dir)
    }
}

fn open(dir: &Path, sync: SyncPolicy) -> Store {
    Store::open(config(dir, sync)).unwrap()
}

fn content_at(value: &str, last_modified_us: u64) -> Content {
    Content {
        value: value.as_bytes().to_vec(),
        meta: Metadata {
            content_type: "text/plain".into(),
            last_modified_us,
            ..Metadata::default()
        },
        deleted: false,
    }
}

fn content(value: &str) -> Content {
    content_at(value, 1)
}

fn values(object: &Object) -> BTreeSet<String> {
    object
        .live_siblings()
        .map(|s| String::from_utf8(s.content.value.clone()).unwrap())
        .collect()
}

const PUT: WriteOptions = WriteOptions {
    resolve_by_time: false,
    repair: false,
};
const REPAIR: WriteOptions = WriteOptions {
    resolve_by_time: false,
    repair: true,
};
const LWW: WriteOptions = WriteOptions {
    resolve_by_time: true,
    repair: false,
};

/// Another replica's actor, for building incoming objects.
fn other_actor() -> ActorId {
    ActorId {
        node: 0xdead,
        epoch: 0xbeef,
    }
}

fn foreign_object(counter: u64, value: &str) -> Object {
    let mut o = Object::new();
    o.update(
        &VersionVector::new(),
        Dot {
            actor: other_actor(),
            counter,
        },
        content(value),
    )
    .unwrap();
    o
}

// ---------------------------------------------------------------------------
// The behaviour suite: every policy must pass it.
// ---------------------------------------------------------------------------

fn writes_read_back_with_the_policys_durability(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    assert_eq!(store.get(b"b", b"k").unwrap(), None);
    let written = store
        .put(b"b", b"k", &VersionVector::new(), content("v1"), PUT)
        .unwrap();
    assert_eq!(written.durable, sync == SyncPolicy::Always);
    let dot = written.dot.unwrap();
    assert_eq!(dot.actor, store.identity().actor());
    let read = store.get(b"b", b"k").unwrap().unwrap();
    assert_eq!(read, written.object);
    assert_eq!(values(&read), BTreeSet::from(["v1".to_owned()]));
    assert_eq!(read.siblings[0].content.meta.content_type, "text/plain");
    let stats = store.stats();
    assert_eq!((stats.puts, stats.gets, stats.dots_minted), (1, 2, 1));
    assert!(stats.disk_space_bytes > 0);
}

fn zero_last_modified_is_filled_in(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    let written = store
        .put(b"b", b"k", &VersionVector::new(), content_at("v", 0), PUT)
        .unwrap();
    assert!(written.object.siblings[0].content.meta.last_modified_us > 1_600_000_000_000_000);
    // A caller-given time is kept as is.
    let written = store
        .put(b"b", b"k2", &VersionVector::new(), content_at("v", 42), PUT)
        .unwrap();
    assert_eq!(written.object.siblings[0].content.meta.last_modified_us, 42);
}

fn stale_contexts_make_siblings_and_a_fresh_one_resolves_them(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    let first = store
        .put(b"b", b"k", &VersionVector::new(), content("a"), PUT)
        .unwrap();
    let stale = first.object.version;
    store.put(b"b", b"k", &stale, content("b"), PUT).unwrap();
    let both = store.put(b"b", b"k", &stale, content("c"), PUT).unwrap();
    assert_eq!(
        values(&both.object),
        BTreeSet::from(["b".into(), "c".into()])
    );
    let resolved = store
        .put(b"b", b"k", &both.object.version, content("d"), PUT)
        .unwrap();
    assert_eq!(resolved.object.siblings.len(), 1);
    assert_eq!(
        values(&store.get(b"b", b"k").unwrap().unwrap()),
        BTreeSet::from(["d".into()])
    );
}

fn deletes_leave_a_tombstone_hidden_from_listings(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    let live = store
        .put(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    store
        .put(b"b", b"other", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let deleted = store.delete(b"b", b"k", &live.object.version, PUT).unwrap();
    assert!(deleted.object.is_deleted());
    let read = store.get(b"b", b"k").unwrap().unwrap();
    assert!(read.is_deleted());
    // The tombstone's context covers the deleted value.
    assert!(read.version.descends(&live.object.version));
    assert_eq!(store.list_keys(b"b").unwrap(), vec![b"other".to_vec()]);
    // A bucket of tombstones only is not listed, but its objects are still
    // stored for anti-entropy.
    let only = store
        .put(b"gone", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    store
        .delete(b"gone", b"k", &only.object.version, PUT)
        .unwrap();
    assert_eq!(store.list_buckets().unwrap(), vec![b"b".to_vec()]);
    assert!(store.list_keys(b"gone").unwrap().is_empty());
    let mut stored = Vec::new();
    store
        .for_each_object(|bucket, key, object| {
            stored.push((bucket.to_vec(), key.to_vec(), object.is_deleted()));
            true
        })
        .unwrap();
    // In placement order, which is not the keys' order.
    stored.sort();
    assert_eq!(
        stored,
        vec![
            (b"b".to_vec(), b"k".to_vec(), true),
            (b"b".to_vec(), b"other".to_vec(), false),
            (b"gone".to_vec(), b"k".to_vec(), true),
        ]
    );
    // A write after the delete brings the key back.
    store
        .put(b"gone", b"k", &read.version, content("again"), PUT)
        .unwrap();
    assert_eq!(
        store.list_buckets().unwrap(),
        vec![b"b".to_vec(), b"gone".to_vec()]
    );
}

fn listings_are_complete_ordered_and_paged(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    // Buckets that are prefixes of each other, and bytes that are not UTF-8.
    let buckets: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"ab".to_vec(),
        vec![0xff],
        vec![0xff, 0xff],
        b"zz".to_vec(),
    ];
    for bucket in &buckets {
        for i in 0..25u32 {
            let key = format!("key{i:03}");
            store
                .put(
                    bucket,
                    key.as_bytes(),
                    &VersionVector::new(),
                    content("v"),
                    PUT,
                )
                .unwrap();
        }
    }
    store
        .put(
            b"a",
            &[0x00, 0xff],
            &VersionVector::new(),
            content("v"),
            PUT,
        )
        .unwrap();
    let listed: BTreeSet<Vec<u8>> = store.list_buckets().unwrap().into_iter().collect();
    assert_eq!(listed, buckets.iter().cloned().collect());
    assert_eq!(store.list_buckets().unwrap().len(), buckets.len());
    let keys = store.list_keys(b"ab").unwrap();
    assert_eq!(keys.len(), 25);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.list_keys(b"a").unwrap().len(), 26);
    assert!(store.list_keys(b"nothing").unwrap().is_empty());
    // Pages of 7 give the same keys as one listing.
    let mut paged = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    for _ in 0..10 {
        let page = store.list_keys_page(b"a", after.as_deref(), 7).unwrap();
        assert!(page.keys.len() <= 7);
        paged.extend(page.keys);
        after = page.next_start_after;
        if after.is_none() {
            break;
        }
    }
    // Pages follow the placement order, as `keys` streams them.
    let streamed: Vec<Vec<u8>> = store.keys(b"a").unwrap().map(Result::unwrap).collect();
    assert_eq!(paged, streamed);
    paged.sort();
    assert_eq!(paged, store.list_keys(b"a").unwrap());
    assert_eq!(
        store.list_keys_page(b"a", Some(b""), 1000).unwrap().keys,
        streamed
    );
    assert!(matches!(
        store.list_keys_page(b"a", Some(&[b'k'; 70_000]), 10),
        Err(StoreError::KeyTooLarge { .. })
    ));
    let mut streamed: Vec<Vec<u8>> = store.keys(b"zz").unwrap().map(Result::unwrap).collect();
    streamed.sort();
    assert_eq!(streamed, store.list_keys(b"zz").unwrap());
    assert_eq!(store.objects().count(), 5 * 25 + 1);
}

fn limits_refuse_with_clear_errors(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        limits: Limits {
            object_size_bytes_warn: 1000,
            object_size_bytes_max: 4000,
            ..Limits::default()
        },
        ..config(dir.path(), sync)
    })
    .unwrap();
    let empty = VersionVector::new();
    assert!(matches!(
        store.put(b"", b"k", &empty, content("v"), PUT),
        Err(StoreError::EmptyBucket)
    ));
    assert!(matches!(
        store.put(b"b", b"", &empty, content("v"), PUT),
        Err(StoreError::EmptyKey)
    ));
    assert!(matches!(
        store.get(&[b'b'; 256], b"k"),
        Err(StoreError::BucketTooLarge { .. })
    ));
    assert!(matches!(
        store.put(b"b", &[b'k'; 1025], &empty, content("v"), PUT),
        Err(StoreError::KeyTooLarge { .. })
    ));
    assert!(
        store
            .put(&[b'b'; 255], &[b'k'; 1024], &empty, content("v"), PUT)
            .is_ok()
    );
    // Over the warning threshold: written and counted.
    store
        .put(b"b", b"big", &empty, content(&"x".repeat(2000)), PUT)
        .unwrap();
    assert_eq!(store.stats().object_size_warnings, 1);
    // Over the limit: refused, nothing written.
    let err = store
        .put(b"b", b"huge", &empty, content(&"x".repeat(5000)), PUT)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::ObjectTooLarge {
            size_bytes_max: 4000,
            ..
        }
    ));
    assert_eq!(store.get(b"b", b"huge").unwrap(), None);
    assert_eq!(store.stats().object_size_refusals, 1);
    // Siblings that together exceed the limit are refused too.
    let err = store
        .put(b"b", b"big", &empty, content(&"y".repeat(2500)), PUT)
        .unwrap_err();
    assert!(matches!(err, StoreError::ObjectTooLarge { .. }));
    // Repair traffic is not refused: replicas must converge.
    store
        .merge(b"b", b"huge", &foreign_object(1, &"z".repeat(5000)), REPAIR)
        .unwrap();
}

fn blind_writes_grow_siblings_up_to_the_limit_then_refuse(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    let empty = VersionVector::new();
    for i in 0..100 {
        let written = store
            .put(b"b", b"k", &empty, content(&format!("v{i}")), PUT)
            .unwrap();
        assert_eq!(written.object.siblings.len(), i + 1);
    }
    let err = store
        .put(b"b", b"k", &empty, content("one too many"), PUT)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::TooManySiblings {
            count: 101,
            max: 100
        }
    ));
    let stats = store.stats();
    assert_eq!(stats.sibling_limit_refusals, 1);
    assert_eq!(stats.sibling_warnings, 75);
    assert_eq!(store.get(b"b", b"k").unwrap().unwrap().siblings.len(), 100);
    // Repair traffic is not refused.
    let written = store
        .merge(b"b", b"k", &foreign_object(1, "from a replica"), REPAIR)
        .unwrap();
    assert_eq!(written.object.siblings.len(), 101);
    // A client merge (not repair) is held to the limit.
    assert!(matches!(
        store.merge(b"b", b"k", &foreign_object(2, "again"), PUT),
        Err(StoreError::TooManySiblings { .. })
    ));
    // Resolving with the full context brings it back to one.
    let all = store.get(b"b", b"k").unwrap().unwrap().version;
    let written = store
        .put(b"b", b"k", &all, content("resolved"), PUT)
        .unwrap();
    assert_eq!(written.object.siblings.len(), 1);
}

fn read_modify_write_cycles_keep_one_sibling(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    for i in 0..1000 {
        let context = store
            .get(b"b", b"k")
            .unwrap()
            .map(|o| o.version)
            .unwrap_or_default();
        let written = store
            .put(b"b", b"k", &context, content(&format!("v{i}")), PUT)
            .unwrap();
        assert_eq!(written.object.siblings.len(), 1);
    }
    let object = store.get(b"b", b"k").unwrap().unwrap();
    assert_eq!(object.siblings.len(), 1);
    assert_eq!(values(&object), BTreeSet::from(["v999".into()]));
    // One actor, one entry in the version vector: no growth with writes.
    assert_eq!(object.version.len(), 1);
}

fn resolve_by_time_keeps_the_latest_write(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    let empty = VersionVector::new();
    store
        .put(b"b", b"k", &empty, content_at("new", 200), LWW)
        .unwrap();
    // A concurrent write with an older time loses.
    let written = store
        .put(b"b", b"k", &empty, content_at("old", 100), LWW)
        .unwrap();
    assert_eq!(values(&written.object), BTreeSet::from(["new".into()]));
    // A newer one wins.
    let written = store
        .put(b"b", b"k", &empty, content_at("newer", 300), LWW)
        .unwrap();
    assert_eq!(values(&written.object), BTreeSet::from(["newer".into()]));
    // Merges resolve too.
    let written = store
        .merge(b"b", b"k", &foreign_object(1, "latest-elsewhere"), LWW)
        .unwrap();
    // foreign_object writes at time 1: the local value stays.
    assert_eq!(values(&written.object), BTreeSet::from(["newer".into()]));
    assert_eq!(store.get(b"b", b"k").unwrap().unwrap().siblings.len(), 1);
}

fn merges_combine_replicas_and_are_idempotent(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    let local = store
        .put(b"b", b"k", &VersionVector::new(), content("local"), PUT)
        .unwrap();
    let incoming = foreign_object(7, "remote");
    let merged = store.merge(b"b", b"k", &incoming, REPAIR).unwrap();
    assert_eq!(merged.dot, None);
    assert_eq!(
        values(&merged.object),
        BTreeSet::from(["local".into(), "remote".into()])
    );
    assert_eq!(merged.object, local.object.merge(&incoming));
    let written_before = store.stats().keys_written;
    let again = store.merge(b"b", b"k", &incoming, REPAIR).unwrap();
    assert_eq!(again.object, merged.object);
    assert_eq!(again.durable, sync == SyncPolicy::Always);
    let stats = store.stats();
    assert_eq!(
        stats.keys_written, written_before,
        "an idempotent merge writes nothing"
    );
    assert_eq!((stats.merges, stats.merges_unchanged), (2, 1));
    // A merge into an absent key stores the incoming copy.
    store.merge(b"b", b"new", &incoming, REPAIR).unwrap();
    assert_eq!(store.get(b"b", b"new").unwrap().unwrap(), incoming);
    // A write that has seen the merged copy replaces both siblings.
    let written = store
        .put(
            b"b",
            b"k",
            &merged.object.version,
            content("both seen"),
            PUT,
        )
        .unwrap();
    assert_eq!(written.object.siblings.len(), 1);
    // Malformed objects from a peer are refused, not stored.
    let mut broken = foreign_object(9, "x");
    broken.version = VersionVector::new();
    assert!(matches!(
        store.merge(b"b", b"k", &broken, REPAIR),
        Err(StoreError::InvalidObject(_))
    ));
    assert!(matches!(
        store.merge(b"b", b"k", &Object::new(), REPAIR),
        Err(StoreError::InvalidObject(_))
    ));
}

fn bucket_props_persist_and_reset(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let props = BucketProps {
        n_val: 5,
        allow_mult: false,
        ..BucketProps::default()
    };
    {
        let store = open(dir.path(), sync);
        assert_eq!(store.bucket_props(b"b").unwrap(), None);
        store.set_bucket_props(b"b", &props).unwrap();
        store
            .set_bucket_props(b"c", &BucketProps::default())
            .unwrap();
        let invalid = BucketProps {
            n_val: 0,
            ..BucketProps::default()
        };
        assert!(matches!(
            store.set_bucket_props(b"d", &invalid),
            Err(StoreError::InvalidProps(_))
        ));
        assert!(matches!(
            store.set_bucket_props(b"", &props),
            Err(StoreError::EmptyBucket)
        ));
        // Props are fsynced whatever the policy.
        assert!(store.stats().fsyncs >= 2);
    }
    let store = open(dir.path(), sync);
    assert_eq!(store.bucket_props(b"b").unwrap(), Some(props.clone()));
    assert_eq!(
        store.all_bucket_props().unwrap(),
        vec![
            (b"b".to_vec(), props),
            (b"c".to_vec(), BucketProps::default())
        ]
    );
    store.reset_bucket_props(b"b").unwrap();
    drop(store);
    let store = open(dir.path(), sync);
    assert_eq!(store.bucket_props(b"b").unwrap(), None);
    assert_eq!(store.all_bucket_props().unwrap().len(), 1);
}

fn data_identity_and_dots_survive_reopening(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = HashSet::new();
    let mut identity = None;
    let mut last_counter = 0;
    for round in 0..30u32 {
        let store = open(dir.path(), sync);
        match identity {
            None => identity = Some(store.identity()),
            Some(id) => assert_eq!(store.identity(), id),
        }
        let context = store
            .get(b"b", b"k")
            .unwrap()
            .map(|o| o.version)
            .unwrap_or_default();
        for i in 0..7u32 {
            let written = store
                .put(
                    b"b",
                    format!("k{i}").as_bytes(),
                    &VersionVector::new(),
                    content("v"),
                    PUT,
                )
                .unwrap();
            let dot = written.dot.unwrap();
            assert!(seen.insert(dot), "dot {dot:?} handed out twice");
            assert!(dot.counter > last_counter);
            last_counter = dot.counter;
        }
        store
            .put(
                b"b",
                b"k",
                &context,
                content(&format!("round {round}")),
                PUT,
            )
            .unwrap();
        if round % 2 == 0 {
            store.close().unwrap();
        } // Odd rounds just drop.
    }
    assert_eq!(seen.len(), 30 * 7);
    let store = open(dir.path(), sync);
    let object = store.get(b"b", b"k").unwrap().unwrap();
    assert_eq!(values(&object), BTreeSet::from(["round 29".into()]));
    // Each open leases a fresh block: counters skip, never repeat.
    assert!(store.stats().dot_counter_next > 30 * COUNTER_LEASE_BLOCK_MIN);
}

/// The smallest block a reopen skips to; leases are `COUNTER_LEASE_BLOCK`.
const COUNTER_LEASE_BLOCK_MIN: u64 = crate::identity::COUNTER_LEASE_BLOCK - 10;

fn concurrent_read_modify_writes_lose_no_update(sync: SyncPolicy) {
    const THREADS: usize = 8;
    const CYCLES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), sync));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..CYCLES {
                    // Read, fold every sibling's tokens together, add ours,
                    // write back with the context read.
                    let read = store.get(b"b", b"set").unwrap();
                    let mut tokens: BTreeSet<String> = BTreeSet::new();
                    if let Some(object) = &read {
                        for value in values(object) {
                            tokens.extend(
                                value.split(',').filter(|s| !s.is_empty()).map(String::from),
                            );
                        }
                    }
                    tokens.insert(format!("{t}.{i}"));
                    let value = tokens.into_iter().collect::<Vec<_>>().join(",");
                    let context = read.map(|o| o.version).unwrap_or_default();
                    let written = store
                        .put(b"b", b"set", &context, content(&value), PUT)
                        .unwrap();
                    assert!(written.object.siblings.len() <= THREADS);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let object = store.get(b"b", b"set").unwrap().unwrap();
    assert!(object.siblings.len() <= THREADS);
    let mut tokens = BTreeSet::new();
    for value in values(&object) {
        tokens.extend(value.split(',').map(String::from));
    }
    for t in 0..THREADS {
        for i in 0..CYCLES {
            assert!(
                tokens.contains(&format!("{t}.{i}")),
                "update {t}.{i} was lost"
            );
        }
    }
}

fn truly_concurrent_writers_make_one_sibling_each(sync: SyncPolicy) {
    const THREADS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), sync));
    let base = store
        .put(b"b", b"k", &VersionVector::new(), content("base"), PUT)
        .unwrap()
        .object
        .version;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, barrier, base) = (store.clone(), barrier.clone(), base.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Everyone writes having read the same version: all concurrent.
                store
                    .put(b"b", b"k", &base, content(&format!("w{t}")), PUT)
                    .unwrap()
            })
        })
        .collect();
    let dots: HashSet<Dot> = handles
        .into_iter()
        .map(|h| h.join().unwrap().dot.unwrap())
        .collect();
    assert_eq!(dots.len(), THREADS);
    let object = store.get(b"b", b"k").unwrap().unwrap();
    assert_eq!(object.siblings.len(), THREADS);
    assert!(!values(&object).contains("base"));
}

fn corrupt_records_are_errors_not_panics(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), sync);
    store
        .put(b"b", b"good", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    // Bytes the store never writes, planted under its key layout: a good
    // entry before a bad object record, and a bad entry.
    let mut bad = vec![3u8, 0, 0, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&[9, 0, 1, 2]);
    store
        .objects
        .insert(store.locate(b"b", b"bad").placed, bad)
        .unwrap();
    store
        .objects
        .insert(store.locate(b"b", b"worse").placed, vec![0u8, 1])
        .unwrap();
    assert!(matches!(
        store.get(b"b", b"worse"),
        Err(StoreError::Corrupt { .. })
    ));
    store.props.insert(b"p".as_slice(), vec![1, 0xff]).unwrap();
    assert!(matches!(
        store.get(b"b", b"bad"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.put(b"b", b"bad", &VersionVector::new(), content("v"), PUT),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.list_keys(b"b"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(
        store
            .objects()
            .any(|item| matches!(item, Err(StoreError::Corrupt { .. })))
    );
    assert!(store.get(b"b", b"good").unwrap().is_some());
    // Properties are read into memory when the store opens: a corrupt
    // record is reported then, for that bucket only.
    drop(store);
    let store = open(dir.path(), sync);
    assert!(matches!(
        store.bucket_props(b"p"),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.bucket_props(b"q").unwrap(), None);
    assert!(store.get(b"b", b"good").unwrap().is_some());
    // A malformed store key (empty bucket) is caught too.
    let mut value = vec![3u8, 0, 0, 0, 0, 0, 0, 0, 0];
    value.extend_from_slice(&encode_object(&foreign_object(1, "v")));
    store
        .objects
        .insert(vec![0u8, 0, 0, 0, 0, 0, b'k'], value)
        .unwrap();
    assert!(
        store
            .objects()
            .any(|item| matches!(item, Err(StoreError::Corrupt { .. })))
    );
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod always {
            $(#[test] fn $test() { super::$test(super::SyncPolicy::Always) })*
        }
        mod interval {
            $(#[test] fn $test() {
                super::$test(super::SyncPolicy::Interval { interval_ms: 5 })
            })*
        }
        mod never {
            $(#[test] fn $test() { super::$test(super::SyncPolicy::Never) })*
        }
    };
}

suite!(
    writes_read_back_with_the_policys_durability,
    zero_last_modified_is_filled_in,
    stale_contexts_make_siblings_and_a_fresh_one_resolves_them,
    deletes_leave_a_tombstone_hidden_from_listings,
    listings_are_complete_ordered_and_paged,
    limits_refuse_with_clear_errors,
    blind_writes_grow_siblings_up_to_the_limit_then_refuse,
    read_modify_write_cycles_keep_one_sibling,
    resolve_by_time_keeps_the_latest_write,
    merges_combine_replicas_and_are_idempotent,
    bucket_props_persist_and_reset,
    data_identity_and_dots_survive_reopening,
    concurrent_read_modify_writes_lose_no_update,
    truly_concurrent_writers_make_one_sibling_each,
    corrupt_records_are_errors_not_panics,
);

// ---------------------------------------------------------------------------
// Policy-specific and identity tests.
// ---------------------------------------------------------------------------

/// Puts a value under a new `key` and checks it came back durable.
fn put_durably(store: &Store, key: &str) {
    let written = store
        .put(
            b"b",
            key.as_bytes(),
            &VersionVector::new(),
            content("v"),
            PUT,
        )
        .unwrap();
    assert!(written.durable);
}

/// `threads` writers, released together, each put `writes` new keys and
/// see every put durable.
fn put_concurrently(store: &Arc<Store>, threads: usize, writes: usize) {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..writes {
                    put_durably(&store, &format!("k{t}-{i}"));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn concurrent_writers_share_fsyncs() {
    const THREADS: usize = 32;
    const WRITES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), SyncPolicy::Always));
    // Lease the first counter block now so its fsync is not counted below.
    store
        .put(b"b", b"warm", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let before = store.stats();
    put_concurrently(&store, THREADS, WRITES);
    let after = store.stats();
    let writes = (THREADS * WRITES) as u64;
    let fsyncs = after.fsyncs - before.fsyncs;
    assert_eq!(after.fsync_writes_sum - before.fsync_writes_sum, writes);
    assert!(
        fsyncs < writes,
        "{fsyncs} fsyncs for {writes} concurrent writes: no group commit"
    );
    assert!(after.fsync_batch_max > 1);
}

/// The committer starts an fsync no sooner than the spacing after the
/// previous one started; writes that arrive meanwhile share it, and a write
/// after a quiet spell waits for nothing.
#[test]
fn fsyncs_are_spaced_and_shared_and_a_write_after_a_quiet_spell_is_not_delayed() {
    const SPACING: Duration = Duration::from_secs(1);
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(StoreConfig {
            fsync_spacing: SPACING,
            ..config(dir.path(), SyncPolicy::Always)
        })
        .unwrap(),
    );
    // The cap alone spaces them, however fast this disk's fsyncs are.
    store.set_spacing_fsyncs(u32::MAX);
    let put = |key: &str| put_durably(&store, key);
    let started = Instant::now();
    put("first");
    // The first write's fsync started after `started`; the next may start
    // only a spacing later.
    put("second");
    assert!(
        started.elapsed() >= SPACING,
        "two fsyncs {:?} apart, spacing {SPACING:?}",
        started.elapsed()
    );
    // Writers arriving within one spacing share its fsyncs.
    let before = store.stats();
    put_concurrently(&store, THREADS, 1);
    let after = store.stats();
    assert_eq!(
        after.fsync_writes_sum - before.fsync_writes_sum,
        THREADS as u64
    );
    assert!(
        after.fsyncs - before.fsyncs < THREADS as u64,
        "{} fsyncs for {THREADS} writes within one spacing",
        after.fsyncs - before.fsyncs
    );
    // After a quiet spell longer than the spacing, a write is fsynced at
    // once (the bound is generous: one fsync, not a spacing).
    std::thread::sleep(SPACING + Duration::from_millis(100));
    let lone = Instant::now();
    put("after a quiet spell");
    assert!(
        lone.elapsed() < SPACING / 2,
        "a lone write waited {:?}",
        lone.elapsed()
    );
}

/// Under the cap, the spacing follows the disk: an fsync starts
/// `SPACING_FSYNCS` of the previous fsync's durations after it, so a fast
/// disk does not wait out a cap sized for a slow one.
#[test]
fn the_fsync_spacing_follows_the_fsyncs_duration_under_its_cap() {
    const CAP: Duration = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        fsync_spacing: CAP,
        ..config(dir.path(), SyncPolicy::Always)
    })
    .unwrap();
    // The first write also leases dots (an fsync of its own): measure after.
    put_durably(&store, "warm-up");
    let before = store.stats();
    let started = Instant::now();
    put_durably(&store, "first");
    let after = store.stats();
    assert_eq!(after.fsyncs - before.fsyncs, 1);
    let first_fsync =
        Duration::from_micros(after.fsync_latency_us_sum - before.fsync_latency_us_sum);
    put_durably(&store, "second");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= first_fsync * crate::SPACING_FSYNCS,
        "two fsyncs {elapsed:?} apart, the first took {first_fsync:?}"
    );
    assert!(
        elapsed < CAP / 2,
        "two fsyncs {elapsed:?} apart: the cap, not the fsync, spaced them"
    );
}

#[test]
fn a_failed_fsync_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let written = store
        .put(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    store.fail_next_fsync();
    // The write reached the journal but its fsync failed: not acknowledged.
    assert!(matches!(
        store.put(b"b", b"k2", &VersionVector::new(), content("v"), PUT),
        Err(StoreError::Poisoned { .. })
    ));
    // Every later write is refused; reads still work.
    assert!(matches!(
        store.put(b"b", b"k3", &VersionVector::new(), content("v"), PUT),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(
        store.merge(b"b", b"k", &written.object, REPAIR),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(
        store.set_bucket_props(b"b", &BucketProps::default()),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(store.sync_all(), Err(StoreError::Poisoned { .. })));
    assert_eq!(store.get(b"b", b"k").unwrap(), Some(written.object));
    assert!(store.stats().poisoned);
    assert!(matches!(store.close(), Err(StoreError::Poisoned { .. })));
    // A restart recovers from the journal.
    let store = open(dir.path(), SyncPolicy::Always);
    assert!(store.get(b"b", b"k").unwrap().is_some());
    store
        .put(b"b", b"k4", &VersionVector::new(), content("v"), PUT)
        .unwrap();
}

#[test]
fn a_failed_interval_fsync_poisons_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Interval { interval_ms: 2 });
    store
        .put(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    store.fail_next_fsync();
    store
        .put(b"b", b"k2", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !store.stats().poisoned {
        assert!(
            std::time::Instant::now() < deadline,
            "interval thread never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(matches!(
        store.put(b"b", b"k3", &VersionVector::new(), content("v"), PUT),
        Err(StoreError::Poisoned { .. })
    ));
}

#[test]
fn the_interval_thread_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Interval { interval_ms: 2 });
    store
        .put(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let leases = store.stats().fsyncs;
    store
        .put(b"b", b"k2", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.stats().fsyncs == leases {
        assert!(
            std::time::Instant::now() < deadline,
            "interval thread never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(store.stats().fsync_writes_sum >= 1);
}

#[test]
fn never_leaves_syncing_to_sync_all_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Never);
    store
        .put(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let fsyncs = store.stats().fsyncs;
    for i in 0..10 {
        let key = format!("k{i}");
        store
            .put(
                b"b",
                key.as_bytes(),
                &VersionVector::new(),
                content("v"),
                PUT,
            )
            .unwrap();
    }
    assert_eq!(store.stats().fsyncs, fsyncs, "no fsync on the write path");
    store.sync_all().unwrap();
    assert_eq!(store.stats().fsyncs, fsyncs + 1);
    store.close().unwrap();
}

#[test]
fn identity_follows_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        node_id: Some(42),
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let identity = store.identity();
    assert_eq!(identity.node_id, 42);
    assert_eq!(
        identity.actor(),
        ActorId {
            node: 42,
            epoch: identity.epoch
        }
    );
    drop(store);
    // Another node's id on this directory is refused.
    assert!(matches!(
        Store::open(StoreConfig {
            node_id: Some(43),
            ..StoreConfig::new(dir.path())
        }),
        Err(StoreError::IdentityMismatch {
            stored: 42,
            configured: 43
        })
    ));
    // Without a configured id the stored one is used.
    assert_eq!(
        Store::open(StoreConfig::new(dir.path()))
            .unwrap()
            .identity(),
        identity
    );
    // A wiped directory is a new actor even with the same node id.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let store = Store::open(StoreConfig {
        node_id: Some(42),
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    assert_eq!(store.identity().node_id, 42);
    assert_ne!(store.identity().epoch, identity.epoch);
}

#[test]
fn inconsistent_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open(StoreConfig {
            limits: Limits {
                siblings_warn: 10,
                siblings_max: 5,
                ..Limits::default()
            },
            ..StoreConfig::new(dir.path())
        }),
        Err(StoreError::InvalidConfig(_))
    ));
    assert!(matches!(
        Store::open(config(dir.path(), SyncPolicy::Interval { interval_ms: 0 })),
        Err(StoreError::InvalidConfig(_))
    ));
    // The directory is locked while a store has it open.
    let store = open(dir.path(), SyncPolicy::Always);
    assert!(Store::open(StoreConfig::new(dir.path())).is_err());
    drop(store);
}

#[test]
fn the_counter_jumps_past_our_own_dots_instead_of_reusing_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let me = store.identity().actor();
    // As after restoring an old backup: another replica holds a dot of ours
    // far above our counter.
    let mut ahead = Object::new();
    ahead
        .update(
            &VersionVector::new(),
            Dot {
                actor: me,
                counter: 5000,
            },
            content("written before the backup was restored"),
        )
        .unwrap();
    store.merge(b"b", b"k", &ahead, REPAIR).unwrap();
    assert_eq!(store.stats().dot_counter_jumps, 1);
    let written = store
        .put(b"b", b"k", &VersionVector::new(), content("new"), PUT)
        .unwrap();
    assert!(written.dot.unwrap().counter > 5000);
    assert_eq!(written.object.siblings.len(), 2, "neither write was lost");
    // A context claiming a dot of ours above the counter also makes it jump.
    let mut context = VersionVector::new();
    context.add(Dot {
        actor: me,
        counter: 9000,
    });
    let written = store.put(b"b", b"k2", &context, content("v"), PUT).unwrap();
    assert!(written.dot.unwrap().counter > 9000);
    assert_eq!(store.stats().dot_counter_jumps, 2);
    // The jump is durable: a reopened store continues above it.
    drop(store);
    let store = open(dir.path(), SyncPolicy::Always);
    let written = store
        .put(b"b", b"k3", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    assert!(written.dot.unwrap().counter > 9000);
}

#[test]
fn store_and_iterators_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<Keys>();
    send::<Objects>();
    send_sync::<StoreError>();
}

/// Opens the store in `dir` as after a crash: a clean close, then its
/// clean-shutdown mark removed, which is what a crash leaves behind.
fn open_as_after_a_crash(dir: &Path) -> Store {
    std::fs::remove_file(dir.join(identity::CLEAN_MARK)).unwrap();
    open(dir, SyncPolicy::Always)
}

#[test]
fn a_clean_close_keeps_the_epoch_and_a_crash_retires_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let first = store.identity();
    store
        .put(b"b", b"k", &VersionVector::new(), content("a"), PUT)
        .unwrap();
    drop(store);
    assert!(dir.path().join(identity::CLEAN_MARK).exists());
    let store = open(dir.path(), SyncPolicy::Always);
    assert_eq!(store.identity(), first, "a clean close keeps the epoch");
    assert!(
        !dir.path().join(identity::CLEAN_MARK).exists(),
        "an open store has no clean-shutdown mark"
    );
    store.close().unwrap();
    // Without the mark, a new epoch whose counters start over.
    let store = open_as_after_a_crash(dir.path());
    let second = store.identity();
    assert_eq!(second.node_id, first.node_id);
    assert_ne!(second.epoch, first.epoch);
    drop(store);
    // It minted nothing, so it was never written: a clean close does not
    // make the next open resume the crashed epoch, nor an unwritten one.
    let store = open(dir.path(), SyncPolicy::Always);
    let third = store.identity();
    assert_ne!(third.epoch, first.epoch);
    assert_ne!(third.epoch, second.epoch);
    let dot = store
        .put(b"b", b"k2", &VersionVector::new(), content("b"), PUT)
        .unwrap()
        .dot
        .unwrap();
    assert_eq!(dot.actor, third.actor());
    assert_eq!(dot.counter, 1);
    drop(store);
    // Once it minted, it is persisted with its lease and survives a clean
    // close; the first epoch's key is still there.
    let store = open(dir.path(), SyncPolicy::Always);
    assert_eq!(store.identity(), third);
    assert_eq!(
        values(&store.get(b"b", b"k").unwrap().unwrap()),
        set(&["a"])
    );
}

/// Riak's kv679: a replica that minted a write and replicated it before
/// its own fsync, then lost it in a crash, must not mint a later write of
/// the same key with a dot that covers the lost one, or merging the other
/// replicas' copy back would drop the lost write.
#[test]
fn a_write_lost_in_a_crash_survives_on_the_copies_of_other_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let first = store
        .put(b"b", b"k", &VersionVector::new(), content("first"), PUT)
        .unwrap()
        .object;
    drop(store);
    // What the disk held when the crash came: the first write only.
    for entry in walk(dir.path()) {
        let to = image.path().join(entry.strip_prefix(dir.path()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    // The second write's copy went out to the other replicas...
    let store = open(dir.path(), SyncPolicy::Always);
    let lost = store
        .put(b"b", b"k", &first.version, content("lost here"), PUT)
        .unwrap()
        .object;
    drop(store);
    // ...and the replica came back from the crash without it.
    let store = open_as_after_a_crash(image.path());
    assert_eq!(
        values(&store.get(b"b", b"k").unwrap().unwrap()),
        set(&["first"])
    );
    let next = store
        .put(b"b", b"k", &first.version, content("next"), PUT)
        .unwrap()
        .object;
    assert!(
        !next.version.descends(&lost.version),
        "the write after the crash claims to have seen the lost one"
    );
    let merged = store.merge(b"b", b"k", &lost, REPAIR).unwrap().object;
    assert_eq!(values(&merged), set(&["lost here", "next"]));
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[test]
fn a_sealed_store_mints_nothing_but_takes_copies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let identity = store.identity();
    store
        .put(b"b", b"k", &VersionVector::new(), content("a"), PUT)
        .unwrap();
    store.seal().unwrap();
    store.seal().unwrap();
    assert!(matches!(
        store.put(b"b", b"k2", &VersionVector::new(), content("b"), PUT),
        Err(StoreError::Closed)
    ));
    store
        .merge(b"b", b"k3", &foreign_object(1, "c"), REPAIR)
        .unwrap();
    assert!(store.get(b"b", b"k").unwrap().is_some());
    drop(store);
    let store = open(dir.path(), SyncPolicy::Always);
    assert_eq!(store.identity(), identity);
    assert_eq!(
        values(&store.get(b"b", b"k3").unwrap().unwrap()),
        set(&["c"])
    );
}

/// Runs the ignored test `store::tests::<name>` of this binary as a child
/// process, with `env` set to `dir`, and returns it with its stdout.
fn spawn_child(
    name: &str,
    env: &str,
    dir: &Path,
) -> (std::process::Child, std::process::ChildStdout) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("store::tests::{name}"),
            "--ignored",
            "--nocapture",
        ])
        .env(env, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

/// The environment variable that turns [`crash_child`] on.
const CRASH_DIR_ENV: &str = "STARLING_STORE_CRASH_DIR";

/// Kills a writer process with SIGKILL mid-stream, three times, and checks
/// that no dot it reported was handed out again, by it or by the store
/// reopened afterwards, and that every restart after a kill minted under a
/// new epoch.
#[test]
fn dots_are_unique_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen: HashSet<(u64, u64, u64)> = HashSet::new();
    let mut epochs: HashSet<u64> = HashSet::new();
    for round in 0..3 {
        let (mut child, stdout) = spawn_child("crash_child", CRASH_DIR_ENV, dir.path());
        let mut round_dots = Vec::new();
        let mut round_epoch = None;
        // Enough writes to cross a lease boundary before the kill.
        let wanted = 1200 + round * 300;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("DOT ") else {
                continue;
            };
            let parts: Vec<u64> = rest.split(' ').map(|p| p.parse().unwrap()).collect();
            let dot = (parts[0], parts[1], parts[2]);
            assert!(seen.insert(dot), "dot {dot:?} handed out twice");
            assert!(
                *round_epoch.get_or_insert(dot.1) == dot.1,
                "one epoch per run"
            );
            round_dots.push(dot.2);
            if round_dots.len() == wanted {
                break;
            }
        }
        // Child::kill sends SIGKILL: no destructor, no final fsync.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(round_dots.len(), wanted, "the writer stopped early");
        assert!(
            epochs.insert(round_epoch.unwrap()),
            "a restart after SIGKILL kept the killed run's epoch"
        );
    }
    let store = open(dir.path(), SyncPolicy::Always);
    let me = store.identity().actor();
    assert!(
        !epochs.contains(&me.epoch),
        "the killed run's epoch resumed"
    );
    for i in 0..10 {
        let key = format!("after{i}");
        let dot = store
            .put(
                b"b",
                key.as_bytes(),
                &VersionVector::new(),
                content("v"),
                PUT,
            )
            .unwrap()
            .dot
            .unwrap();
        assert!(seen.insert((me.node, me.epoch, dot.counter)));
    }
}

/// The writer half of [`dots_are_unique_across_sigkill`]: does nothing unless
/// started by it.
#[test]
#[ignore = "runs only as the child process of dots_are_unique_across_sigkill"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    // Never: the fastest policy, and the one that relies most on the lease.
    let store = open(Path::new(&dir), SyncPolicy::Never);
    let me = store.identity().actor();
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000u64 {
        let key = format!("k{i}");
        let dot = store
            .put(
                b"b",
                key.as_bytes(),
                &VersionVector::new(),
                content("v"),
                PUT,
            )
            .unwrap()
            .dot
            .unwrap();
        writeln!(out, "DOT {} {} {}", me.node, me.epoch, dot.counter).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn hints_merge_survive_reopening_and_are_removed_only_when_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let owner = 0xabcd_u128;
    let first = foreign_object(1, "a");
    let second = foreign_object(2, "b");
    {
        let store = open(dir.path(), SyncPolicy::Always);
        assert!(store.put_hint(owner, b"b", b"k", &first).unwrap().durable);
        store.put_hint(owner, b"b", b"k", &second).unwrap();
        store.put_hint(owner + 1, b"b", b"other", &first).unwrap();
        assert_eq!(
            store.hint_owners().unwrap(),
            vec![(owner, 1), (owner + 1, 1)]
        );
        store.put_hint(u128::MAX, b"b", b"k", &first).unwrap();
        assert_eq!(
            store.hint_owner_ids().unwrap(),
            vec![owner, owner + 1, u128::MAX]
        );
        store.remove_hint(u128::MAX, b"b", b"k", &first).unwrap();
    }
    let store = open(dir.path(), SyncPolicy::Always);
    assert_eq!(store.hint_count(), 2);
    let batch = store.hints(owner, 10).unwrap();
    assert_eq!(batch.len(), 1);
    let (bucket, key, held) = &batch[0];
    assert_eq!((bucket.as_slice(), key.as_slice()), (&b"b"[..], &b"k"[..]));
    assert_eq!(*held, first.merge(&second));
    // A stale delivery does not remove the newer hint.
    assert!(!store.remove_hint(owner, b"b", b"k", &first).unwrap());
    assert!(store.remove_hint(owner, b"b", b"k", held).unwrap());
    assert_eq!(store.hint_owners().unwrap(), vec![(owner + 1, 1)]);
    assert_eq!(store.hint_owner_ids().unwrap(), vec![owner + 1]);
    assert_eq!(store.hint_count(), 1);
}

#[test]
fn the_hint_store_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        limits: Limits {
            hints_max: 2,
            ..Limits::default()
        },
        ..config(dir.path(), SyncPolicy::Never)
    })
    .unwrap();
    store
        .put_hint(1, b"b", b"k1", &foreign_object(1, "a"))
        .unwrap();
    store
        .put_hint(1, b"b", b"k2", &foreign_object(2, "a"))
        .unwrap();
    // Merging into an existing hint still works; a new one is refused.
    store
        .put_hint(1, b"b", b"k1", &foreign_object(3, "c"))
        .unwrap();
    assert!(matches!(
        store.put_hint(1, b"b", b"k3", &foreign_object(4, "a")),
        Err(StoreError::HintStoreFull { count: 2 })
    ));
}

#[test]
fn durability_callbacks_fire_after_the_fsync_or_with_the_poison() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let (tx, rx) = std::sync::mpsc::channel();
    let deferred = store
        .put_deferred(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let sender = tx.clone();
    store.on_durable(deferred.seq, move |r| sender.send(r).unwrap());
    let timeout = std::time::Duration::from_secs(10);
    assert!(matches!(rx.recv_timeout(timeout), Ok(Ok(true))));
    // Already durable: called at once.
    let sender = tx.clone();
    store.on_durable(deferred.seq, move |r| sender.send(r).unwrap());
    assert!(matches!(rx.try_recv(), Ok(Ok(true))));
    // A failed fsync reaches the callback as the poison, never as success.
    store.fail_next_fsync();
    let deferred = store
        .put_deferred(b"b", b"k2", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    store.on_durable(deferred.seq, move |r| tx.send(r).unwrap());
    assert!(matches!(
        rx.recv_timeout(timeout),
        Ok(Err(StoreError::Poisoned { .. }))
    ));
}

#[test]
fn a_batch_of_merges_is_durable_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("source"), SyncPolicy::Never);
    let objects: Vec<(Vec<u8>, Object)> = (0..100)
        .map(|i| {
            let key = format!("k{i}").into_bytes();
            let written = source
                .put(b"b", &key, &VersionVector::new(), content("v"), PUT)
                .unwrap();
            (key, written.object)
        })
        .collect();
    let store = open(&dir.path().join("target"), SyncPolicy::Always);
    let before = store.stats();
    // The caller waits once, for the last write; the committer fsyncs in
    // the background meanwhile, as often as the disk lets it.
    let durable = store
        .merge_many(
            objects.iter().map(|(k, o)| (&b"b"[..], k.as_slice(), o)),
            REPAIR,
        )
        .unwrap();
    assert!(durable);
    let after = store.stats();
    assert_eq!(after.fsync_writes_sum - before.fsync_writes_sum, 100);
    assert!(after.fsyncs - before.fsyncs <= 100);
    for (key, object) in &objects {
        assert_eq!(store.get(b"b", key).unwrap().as_ref(), Some(object));
    }
    assert!(store.merge_many(std::iter::empty(), REPAIR).unwrap());
}

/// The committer fsyncs fjall's journal through its own descriptor, which
/// relies on fjall's file naming (`<n>.jnl`, the next one `<n+1>.jnl` at
/// rotation): this pins it against the fjall in `vendor/`.
#[test]
fn fsyncs_follow_the_journal_fjall_writes_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    // `Never`: the 64 MB that make fjall rotate its journal go in without a
    // wait; each `sync_all` below is an fsync through the committer's path.
    let store = open(dir.path(), SyncPolicy::Never);
    // Incompressible values, in case the journal compresses.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut fill = || Content {
        value: noise(&mut state, 1 << 20),
        ..content("")
    };
    store
        .put(b"b", b"first", &VersionVector::new(), fill(), PUT)
        .unwrap();
    store.sync_all().unwrap();
    assert_eq!(store.synced_journal(), Some(0));
    assert!(dir.path().join("0.jnl").exists());
    for i in 0..66 {
        let key = format!("fill{i}");
        store
            .put(b"b", key.as_bytes(), &VersionVector::new(), fill(), PUT)
            .unwrap();
    }
    // A flush rotates the journal once it holds more than 64 MB.
    store.rotate_objects_memtable();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.path().join("1.jnl").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "fjall never rotated its journal to 1.jnl"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    store
        .put(
            b"b",
            b"after-rotation",
            &VersionVector::new(),
            content("x"),
            PUT,
        )
        .unwrap();
    store.sync_all().unwrap();
    assert_eq!(store.synced_journal(), Some(1));
    let newest = std::fs::read(dir.path().join("1.jnl")).unwrap();
    assert!(
        newest.windows(14).any(|w| w == b"after-rotation"),
        "the write after the rotation is not in the journal the committer fsyncs"
    );
    store.close().unwrap();
}

/// Incompressible bytes from a xorshift state, so tables hold what they are
/// given whether or not fjall compresses them.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

/// Waits, with a deadline, until every sealed memtable is flushed.
fn wait_for_flushes(store: &Store) {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while store.objects.sealed_memtable_count() > 0 {
        assert!(Instant::now() < deadline, "a flush never finished");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The two changes to the vendored lsm-tree (`vendor/README.md`) under a
/// test of this workspace: tables are written back in 1 MiB steps as they
/// are built, and the versions a flush or compaction replaces are dropped
/// on a thread of their own (with the tables they alone held, whose files
/// go with them). While every key is overwritten round after round, each
/// round flushed into a table of several MiB and the tables compacted,
/// readers check that every acknowledged write stays readable, at its
/// round or a later one; after a reopen every key holds its last value.
#[test]
fn acknowledged_writes_stay_readable_through_flushes_compactions_and_a_reopen() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const KEYS: usize = 1_500;
    const ROUNDS: u64 = 4;
    const VALUE_SIZE_BYTES: usize = 2 << 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), SyncPolicy::Never));
    let key = |i: usize| format!("key-{i:05}");
    // The last round whose write of each key returned; 0: none yet.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|first| {
            let (store, acked, done) = (store.clone(), acked.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while !done.load(Ordering::Acquire) {
                    for i in (first..KEYS).step_by(2) {
                        let floor = acked[i].load(Ordering::Acquire);
                        if floor == 0 {
                            continue;
                        }
                        let object = store.get(b"b", key(i).as_bytes()).unwrap();
                        let object = object.unwrap_or_else(|| panic!("{} lost", key(i)));
                        let live: Vec<_> = object.live_siblings().collect();
                        assert_eq!(live.len(), 1, "{} has siblings", key(i));
                        let value = &live[0].content.value;
                        let round = u64::from_le_bytes(value[..8].try_into().unwrap());
                        assert!(round >= floor, "{} went back to round {round}", key(i));
                        checked += 1;
                    }
                }
                checked
            })
        })
        .collect();

    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut last: Vec<(VersionVector, Vec<u8>)> = vec![(VersionVector::new(), Vec::new()); KEYS];
    for round in 1..=ROUNDS {
        for (i, (context, last_value)) in last.iter_mut().enumerate() {
            let mut value = round.to_le_bytes().to_vec();
            value.extend(noise(&mut state, VALUE_SIZE_BYTES));
            let written = store
                .put(
                    b"b",
                    key(i).as_bytes(),
                    context,
                    Content {
                        value: value.clone(),
                        ..content("")
                    },
                    PUT,
                )
                .unwrap();
            *context = written.object.version.clone();
            *last_value = value;
            acked[i].store(round, Ordering::Release);
        }
        store.rotate_objects_memtable();
        wait_for_flushes(&store);
        if round % 2 == 0 {
            // Merges the round's tables, dropping the overwritten versions.
            store.objects.major_compact().unwrap();
        }
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0, "a reader checked nothing");
    }
    // What is left after the last compaction (each key's last value) is
    // itself more than two write-back steps.
    let on_disk = store.objects.disk_space();
    assert!(on_disk > 2 << 20, "{on_disk} bytes on disk");

    Arc::into_inner(store).unwrap().close().unwrap();
    let store = open(dir.path(), SyncPolicy::Never);
    for (i, (_, value)) in last.iter().enumerate() {
        let object = store.get(b"b", key(i).as_bytes()).unwrap().unwrap();
        let live: Vec<_> = object.live_siblings().collect();
        assert_eq!(live.len(), 1, "{} has siblings after the reopen", key(i));
        assert!(
            live[0].content.value == *value,
            "{} lost its last value",
            key(i)
        );
    }
    store.close().unwrap();
}

#[test]
fn write_heavy_keyspaces_draw_their_memtable_size_from_the_range() {
    let sizes: BTreeSet<u64> = (0..64).map(|_| draw_memtable_size()).collect();
    assert!(sizes.iter().all(|size| MEMTABLE_SIZE_BYTES.contains(size)));
    // 64 draws from 24 MiB of sizes: replicas do not all get one size.
    assert!(sizes.len() > 1, "every draw gave {sizes:?}");
}

/// The environment variable that turns [`journal_crash_child`] on.
const JOURNAL_CRASH_DIR_ENV: &str = "STARLING_STORE_JOURNAL_CRASH_DIR";

/// The value [`journal_crash_child`] writes under key `i`: ~1 KiB, so that
/// a few thousand writes cross many of the journal's written-ahead chunks.
fn journal_crash_value(i: u64) -> String {
    format!("{i:08}-").repeat(110)
}

/// fjall's journal is written as zeros ahead of its end
/// (vendor/README.md): a freshly written journal has its first megabyte
/// allocated, not a hole, while it holds a few hundred bytes.
#[test]
fn the_journal_is_written_ahead_of_its_end() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    store
        .put(b"b", b"k", &VersionVector::new(), content("v"), PUT)
        .unwrap();
    let journal = std::fs::metadata(dir.path().join("0.jnl")).unwrap();
    assert_eq!(journal.len(), 64 << 20, "fjall's preallocation changed");
    let allocated = journal.blocks() * 512;
    assert!(
        allocated >= 1 << 20,
        "only {allocated} bytes of the journal are allocated"
    );
    store.close().unwrap();
}

/// SIGKILLs a writer whose every write was acknowledged (`Always`: fsynced
/// before `put` returns) once its journal has crossed many written-ahead
/// chunks, and checks that the reopened store has every acknowledged write:
/// zeros written ahead of the journal's end never land on an entry.
#[test]
fn acknowledged_writes_survive_sigkill_with_the_journal_written_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stdout) = spawn_child("journal_crash_child", JOURNAL_CRASH_DIR_ENV, dir.path());
    // 4,000 writes of ~1 KiB: about 4.5 MB of journal, past a dozen chunks.
    let wanted = 4_000u64;
    let mut acked = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Some(i) = line.strip_prefix("ACK ") else {
            continue;
        };
        assert_eq!(i.parse::<u64>().unwrap(), acked, "acks out of order");
        acked += 1;
        if acked == wanted {
            break;
        }
    }
    // Child::kill sends SIGKILL: no destructor, no final flush.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked, wanted, "the writer stopped early");
    let store = open(dir.path(), SyncPolicy::Always);
    for i in 0..acked {
        let key = format!("k{i}");
        let object = store
            .get(b"b", key.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(
            values(&object),
            BTreeSet::from([journal_crash_value(i)]),
            "{key}"
        );
    }
    store.close().unwrap();
}

/// The writer half of
/// [`acknowledged_writes_survive_sigkill_with_the_journal_written_ahead`]:
/// does nothing unless started by it.
#[test]
#[ignore = "runs only as the child process of acknowledged_writes_survive_sigkill_with_the_journal_written_ahead"]
fn journal_crash_child() {
    let Some(dir) = std::env::var_os(JOURNAL_CRASH_DIR_ENV) else {
        return;
    };
    let store = open(Path::new(&dir), SyncPolicy::Always);
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000u64 {
        let key = format!("k{i}");
        store
            .put(
                b"b",
                key.as_bytes(),
                &VersionVector::new(),
                content(&journal_crash_value(i)),
                PUT,
            )
            .unwrap();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}
