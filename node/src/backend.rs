//! The node's side of the HTTP API: client requests go to the quorum
//! coordinator; `/admin/...` views are answered from the node's state.
//!
//! Each call takes the client request's id ([`RequestId::current`], set by
//! `http-api`) and hands it to the coordinator, which carries it to the
//! replicas.
//!
//! A cluster with fewer members than a bucket's `n_val` keeps one replica per
//! member and caps quorums at the member count (a quorum value above `n_val`
//! is still a 400); `/stats` and `/admin/ring` say so rather than pretend.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use http_api::{
    AdminRequest, AdminResponse, Backend, BackendError, DeleteRequest, GetRequest, KeyStream,
    PreflistEntry, PutRequest, RequestId,
};
use serde_json::{Value, json};
use storage::{BucketProps, Content, ContextKey, Object};
use tracing::error;

use crate::aae::AaeStats;
use crate::coordinator::Coordinator;
use crate::handoff::HandoffStats;
use crate::metrics::{Metrics, outcome};
use crate::reaper::ReaperStats;
use membership::RingState;

/// Keys per chunk of a streamed listing.
const LIST_CHUNK_KEYS: usize = 1000;

/// The backend of one node.
#[derive(Debug)]
pub struct NodeBackend {
    coordinator: Arc<Coordinator>,
    context_key: ContextKey,
    node_name: String,
    handoff: Arc<HandoffStats>,
    aae: Arc<AaeStats>,
    reaper: Arc<ReaperStats>,
    metrics: Metrics,
}

impl NodeBackend {
    /// Wraps the coordinator.
    pub fn new(
        coordinator: Arc<Coordinator>,
        context_key: ContextKey,
        node_name: String,
        handoff: Arc<HandoffStats>,
        aae: Arc<AaeStats>,
        reaper: Arc<ReaperStats>,
    ) -> NodeBackend {
        let metrics = Metrics::new(
            coordinator.clone(),
            handoff.clone(),
            aae.clone(),
            reaper.clone(),
        );
        NodeBackend {
            coordinator,
            context_key,
            node_name,
            handoff,
            aae,
            reaper,
            metrics,
        }
    }

    /// `GET /admin/aae`: every tree this node holds, its role in the ring
    /// and its last exchange, with the anti-entropy and reaping counters.
    async fn aae_json(&self) -> Value {
        let store = self.coordinator.store().clone();
        let (trees, tombstones) = tokio::task::spawn_blocking(move || {
            (store.aae_trees(), store.tombstone_count().unwrap_or(0))
        })
        .await
        .unwrap_or((None, 0));
        let view = self.coordinator.view();
        let records = self.aae.records();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let role = |id: storage::TreeId| {
            let list = |ring: &crate::ring::Ring| {
                let n = u32::from(id.n_val).min(ring.members().len() as u32) as usize;
                ring.preference_list(id.partition, n)
                    .iter()
                    .any(|&(_, node)| node == view.local)
            };
            match (list(&view.ring), list(&view.future)) {
                (true, true) => "replica",
                (true, false) => "moving_out",
                (false, true) => "moving_in",
                (false, false) => "leftover",
            }
        };
        let tree_list: Vec<Value> = trees
            .iter()
            .flatten()
            .map(|t| {
                json!({
                    "partition": t.id.partition,
                    "n_val": t.id.n_val,
                    "root": format!("{:016x}", t.root),
                    "keys": t.keys,
                    "size_bytes": t.size_bytes,
                    "role": role(t.id),
                    "last_exchange": records.get(&t.id),
                })
            })
            .collect();
        json!({
            "enabled": self.aae.enabled.load(Ordering::Relaxed),
            "ready": trees.is_some(),
            "builds": self.coordinator.store().aae_builds(),
            "ring_state": crate::cluster::ring_name(self.coordinator.cluster().ring_state()),
            "rounds": load(&self.aae.rounds),
            "exchanges_total": load(&self.aae.exchanges),
            "failures_total": load(&self.aae.failures),
            "keys_differing_total": load(&self.aae.keys_differing),
            "keys_repaired_total": load(&self.aae.keys_repaired),
            "keys_handed_off_total": load(&self.aae.keys_handed_off),
            "bytes_sent_total": load(&self.aae.bytes_sent),
            "bytes_received_total": load(&self.aae.bytes_received),
            "transfers_pending": load(&self.aae.transfers_pending),
            "keys": trees.iter().flatten().map(|t| t.keys).sum::<u64>(),
            "size_bytes": trees.iter().flatten().map(|t| t.size_bytes).sum::<u64>(),
            "tombstones": tombstones,
            "reaped_total": load(&self.reaper.reaped),
            "reap_deferred_total": load(&self.reaper.deferred),
            "trees": tree_list,
        })
    }

    /// `POST /admin/leave`: start handing this node's partitions to the
    /// other members; the node stops once they hold everything.
    async fn leave(&self) -> AdminResponse {
        let view = self.coordinator.view();
        match self.coordinator.cluster().ring_state() {
            RingState::Member => {}
            RingState::Leaving => {
                return AdminResponse::json(
                    StatusCode::ACCEPTED,
                    &json!({ "ring_state": "leaving", "note": "already leaving" }),
                );
            }
            other => {
                return AdminResponse::text(
                    StatusCode::CONFLICT,
                    format!(
                        "this node is {}, not a member: only a member can leave\n",
                        crate::cluster::ring_name(other)
                    ),
                );
            }
        }
        if view.future.members().iter().all(|m| m.id == view.local) {
            return AdminResponse::text(
                StatusCode::CONFLICT,
                "this is the only member: there is nobody to hand its data to\n",
            );
        }
        if let Err(err) = crate::aae::set_ring_state(&self.coordinator, RingState::Leaving).await {
            return AdminResponse::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("could not start leaving: {err}\n"),
            );
        }
        AdminResponse::json(
            StatusCode::ACCEPTED,
            &json!({
                "ring_state": "leaving",
                "note": "handing partitions to the remaining members; the node stops when they hold everything (see /admin/aae)",
            }),
        )
    }

    /// `POST /admin/remove?node=ID[&force=true]`: take a node that is gone
    /// for good out of the ring; the others re-replicate its data.
    async fn remove(&self, query: Option<&str>) -> AdminResponse {
        let params = query_params(query);
        let Some(wanted) = params.get("node") else {
            return AdminResponse::text(
                StatusCode::BAD_REQUEST,
                "the node query parameter is required (its id, or its HTTP address)\n",
            );
        };
        let force = params.get("force").is_some_and(|v| v == "true");
        let view = self.coordinator.view();
        // The full id, a suffix of it (what `starling admin members`
        // shows), or the HTTP address; it must name exactly one member.
        let wanted_lower = wanted.to_ascii_lowercase();
        let matching: Vec<&membership::Member> = view
            .members
            .values()
            .filter(|m| {
                (wanted_lower.len() >= 6 && format!("{:032x}", m.id.0).ends_with(&wanted_lower))
                    || m.meta.http_addr == *wanted
            })
            .collect();
        let member = match matching.as_slice() {
            [member] => *member,
            [] => {
                return AdminResponse::text(
                    StatusCode::NOT_FOUND,
                    format!("no member {wanted:?} is known to this node\n"),
                );
            }
            _ => {
                return AdminResponse::text(
                    StatusCode::BAD_REQUEST,
                    format!("{wanted:?} names several members: give more of the id\n"),
                );
            }
        };
        let id = member.id.0;
        if id == view.local {
            return AdminResponse::text(
                StatusCode::CONFLICT,
                "a node cannot remove itself: use leave\n",
            );
        }
        if member.state == membership::MemberState::Alive && !force {
            return AdminResponse::text(
                StatusCode::CONFLICT,
                "that node is alive: make it leave (starling admin leave) so it hands its data over, \
                 or add force=true to drop it anyway\n",
            );
        }
        let coordinator = self.coordinator.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || coordinator.add_removed(&[id])).await
        {
            return AdminResponse::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"));
        }
        // Tell every alive member now rather than by gossip.
        let removed = self.coordinator.removed();
        let deadline = Instant::now() + self.coordinator.config().request_timeout;
        for m in view.members.values() {
            if m.id.0 == view.local || m.state != membership::MemberState::Alive {
                continue;
            }
            let request = crate::rpc::Request::Removed {
                ids: removed.clone(),
            };
            let _ = self
                .coordinator
                .call(view.local, m.id.0, Some(m.meta.addr), request, deadline)
                .await;
        }
        AdminResponse::json(
            StatusCode::OK,
            &json!({
                "removed": format!("{id:032x}"),
                "note": "the remaining members re-replicate its partitions (see /admin/aae)",
            }),
        )
    }

    /// Seals the store (its last fsync and the clean-shutdown mark); called
    /// after the HTTP server drained.
    pub async fn close(&self) {
        let store = self.coordinator.store().clone();
        match tokio::task::spawn_blocking(move || store.seal()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                error!(%err, "closing the store failed; the next start takes a new epoch")
            }
            Err(err) => error!(%err, "closing the store panicked"),
        }
    }

    fn ring_json(&self) -> Value {
        let view = self.coordinator.view();
        let counts = view.ring.ownership_counts();
        let members: Vec<Value> = view
            .ring
            .members()
            .iter()
            .map(|m| {
                json!({
                    "id": format!("{:032x}", m.id),
                    "node": view.name(m.id),
                    "zone": m.zone,
                    "partitions": counts.get(&m.id).copied().unwrap_or(0),
                    "healthy": view.healthy(m.id),
                })
            })
            .collect();
        let partitions: Vec<Value> = view
            .ring
            .owners()
            .map(|(p, id)| json!({ "partition": p, "owner": view.name(id) }))
            .collect();
        let default_n = BucketProps::default().n_val;
        let note = (view.ring.members().len() < default_n as usize).then(|| {
            format!(
                "{} member(s): fewer than n_val={default_n}, so each key has {} replica(s) and quorums are capped",
                view.ring.members().len(),
                view.replicas(default_n)
            )
        });
        json!({
            "partition_count": view.ring.partition_count(),
            "members": members,
            "partitions": partitions,
            "note": note,
        })
    }

    async fn hints_json(&self) -> Value {
        let store = self.coordinator.store().clone();
        let owners = tokio::task::spawn_blocking(move || store.hint_owners()).await;
        let view = self.coordinator.view();
        let owners: Vec<Value> = match owners {
            Ok(Ok(owners)) => owners
                .into_iter()
                .map(|(owner, count)| json!({ "owner": view.name(owner), "id": format!("{owner:032x}"), "hints": count }))
                .collect(),
            _ => Vec::new(),
        };
        let pending: u64 = owners.iter().filter_map(|o| o["hints"].as_u64()).sum();
        json!({
            "pending": pending,
            "owners": owners,
            "delivered_total": self.handoff.delivered.load(Ordering::Relaxed),
            "failed_total": self.handoff.failed.load(Ordering::Relaxed),
        })
    }

    /// `GET /admin/local?bucket=b&key=k`: this node's own copy of a key,
    /// without asking any other replica (for operators and tests).
    async fn local_json(&self, query: Option<&str>) -> AdminResponse {
        let params = query_params(query);
        let (Some(bucket), Some(key)) = (params.get("bucket"), params.get("key")) else {
            return AdminResponse::text(
                StatusCode::BAD_REQUEST,
                "bucket and key query parameters are required\n",
            );
        };
        let store = self.coordinator.store().clone();
        let (b, k) = (bucket.clone(), key.clone());
        match tokio::task::spawn_blocking(move || store.get(b.as_bytes(), k.as_bytes())).await {
            Ok(Ok(Some(object))) => AdminResponse::json(StatusCode::OK, &object_json(&object)),
            Ok(Ok(None)) => AdminResponse::text(StatusCode::NOT_FOUND, "not held by this node\n"),
            Ok(Err(err)) => AdminResponse::text(StatusCode::BAD_REQUEST, format!("{err}\n")),
            Err(err) => AdminResponse::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        }
    }
}

fn query_params(query: Option<&str>) -> std::collections::HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn object_json(object: &Object) -> Value {
    let siblings: Vec<Value> = object
        .siblings
        .iter()
        .map(|s| {
            json!({
                "vtag": s.vtag(),
                "deleted": s.content.deleted,
                "value": String::from_utf8_lossy(&s.content.value),
                "last_modified_us": s.content.meta.last_modified_us,
            })
        })
        .collect();
    json!({ "siblings": siblings, "actors": object.version.len() })
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Backend for NodeBackend {
    async fn get(&self, req: GetRequest) -> Result<Option<Object>, BackendError> {
        let started = Instant::now();
        let result = self.coordinator.get(req, RequestId::current()).await;
        let outcome = match &result {
            Ok(None) => "not_found",
            Ok(Some(object)) if object.is_deleted() => "not_found",
            other => outcome(other),
        };
        if let Ok(Some(object)) = &result {
            self.metrics.siblings(object.siblings.len());
        }
        self.metrics.request("get", outcome, started.elapsed());
        result
    }

    async fn put(&self, req: PutRequest) -> Result<Object, BackendError> {
        let started = Instant::now();
        self.metrics.object_size(req.content.value.len());
        let result = self
            .coordinator
            .write(
                req.bucket,
                req.key,
                req.context,
                req.content,
                req.quorums,
                req.timeout,
                RequestId::current(),
            )
            .await;
        self.metrics
            .request("put", outcome(&result), started.elapsed());
        result
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), BackendError> {
        let started = Instant::now();
        let tombstone = Content::tombstone(now_us());
        let result = self
            .coordinator
            .write(
                req.bucket,
                req.key,
                req.context,
                tombstone,
                req.quorums,
                req.timeout,
                RequestId::current(),
            )
            .await
            .map(|_| ());
        self.metrics
            .request("delete", outcome(&result), started.elapsed());
        result
    }

    async fn bucket_props(&self, bucket: Bytes) -> Result<BucketProps, BackendError> {
        self.coordinator.props(&bucket).await
    }

    async fn set_bucket_props(
        &self,
        bucket: Bytes,
        props: BucketProps,
    ) -> Result<(), BackendError> {
        props.validate()?;
        self.coordinator
            .set_props(bucket, Some(props), RequestId::current())
            .await
    }

    async fn reset_bucket_props(&self, bucket: Bytes) -> Result<(), BackendError> {
        self.coordinator
            .set_props(bucket, None, RequestId::current())
            .await
    }

    async fn list_buckets(&self) -> Result<KeyStream, BackendError> {
        Ok(chunked(
            self.coordinator.list(None, RequestId::current()).await?,
        ))
    }

    async fn list_keys(&self, bucket: Bytes) -> Result<KeyStream, BackendError> {
        Ok(chunked(
            self.coordinator
                .list(Some(bucket), RequestId::current())
                .await?,
        ))
    }

    async fn preflist(
        &self,
        bucket: Bytes,
        key: Bytes,
    ) -> Result<Vec<PreflistEntry>, BackendError> {
        let props = self.coordinator.props(&bucket).await?;
        Ok(self.coordinator.preflist(&bucket, &key, props.n_val))
    }

    async fn stats(&self) -> serde_json::Map<String, Value> {
        let view = self.coordinator.view();
        let states = |state: membership::MemberState| {
            view.members.values().filter(|m| m.state == state).count()
        };
        let mut map = serde_json::Map::new();
        map.insert("nodename".into(), self.node_name.clone().into());
        map.insert(
            "cluster_joined".into(),
            self.coordinator.cluster().joined().into(),
        );
        map.insert(
            "ring_members".into(),
            view.ring
                .members()
                .iter()
                .map(|m| Value::from(view.name(m.id)))
                .collect::<Vec<_>>()
                .into(),
        );
        map.insert(
            "ring_num_partitions".into(),
            view.ring.partition_count().into(),
        );
        map.insert(
            "members_alive".into(),
            states(membership::MemberState::Alive).into(),
        );
        map.insert(
            "members_suspect".into(),
            states(membership::MemberState::Suspect).into(),
        );
        map.insert(
            "members_dead".into(),
            states(membership::MemberState::Dead).into(),
        );
        map.insert(
            "members_left".into(),
            states(membership::MemberState::Left).into(),
        );
        if let Some(note) = self.ring_json()["note"].as_str() {
            map.insert("replication_note".into(), note.into());
        }
        let hints = self.hints_json().await;
        map.insert("hints_pending".into(), hints["pending"].clone());
        map.insert(
            "hints_delivered_total".into(),
            hints["delivered_total"].clone(),
        );
        if let Ok(value) = serde_json::to_value(self.coordinator.store().stats()) {
            map.insert("storage".into(), value);
        }
        map
    }

    async fn admin(&self, req: AdminRequest) -> AdminResponse {
        let path = req.path.trim_end_matches('/');
        let views = [
            "/admin/members",
            "/admin/ring",
            "/admin/hints",
            "/admin/local",
            "/admin/aae",
            "/admin/ui",
        ];
        if views.contains(&path) && req.method != http::Method::GET {
            return AdminResponse::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET is allowed here\n",
            );
        }
        let actions = ["/admin/leave", "/admin/remove"];
        if actions.contains(&path) && req.method != http::Method::POST {
            return AdminResponse::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only POST is allowed here\n",
            );
        }
        if path == "/metrics" {
            return AdminResponse {
                status: StatusCode::OK,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    .to_owned(),
                body: Bytes::from(self.metrics.encode()),
            };
        }
        match path {
            "/admin/members" => {
                // A member an operator removed shows as removed whatever it
                // last announced about itself.
                let removed: Vec<String> = self
                    .coordinator
                    .removed()
                    .iter()
                    .map(|id| format!("{id:032x}"))
                    .collect();
                let mut members = self.coordinator.cluster().member_views();
                for m in &mut members {
                    if removed.contains(&m.id) {
                        m.ring_state = "removed";
                    }
                }
                AdminResponse::json(StatusCode::OK, &json!({ "members": members }))
            }
            "/admin/ring" => AdminResponse::json(StatusCode::OK, &self.ring_json()),
            "/admin/hints" => AdminResponse::json(StatusCode::OK, &self.hints_json().await),
            "/admin/local" => self.local_json(req.query.as_deref()).await,
            "/admin/aae" => AdminResponse::json(StatusCode::OK, &self.aae_json().await),
            "/admin/ui" => crate::console::page(),
            "/admin/leave" => self.leave().await,
            "/admin/remove" => self.remove(req.query.as_deref()).await,
            _ => AdminResponse::not_found(&req),
        }
    }

    fn context_key(&self) -> &ContextKey {
        &self.context_key
    }
}

/// Sends `items` as a stream of bounded chunks.
fn chunked(items: Vec<Vec<u8>>) -> KeyStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut items = items.into_iter().map(Bytes::from).peekable();
        while items.peek().is_some() {
            let chunk: Vec<Bytes> = items.by_ref().take(LIST_CHUNK_KEYS).collect();
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    rx
}
