//! The store's anti-entropy surface: tree views for exchanges, segment and
//! partition listings, compare-and-remove for reaping and hand-off, and the
//! background maintenance that builds the trees and moves keys between
//! trees when a bucket's `n_val` changes.
//!
//! Everything here is blocking, like the rest of the store. Long scans pace
//! themselves ([`MAINTENANCE_RECORDS_PER_S_MAX`]) so a rebuild never starves
//! client requests of disk and CPU.

use std::time::{Duration, Instant};

use super::*;

/// Most records a maintenance scan reads per second.
pub const MAINTENANCE_RECORDS_PER_S_MAX: u64 = 200_000;

/// One tree as [`Store::aae_trees`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    /// Which tree.
    pub id: TreeId,
    /// Its root hash.
    pub root: u64,
    /// Keys it holds.
    pub keys: u64,
    /// Bytes of their stored records.
    pub size_bytes: u64,
}

/// What a [`Store::maintain`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// The trees were (re)built from the stored entries.
    pub trees_built: bool,
    /// Records of buckets whose `n_val` changed, checked.
    pub records_verified: u64,
    /// Records whose entry was rewritten to the bucket's new `n_val`.
    pub records_fixed: u64,
}

/// Paces a scan to at most [`MAINTENANCE_RECORDS_PER_S_MAX`].
struct Pace {
    start: Instant,
    records: u64,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            start: Instant::now(),
            records: 0,
        }
    }

    fn tick(&mut self) {
        self.records += 1;
        if !self.records.is_multiple_of(1024) {
            return;
        }
        let due =
            Duration::from_secs_f64(self.records as f64 / MAINTENANCE_RECORDS_PER_S_MAX as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

impl Store {
    /// The partition count the trees are split by.
    pub fn partition_count(&self) -> u32 {
        1 << self.partition_bits
    }

    /// Whether the trees are built and describe the store.
    pub fn aae_ready(&self) -> bool {
        self.trees.ready()
    }

    /// Completed tree builds since the store opened.
    pub fn aae_builds(&self) -> u64 {
        self.trees.builds()
    }

    /// Every non-empty tree, in id order; `None` while the trees are being
    /// built.
    pub fn aae_trees(&self) -> Option<Vec<TreeSummary>> {
        self.trees.with(|trees| {
            let mut out: Vec<TreeSummary> = trees
                .iter()
                .map(|(&id, tree)| TreeSummary {
                    id,
                    root: tree.root(),
                    keys: tree.keys(),
                    size_bytes: tree.size_bytes(),
                })
                .collect();
            out.sort_by_key(|t| t.id);
            out
        })
    }

    /// The branch hashes of one tree (zeros for a tree this store does not
    /// hold); `None` while building.
    pub fn aae_branches(&self, id: TreeId) -> Option<Vec<u64>> {
        self.trees.with(|trees| {
            trees
                .get(&id)
                .map_or_else(|| vec![0; merkle::BRANCHES], |t| t.branches().to_vec())
        })
    }

    /// The segment hashes under each of `branches` (out-of-range branches
    /// are skipped); `None` while building.
    pub fn aae_segment_hashes(&self, id: TreeId, branches: &[u16]) -> Option<Vec<(u16, Vec<u64>)>> {
        self.trees.with(|trees| {
            branches
                .iter()
                .filter(|&&b| usize::from(b) < merkle::BRANCHES)
                .map(|&b| {
                    let hashes = trees.get(&id).map_or_else(
                        || vec![0; merkle::SEGMENTS_PER_BRANCH],
                        |t| t.branch_segments(b).to_vec(),
                    );
                    (b, hashes)
                })
                .collect()
        })
    }

    /// The keys (with digests) of the given segments of a tree, in
    /// placement order. Out-of-range segments are skipped.
    pub fn aae_keys(&self, id: TreeId, segments: &[u16]) -> Result<Vec<KeyDigest>, StoreError> {
        let mut out = Vec::new();
        for &segment in segments {
            if usize::from(segment) >= merkle::SEGMENTS {
                continue;
            }
            let (lower, upper) =
                aae::placed_range(id.partition, Some(segment), self.partition_bits);
            let range = match upper {
                Some(upper) => self.objects.range(lower..upper),
                None => self.objects.range(lower..),
            };
            for guard in range {
                let (placed, value) = guard.into_inner()?;
                if let Some(k) = key_digest(id, &placed, &value)? {
                    out.push(k);
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` keys of one tree after the cursor `start_after` (an
    /// opaque value from a previous page), with the cursor of the next page
    /// (`None` at the end). For hand-off of a whole partition.
    pub fn aae_tree_keys(
        &self,
        id: TreeId,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyDigest>, Option<Vec<u8>>), StoreError> {
        use std::ops::Bound;
        let (first, end) = aae::placed_range(id.partition, None, self.partition_bits);
        let lower = match start_after {
            Some(cursor)
                if cursor >= first.as_slice()
                    && end.as_ref().is_none_or(|e| cursor < e.as_slice()) =>
            {
                Bound::Excluded(cursor.to_vec())
            }
            _ => Bound::Included(first),
        };
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for guard in self.objects.range::<Vec<u8>, _>((lower, upper)) {
            let (placed, value) = guard.into_inner()?;
            if let Some(k) = key_digest(id, &placed, &value)? {
                out.push(k);
            }
            if out.len() >= limit.max(1) {
                return Ok((out, Some(placed.to_vec())));
            }
        }
        Ok((out, None))
    }

    /// Removes a key if its stored copy still has `digest`: reaping a
    /// tombstone every replica holds, or dropping a copy that was handed to
    /// the key's new owners. A copy that changed meanwhile stays. Returns
    /// whether the key was removed; durable as the sync policy says.
    pub fn remove_if_unchanged(
        &self,
        bucket: &[u8],
        key: &[u8],
        digest: u64,
    ) -> Result<bool, StoreError> {
        self.limits.check_key(bucket, key)?;
        self.admit_into_reserve()?;
        let at = self.locate(bucket, key);
        let guard = self.lock(at.name_key());
        let Some((object, entry)) = self.read_entry(bucket, key, &at.placed)? else {
            return Ok(false);
        };
        if merkle::object_digest(&object) != digest {
            return Ok(false);
        }
        let mut batch = self.db.batch();
        batch.remove(&self.objects, at.placed.as_slice());
        if object.is_deleted() {
            batch.remove(&self.tombstones, at.name_key());
        }
        let append = self.syncer.begin_append();
        self.syncer.write_journal(|| batch.commit())?;
        let seq = append.finish();
        self.trees
            .apply(bucket, key, at.placement, Some(entry), None);
        drop(guard);
        self.syncer.commit(seq)?;
        bump(&self.counters.keys_removed);
        Ok(true)
    }

    /// Reaps one key: removes the stored copy if it is all tombstones and
    /// `tombstone` covers it, and every hint held for it on behalf of
    /// `owners` that `tombstone` covers. A copy or hint with anything the
    /// tombstone has not seen (a later write) stays, and then so does the
    /// copy. Returns whether the key is now gone here (no copy left).
    pub fn reap(
        &self,
        bucket: &[u8],
        key: &[u8],
        tombstone: &Object,
        owners: &[u128],
    ) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering as AtomicOrdering;
        self.limits.check_key(bucket, key)?;
        self.admit_into_reserve()?;
        if !tombstone.is_deleted() || !tombstone.is_well_formed() {
            return Err(StoreError::InvalidObject("only a tombstone can be reaped"));
        }
        // Hints first, each under its own lock (never two locks at once:
        // a build takes every lock in order). A hint that appears after its
        // turn is a later write's, which the tombstone does not cover anyway.
        let mut seq = self.syncer.written_seq();
        for &owner in owners {
            let hint_key = hint_key(owner, bucket, key);
            let _hint_guard = self.lock(&hint_key);
            let Some(bytes) = self.hints.get(&hint_key)? else {
                continue;
            };
            let hint = decode_object(&format!("hint {}", escape(&hint_key)), &bytes)?;
            if tombstone.version.descends(&hint.version) {
                let append = self.syncer.begin_append();
                self.syncer.write_journal(|| self.hints.remove(hint_key))?;
                seq = append.finish();
                self.hint_count.fetch_sub(1, AtomicOrdering::Relaxed);
            }
        }
        let at = self.locate(bucket, key);
        let guard = self.lock(at.name_key());
        let gone = match self.read_entry(bucket, key, &at.placed)? {
            None => true,
            Some((copy, entry))
                if copy.is_deleted() && tombstone.version.descends(&copy.version) =>
            {
                let mut batch = self.db.batch();
                batch.remove(&self.objects, at.placed.as_slice());
                batch.remove(&self.tombstones, at.name_key());
                let append = self.syncer.begin_append();
                self.syncer.write_journal(|| batch.commit())?;
                seq = append.finish();
                self.trees
                    .apply(bucket, key, at.placement, Some(entry), None);
                bump(&self.counters.keys_removed);
                true
            }
            Some(_) => false,
        };
        drop(guard);
        self.syncer.commit(seq)?;
        Ok(gone)
    }

    /// The hint held for `owner` of one key, if any.
    pub fn hint(
        &self,
        owner: u128,
        bucket: &[u8],
        key: &[u8],
    ) -> Result<Option<Object>, StoreError> {
        self.limits.check_key(bucket, key)?;
        let hint_key = hint_key(owner, bucket, key);
        self.hints
            .get(&hint_key)?
            .map(|bytes| decode_object(&format!("hint {}", escape(&hint_key)), &bytes))
            .transpose()
    }

    /// Up to `limit` all-tombstone objects whose newest tombstone is older
    /// than `cutoff_us`, after the key `start_after` (exclusive, as `(bucket,
    /// key)`), in key order, with where the next page starts (`None` at the
    /// end).
    #[allow(clippy::type_complexity)]
    pub fn tombstones_before(
        &self,
        cutoff_us: u64,
        start_after: Option<(&[u8], &[u8])>,
        limit: usize,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>, Object)>, Option<(Vec<u8>, Vec<u8>)>), StoreError> {
        use std::ops::Bound;
        let lower = match start_after {
            Some((bucket, key)) => {
                self.limits.check_key(bucket, key)?;
                Bound::Excluded(object_key(bucket, key))
            }
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for guard in self
            .tombstones
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
        {
            let (name_key, value) = guard.into_inner()?;
            let (bucket, key) = split_key(&name_key)?;
            let deleted_at = layout::decode_u64("tombstone", &value)?;
            if deleted_at < cutoff_us
                && let Some(object) = self.read(bucket, key, &self.locate(bucket, key).placed)?
                && object.is_deleted()
            {
                out.push((bucket.to_vec(), key.to_vec(), object));
            }
            if out.len() >= limit.max(1) {
                return Ok((out, Some((bucket.to_vec(), key.to_vec()))));
            }
        }
        Ok((out, None))
    }

    /// Tombstone-only objects awaiting reaping.
    pub fn tombstone_count(&self) -> Result<u64, StoreError> {
        Ok(self.tombstones.len()? as u64)
    }

    /// Builds the trees from the stored entries. Writes may go on
    /// meanwhile; until the build finishes, [`Store::aae_ready`] is false.
    pub fn rebuild_trees(&self) -> Result<(), StoreError> {
        // Hold every key lock while the build starts recording and takes
        // its snapshot: no write is half done, so each one is either in the
        // snapshot or recorded by the trees afterwards, never both.
        let snapshot = {
            let _guards: Vec<MutexGuard<'_, ()>> = self.locks.iter().map(|l| l.lock()).collect();
            self.trees.begin_build();
            self.db.snapshot()
        };
        let mut pace = Pace::new();
        let mut corrupt = 0u64;
        for guard in snapshot.iter(&self.objects) {
            let (placed, value) = guard.into_inner()?;
            let parsed = aae::split_placed_key(&placed, self.partition_bits).and_then(
                |(placement, name_key)| {
                    let (bucket, key) = split_object_key(name_key)?;
                    let (entry, _) = aae::decode_entry(ObjectRecord(bucket, key), &value).ok()?;
                    Some((entry, placement, bucket, key))
                },
            );
            match parsed {
                Some((entry, placement, bucket, key)) => {
                    self.trees.fold(bucket, key, placement, entry);
                }
                // Left out of the trees: exchanges find the key missing
                // here and ask the peers for it; reads report the record.
                None => corrupt += 1,
            }
            pace.tick();
        }
        self.trees.finish_build();
        if corrupt > 0 {
            tracing::error!(
                records = corrupt,
                "corrupt object records left out of the anti-entropy trees"
            );
        }
        Ok(())
    }

    /// Background upkeep; call it periodically from a blocking thread:
    /// checks the disk ([`Store::check_disk`]), builds the trees if they
    /// were never built, and moves the keys of buckets whose `n_val`
    /// changed to their new trees.
    pub fn maintain(&self) -> Result<MaintenanceReport, StoreError> {
        self.check_disk();
        let mut report = MaintenanceReport::default();
        if self.trees.builds() == 0 {
            self.rebuild_trees()?;
            report.trees_built = true;
        }
        let pending: Vec<Vec<u8>> = std::mem::take(&mut *self.reindex.lock());
        for (done, bucket) in pending.iter().enumerate() {
            if let Err(err) = self.reindex_bucket(bucket, &mut report) {
                // Retried next time.
                self.reindex.lock().extend(pending[done..].iter().cloned());
                return Err(err);
            }
        }
        Ok(report)
    }

    /// Rewrites the entry of every record of `bucket` whose `n_val` is not
    /// the bucket's (a full scan: a bucket's keys are spread over every
    /// partition). Writes meanwhile carry the record's stored entry as the
    /// old one, so each key moves trees exactly once, here or by a write.
    fn reindex_bucket(
        &self,
        bucket: &[u8],
        report: &mut MaintenanceReport,
    ) -> Result<(), StoreError> {
        let prefix = bucket_prefix(bucket);
        let snapshot = self.db.snapshot();
        let mut pace = Pace::new();
        for guard in snapshot.iter(&self.objects) {
            let (placed, _) = guard.into_inner()?;
            pace.tick();
            let Some(name_key) = aae::name_key(&placed) else {
                continue;
            };
            if !name_key.starts_with(&prefix) {
                continue;
            }
            let (bucket, key) = split_key(name_key)?;
            if self.reindex_record(bucket, key)? {
                report.records_fixed += 1;
            }
            report.records_verified += 1;
        }
        Ok(())
    }

    /// Gives one record the `n_val` of its bucket, under the key's lock.
    /// Returns whether it had another.
    fn reindex_record(&self, bucket: &[u8], key: &[u8]) -> Result<bool, StoreError> {
        let at = self.locate(bucket, key);
        let _guard = self.lock(at.name_key());
        let Some(value) = self.objects.get(&at.placed)? else {
            return Ok(false);
        };
        let (old_entry, _) = match aae::decode_entry(ObjectRecord(bucket, key), &value) {
            Ok(decoded) => decoded,
            // Reported where it is read; left as it is.
            Err(_) => return Ok(false),
        };
        let n_val = self.n_val(bucket);
        if old_entry.n_val == n_val {
            return Ok(false);
        }
        let mut value = value.to_vec();
        aae::encode_entry(n_val, old_entry.digest, &mut value);
        self.admit_into_reserve()?;
        self.syncer
            .write_journal(|| self.objects.insert(at.placed.as_slice(), value))?;
        self.syncer.note_write();
        let new_entry = IndexEntry { n_val, ..old_entry };
        self.trees
            .apply(bucket, key, at.placement, Some(old_entry), Some(new_entry));
        Ok(true)
    }
}

/// The key and digest of a placed record if it belongs to tree `id`.
fn key_digest(id: TreeId, placed: &[u8], value: &[u8]) -> Result<Option<KeyDigest>, StoreError> {
    let (bucket, key) = split_placed(placed)?;
    let (entry, _) = aae::decode_entry(ObjectRecord(bucket, key), value)?;
    if entry.n_val != id.n_val {
        return Ok(None);
    }
    Ok(Some(KeyDigest {
        bucket: bucket.to_vec(),
        key: key.to_vec(),
        digest: entry.digest,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::dvv::Metadata;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(StoreConfig {
            sync: SyncPolicy::Never,
            partition_count: 16,
            ..StoreConfig::new(dir)
        })
        .unwrap()
    }

    fn ready(dir: &std::path::Path) -> Store {
        let store = open(dir);
        store.maintain().unwrap();
        assert!(store.aae_ready());
        store
    }

    fn content(value: &str) -> Content {
        Content {
            value: value.as_bytes().to_vec(),
            meta: Metadata {
                content_type: "text/plain".into(),
                last_modified_us: 1,
                ..Metadata::default()
            },
            deleted: false,
        }
    }

    const PUT: WriteOptions = WriteOptions {
        resolve_by_time: false,
        repair: false,
    };
    const REPAIR: WriteOptions = WriteOptions {
        resolve_by_time: false,
        repair: true,
    };

    fn roots(store: &Store) -> Vec<(TreeId, u64, u64)> {
        store
            .aae_trees()
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.root, t.keys))
            .collect()
    }

    /// Copies every object of `from` into `to` by merge, as repair does.
    fn copy_all(from: &Store, to: &Store) {
        for item in from.objects() {
            let (bucket, key, object) = item.unwrap();
            to.merge(&bucket, &key, &object, REPAIR).unwrap();
        }
    }

    #[test]
    fn replicas_with_the_same_data_have_the_same_trees_and_differences_are_found() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (ready(da.path()), ready(db.path()));
        for i in 0..500 {
            a.put(
                b"b",
                format!("k{i}").as_bytes(),
                &VersionVector::new(),
                content("v"),
                PUT,
            )
            .unwrap();
        }
        copy_all(&a, &b);
        assert_eq!(roots(&a), roots(&b));
        assert_eq!(roots(&a).iter().map(|r| r.2).sum::<u64>(), 500);

        // One more write on `a` only: exactly one tree, branch and segment
        // differ, and the segment listing names the key.
        let written = a
            .put(b"b", b"k7", &VersionVector::new(), content("w"), PUT)
            .unwrap();
        let (ta, tb) = (a.aae_trees().unwrap(), b.aae_trees().unwrap());
        let differing: Vec<TreeId> = ta
            .iter()
            .zip(&tb)
            .filter(|(x, y)| x.root != y.root)
            .map(|(x, _)| x.id)
            .collect();
        assert_eq!(differing.len(), 1);
        let id = differing[0];
        let branches =
            merkle::differing(&a.aae_branches(id).unwrap(), &b.aae_branches(id).unwrap());
        assert_eq!(branches.len(), 1);
        let (sa, sb) = (
            a.aae_segment_hashes(id, &branches).unwrap(),
            b.aae_segment_hashes(id, &branches).unwrap(),
        );
        let segments: Vec<u16> = merkle::differing(&sa[0].1, &sb[0].1)
            .into_iter()
            .map(|i| merkle::segment_index(branches[0], i))
            .collect();
        assert_eq!(segments.len(), 1);
        let keys = merkle::differing_keys(
            &a.aae_keys(id, &segments).unwrap(),
            &b.aae_keys(id, &segments).unwrap(),
        );
        assert_eq!(keys, vec![(b"b".to_vec(), b"k7".to_vec())]);
        b.merge(b"b", b"k7", &written.object, REPAIR).unwrap();
        assert_eq!(roots(&a), roots(&b));
    }

    #[test]
    fn trees_are_rebuilt_equal_after_reopening_and_under_concurrent_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ready(dir.path()));
        for i in 0..2000 {
            store
                .put(
                    b"b",
                    format!("k{i}").as_bytes(),
                    &VersionVector::new(),
                    content("v"),
                    PUT,
                )
                .unwrap();
        }
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let key = format!("k{}", i % 3000);
                    store
                        .put(
                            b"b",
                            key.as_bytes(),
                            &VersionVector::new(),
                            content("x"),
                            PUT,
                        )
                        .unwrap();
                }
            })
        };
        // Rebuild while the writer runs; afterwards the trees must equal a
        // rebuild with nothing running.
        store.rebuild_trees().unwrap();
        writer.join().unwrap();
        let during = roots(&store);
        store.rebuild_trees().unwrap();
        assert_eq!(during, roots(&store));
        let store = Arc::into_inner(store).unwrap();
        store.close().unwrap();
        let reopened = open(dir.path());
        assert!(!reopened.aae_ready());
        assert_eq!(reopened.aae_trees(), None);
        reopened.maintain().unwrap();
        assert_eq!(during, roots(&reopened));
    }

    /// Turns the placed records of a closed store's directory back into the
    /// layout before them (objects by name key, an `aae` index beside them),
    /// for the keys `pick` chooses; the others stay placed, as after a crash
    /// part-way through a migration.
    fn to_legacy_layout(dir: &std::path::Path, pick: impl Fn(usize) -> bool) {
        let db = fjall::Database::builder(dir).open().unwrap();
        let placed = db
            .keyspace(layout::KEYSPACE_PLACED, KeyspaceCreateOptions::default)
            .unwrap();
        let legacy = db
            .keyspace(
                layout::KEYSPACE_LEGACY_OBJECTS,
                KeyspaceCreateOptions::default,
            )
            .unwrap();
        let index = db
            .keyspace(
                layout::KEYSPACE_LEGACY_INDEX,
                KeyspaceCreateOptions::default,
            )
            .unwrap();
        let records: Vec<(Vec<u8>, Vec<u8>)> = placed
            .iter()
            .map(|g| {
                let (k, v) = g.into_inner().unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        for (i, (placed_key, value)) in records.into_iter().enumerate() {
            if !pick(i) {
                continue;
            }
            let name_key = &placed_key[aae::PLACED_KEY_PREFIX_SIZE_BYTES..];
            legacy
                .insert(name_key, &value[aae::ENTRY_SIZE_BYTES..])
                .unwrap();
            index.insert(&placed_key, [1u8; 14]).unwrap();
            placed.remove(placed_key).unwrap();
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }

    #[test]
    fn a_directory_of_the_old_layout_is_moved_to_placed_records() {
        for half in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = ready(dir.path());
            let five = BucketProps {
                n_val: 5,
                ..BucketProps::default()
            };
            store.set_bucket_props(b"five", &five).unwrap();
            // More keys than one migration batch.
            for i in 0..1500 {
                let bucket: &[u8] = if i % 3 == 0 { b"five" } else { b"b" };
                store
                    .put(
                        bucket,
                        format!("k{i}").as_bytes(),
                        &VersionVector::new(),
                        content("v"),
                        PUT,
                    )
                    .unwrap();
            }
            let doomed = store.get(b"b", b"k1").unwrap().unwrap();
            store.delete(b"b", b"k1", &doomed.version, PUT).unwrap();
            let only = store
                .put(b"gone", b"k", &VersionVector::new(), content("v"), PUT)
                .unwrap();
            store
                .delete(b"gone", b"k", &only.object.version, PUT)
                .unwrap();
            let before = roots(&store);
            assert!(before.iter().any(|r| r.0.n_val == 5));
            let objects: Vec<_> = store.objects().map(Result::unwrap).collect();
            let keys = store.list_keys(b"b").unwrap();
            store.close().unwrap();

            to_legacy_layout(dir.path(), |i| !half || i % 2 == 0);
            let store = ready(dir.path());
            assert!(!store.db.keyspace_exists(layout::KEYSPACE_LEGACY_OBJECTS));
            assert!(!store.db.keyspace_exists(layout::KEYSPACE_LEGACY_INDEX));
            assert_eq!(roots(&store), before);
            assert_eq!(
                store.objects().map(Result::unwrap).collect::<Vec<_>>(),
                objects
            );
            assert_eq!(store.list_keys(b"b").unwrap(), keys);
            assert_eq!(
                store.list_buckets().unwrap(),
                vec![b"b".to_vec(), b"five".to_vec()]
            );
            assert_eq!(store.tombstone_count().unwrap(), 2);
            let read = store.get(b"b", b"k2").unwrap().unwrap();
            assert_eq!(read.siblings[0].content.value, b"v");
            // Writes go on from the moved records.
            store
                .put(b"b", b"k2", &read.version, content("w"), PUT)
                .unwrap();
            let incremental = roots(&store);
            store.rebuild_trees().unwrap();
            assert_eq!(roots(&store), incremental);
        }
    }

    #[test]
    fn removal_is_compare_and_delete_and_tombstones_are_listed_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = ready(dir.path());
        let live = store
            .put(b"b", b"live", &VersionVector::new(), content("v"), PUT)
            .unwrap();
        let doomed = store
            .put(b"b", b"doomed", &VersionVector::new(), content("v"), PUT)
            .unwrap();
        let deleted = store
            .delete(b"b", b"doomed", &doomed.object.version, PUT)
            .unwrap();
        assert_eq!(store.tombstone_count().unwrap(), 1);
        let (old, _) = store.tombstones_before(u64::MAX, None, 10).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].1, b"doomed");
        let (young, _) = store.tombstones_before(1, None, 10).unwrap();
        assert!(young.is_empty());

        // A stale digest removes nothing.
        let stale = merkle::object_digest(&doomed.object);
        assert!(!store.remove_if_unchanged(b"b", b"doomed", stale).unwrap());
        let digest = merkle::object_digest(&deleted.object);
        assert!(store.remove_if_unchanged(b"b", b"doomed", digest).unwrap());
        assert_eq!(store.get(b"b", b"doomed").unwrap(), None);
        assert_eq!(store.tombstone_count().unwrap(), 0);
        let trees = store.aae_trees().unwrap();
        assert_eq!(trees.iter().map(|t| t.keys).sum::<u64>(), 1);

        // A write after the delete makes the key live again and unlists it.
        let dead = store
            .delete(b"b", b"live", &live.object.version, PUT)
            .unwrap();
        assert_eq!(store.tombstone_count().unwrap(), 1);
        store
            .put(b"b", b"live", &dead.object.version, content("again"), PUT)
            .unwrap();
        assert_eq!(store.tombstone_count().unwrap(), 0);
        // Rebuilding from the stored entries gives the same trees as the updates did.
        let incremental = roots(&store);
        store.rebuild_trees().unwrap();
        assert_eq!(incremental, roots(&store));
    }

    #[test]
    fn reaping_removes_only_what_the_tombstone_covers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ready(dir.path());
        let v1 = store
            .put(b"b", b"k", &VersionVector::new(), content("v1"), PUT)
            .unwrap();
        let tomb = store.delete(b"b", b"k", &v1.object.version, PUT).unwrap();
        // A stale hint (the old value) and a hint of a later write.
        store.put_hint(7, b"b", b"k", &v1.object).unwrap();
        let later = store
            .put(b"b", b"other", &VersionVector::new(), content("x"), PUT)
            .unwrap();
        store.put_hint(8, b"b", b"k", &later.object).unwrap();
        // A live value is not a tombstone and cannot be reaped.
        assert!(store.reap(b"b", b"k", &v1.object, &[7]).is_err());
        assert!(store.reap(b"b", b"k", &tomb.object, &[7, 8, 9]).unwrap());
        assert_eq!(store.get(b"b", b"k").unwrap(), None);
        assert_eq!(store.hint(7, b"b", b"k").unwrap(), None);
        assert!(store.hint(8, b"b", b"k").unwrap().is_some());
        assert_eq!(store.hint_count(), 1);
        // A copy that has seen a write the tombstone has not stays.
        let again = store
            .put(b"b", b"k", &VersionVector::new(), content("again"), PUT)
            .unwrap();
        let tomb2 = store
            .delete(b"b", b"k", &again.object.version, PUT)
            .unwrap();
        let newer = store
            .put(b"b", b"k", &tomb2.object.version, content("newer"), PUT)
            .unwrap();
        assert!(!store.reap(b"b", b"k", &tomb2.object, &[]).unwrap());
        assert_eq!(store.get(b"b", b"k").unwrap(), Some(newer.object));
    }

    #[test]
    fn keys_move_trees_when_n_val_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ready(dir.path());
        for i in 0..100 {
            store
                .put(
                    b"five",
                    format!("k{i}").as_bytes(),
                    &VersionVector::new(),
                    content("v"),
                    PUT,
                )
                .unwrap();
        }
        assert!(roots(&store).iter().all(|r| r.0.n_val == 3));
        let props = BucketProps {
            n_val: 5,
            ..BucketProps::default()
        };
        store.set_bucket_props(b"five", &props).unwrap();
        let report = store.maintain().unwrap();
        assert_eq!(report.records_fixed, 100);
        let trees = roots(&store);
        assert!(trees.iter().all(|r| r.0.n_val == 5), "{trees:?}");
        assert_eq!(trees.iter().map(|r| r.2).sum::<u64>(), 100);
        // Paging through one tree's keys sees each of its keys once.
        let id = trees[0].0;
        let mut seen = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let (page, next) = store.aae_tree_keys(id, cursor.as_deref(), 3).unwrap();
            seen.extend(page.into_iter().map(|k| k.key));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len() as u64, trees[0].2);
    }

    #[test]
    fn the_partition_count_is_fixed_for_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let err = Store::open(StoreConfig {
            partition_count: 32,
            ..StoreConfig::new(dir.path())
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::InvalidConfig(_)), "{err}");
        assert!(
            Store::open(StoreConfig {
                partition_count: 48,
                ..StoreConfig::new(tempfile::tempdir().unwrap().path())
            })
            .is_err()
        );
    }
}
