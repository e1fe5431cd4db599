//! The fjall-backed [`Store`]: one replica's durable copy of its keys.
//!
//! Purpose: keep each key's [`Object`] on local disk, apply writes
//! coordinated here ([`Store::put`]: mint a fresh dot, [`Object::update`]) and
//! copies from other replicas ([`Store::merge`]: [`Object::merge`]) as atomic
//! read-modify-writes, persist bucket properties, and make writes durable as
//! the [`SyncPolicy`] says (group commit by default).
//!
//! Non-goals: the store knows nothing of the network, the ring, quorums or
//! clocks beyond filling a missing `last_modified_us`. It does not reap
//! tombstones yet: a tombstone-only object stays stored, hidden from
//! listings, until a later reaper removes it (the hook is
//! [`Store::objects`] plus [`Object::is_deleted`]; reaping must take the
//! key's lock and re-check that the object is still all tombstones before
//! removing it, so a concurrent write is never lost). Nor does it maintain
//! Merkle trees or hints; those build on [`Store::objects`].
//!
//! The API blocks (fjall I/O, fsync): async callers run it on a blocking
//! thread pool.
//!
//! # Invariants
//!
//! - Read-modify-write of one key is atomic: it runs under one of
//!   [`LOCK_STRIPES`] mutexes chosen by the key's hash.
//! - A dot is never handed out twice, across restarts and crashes (see
//!   [`crate::identity`]), and never one the object already covers.
//! - Every object is checked before it is written (well-formed, descends
//!   what it replaces) and after it is read back (format, decode, dvv
//!   invariants); bad bytes are [`StoreError::Corrupt`], never a panic.
//! - With [`SyncPolicy::Always`] nothing is acknowledged before it is on
//!   disk, and after a failed fsync or journal append nothing is
//!   acknowledged at all (the store is poisoned until restart).
//! - No write that grows the store starts while the disk is below the
//!   reserve ([`crate::space`]); removals still run, since they are what
//!   frees space, and so do the node's few bytes of cluster state.
//!
//! Reads see writes as soon as they are applied, before their fsync: a reader
//! may observe a write whose writer is still waiting for durability (and that
//! a power loss at that moment would undo, together with everything journaled
//! after it).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::{KeyspaceCreateOptions, Readable};
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::aae::{self, IndexEntry, Placement, Trees};

use crate::commit::{DEFAULT_FSYNC_SPACING, SyncPolicy, Syncer};
use crate::dvv::{Content, Dot, DvvError, Object, VersionVector};
use crate::error::{StoreError, escape};
use crate::identity::{self, DotCounter, Identity};
use crate::layout::{
    self, KEYSPACE_HINTS, KEYSPACE_LEGACY_INDEX, KEYSPACE_LEGACY_OBJECTS, KEYSPACE_META,
    KEYSPACE_PLACED, KEYSPACE_PROPS, KEYSPACE_TOMBSTONES, META_DOT_CEILING, META_EPOCH,
    META_PARTITION_COUNT, ObjectRecord, bucket_prefix, decode_object, encode_object,
    object_is_deleted, object_key, split_object_key,
};
use crate::limits::Limits;
use crate::merkle::{self, KeyDigest, TreeId};
use crate::props::BucketProps;
use crate::space::{DEFAULT_DISK_RESERVE_BYTES, SpaceGuard};
use crate::stats::{Counters, StoreStats, bump};

/// Number of key lock stripes. Two keys share a stripe with probability
/// 1/4096, which only serialises them; it never affects correctness.
pub const LOCK_STRIPES: usize = 4096;

/// Tables in level 0 of the placed keyspace before they are compacted
/// into level 1 (fjall's default is 4). Every write lands in it and
/// placed keys are spread uniformly, so each level-0 table
/// spans the whole key range and every level-0 compaction rewrites all
/// of level 1: waiting for twice as many tables halves that rewriting.
/// Measured on the dev cluster (three 20 s write runs back to back on
/// one fresh store): the third run made 8.5–10.3k writes/s with p99
/// 9–12 ms against 7.7–8.9k with p99 16–19 ms. A point read checks up
/// to twice as many level-0 tables, each behind a bloom filter. fjall
/// stores the strategy with the keyspace when it creates it, so a store
/// created before keeps its own.
const L0_COMPACTION_THRESHOLD: u8 = 8;

/// The memtable size of the placed keyspace is drawn from
/// this range when a keyspace is created (fjall keeps it with the
/// keyspace; fjall's default is the top of the range). Replicas of one
/// cluster take the same writes, so with one fixed size every replica
/// seals and flushes its memtables at the same moment, and nodes that
/// share a machine (`starling dev`, several containers on one host)
/// flush together: three flush threads at once on the cores, and every
/// journal fsync waiting behind three tables' worth of writes. Riak's
/// leveldb draws each vnode's write buffer from a range for the same
/// reason. A store created before keeps its own size.
const MEMTABLE_SIZE_BYTES: std::ops::RangeInclusive<u64> = (40 << 20)..=(64 << 20);

/// A memtable size for a new write-heavy keyspace, from
/// [`MEMTABLE_SIZE_BYTES`].
fn draw_memtable_size() -> u64 {
    use rand::Rng;
    rand::rng().random_range(MEMTABLE_SIZE_BYTES)
}

/// Options of the keyspace every write goes to (placed objects).
fn write_heavy_options() -> KeyspaceCreateOptions {
    let strategy = fjall::compaction::Leveled::default().with_l0_threshold(L0_COMPACTION_THRESHOLD);
    KeyspaceCreateOptions::default()
        .compaction_strategy(Arc::new(strategy))
        .max_memtable_size(draw_memtable_size())
}

/// How to open a [`Store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Directory of the fjall database; created if missing. A new (or wiped)
    /// directory gets a new epoch and so a new actor.
    pub data_dir: PathBuf,
    /// When writes are fsynced.
    pub sync: SyncPolicy,
    /// Size and sibling limits.
    pub limits: Limits,
    /// Node id to use when the directory is new. `None` picks a random one.
    /// For an existing directory it must match the stored id, or open fails
    /// with [`StoreError::IdentityMismatch`].
    pub node_id: Option<u64>,
    /// How many partitions the anti-entropy trees split the key-hash space
    /// into (a power of two up to 65536): the node passes its ring's
    /// partition count. Recorded in the data directory; opening it with
    /// another count fails with [`StoreError::InvalidConfig`].
    pub partition_count: u32,
    /// Writes are refused with [`StoreError::DiskFull`] while the data
    /// directory's filesystem has fewer bytes available than this, and
    /// resume once it has an eighth more. The reserve is room for the
    /// engine's own flushes and compactions, for the store's bookkeeping
    /// on open, and for writes between two probes of the free space: set
    /// it to at least a memtable (64 MiB) per keyspace, more on a disk
    /// shared with other programs. 0 turns the check off, and then a full
    /// disk poisons the store until restart.
    pub disk_reserve_bytes: u64,
    /// With [`SyncPolicy::Always`], the most time kept between the starts
    /// of two fsyncs under load ([`DEFAULT_FSYNC_SPACING`] by default); the
    /// spacing is [`crate::SPACING_FSYNCS`] times the previous fsync's
    /// duration up to this cap, and the writes in between share one fsync.
    /// Zero starts each fsync as soon as the previous one ended.
    pub fsync_spacing: Duration,
}

impl StoreConfig {
    /// A configuration with default sync policy and limits.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            sync: SyncPolicy::default(),
            limits: Limits::default(),
            node_id: None,
            partition_count: DEFAULT_PARTITION_COUNT,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            fsync_spacing: DEFAULT_FSYNC_SPACING,
        }
    }
}

/// The partition count of a [`StoreConfig::new`].
pub const DEFAULT_PARTITION_COUNT: u32 = 64;

/// How a write treats siblings and limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Keep only the sibling with the latest `last_modified_us` after the
    /// write (`allow_mult=false` or `last_write_wins` buckets). Loses
    /// concurrent writes by design.
    pub resolve_by_time: bool,
    /// Repair, replication or hand-off traffic: the sibling and object size
    /// limits warn but do not refuse, because refusing would leave replicas
    /// divergent forever. Client writes leave this false.
    pub repair: bool,
}

/// The outcome of a successful write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The object as stored after the write (its version is the new causal
    /// context).
    pub object: Object,
    /// The dot minted for a [`Store::put`]; `None` for a merge.
    pub dot: Option<Dot>,
    /// Whether the object was fsynced before the call returned (always with
    /// [`SyncPolicy::Always`], never otherwise; see [`Store::sync_all`]).
    pub durable: bool,
}

/// A write applied and journaled but not yet waited for: see
/// [`Store::put_deferred`] and [`Store::await_durable`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a deferred write must be awaited before it is acknowledged"]
pub struct Deferred {
    /// The outcome, with `durable` still false.
    pub written: Written,
    /// The write's commit sequence number, for [`Store::await_durable`].
    pub seq: u64,
}

/// A hint as [`Store::hints`] returns it: `(bucket, key, object)`.
pub type Hint = (Vec<u8>, Vec<u8>, Object);

/// One page of a bucket's keys, from [`Store::list_keys_page`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in byte order.
    pub keys: Vec<Vec<u8>>,
    /// Pass as `start_after` to get the next page; `None` when the listing
    /// is complete.
    pub next_start_after: Option<Vec<u8>>,
}

/// A replica's local store. Cheap to share behind an `Arc`; every method
/// takes `&self`.
pub struct Store {
    // The syncer comes first so that on drop it drains pending commits
    // before the keyspaces go away.
    syncer: Syncer,
    db: fjall::Database,
    /// Placed object records (see [`crate::layout`]).
    objects: fjall::Keyspace,
    props: fjall::Keyspace,
    meta: fjall::Keyspace,
    hints: fjall::Keyspace,
    tombstones: fjall::Keyspace,
    /// The anti-entropy trees, in memory.
    trees: Trees,
    /// log2 of the partition count.
    partition_bits: u32,
    /// The properties of every bucket with stored properties (others have
    /// the defaults), kept in memory: every request reads them. `None`: the
    /// stored record is corrupt.
    props_cache: RwLock<HashMap<Vec<u8>, Option<BucketProps>>>,
    /// Buckets whose `n_val` changed and whose records must move to other
    /// trees ([`Store::maintain`]).
    reindex: Mutex<Vec<Vec<u8>>>,
    /// Hints stored, kept in memory so the bound is checked without a scan.
    hint_count: std::sync::atomic::AtomicU64,
    identity: Identity,
    counter: DotCounter,
    /// Whether this run's epoch is persisted: false after an unclean
    /// shutdown until the first lease writes the new epoch (see
    /// [`crate::identity`]).
    epoch_persisted: std::sync::atomic::AtomicBool,
    /// Held shared by every put from its mint until its journal append;
    /// `true` once sealed ([`Store::seal`]): no more dots are minted.
    sealed: RwLock<bool>,
    limits: Limits,
    locks: Box<[Mutex<()>]>,
    counters: Arc<Counters>,
    /// Refuses writes while the disk is below the reserve.
    space: SpaceGuard,
    data_dir: PathBuf,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(err) = self.seal() {
            tracing::error!(%err, "could not seal the store on close; the next open takes a new epoch");
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .field("identity", &self.identity)
            .field("sync", &self.syncer.policy())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`.
    ///
    /// Fails if the limits are inconsistent, the directory belongs to another
    /// node id, another process holds it, or the meta records are corrupt.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        config.limits.validate()?;
        let partition_count = config.partition_count;
        if !partition_count.is_power_of_two() || partition_count > 65536 {
            return Err(StoreError::InvalidConfig(format!(
                "partition count must be a power of two between 1 and 65536, got {partition_count}"
            )));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let db = fjall::Database::builder(&config.data_dir).open()?;
        let objects = db.keyspace(KEYSPACE_PLACED, write_heavy_options)?;
        let props = db.keyspace(KEYSPACE_PROPS, KeyspaceCreateOptions::default)?;
        let meta = db.keyspace(KEYSPACE_META, KeyspaceCreateOptions::default)?;
        let hints = db.keyspace(KEYSPACE_HINTS, KeyspaceCreateOptions::default)?;
        let tombstones = db.keyspace(KEYSPACE_TOMBSTONES, KeyspaceCreateOptions::default)?;
        let hint_count = hints.iter().count() as u64;
        let legacy_objects = db
            .keyspace_exists(KEYSPACE_LEGACY_OBJECTS)
            .then(|| db.keyspace(KEYSPACE_LEGACY_OBJECTS, KeyspaceCreateOptions::default))
            .transpose()?;
        let loaded = identity::load_or_create(&db, &meta, config.node_id)?;
        let legacy_is_empty = match &legacy_objects {
            Some(legacy) => legacy.is_empty()?,
            None => true,
        };
        if loaded.created && !(objects.is_empty()? && legacy_is_empty) {
            return Err(StoreError::Corrupt {
                record: "meta".into(),
                reason: "objects are stored but the identity is missing".into(),
            });
        }
        match meta.get(META_PARTITION_COUNT)? {
            Some(bytes) => {
                let stored = layout::decode_u64(META_PARTITION_COUNT, &bytes)?;
                if stored != u64::from(partition_count) {
                    return Err(StoreError::InvalidConfig(format!(
                        "this data directory was created with {stored} partitions, not \
                         {partition_count}: the partition count is fixed for the life of a cluster"
                    )));
                }
            }
            None => meta.insert(
                META_PARTITION_COUNT,
                layout::encode_u64(u64::from(partition_count)),
            )?,
        }
        let mut props_cache = HashMap::new();
        for guard in props.iter() {
            let (bucket, bytes) = guard.into_inner()?;
            let props = match layout::decode_props(&bucket, &bytes) {
                Ok(props) => Some(props),
                Err(err) => {
                    tracing::error!(%err, "bucket properties are unreadable until set again");
                    None
                }
            };
            props_cache.insert(bucket.to_vec(), props);
        }
        let partition_bits = partition_count.trailing_zeros();
        if let Some(legacy) = legacy_objects {
            migrate_legacy_objects(
                &db,
                legacy,
                &objects,
                &tombstones,
                &props_cache,
                partition_bits,
            )?;
        }
        if db.keyspace_exists(KEYSPACE_LEGACY_INDEX) {
            // Each object carries its own entry now.
            db.delete_keyspace(
                db.keyspace(KEYSPACE_LEGACY_INDEX, KeyspaceCreateOptions::default)?,
            )?;
        }
        let counters = Arc::new(Counters::default());
        let syncer = Syncer::start(
            db.clone(),
            config.data_dir.clone(),
            config.sync,
            config.fsync_spacing,
            counters.clone(),
        )?;
        let space = SpaceGuard::new(
            config.data_dir.clone(),
            config.disk_reserve_bytes,
            counters.clone(),
        );
        let mut identity = loaded.identity;
        let mut dot_ceiling = loaded.dot_ceiling;
        let clean = loaded.created || identity::take_clean_mark(&config.data_dir, identity.epoch)?;
        if !clean {
            let retired = identity.epoch;
            identity.epoch = identity::new_epoch();
            dot_ceiling = 1;
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                retired_epoch = format_args!("{retired:x}"),
                epoch = format_args!("{:x}", identity.epoch),
                "the last shutdown was not clean: this replica mints its dots under a new \
                 epoch, so that none can cover a write the crash may have lost"
            );
        }
        tracing::info!(
            data_dir = %config.data_dir.display(),
            node_id = format_args!("{:016x}", identity.node_id),
            epoch = format_args!("{:x}", identity.epoch),
            dot_ceiling,
            created = loaded.created,
            clean,
            sync = ?config.sync,
            disk_reserve_bytes = config.disk_reserve_bytes,
            disk_available_bytes = space.available_bytes(),
            "store opened"
        );
        Ok(Store {
            syncer,
            db,
            objects,
            props,
            meta,
            hints,
            tombstones,
            trees: Trees::default(),
            partition_bits,
            props_cache: RwLock::new(props_cache),
            reindex: Mutex::new(Vec::new()),
            hint_count: std::sync::atomic::AtomicU64::new(hint_count),
            identity,
            counter: DotCounter::resume(identity.actor(), dot_ceiling),
            epoch_persisted: std::sync::atomic::AtomicBool::new(clean),
            sealed: RwLock::new(false),
            limits: config.limits,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            counters,
            space,
            data_dir: config.data_dir,
        })
    }

    /// Who this replica is.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The sync policy this store follows.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.syncer.policy()
    }

    /// Reads a key. A key whose siblings are all tombstones is returned (the
    /// caller answers "not found" with its context); `None` means the key was
    /// never written here (or was reaped).
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Object>, StoreError> {
        self.limits.check_key(bucket, key)?;
        bump(&self.counters.gets);
        self.read(bucket, key, &self.locate(bucket, key).placed)
    }

    /// [`Store::get`] without the decode: the stored record as it is, for a
    /// reader that decodes and checks it itself with
    /// [`crate::layout::decode_object`] (a replica answering a peer, which
    /// would otherwise decode the object only to encode it again).
    pub fn get_record(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.limits.check_key(bucket, key)?;
        bump(&self.counters.gets);
        let Some(value) = self.objects.get(self.locate(bucket, key).placed)? else {
            return Ok(None);
        };
        let (_, record) = aae::decode_entry(ObjectRecord(bucket, key), &value)?;
        Ok(Some(record.to_vec()))
    }

    /// Coordinates a write at this replica: mints a fresh dot, applies
    /// [`Object::update`]`(context, dot, content)` to the local copy and
    /// persists it.
    ///
    /// `context` is the version the client read (empty for a blind write):
    /// the siblings it covers are replaced, the others stay. A
    /// `content.meta.last_modified_us` of 0 is filled with the current time.
    pub fn put(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: &VersionVector,
        content: Content,
        opts: WriteOptions,
    ) -> Result<Written, StoreError> {
        let deferred = self.put_deferred(bucket, key, context, content, opts)?;
        self.finish(deferred)
    }

    /// [`Store::put`] without the wait for durability: the write is applied
    /// (readers see it) and journaled; pass the result to
    /// [`Store::await_durable`] before acknowledging it. Lets a batch of
    /// writes share one wait.
    pub fn put_deferred(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: &VersionVector,
        mut content: Content,
        opts: WriteOptions,
    ) -> Result<Deferred, StoreError> {
        self.limits.check_key(bucket, key)?;
        self.admit_write()?;
        if content.meta.last_modified_us == 0 {
            content.meta.last_modified_us = now_us();
        }
        let at = self.locate(bucket, key);
        let guard = self.lock(at.name_key());
        let local = self.read_entry(bucket, key, &at.placed)?;
        let local_version = local.as_ref().map(|(l, _)| l.version.clone());
        let previous = local.as_ref().map(|(l, entry)| (*entry, l.is_deleted()));
        let mut object = local.map(|(l, _)| l).unwrap_or_default();
        // From the mint to the append: a seal waits for it to be journaled.
        let sealed = self.sealed.read();
        if *sealed {
            return Err(StoreError::Closed);
        }
        // A counter at or below what the object or the context already hold
        // for our actor would be a reused dot: mint above both.
        let actor = self.identity.actor();
        let floor = object.version.counter(&actor).max(context.counter(&actor));
        let minted = self
            .counter
            .mint(floor, |ceiling| self.persist_ceiling(ceiling))?;
        bump(&self.counters.dots_minted);
        if minted.leased {
            bump(&self.counters.dot_leases);
        }
        if minted.jumped {
            bump(&self.counters.dot_counter_jumps);
        }
        let dot = minted.dot;
        object
            .update(context, dot, content)
            .map_err(|err| match err {
                DvvError::DotReuse(dot) => StoreError::DotReuse(dot),
            })?;
        if opts.resolve_by_time {
            object.resolve_last_write_wins();
        }
        // What the update must have done, whatever the siblings.
        assert!(object.version.covers(&dot) && object.version.descends(context));
        assert!(local_version.is_none_or(|v| object.version.descends(&v)));
        assert!(opts.resolve_by_time || object.siblings.iter().any(|s| s.dot == dot));
        let seq = self.write(bucket, key, &at, &object, previous, opts)?;
        drop(sealed);
        drop(guard);
        bump(&self.counters.puts);
        Ok(Deferred {
            written: Written {
                object,
                dot: Some(dot),
                durable: false,
            },
            seq,
        })
    }

    /// Waits until `seq` is durable as the sync policy says; returns whether
    /// it is (always with [`SyncPolicy::Always`]). A failed fsync is an
    /// error: nothing written before it may be acknowledged.
    pub fn await_durable(&self, seq: u64) -> Result<bool, StoreError> {
        self.syncer.commit(seq)
    }

    /// Calls `callback` once `seq` is durable as the sync policy says (with
    /// whether it is), or with the error that prevents it, without blocking
    /// a thread: from the commit thread after its fsync, or at once. The
    /// callback must be quick (hand the result over, nothing more).
    pub fn on_durable(
        &self,
        seq: u64,
        callback: impl FnOnce(Result<bool, StoreError>) + Send + 'static,
    ) {
        self.syncer.on_durable(seq, Box::new(callback));
    }

    fn finish(&self, deferred: Deferred) -> Result<Written, StoreError> {
        let durable = self.await_durable(deferred.seq)?;
        Ok(Written {
            durable,
            ..deferred.written
        })
    }

    /// Deletes a key: a [`Store::put`] of a tombstone written now, with the
    /// client's context. The tombstone stays stored until reaped.
    pub fn delete(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: &VersionVector,
        opts: WriteOptions,
    ) -> Result<Written, StoreError> {
        self.put(bucket, key, context, Content::tombstone(now_us()), opts)
    }

    /// Applies another replica's copy (replication, read repair, hand-off):
    /// the local copy becomes `local.merge(incoming)`.
    ///
    /// Writes nothing when the merge changes nothing. An incoming object that
    /// breaks the dvv invariants is refused with
    /// [`StoreError::InvalidObject`].
    pub fn merge(
        &self,
        bucket: &[u8],
        key: &[u8],
        incoming: &Object,
        opts: WriteOptions,
    ) -> Result<Written, StoreError> {
        let deferred = self.merge_deferred(bucket, key, incoming, opts)?;
        self.finish(deferred)
    }

    /// Merges many copies (anti-entropy, hand-off, a batch of replica
    /// writes) and waits once for all of them to be durable: the caller
    /// keeps appending while the committer fsyncs, instead of paying one
    /// fsync round trip per key in series. Returns whether they are
    /// durable. Stops at the first error; the copies merged before it stay.
    pub fn merge_many<'a>(
        &self,
        objects: impl IntoIterator<Item = (&'a [u8], &'a [u8], &'a Object)>,
        opts: WriteOptions,
    ) -> Result<bool, StoreError> {
        let mut last = None;
        for (bucket, key, object) in objects {
            let deferred = self.merge_deferred(bucket, key, object, opts)?;
            last = Some(last.map_or(deferred.seq, |s: u64| s.max(deferred.seq)));
        }
        match last {
            Some(seq) => self.await_durable(seq),
            // Nothing written: nothing to wait for.
            None => Ok(true),
        }
    }

    /// [`Store::merge`] without the wait for durability; see
    /// [`Store::put_deferred`].
    pub fn merge_deferred(
        &self,
        bucket: &[u8],
        key: &[u8],
        incoming: &Object,
        opts: WriteOptions,
    ) -> Result<Deferred, StoreError> {
        self.limits.check_key(bucket, key)?;
        self.admit_write()?;
        if !incoming.is_well_formed() {
            return Err(StoreError::InvalidObject(
                "a sibling's dot is not covered by the version, or siblings are out of order",
            ));
        }
        if incoming.siblings.is_empty() {
            return Err(StoreError::InvalidObject("object has no siblings"));
        }
        let at = self.locate(bucket, key);
        let guard = self.lock(at.name_key());
        let local_entry = self.read_entry(bucket, key, &at.placed)?;
        let previous = local_entry
            .as_ref()
            .map(|(l, entry)| (*entry, l.is_deleted()));
        let local = local_entry.map(|(l, _)| l);
        // Our own dots come back to us through merges; one above our counter
        // means our counter fell behind our history (a restored backup).
        if self
            .counter
            .observe(incoming.version.counter(&self.identity.actor()))?
        {
            bump(&self.counters.dot_counter_jumps);
        }
        let mut merged = match &local {
            Some(local) => local.merge(incoming),
            None => incoming.clone(),
        };
        if opts.resolve_by_time {
            merged.resolve_last_write_wins();
        }
        assert!(merged.version.descends(&incoming.version));
        assert!(
            local
                .as_ref()
                .is_none_or(|l| merged.version.descends(&l.version))
        );
        let seq = if local.as_ref() == Some(&merged) {
            bump(&self.counters.merges_unchanged);
            // Nothing to write, but the local copy may still wait for its
            // fsync: answer durable only once it is.
            self.syncer.written_seq()
        } else {
            self.write(bucket, key, &at, &merged, previous, opts)?
        };
        drop(guard);
        bump(&self.counters.merges);
        Ok(Deferred {
            written: Written {
                object: merged,
                dot: None,
                durable: false,
            },
            seq,
        })
    }

    /// Buckets holding at least one key that is not all tombstones, in
    /// byte order.
    ///
    /// A full scan of the store's keys (a bucket's keys are spread over
    /// every partition, as in Riak): it reads each record's header, not the
    /// object, and skips the records of buckets already found live.
    pub fn list_buckets(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut live: BTreeSet<Vec<u8>> = BTreeSet::new();
        for guard in self.objects.iter() {
            let (placed, value) = guard.into_inner()?;
            let (bucket, key) = split_placed(&placed)?;
            if live.contains(bucket) {
                continue;
            }
            if !placed_is_deleted(bucket, key, &value)? {
                live.insert(bucket.to_vec());
            }
        }
        Ok(live.into_iter().collect())
    }

    /// Every key of `bucket` whose object is not all tombstones, in byte
    /// order. A full scan (see [`Store::list_buckets`]); for a huge bucket
    /// use [`Store::keys`] or [`Store::list_keys_page`] instead of holding
    /// them all.
    pub fn list_keys(&self, bucket: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = self.keys(bucket)?.collect::<Result<Vec<_>, _>>()?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// Streams the live keys of `bucket` in placement order (the same on
    /// every replica), from a snapshot taken now.
    pub fn keys(&self, bucket: &[u8]) -> Result<Keys, StoreError> {
        self.limits.check_bucket(bucket)?;
        Ok(Keys {
            iter: self.objects.iter(),
            prefix: bucket_prefix(bucket),
        })
    }

    /// Up to `limit` (at least 1) live keys of `bucket` after `start_after`
    /// (exclusive; `None` or empty starts at the beginning), in placement
    /// order, as [`Store::keys`] streams them. Each page reads its own
    /// snapshot, so a listing by pages is not one consistent cut of a
    /// bucket that is being written.
    pub fn list_keys_page(
        &self,
        bucket: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        use std::ops::Bound;
        self.limits.check_bucket(bucket)?;
        let limit = limit.max(1);
        let lower = match start_after {
            Some(after) if !after.is_empty() => {
                // The cursor may come from a client: hold it to the limits
                // before it becomes a store key.
                self.limits.check_key(bucket, after)?;
                Bound::Excluded(self.locate(bucket, after).placed)
            }
            _ => Bound::Unbounded,
        };
        let mut keys = Keys {
            iter: self.objects.range::<Vec<u8>, _>((lower, Bound::Unbounded)),
            prefix: bucket_prefix(bucket),
        };
        let mut page = KeyPage::default();
        for key in keys.by_ref() {
            page.keys.push(key?);
            if page.keys.len() == limit {
                page.next_start_after = page.keys.last().cloned();
                break;
            }
        }
        Ok(page)
    }

    /// Iterates every stored object, tombstones included, as
    /// `(bucket, key, object)` in placement order, from a snapshot taken
    /// now.
    /// For anti-entropy, hand-off and (later) tombstone reaping.
    pub fn objects(&self) -> Objects {
        Objects {
            iter: self.objects.iter(),
        }
    }

    /// Calls `f` on every stored object (tombstones included) until it
    /// returns `false`. Stops at the first corrupt record with its error.
    pub fn for_each_object(
        &self,
        mut f: impl FnMut(&[u8], &[u8], &Object) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.objects() {
            let (bucket, key, object) = item?;
            if !f(&bucket, &key, &object) {
                break;
            }
        }
        Ok(())
    }

    /// The bucket's stored properties; `None` means defaults apply.
    ///
    /// Served from memory (the store keeps every bucket's properties), so it
    /// never blocks on I/O.
    pub fn bucket_props(&self, bucket: &[u8]) -> Result<Option<BucketProps>, StoreError> {
        self.limits.check_bucket(bucket)?;
        match self.props_cache.read().get(bucket) {
            None => Ok(None),
            Some(Some(props)) => Ok(Some(props.clone())),
            Some(None) => Err(StoreError::Corrupt {
                record: format!("props {}", escape(bucket)),
                reason: "the stored record did not decode when the store opened".into(),
            }),
        }
    }

    /// Validates and stores the bucket's properties; durable (fsynced) before
    /// returning, whatever the sync policy.
    pub fn set_bucket_props(&self, bucket: &[u8], props: &BucketProps) -> Result<(), StoreError> {
        self.limits.check_bucket(bucket)?;
        props.validate()?;
        self.admit_write()?;
        self.syncer
            .write_journal(|| self.props.insert(bucket, layout::encode_props(props)))?;
        self.syncer.note_write();
        self.syncer.sync_now()?;
        self.note_props(bucket, Some(props.clone()));
        Ok(())
    }

    /// Removes the bucket's properties so defaults apply; durable before
    /// returning.
    pub fn reset_bucket_props(&self, bucket: &[u8]) -> Result<(), StoreError> {
        self.limits.check_bucket(bucket)?;
        self.admit_into_reserve()?;
        self.syncer.write_journal(|| self.props.remove(bucket))?;
        self.syncer.note_write();
        self.syncer.sync_now()?;
        self.note_props(bucket, None);
        Ok(())
    }

    /// Records a bucket's properties in memory; an `n_val` change queues
    /// the bucket's keys to move trees in the next [`Store::maintain`].
    fn note_props(&self, bucket: &[u8], props: Option<BucketProps>) {
        let before = self.n_val(bucket);
        {
            let mut cache = self.props_cache.write();
            match props {
                Some(p) => cache.insert(bucket.to_vec(), Some(p)),
                None => cache.remove(bucket),
            };
        }
        if self.n_val(bucket) != before {
            self.reindex.lock().push(bucket.to_vec());
        }
    }

    /// Every bucket with stored properties.
    pub fn all_bucket_props(&self) -> Result<Vec<(Vec<u8>, BucketProps)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.props.iter() {
            let (bucket, bytes) = guard.into_inner()?;
            let props = layout::decode_props(&bucket, &bytes)?;
            out.push((bucket.to_vec(), props));
        }
        Ok(out)
    }

    /// A record of the node's own cluster metadata (its ring state, the
    /// nodes removed from the cluster, ...), stored opaquely under `name`.
    pub fn cluster_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(format!("cluster:{name}"))?
            .map(|bytes| bytes.to_vec()))
    }

    /// Stores a cluster metadata record; durable before returning. Taken
    /// even while the disk is below the reserve: these records are small,
    /// and a leave needs them.
    pub fn set_cluster_meta(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.admit_into_reserve()?;
        self.syncer
            .write_journal(|| self.meta.insert(format!("cluster:{name}"), bytes.to_vec()))?;
        self.syncer.note_write();
        self.syncer.sync_now()
    }

    /// Keeps `incoming` as a hint for `owner`, a primary that cannot be
    /// reached: merged into any hint already held for the same owner and
    /// key, durable as the sync policy says, and bounded by
    /// `Limits::hints_max` (beyond it: [`StoreError::HintStoreFull`]).
    pub fn put_hint(
        &self,
        owner: u128,
        bucket: &[u8],
        key: &[u8],
        incoming: &Object,
    ) -> Result<Written, StoreError> {
        let deferred = self.put_hint_deferred(owner, bucket, key, incoming)?;
        self.finish(deferred)
    }

    /// [`Store::put_hint`] without the wait for durability; see
    /// [`Store::put_deferred`].
    pub fn put_hint_deferred(
        &self,
        owner: u128,
        bucket: &[u8],
        key: &[u8],
        incoming: &Object,
    ) -> Result<Deferred, StoreError> {
        use std::sync::atomic::Ordering;
        self.limits.check_key(bucket, key)?;
        self.admit_write()?;
        if !incoming.is_well_formed() || incoming.siblings.is_empty() {
            return Err(StoreError::InvalidObject("hinted object is malformed"));
        }
        let hint_key = hint_key(owner, bucket, key);
        let guard = self.lock(&hint_key);
        let local = self
            .hints
            .get(&hint_key)?
            .map(|bytes| decode_object(&format!("hint {}", escape(&hint_key)), &bytes))
            .transpose()?;
        if local.is_none() {
            let count = self.hint_count.load(Ordering::Relaxed);
            if count >= self.limits.hints_max {
                return Err(StoreError::HintStoreFull { count });
            }
        }
        let merged = match &local {
            Some(local) => local.merge(incoming),
            None => incoming.clone(),
        };
        let seq = if local.as_ref() == Some(&merged) {
            self.syncer.written_seq()
        } else {
            let bytes = encode_object(&merged);
            let size_bytes = bytes.len() as u64;
            let append = self.syncer.begin_append();
            self.syncer
                .write_journal(|| self.hints.insert(&hint_key, bytes))?;
            let seq = append.finish();
            self.space.note_appended(size_bytes);
            if local.is_none() {
                self.hint_count.fetch_add(1, Ordering::Relaxed);
            }
            seq
        };
        drop(guard);
        Ok(Deferred {
            written: Written {
                object: merged,
                dot: None,
                durable: false,
            },
            seq,
        })
    }

    /// Owners with hints and how many each has.
    pub fn hint_owners(&self) -> Result<Vec<(u128, u64)>, StoreError> {
        let mut owners: Vec<(u128, u64)> = Vec::new();
        for guard in self.hints.iter() {
            let (hint_key, _) = guard.into_inner()?;
            let (owner, _, _) = split_hint_key(&hint_key)?;
            match owners.last_mut() {
                Some((last, count)) if *last == owner => *count += 1,
                _ => owners.push((owner, 1)),
            }
        }
        Ok(owners)
    }

    /// The owners that have hints here, in order, found by one seek per
    /// owner rather than a scan of every hint: the hand-off loop asks this
    /// twice a second, and the hint store can hold millions.
    pub fn hint_owner_ids(&self) -> Result<Vec<u128>, StoreError> {
        let mut owners = Vec::new();
        let mut from = 0u128;
        loop {
            let Some(guard) = self.hints.range(from.to_be_bytes()..).next() else {
                break;
            };
            let hint_key = guard.key()?;
            let (owner, _, _) = split_hint_key(&hint_key)?;
            owners.push(owner);
            match owner.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(owners)
    }

    /// Up to `limit` hints for `owner`, as `(bucket, key, object)`.
    pub fn hints(&self, owner: u128, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        for guard in self.hints.prefix(owner.to_be_bytes()).take(limit) {
            let (hint_key, bytes) = guard.into_inner()?;
            let (_, bucket, key) = split_hint_key(&hint_key)?;
            let object = decode_object(&format!("hint {}", escape(&hint_key)), &bytes)?;
            out.push((bucket.to_vec(), key.to_vec(), object));
        }
        Ok(out)
    }

    /// Removes the hint for `owner`/`bucket`/`key` if it is still exactly
    /// `delivered` (a hint that grew meanwhile stays for the next round).
    /// Returns whether it was removed.
    pub fn remove_hint(
        &self,
        owner: u128,
        bucket: &[u8],
        key: &[u8],
        delivered: &Object,
    ) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        let hint_key = hint_key(owner, bucket, key);
        let _guard = self.lock(&hint_key);
        let Some(bytes) = self.hints.get(&hint_key)? else {
            return Ok(false);
        };
        let stored = decode_object(&format!("hint {}", escape(&hint_key)), &bytes)?;
        if stored != *delivered {
            return Ok(false);
        }
        self.admit_into_reserve()?;
        self.syncer.write_journal(|| self.hints.remove(&hint_key))?;
        self.syncer.note_write();
        self.hint_count.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Hints stored.
    pub fn hint_count(&self) -> u64 {
        self.hint_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fsyncs now: every write made before the call is durable when it
    /// returns. For callers that need durability under a lazy policy (a
    /// request with `dw` > 0) and for shutdown.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        self.syncer.sync_now()
    }

    /// Shuts down cleanly: seals the store ([`Store::seal`]), drains
    /// pending commits, stops the sync thread and fsyncs. Dropping the store
    /// does the same but can only log a failure.
    pub fn close(self) -> Result<(), StoreError> {
        self.seal()?;
        self.syncer.shutdown()
    }

    /// Ends this run's epoch cleanly: puts are refused from now on
    /// ([`StoreError::Closed`]; merges, reads and everything else still
    /// work), the puts already past their mint finish their appends,
    /// everything is fsynced, and the clean-shutdown mark is written, so
    /// that the next open keeps the epoch (see [`crate::identity`]).
    /// Without the mark (a crash, or a failure here) the next open takes a
    /// new one. Idempotent; blocking.
    pub fn seal(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        {
            let mut sealed = self.sealed.write();
            if *sealed {
                return Ok(());
            }
            *sealed = true;
        }
        self.syncer.sync_now()?;
        self.syncer.check_writable()?;
        // An epoch that minted nothing was never written: the next open
        // must not resume the one before it.
        if self.epoch_persisted.load(Ordering::Acquire) {
            identity::write_clean_mark(&self.data_dir, self.identity.epoch)?;
        }
        tracing::info!(data_dir = %self.data_dir.display(), "store sealed");
        Ok(())
    }

    /// Brings what the store knows of its disk up to date without waiting
    /// for a write: probes the free space if the last probe is stale (so a
    /// refusal for lack of space ends once space is freed), and asks the
    /// engine whether it still takes writes (so a failed background flush
    /// or compaction poisons the store and is logged at once). Blocking: it
    /// may wait for an fsync in progress. [`Store::maintain`] calls it.
    pub fn check_disk(&self) {
        self.space.refresh();
        self.syncer.check_engine();
    }

    /// A snapshot of the store's counters.
    /// The disk figures are those of the last probe: writes and
    /// [`Store::check_disk`] take them.
    pub fn stats(&self) -> StoreStats {
        let mut stats = self.counters.snapshot();
        stats.disk_full = self.space.is_full();
        stats.disk_available_bytes = self.space.available_bytes();
        stats.disk_reserve_bytes = self.space.reserve_bytes();
        stats.disk_space_bytes = self.db.disk_space().unwrap_or(0);
        stats.dot_counter_next = self.counter.next();
        stats
    }

    fn lock(&self, store_key: &[u8]) -> MutexGuard<'_, ()> {
        let hash = xxhash_rust::xxh3::xxh3_64(store_key);
        // The modulo keeps the index below LOCK_STRIPES, which fits usize.
        self.locks[(hash % LOCK_STRIPES as u64) as usize].lock()
    }

    /// Where `bucket`/`key` is stored.
    fn locate(&self, bucket: &[u8], key: &[u8]) -> Located {
        let placement = Placement::of(bucket, key, self.partition_bits);
        let placed = aae::placed_key_of(placement, bucket, key);
        Located { placement, placed }
    }

    fn read(&self, bucket: &[u8], key: &[u8], placed: &[u8]) -> Result<Option<Object>, StoreError> {
        Ok(self.read_entry(bucket, key, placed)?.map(|(o, _)| o))
    }

    /// [`Store::read`], with the entry stored beside the object.
    fn read_entry(
        &self,
        bucket: &[u8],
        key: &[u8],
        placed: &[u8],
    ) -> Result<Option<(Object, IndexEntry)>, StoreError> {
        let Some(value) = self.objects.get(placed)? else {
            return Ok(None);
        };
        let (entry, record) = aae::decode_entry(ObjectRecord(bucket, key), &value)?;
        Ok(Some((
            decode_object(ObjectRecord(bucket, key), record)?,
            entry,
        )))
    }

    /// Checks the limits, then appends `object` with its entry (and its
    /// tombstone record) to the journal, and moves the key in the trees.
    /// Returns the write's commit sequence number. The caller holds the
    /// key's lock; `previous` is the entry of the copy it replaces and
    /// whether that copy is all tombstones, if there is one.
    fn write(
        &self,
        bucket: &[u8],
        key: &[u8],
        at: &Located,
        object: &Object,
        previous: Option<(IndexEntry, bool)>,
        opts: WriteOptions,
    ) -> Result<u64, StoreError> {
        let was_deleted = previous.is_some_and(|(_, deleted)| deleted);
        let count = object.siblings.len();
        if count > self.limits.siblings_max && !opts.repair {
            bump(&self.counters.sibling_limit_refusals);
            return Err(StoreError::TooManySiblings {
                count,
                max: self.limits.siblings_max,
            });
        }
        if count > self.limits.siblings_warn {
            bump(&self.counters.sibling_warnings);
            tracing::warn!(
                bucket = %escape(bucket),
                key = %escape(key),
                siblings = count,
                siblings_warn = self.limits.siblings_warn,
                repair = opts.repair,
                "object has many siblings: clients may be writing without a context"
            );
        }
        let (bytes, new_entry) = layout::encode_placed(object, self.n_val(bucket));
        let size_bytes = u64::from(new_entry.size_bytes);
        if size_bytes > self.limits.object_size_bytes_max && !opts.repair {
            bump(&self.counters.object_size_refusals);
            return Err(StoreError::ObjectTooLarge {
                size_bytes,
                size_bytes_max: self.limits.object_size_bytes_max,
            });
        }
        if size_bytes > self.limits.object_size_bytes_warn {
            bump(&self.counters.object_size_warnings);
            tracing::warn!(
                bucket = %escape(bucket),
                key = %escape(key),
                size_bytes,
                size_bytes_warn = self.limits.object_size_bytes_warn,
                repair = opts.repair,
                "large object"
            );
        }
        let mut batch = self.db.batch();
        if self.syncer.policy().syncs_every_write() {
            // Every such write waits for the committer, which hands fjall's
            // buffer to the OS before its fsync: one `write` system call per
            // group instead of one per key. Lazier policies hand each write
            // over at once, so that a crash of the process alone loses none.
            batch = batch.durability(None);
        }
        batch.insert(&self.objects, at.placed.as_slice(), bytes);
        if object.is_deleted() {
            batch.insert(
                &self.tombstones,
                at.name_key(),
                layout::encode_u64(deleted_at_us(object)),
            );
        } else if was_deleted {
            batch.remove(&self.tombstones, at.name_key());
        }
        let append = self.syncer.begin_append();
        self.syncer.write_journal(|| batch.commit())?;
        let seq = append.finish();
        self.space.note_appended(size_bytes);
        self.trees.apply(
            bucket,
            key,
            at.placement,
            previous.map(|(entry, _)| entry),
            Some(new_entry),
        );
        bump(&self.counters.keys_written);
        self.counters
            .bytes_written
            .fetch_add(size_bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(seq)
    }

    /// The `n_val` the trees file `bucket`'s keys under.
    fn n_val(&self, bucket: &[u8]) -> u8 {
        n_val_in(&self.props_cache.read(), bucket)
    }

    /// Makes a new dot ceiling durable before any counter below it leaves,
    /// in one batch with this run's epoch if that is new (see
    /// [`crate::identity`]): the old epoch's ceiling is never overwritten
    /// without the epoch that retires it.
    fn persist_ceiling(&self, ceiling: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        self.syncer.check_writable()?;
        let new_epoch = !self.epoch_persisted.load(Ordering::Acquire);
        self.syncer.write_journal(|| {
            let mut batch = self.db.batch();
            if new_epoch {
                batch.insert(
                    &self.meta,
                    META_EPOCH,
                    layout::encode_u64(self.identity.epoch),
                );
            }
            batch.insert(&self.meta, META_DOT_CEILING, layout::encode_u64(ceiling));
            batch.commit()
        })?;
        self.syncer.note_write();
        self.syncer.sync_now()?;
        if new_epoch {
            self.epoch_persisted.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Admits a write that grows the store: refused once poisoned, or
    /// while the disk is below the reserve. Refusals are counted.
    fn admit_write(&self) -> Result<(), StoreError> {
        self.admit_into_reserve()?;
        self.space.admit()
    }

    /// Admits a write that may use the reserve: removals (reaping,
    /// hand-off, delivered hints), since removing is how space comes back,
    /// and the few bytes of the node's own cluster state (a leave must be
    /// recorded even on a full disk, or the node could not be drained).
    /// Refused only once poisoned (counted).
    fn admit_into_reserve(&self) -> Result<(), StoreError> {
        self.syncer.check_writable().inspect_err(|_| {
            bump(&self.counters.write_refusals_poisoned);
        })
    }

    /// Test hook: the next fsync fails.
    #[cfg(test)]
    pub(crate) fn fail_next_fsync(&self) {
        self.syncer.fail_next_fsync();
    }

    /// Test hook: see `Syncer::set_spacing_fsyncs`.
    #[cfg(test)]
    pub(crate) fn set_spacing_fsyncs(&self, n: u32) {
        self.syncer.set_spacing_fsyncs(n);
    }

    /// Test hook: the journal file the committer fsyncs.
    #[cfg(test)]
    pub(crate) fn synced_journal(&self) -> Option<u64> {
        self.syncer.journal_id()
    }

    /// Test hook: the next journal append fails with ENOSPC.
    #[cfg(test)]
    pub(crate) fn fail_next_append(&self) {
        self.syncer.fail_next_append();
    }

    /// Test hook: seals the objects memtable and has the engine flush it to
    /// a table file in the background.
    #[cfg(test)]
    pub(crate) fn rotate_objects_memtable(&self) {
        self.objects
            .rotate_memtable()
            .expect("sealing a memtable only fails once poisoned");
    }

    /// Test hook: probes see `available` bytes free (`None`: the real
    /// figure again).
    #[cfg(test)]
    pub(crate) fn set_disk_available(&self, available: Option<u64>) {
        self.space.set_available(available);
    }
}

/// The `n_val` the trees file `bucket`'s keys under, given every bucket's
/// stored properties.
fn n_val_in(props: &HashMap<Vec<u8>, Option<BucketProps>>, bucket: &[u8]) -> u8 {
    n_val_byte(
        props
            .get(bucket)
            .and_then(Option::as_ref)
            .map_or(BucketProps::default().n_val, |p| p.n_val),
    )
}

/// `n_val` as an entry stores it; validated props keep it within 1..=16.
fn n_val_byte(n_val: u32) -> u8 {
    u8::try_from(n_val.clamp(1, crate::props::N_VAL_MAX)).expect("N_VAL_MAX fits a byte")
}

/// When the newest tombstone of an all-tombstone object was written.
fn deleted_at_us(object: &Object) -> u64 {
    object
        .siblings
        .iter()
        .map(|s| s.content.meta.last_modified_us)
        .max()
        .unwrap_or(0)
}

fn hint_key(owner: u128, bucket: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = owner.to_be_bytes().to_vec();
    out.extend_from_slice(&object_key(bucket, key));
    out
}

fn split_hint_key(hint_key: &[u8]) -> Result<(u128, &[u8], &[u8]), StoreError> {
    let corrupt = || StoreError::Corrupt {
        record: format!("hint key {}", escape(hint_key)),
        reason: "malformed hint key".into(),
    };
    let (owner, rest) = hint_key.split_first_chunk::<16>().ok_or_else(corrupt)?;
    let (bucket, key) = split_object_key(rest).ok_or_else(corrupt)?;
    Ok((u128::from_be_bytes(*owner), bucket, key))
}

/// Splits a name key read from disk, or reports it corrupt.
fn split_key(name_key: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    split_object_key(name_key).ok_or_else(|| StoreError::Corrupt {
        record: format!("object key {}", escape(name_key)),
        reason: "malformed store key".into(),
    })
}

/// Splits a placed key read from disk into (bucket, key), or reports it
/// corrupt.
fn split_placed(placed: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    aae::name_key(placed)
        .and_then(split_object_key)
        .ok_or_else(|| StoreError::Corrupt {
            record: format!("placed key {}", escape(placed)),
            reason: "malformed placed key".into(),
        })
}

/// Whether a placed value's object is all tombstones, from its header.
fn placed_is_deleted(bucket: &[u8], key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
    let (_, record) = aae::decode_entry(ObjectRecord(bucket, key), value)?;
    object_is_deleted(ObjectRecord(bucket, key), record)
}

/// Where one key is stored: its placement, and its placed key, whose tail
/// is its name key.
struct Located {
    placement: Placement,
    placed: Vec<u8>,
}

impl Located {
    fn name_key(&self) -> &[u8] {
        aae::name_key(&self.placed).expect("built by `Store::locate`")
    }
}

/// Objects per batch when a directory of the old layout is moved.
const MIGRATION_BATCH_RECORDS: usize = 1024;

/// Moves every object of a directory written before placed records (the
/// `objects` keyspace, keyed by name key) into `placed`, with its entry,
/// then drops the old keyspace. Each batch moves its keys atomically (the
/// new record in, the old one out), so a crash part-way leaves every object
/// in exactly one of the two keyspaces and the next open goes on where this
/// one stopped. Tombstone records are written again for deleted objects
/// (an old directory may predate them).
fn migrate_legacy_objects(
    db: &fjall::Database,
    legacy: fjall::Keyspace,
    placed: &fjall::Keyspace,
    tombstones: &fjall::Keyspace,
    props: &HashMap<Vec<u8>, Option<BucketProps>>,
    partition_bits: u32,
) -> Result<(), StoreError> {
    use std::ops::Bound;
    let started = std::time::Instant::now();
    let mut moved = 0u64;
    let mut corrupt = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let iter = match &after {
            None => legacy.iter(),
            Some(after) => {
                legacy.range::<Vec<u8>, _>((Bound::Excluded(after.clone()), Bound::Unbounded))
            }
        };
        let mut batch = db.batch();
        let mut last = None;
        for guard in iter.take(MIGRATION_BATCH_RECORDS) {
            let (name_key, record) = guard.into_inner()?;
            let (bucket, key) = split_key(&name_key)?;
            let digest = match decode_object(ObjectRecord(bucket, key), &record) {
                Ok(object) => {
                    if object.is_deleted() {
                        batch.insert(
                            tombstones,
                            name_key.to_vec(),
                            layout::encode_u64(deleted_at_us(&object)),
                        );
                    }
                    merkle::object_digest(&object)
                }
                Err(err) => {
                    // Moved as it is: reads report it, and exchanges ask the
                    // peers for the key.
                    tracing::error!(%err, "moving a corrupt object record");
                    corrupt += 1;
                    0
                }
            };
            let placement = Placement::of(bucket, key, partition_bits);
            let mut value = vec![0u8; aae::ENTRY_SIZE_BYTES];
            aae::encode_entry(n_val_in(props, bucket), digest, &mut value);
            value.extend_from_slice(&record);
            batch.insert(placed, aae::placed_key(placement, &name_key), value);
            batch.remove(&legacy, name_key.to_vec());
            last = Some(name_key.to_vec());
            moved += 1;
        }
        let Some(last) = last else { break };
        batch.commit()?;
        after = Some(last);
        if moved.is_multiple_of(256 * MIGRATION_BATCH_RECORDS as u64) {
            tracing::info!(moved, "moving objects to placed records");
        }
    }
    db.persist(fjall::PersistMode::SyncAll)?;
    db.delete_keyspace(legacy)?;
    tracing::info!(
        moved,
        corrupt,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "moved every object of the old layout to placed records"
    );
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The live keys of one bucket; see [`Store::keys`].
pub struct Keys {
    iter: fjall::Iter,
    /// The bucket's prefix of name keys.
    prefix: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Iterator for Keys {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        for guard in self.iter.by_ref() {
            let entry = guard
                .into_inner()
                .map_err(StoreError::from)
                .and_then(|(placed, value)| {
                    let ours =
                        aae::name_key(&placed).is_some_and(|name| name.starts_with(&self.prefix));
                    if !ours {
                        return Ok(None);
                    }
                    let (bucket, key) = split_placed(&placed)?;
                    let deleted = placed_is_deleted(bucket, key, &value)?;
                    Ok((!deleted).then(|| key.to_vec()))
                });
            match entry {
                Ok(None) => continue,
                Ok(Some(key)) => return Some(Ok(key)),
                Err(err) => return Some(Err(err)),
            }
        }
        None
    }
}

/// Every stored object; see [`Store::objects`].
pub struct Objects {
    iter: fjall::Iter,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").finish_non_exhaustive()
    }
}

impl Iterator for Objects {
    type Item = Result<(Vec<u8>, Vec<u8>, Object), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let guard = self.iter.next()?;
        Some(
            guard
                .into_inner()
                .map_err(StoreError::from)
                .and_then(|(placed, value)| {
                    let (bucket, key) = split_placed(&placed)?;
                    let (_, record) = aae::decode_entry(ObjectRecord(bucket, key), &value)?;
                    let object = decode_object(ObjectRecord(bucket, key), record)?;
                    Ok((bucket.to_vec(), key.to_vec(), object))
                }),
        )
    }
}

mod maintenance;

pub use maintenance::{MAINTENANCE_RECORDS_PER_S_MAX, MaintenanceReport, TreeSummary};

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
