//! When writes reach the disk: the sync policy and group commit.
//!
//! Every write is appended to fjall's journal, not fsynced. What happens
//! next depends on [`SyncPolicy`]:
//!
//! - `Always`: the writer takes a sequence number and waits until the
//!   committer thread has fsynced past it. The committer takes every write
//!   that arrived while its previous fsync ran as its next batch, so
//!   concurrent writers share one fsync (group commit) and a lone writer pays
//!   one fsync with no added delay. The appends stay in fjall's journal
//!   buffer until the committer hands the whole group to the OS before its
//!   fsync (one `write` system call per group, not one per key); a write
//!   counts only once fsynced, so none that counts is left in a buffer.
//!
//!   fjall's own `Database::persist` holds the journal's mutex through the
//!   fsync, which would stall every append behind it. The committer holds
//!   the mutex only to hand fjall's buffer to the OS and fsyncs the active
//!   journal file through a descriptor of its own (`JournalFile`), so
//!   writers append while an fsync runs. Writers announce an append before
//!   starting it (`Syncer::begin_append`), and before each fsync the
//!   committer waits for the appends already in flight to land, bounded by
//!   the previous fsync's duration (at most [`GATHER_WAIT_MAX`]). A lone
//!   writer has no one in flight behind it and pays no wait.
//!
//!   Fsyncs are also spaced: one starts no sooner than
//!   [`SPACING_FSYNCS`] times the previous fsync's duration, and at most
//!   the configured spacing ([`DEFAULT_FSYNC_SPACING`] unless configured),
//!   after the previous one started; the writes that arrive meanwhile join
//!   it. A writer that comes after a quiet spell pays nothing; under load,
//!   groups grow instead of fsyncs multiplying. Disks, virtual ones most
//!   of all, throttle flushes: the development machine's disk stalls every
//!   fsync for 10–20 ms, every 100 ms, once the machine issues more than a
//!   few thousand a second, which an unspaced committer per node does
//!   under load (see `docs/performance.md`). Following the fsync's own
//!   duration keeps a fast disk (an fsync in tens of microseconds) from
//!   paying a spacing sized for a slow one.
//! - `Interval`: a thread fsyncs every `interval_ms` if anything was written;
//!   writes are handed to the OS before the store returns (so they survive
//!   a crash of the process) and return at once, not yet durable.
//! - `Never`: as `Interval`, but the OS writes back when it likes; a clean
//!   shutdown fsyncs.
//!
//! A failed fsync poisons the store: the waiting writers and every later
//! write get [`StoreError::Poisoned`]. The fsync is never retried, because
//! after a failure the kernel may have dropped the dirty pages and a second
//! fsync could succeed without the data (the "fsyncgate" lesson).
//!
//! A failed journal append poisons it too, whatever the errno, ENOSPC
//! included (`Syncer::write_journal`). Retrying after ENOSPC is not ours to
//! choose: fjall poisons itself on any failed journal write (part of the
//! entry may be in the file, and its buffered writer may still hold the
//! rest) and only reopening the database clears that. Reopening in-process
//! would mean swapping every keyspace handle under running writers; a
//! restart does the same with less to get wrong. So a write that met
//! ENOSPC, and every write still waiting for its fsync, is refused, never
//! acknowledged; the journal may keep it torn (recovery drops a torn tail)
//! or, if fjall's buffered writer finishes it on close, whole: its outcome
//! is indeterminate, as for any write a client saw fail. The disk reserve
//! ([`crate::space`]) is what keeps ENOSPC from reaching the journal, so
//! that a full disk is normally a refusal that ends once space is freed.
//! fjall also poisons itself when a background flush or compaction fails;
//! it says so only when asked, which the next write, an fsync or
//! `Syncer::check_engine` does. Either way reads go on, and nothing
//! already stored is touched: a failed flush leaves its memtable and the
//! journal behind it in place, and fjall deletes the half-written table on
//! the next open.
//!
//! Invariant: `synced_seq <= written_seq`, and a write with sequence number
//! `s` was appended to the journal before `written_seq` reached `s`, so an
//! fsync that starts after reading `written_seq = t` makes every write `<= t`
//! durable.
//!
//! This module does not know about keys or objects.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::error::{PoisonCause, StoreError};
use crate::stats::{Counters, bump};

/// The longest the committer waits for in-flight appends to join a batch.
pub const GATHER_WAIT_MAX: Duration = Duration::from_millis(1);

/// The most time kept between the starts of two fsyncs with
/// [`SyncPolicy::Always`], unless configured: under load, at least 1,000
/// fsyncs a second per store where the disk allows more.
pub const DEFAULT_FSYNC_SPACING: Duration = Duration::from_millis(1);

/// Under load, an fsync starts this many of the previous fsync's
/// durations after the previous one started (at most the configured
/// spacing): the disk is flushing for this store at most a quarter of the
/// time, whatever its speed.
pub const SPACING_FSYNCS: u32 = 4;

/// When acknowledged writes are fsynced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncPolicy {
    /// Every acknowledged write is fsynced before it is acknowledged;
    /// concurrent writes share an fsync (group commit). The default.
    #[default]
    Always,
    /// A background thread fsyncs every `interval_ms` milliseconds (at least
    /// 1); writes are acknowledged before they are durable, so a power loss
    /// can lose up to one interval of acknowledged writes.
    Interval {
        /// Milliseconds between fsyncs.
        interval_ms: u64,
    },
    /// Never fsync on the write path; leave write-back to the OS. A power
    /// loss can lose any acknowledged write that the OS had not written back.
    Never,
}

impl SyncPolicy {
    /// Whether a write returns only once it is durable.
    pub fn syncs_every_write(&self) -> bool {
        matches!(self, SyncPolicy::Always)
    }
}

/// Journal progress, guarded by [`Shared::state`].
#[derive(Default)]
struct State {
    /// Sequence number of the last write appended to the journal.
    written_seq: u64,
    /// Every write up to this sequence number is durable.
    synced_seq: u64,
    /// Writers between [`Syncer::begin_append`] and [`Append::finish`].
    appending: u64,
    /// The committer waits for a first write (not for appends in flight
    /// to land): any finished append must wake it.
    committer_idle: bool,
    /// The committer waits out the fsync spacing: appends need not wake
    /// it, the writes they add join the fsync it is waiting to start.
    committer_spacing: bool,
    /// Duration of the last fsync: bounds how long the committer gathers.
    last_fsync: Duration,
    /// The store is closing: the committer drains and exits.
    shutdown: bool,
    /// Callbacks waiting for a sequence number to become durable, called by
    /// the committer (see [`Syncer::on_durable`]).
    waiters: Vec<(u64, DurableCallback)>,
}

impl State {
    /// Whether a finished (or withdrawn) append must wake the committer:
    /// when it waits for a first write, or gathers and this was the last
    /// append in flight. Waking it for every append while it gathers would
    /// only make it check and sleep again, a context switch per write.
    fn wakes_committer(&self) -> bool {
        !self.committer_spacing && (self.committer_idle || self.appending == 0)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("written_seq", &self.written_seq)
            .field("synced_seq", &self.synced_seq)
            .field("appending", &self.appending)
            .field("committer_idle", &self.committer_idle)
            .field("committer_spacing", &self.committer_spacing)
            .field("last_fsync", &self.last_fsync)
            .field("shutdown", &self.shutdown)
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

/// Called once a write is durable (`Ok(true)`), or the store was poisoned.
pub(crate) type DurableCallback = Box<dyn FnOnce(Result<bool, StoreError>) + Send>;

struct Shared {
    db: fjall::Database,
    /// The most time kept between the starts of two group fsyncs (see
    /// [`SPACING_FSYNCS`]).
    spacing: Duration,
    /// The data directory, for the log.
    path: std::path::PathBuf,
    counters: Arc<Counters>,
    state: Mutex<State>,
    /// The journal file fsyncs go to, found on the first (see
    /// [`JournalFile`]).
    journal: Mutex<Option<JournalFile>>,
    /// Signalled when `synced_seq` advances or the store is poisoned.
    synced: Condvar,
    /// Signalled when a write arrives or the store shuts down.
    written: Condvar,
    /// Test hook: the next fsync fails.
    #[cfg(test)]
    fail_next_fsync: std::sync::atomic::AtomicBool,
    /// Test hook: the next journal append fails with ENOSPC.
    #[cfg(test)]
    fail_next_append: std::sync::atomic::AtomicBool,
    /// Test hook: the spacing's multiple of the previous fsync's duration
    /// in place of [`SPACING_FSYNCS`], to test the cap alone.
    #[cfg(test)]
    spacing_fsyncs: std::sync::atomic::AtomicU32,
}

/// Makes writes durable according to the [`SyncPolicy`].
#[derive(Debug)]
pub(crate) struct Syncer {
    policy: SyncPolicy,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    /// Starts the committer (`Always`, its fsyncs `spacing` apart) or
    /// interval thread (`Interval`) for the database in `path`.
    pub(crate) fn start(
        db: fjall::Database,
        path: std::path::PathBuf,
        policy: SyncPolicy,
        spacing: Duration,
        counters: Arc<Counters>,
    ) -> Result<Syncer, StoreError> {
        if let SyncPolicy::Interval { interval_ms } = policy
            && interval_ms == 0
        {
            return Err(StoreError::InvalidConfig(
                "sync interval_ms must be at least 1".into(),
            ));
        }
        let shared = Arc::new(Shared {
            db,
            spacing,
            path,
            counters,
            state: Mutex::new(State::default()),
            journal: Mutex::new(None),
            synced: Condvar::new(),
            written: Condvar::new(),
            #[cfg(test)]
            fail_next_fsync: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_next_append: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            spacing_fsyncs: std::sync::atomic::AtomicU32::new(SPACING_FSYNCS),
        });
        let thread = match policy {
            SyncPolicy::Always => {
                let shared = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("starling-commit".into())
                        .spawn(move || shared.run_committer())?,
                )
            }
            SyncPolicy::Interval { interval_ms } => {
                let shared = shared.clone();
                let interval = Duration::from_millis(interval_ms);
                Some(
                    std::thread::Builder::new()
                        .name("starling-sync".into())
                        .spawn(move || shared.run_interval(interval))?,
                )
            }
            SyncPolicy::Never => None,
        };
        Ok(Syncer {
            policy,
            shared,
            thread: Mutex::new(thread),
        })
    }

    /// The policy this syncer follows.
    pub(crate) fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Refuses writes once poisoned.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        self.shared.check_writable()
    }

    /// Runs a journal append (a fjall insert, remove or batch commit). A
    /// failure poisons the store, as it has poisoned fjall, with the cause
    /// the error shows (ENOSPC or EDQUOT: [`PoisonCause::NoSpace`]); the
    /// caller gets [`StoreError::Poisoned`] and must not acknowledge.
    pub(crate) fn write_journal<T>(
        &self,
        append: impl FnOnce() -> fjall::Result<T>,
    ) -> Result<T, StoreError> {
        #[cfg(test)]
        if self.shared.fail_next_append.swap(false, Ordering::SeqCst) {
            let err = fjall::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
            return Err(self.shared.append_failed(&err));
        }
        append().map_err(|err| self.shared.append_failed(&err))
    }

    /// Asks fjall whether it still takes writes (a cheap call: the journal
    /// buffer is empty between appends) and poisons the store if not, so a
    /// failed background flush shows without waiting for a write.
    pub(crate) fn check_engine(&self) {
        if self.shared.is_poisoned() {
            return;
        }
        if let Err(err) = self.shared.db.persist(fjall::PersistMode::Buffer) {
            // Counted and classified as a failed append: fjall's poison is
            // `Engine`, anything else came from the (empty) buffer's flush.
            self.shared.append_failed(&err);
        }
    }

    /// Announces a journal append that will be committed with
    /// [`Append::finish`]; dropping the ticket unfinished (the append failed)
    /// withdraws it.
    pub(crate) fn begin_append(&self) -> Append<'_> {
        self.shared.state.lock().appending += 1;
        Append {
            syncer: self,
            finished: false,
        }
    }

    /// Notes that a write outside the object path (props, meta) was appended
    /// to the journal; returns its sequence number. Call only after the
    /// append returned.
    pub(crate) fn note_write(&self) -> u64 {
        let mut state = self.shared.state.lock();
        state.written_seq += 1;
        let seq = state.written_seq;
        drop(state);
        if self.policy.syncs_every_write() {
            self.shared.written.notify_one();
        }
        seq
    }

    /// The sequence number of the latest write appended.
    pub(crate) fn written_seq(&self) -> u64 {
        self.shared.state.lock().written_seq
    }

    /// Makes write `seq` durable as the policy says. Returns whether it is
    /// durable (always true with `Always`, false otherwise).
    pub(crate) fn commit(&self, seq: u64) -> Result<bool, StoreError> {
        match self.policy {
            SyncPolicy::Always => {
                self.shared.wait_synced(seq)?;
                Ok(true)
            }
            SyncPolicy::Interval { .. } | SyncPolicy::Never => {
                self.check_writable()?;
                Ok(false)
            }
        }
    }

    /// Calls `callback` once write `seq` is durable as the policy says,
    /// without blocking a thread on it: at once when it already is (or the
    /// policy does not wait), else from the committer after its fsync.
    pub(crate) fn on_durable(&self, seq: u64, callback: DurableCallback) {
        if !self.policy.syncs_every_write() {
            callback(self.check_writable().map(|()| false));
            return;
        }
        let mut state = self.shared.state.lock();
        assert!(seq <= state.written_seq, "waiting for a write not yet made");
        if state.synced_seq >= seq {
            drop(state);
            callback(Ok(true));
        } else if let Err(poisoned) = self.shared.check_writable() {
            drop(state);
            callback(Err(poisoned));
        } else {
            state.waiters.push((seq, callback));
        }
    }

    /// Fsyncs now, whatever the policy, and returns once everything written
    /// before the call is durable.
    pub(crate) fn sync_now(&self) -> Result<(), StoreError> {
        self.shared.sync_to_current()
    }

    /// Stops the thread after it made every write durable (with `Always`) and
    /// fsyncs a last time. Idempotent.
    pub(crate) fn shutdown(&self) -> Result<(), StoreError> {
        self.shared.state.lock().shutdown = true;
        self.shared.written.notify_all();
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("the commit thread panicked");
        }
        self.shared.check_writable()?;
        let pending = {
            let state = self.shared.state.lock();
            state.written_seq > state.synced_seq
        };
        if pending {
            self.shared.sync_to_current()?;
        }
        Ok(())
    }

    /// Test hook: the journal file fsyncs go to, once one was found.
    #[cfg(test)]
    pub(crate) fn journal_id(&self) -> Option<u64> {
        self.shared
            .journal
            .lock()
            .as_ref()
            .map(|journal| journal.id)
    }

    /// Test hook: makes the next fsync fail as a broken disk would.
    #[cfg(test)]
    pub(crate) fn fail_next_fsync(&self) {
        self.shared.fail_next_fsync.store(true, Ordering::SeqCst);
    }

    /// Test hook: the spacing is `n` times the previous fsync's duration
    /// (before the cap) instead of [`SPACING_FSYNCS`].
    #[cfg(test)]
    pub(crate) fn set_spacing_fsyncs(&self, n: u32) {
        self.shared.spacing_fsyncs.store(n, Ordering::Relaxed);
    }

    /// Test hook: makes the next journal append fail with ENOSPC, before
    /// anything reaches fjall.
    #[cfg(test)]
    pub(crate) fn fail_next_append(&self) {
        self.shared.fail_next_append.store(true, Ordering::SeqCst);
    }
}

/// A journal append in flight; see [`Syncer::begin_append`].
#[derive(Debug)]
pub(crate) struct Append<'a> {
    syncer: &'a Syncer,
    finished: bool,
}

impl Append<'_> {
    /// The append reached the journal: returns its sequence number.
    pub(crate) fn finish(mut self) -> u64 {
        self.finished = true;
        let mut state = self.syncer.shared.state.lock();
        assert!(state.appending > 0, "append finished twice");
        state.appending -= 1;
        state.written_seq += 1;
        let seq = state.written_seq;
        let wake = state.wakes_committer();
        drop(state);
        if wake && self.syncer.policy.syncs_every_write() {
            self.syncer.shared.written.notify_one();
        }
        seq
    }
}

impl Drop for Append<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.syncer.shared.state.lock();
            assert!(state.appending > 0, "append withdrawn twice");
            state.appending -= 1;
            let wake = state.wakes_committer();
            drop(state);
            if wake {
                self.syncer.shared.written.notify_one();
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::error!(%err, "final fsync on close failed");
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn is_poisoned(&self) -> bool {
        self.counters.poisoned.load(Ordering::Acquire)
    }

    /// The poison as an error, if the store is poisoned.
    fn check_writable(&self) -> Result<(), StoreError> {
        if !self.is_poisoned() {
            return Ok(());
        }
        // The cause is set before the flag (under the cause's lock), so a
        // poisoned store always has one.
        let cause =
            (*self.counters.poison_cause.lock()).expect("the cause is set before the poison flag");
        Err(StoreError::Poisoned { cause })
    }

    /// Poisons the store (once: later calls keep the first cause), logs
    /// why, and fails every writer waiting for an fsync.
    fn poison(&self, cause: PoisonCause, err: &dyn std::fmt::Display) {
        {
            let mut first = self.counters.poison_cause.lock();
            if first.is_some() {
                return;
            }
            *first = Some(cause);
            self.counters.poisoned.store(true, Ordering::Release);
        }
        tracing::error!(
            path = %self.path.display(),
            %err,
            %cause,
            "storage refuses writes until the node restarts; reads go on, and no write is \
             acknowledged from now on"
        );
        // Take the lock so no waiter can miss the wake-up between its
        // poison check and its wait.
        let waiters = std::mem::take(&mut self.state.lock().waiters);
        self.synced.notify_all();
        for (_, callback) in waiters {
            callback(Err(StoreError::Poisoned { cause }));
        }
    }

    /// Counts, poisons and reports a failed journal append.
    fn append_failed(&self, err: &fjall::Error) -> StoreError {
        let cause = PoisonCause::of_append(err);
        bump(match cause {
            PoisonCause::NoSpace => &self.counters.write_errors_no_space,
            PoisonCause::Engine => &self.counters.engine_failures,
            _ => &self.counters.write_errors_io,
        });
        self.poison(cause, err);
        self.check_writable()
            .expect_err("a failed append leaves the store poisoned")
    }

    /// Fsyncs the journal. On failure poisons the store and wakes every
    /// waiter; the caller gets [`StoreError::Poisoned`].
    fn fsync(&self) -> Result<Duration, StoreError> {
        self.check_writable()?;
        let started = Instant::now();
        // With `sync=always` the group's appends reach the OS only here
        // (see the module doc), so a failure here is theirs and classified
        // as an append's (ENOSPC is `NoSpace`), not as the fsync's. fjall
        // holds its journal mutex only for this.
        if let Err(err) = self.db.persist(fjall::PersistMode::Buffer) {
            return Err(self.append_failed(&err));
        }
        #[cfg(test)]
        let result = if self.fail_next_fsync.swap(false, Ordering::SeqCst) {
            Err(fjall::Error::Io(std::io::Error::other(
                "injected fsync failure",
            )))
        } else {
            self.sync_journal()
        };
        #[cfg(not(test))]
        let result = self.sync_journal();
        match result {
            Ok(()) => Ok(started.elapsed()),
            Err(err) => {
                // fjall refuses to fsync once a journal append or a
                // background flush poisoned it: that is the cause then.
                let cause = match err {
                    fjall::Error::Poisoned => {
                        bump(&self.counters.engine_failures);
                        PoisonCause::Engine
                    }
                    _ => {
                        bump(&self.counters.fsync_errors);
                        PoisonCause::Fsync
                    }
                };
                self.poison(cause, &err);
                Err(self
                    .check_writable()
                    .expect_err("a failed fsync leaves the store poisoned"))
            }
        }
    }

    /// Makes everything handed to the OS so far durable without holding
    /// fjall's journal mutex: the active journal file is fsynced through a
    /// descriptor of our own while appends go on. Where no journal file is
    /// found, fjall fsyncs (under its mutex).
    fn sync_journal(&self) -> fjall::Result<()> {
        let mut journal = self.journal.lock();
        if journal.is_none() {
            *journal = JournalFile::newest(&self.path)?;
        }
        match journal.as_mut() {
            Some(journal) => Ok(journal.sync(&self.path)?),
            None => self.db.persist(fjall::PersistMode::SyncAll),
        }
    }

    /// Fsyncs and marks everything written before the call durable.
    fn sync_to_current(&self) -> Result<(), StoreError> {
        let target = self.state.lock().written_seq;
        let latency = self.fsync()?;
        self.mark_synced(target, latency);
        Ok(())
    }

    fn mark_synced(&self, target: u64, latency: Duration) {
        let mut state = self.state.lock();
        assert!(target <= state.written_seq, "synced past the journal");
        state.last_fsync = latency;
        let newly = target.saturating_sub(state.synced_seq);
        state.synced_seq = state.synced_seq.max(target);
        let synced = state.synced_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.waiters)
            .into_iter()
            .partition(|(seq, _)| *seq <= synced);
        state.waiters = waiting;
        drop(state);
        self.counters.record_fsync(newly, latency);
        self.synced.notify_all();
        for (_, callback) in ready {
            callback(Ok(true));
        }
    }

    fn wait_synced(&self, seq: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        assert!(seq <= state.written_seq, "waiting for a write not yet made");
        loop {
            if state.synced_seq >= seq {
                return Ok(());
            }
            self.check_writable()?;
            self.synced.wait(&mut state);
        }
    }

    /// The group committer: fsync whatever arrived, as one batch, until shut
    /// down with nothing pending or poisoned.
    fn run_committer(&self) {
        let mut last_start: Option<Instant> = None;
        loop {
            let target = {
                let mut state = self.state.lock();
                while state.written_seq == state.synced_seq && !state.shutdown {
                    state.committer_idle = true;
                    self.written.wait(&mut state);
                }
                state.committer_idle = false;
                if state.written_seq == state.synced_seq {
                    // Shut down with nothing pending.
                    return;
                }
                // Space the fsyncs; what arrives meanwhile joins this one.
                // Only shutdown wakes the wait early.
                #[cfg(test)]
                let fsyncs = self.spacing_fsyncs.load(Ordering::Relaxed);
                #[cfg(not(test))]
                let fsyncs = SPACING_FSYNCS;
                let spacing = state.last_fsync.saturating_mul(fsyncs).min(self.spacing);
                if let Some(earliest) = last_start.map(|start| start + spacing) {
                    state.committer_spacing = true;
                    while !state.shutdown && Instant::now() < earliest {
                        self.written.wait_until(&mut state, earliest);
                    }
                    state.committer_spacing = false;
                }
                last_start = Some(Instant::now());
                // Let appends already in flight join this batch, waiting
                // at most about one fsync.
                let gather = state.last_fsync.min(GATHER_WAIT_MAX);
                let deadline = Instant::now() + gather;
                while state.appending > 0 && !state.shutdown {
                    if self.written.wait_until(&mut state, deadline).timed_out() {
                        break;
                    }
                }
                state.written_seq
            };
            match self.fsync() {
                Ok(latency) => self.mark_synced(target, latency),
                Err(_) => return,
            }
        }
    }

    /// The interval syncer: fsync every `interval` if anything was written.
    fn run_interval(&self, interval: Duration) {
        loop {
            let (target, before) = {
                let mut state = self.state.lock();
                if !state.shutdown {
                    // Woken early only by shutdown; a spurious wake-up just
                    // syncs a little early.
                    self.written.wait_for(&mut state, interval);
                }
                if state.shutdown {
                    return;
                }
                (state.written_seq, state.synced_seq)
            };
            if target == before {
                continue;
            }
            match self.fsync() {
                Ok(latency) => self.mark_synced(target, latency),
                Err(_) => return,
            }
        }
    }
}

/// fjall's active journal, fsynced through a descriptor of our own.
///
/// fjall keeps its journals in the data directory as `<n>.jnl`, appends to
/// the newest, and at rotation (once the active one passes 64 MB) creates
/// `<n+1>.jnl`. Before each fsync, [`JournalFile::sync`] looks for the
/// next file and follows it, fsyncing the file it leaves one last time
/// first (fjall fsyncs a journal it seals; this does not rely on it). A
/// write is appended before the committer reads the sequence number that
/// covers it, so it is in a file that existed by then: the one followed
/// or an earlier one, fsynced when it was left. fjall is vendored
/// (vendor/README.md); `storage::store` tests check the naming against
/// it, rotation included.
#[derive(Debug)]
struct JournalFile {
    id: u64,
    file: std::fs::File,
}

impl JournalFile {
    /// The newest journal in `dir`, if there is one.
    fn newest(dir: &std::path::Path) -> std::io::Result<Option<JournalFile>> {
        let mut newest: Option<u64> = None;
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let id = name
                .to_str()
                .and_then(|name| name.strip_suffix(".jnl"))
                .and_then(|id| id.parse::<u64>().ok());
            if let Some(id) = id {
                newest = Some(newest.map_or(id, |n| n.max(id)));
            }
        }
        match newest {
            Some(id) => JournalFile::open(dir, id),
            None => Ok(None),
        }
    }

    /// Journal `id` in `dir`, if it exists.
    fn open(dir: &std::path::Path, id: u64) -> std::io::Result<Option<JournalFile>> {
        match std::fs::File::open(dir.join(format!("{id}.jnl"))) {
            Ok(file) => Ok(Some(JournalFile { id, file })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Follows rotations in `dir`, then syncs the newest journal's data.
    ///
    /// `fdatasync` is enough: it also writes whatever metadata reading the
    /// data back needs (blocks allocated, a new size), and skips only the
    /// timestamps. With the journal's preallocation written ahead of its
    /// end (vendor/README.md), an append's sync is then the data alone and
    /// the cache flush, not a block-map write between them.
    fn sync(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        while let Some(next) = JournalFile::open(dir, self.id + 1)? {
            self.file.sync_all()?;
            *self = next;
        }
        self.file.sync_data()
    }
}
