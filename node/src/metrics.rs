//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Two kinds live here. Request metrics (counts by operation and outcome,
//! latency histograms, quorum failures, sibling counts, object sizes) are
//! recorded as requests finish. Everything the node already counts elsewhere
//! (storage and fsync figures, hints, membership, SWIM) is read at scrape
//! time by a collector, so those numbers are never kept twice.
//!
//! Names follow Prometheus conventions: a `starling_` prefix, base units in
//! the name (`_seconds`, `_bytes`), `_total` on counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_api::BackendError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aae::AaeStats;
use crate::coordinator::Coordinator;
use crate::handoff::HandoffStats;
use crate::reaper::ReaperStats;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    outcome: &'static str,
}

/// Labels naming an operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// The node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OpLabels, Histogram>,
    quorum_failures: Family<OpLabels, Counter>,
    siblings: Histogram,
    object_size: Histogram,
}

/// What became of a request, as a label value.
pub fn outcome<T>(result: &Result<T, BackendError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(BackendError::BadRequest(_) | BackendError::InvalidQuorum(_)) => "bad_request",
        Err(BackendError::QuorumNotMet { .. }) => "quorum_failed",
        Err(BackendError::Timeout) => "timeout",
        Err(BackendError::TooLarge(_) | BackendError::TooManySiblings { .. }) => "refused",
        Err(BackendError::Overloaded | BackendError::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    }
}

impl Metrics {
    /// Registers every metric; `coordinator` and `handoff` are read at each
    /// scrape.
    pub fn new(
        coordinator: Arc<Coordinator>,
        handoff: Arc<HandoffStats>,
        aae: Arc<AaeStats>,
        reaper: Arc<ReaperStats>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("starling");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by operation and outcome",
            requests.clone(),
        );
        // 100 µs to ~13 s.
        let latency = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register_with_unit(
            "request_duration",
            "Latency of client requests as the coordinator saw it",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let quorum_failures = Family::<OpLabels, Counter>::default();
        registry.register(
            "quorum_failures",
            "Requests that could not meet their quorum",
            quorum_failures.clone(),
        );
        let siblings = Histogram::new([1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0]);
        registry.register(
            "object_siblings",
            "Siblings of the objects reads returned",
            siblings.clone(),
        );
        let object_size = Histogram::new(exponential_buckets(64.0, 4.0, 12));
        registry.register_with_unit(
            "object_size",
            "Size of the values clients wrote",
            prometheus_client::registry::Unit::Bytes,
            object_size.clone(),
        );
        registry.register_collector(Box::new(NodeCollector {
            coordinator,
            handoff,
            aae,
            reaper,
        }));
        Metrics {
            registry,
            requests,
            latency,
            quorum_failures,
            siblings,
            object_size,
        }
    }

    /// Records one finished client request.
    pub fn request(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
        if outcome == "quorum_failed" {
            self.quorum_failures.get_or_create(&OpLabels { op }).inc();
        }
    }

    /// Records the sibling count of an object a read returned.
    pub fn siblings(&self, count: usize) {
        self.siblings.observe(count as f64);
    }

    /// Records the size of a value a client wrote.
    pub fn object_size(&self, size_bytes: usize) {
        self.object_size.observe(size_bytes as f64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "encoding metrics failed");
        }
        out
    }
}

/// Reads the node's own counters at scrape time.
#[derive(Debug)]
struct NodeCollector {
    coordinator: Arc<Coordinator>,
    handoff: Arc<HandoffStats>,
    aae: Arc<AaeStats>,
    reaper: Arc<ReaperStats>,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let store = self.coordinator.store().stats();
        counter(
            &mut encoder,
            "storage_gets",
            "Local reads of the store",
            store.gets,
        )?;
        counter(
            &mut encoder,
            "storage_puts",
            "Writes minted by this replica",
            store.puts,
        )?;
        counter(
            &mut encoder,
            "storage_merges",
            "Copies merged from other replicas",
            store.merges,
        )?;
        counter(
            &mut encoder,
            "storage_written_bytes",
            "Bytes of objects written",
            store.bytes_written,
        )?;
        counter(
            &mut encoder,
            "fsyncs",
            "Fsyncs of the journal",
            store.fsyncs,
        )?;
        counter(
            &mut encoder,
            "fsync_writes",
            "Writes made durable by fsyncs (divided by starling_fsyncs_total: the group commit batch size)",
            store.fsync_writes_sum,
        )?;
        let latency = ConstCounter::new(store.fsync_latency_us_sum as f64 / 1e6);
        latency.encode(encoder.encode_descriptor(
            "fsync_duration_seconds",
            "Time spent in fsync",
            None,
            latency.metric_type(),
        )?)?;
        gauge(
            &mut encoder,
            "fsync_batch_max",
            "Largest group commit batch so far",
            store.fsync_batch_max as i64,
        )?;
        gauge(
            &mut encoder,
            "storage_disk_bytes",
            "Disk space used by the store",
            store.disk_space_bytes as i64,
        )?;
        counter(
            &mut encoder,
            "sibling_limit_refusals",
            "Writes refused for exceeding the sibling limit",
            store.sibling_limit_refusals,
        )?;
        gauge(
            &mut encoder,
            "storage_poisoned",
            "1 if a failed write to disk (fsync, journal append, background flush) stopped writes until restart",
            i64::from(store.poisoned),
        )?;
        gauge(
            &mut encoder,
            "storage_refusing_writes",
            "1 while the store refuses writes: the disk is below the reserve, or the store is poisoned",
            i64::from(store.poisoned || store.disk_full),
        )?;
        gauge(
            &mut encoder,
            "storage_disk_available_bytes",
            "Bytes available on the data directory's filesystem at the last probe",
            store.disk_available_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "storage_disk_reserve_bytes",
            "Free space below which writes are refused (0: no check)",
            store.disk_reserve_bytes as i64,
        )?;
        let refusals = Family::<ReasonLabels, Counter>::default();
        for (reason, value) in [
            ("disk_full", store.write_refusals_disk_full),
            ("poisoned", store.write_refusals_poisoned),
        ] {
            refusals
                .get_or_create(&ReasonLabels { reason })
                .inc_by(value);
        }
        refusals.encode(encoder.encode_descriptor(
            "storage_write_refusals",
            "Writes the store refused before writing anything, by reason",
            None,
            refusals.metric_type(),
        )?)?;
        let errors = Family::<KindLabels, Counter>::default();
        for (kind, value) in [
            ("no_space", store.write_errors_no_space),
            ("io", store.write_errors_io),
            ("fsync", store.fsync_errors),
            ("engine", store.engine_failures),
        ] {
            errors.get_or_create(&KindLabels { kind }).inc_by(value);
        }
        errors.encode(encoder.encode_descriptor(
            "storage_write_errors",
            "Failed writes to disk, by kind (each poisons the store until restart): no_space and io are journal appends, engine a background flush or compaction",
            None,
            errors.metric_type(),
        )?)?;

        gauge(
            &mut encoder,
            "hints_pending",
            "Hints held for unreachable replicas",
            self.coordinator.store().hint_count() as i64,
        )?;
        counter(
            &mut encoder,
            "hints_delivered",
            "Hints handed off",
            self.handoff.delivered.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "hint_deliveries_failed",
            "Hand-off attempts that failed",
            self.handoff.failed.load(Ordering::Relaxed),
        )?;

        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let aae = &self.aae;
        for (name, help, value) in [
            (
                "aae_exchanges",
                "Anti-entropy exchanges completed",
                load(&aae.exchanges),
            ),
            (
                "aae_failures",
                "Anti-entropy exchanges or transfers that failed",
                load(&aae.failures),
            ),
            (
                "aae_keys_differing",
                "Keys anti-entropy found different between replicas",
                load(&aae.keys_differing),
            ),
            (
                "aae_keys_repaired",
                "Copies anti-entropy or ownership transfer wrote",
                load(&aae.keys_repaired),
            ),
            (
                "aae_keys_handed_off",
                "Keys removed here after their new owners took them",
                load(&aae.keys_handed_off),
            ),
            (
                "aae_sent_bytes",
                "Bytes of anti-entropy requests sent",
                load(&aae.bytes_sent),
            ),
            (
                "aae_received_bytes",
                "Bytes of anti-entropy answers received",
                load(&aae.bytes_received),
            ),
            (
                "tombstones_reaped",
                "Tombstones removed from every replica",
                load(&self.reaper.reaped),
            ),
            (
                "tombstones_reap_deferred",
                "Tombstones old enough but not yet safe to reap",
                load(&self.reaper.deferred),
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        gauge(
            &mut encoder,
            "aae_transfers_pending",
            "Trees this node still has to fill, push or hand off",
            load(&aae.transfers_pending) as i64,
        )?;
        let trees = self.coordinator.store().aae_trees();
        gauge(
            &mut encoder,
            "aae_trees",
            "Merkle trees this node holds (-1 while they are being built)",
            trees.as_ref().map_or(-1, |t| t.len() as i64),
        )?;
        gauge(
            &mut encoder,
            "storage_keys",
            "Keys stored on this node, tombstones included",
            trees.iter().flatten().map(|t| t.keys).sum::<u64>() as i64,
        )?;

        let view = self.coordinator.view();
        let members = Family::<StateLabels, prometheus_client::metrics::gauge::Gauge>::default();
        for state in ["alive", "suspect", "dead", "left"] {
            let count = view
                .members
                .values()
                .filter(|m| crate::cluster::state_name(m.state) == state)
                .count();
            members
                .get_or_create(&StateLabels { state })
                .set(count as i64);
        }
        members.encode(encoder.encode_descriptor(
            "members",
            "Members by liveness as this node sees them",
            None,
            members.metric_type(),
        )?)?;
        gauge(
            &mut encoder,
            "ring_members",
            "Members owning partitions",
            view.ring.members().len() as i64,
        )?;
        let cluster = self.coordinator.cluster().counters();
        counter(
            &mut encoder,
            "suspicion_events",
            "Members this node came to suspect",
            cluster.suspect_events.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "dead_events",
            "Members this node declared or learned dead",
            cluster.dead_events.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "cluster_bad_messages",
            "Malformed cluster messages dropped",
            cluster.bad_messages.load(Ordering::Relaxed),
        )?;
        Ok(())
    }
}
