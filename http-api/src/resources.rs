//! Discovery and health: `GET /` (the resource list clients use to find
//! paths), `GET /ping` and `GET /stats`.
//!
//! `/stats` reports `riak_kv_version` = [`RIAK_API_LEVEL`]: clients gate
//! features on it (bucket types from 2.0, preflists from 2.1), and Starling's
//! KV surface matches Riak 2.2's HTTP API for everything it implements
//! (not: secondary indexes, search, MapReduce, CRDT data types, link
//! walking, non-default bucket types). The backend's fields are merged over
//! this crate's, so the node decides `nodename` and cluster facts.

use std::sync::atomic::Ordering;

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::backend::Backend;
use crate::response::{self, ResponseBody};
use crate::server::State;

/// The Riak release whose HTTP KV API Starling implements.
pub const RIAK_API_LEVEL: &str = "2.2.3";

/// The resource list, in Riak's names.
const RESOURCES: &[(&str, &str)] = &[
    ("riak_kv_wm_buckets", "/buckets"),
    ("riak_kv_wm_keylist", "/buckets"),
    ("riak_kv_wm_object", "/buckets"),
    ("riak_kv_wm_ping", "/ping"),
    ("riak_kv_wm_preflist", "/buckets"),
    ("riak_kv_wm_props", "/buckets"),
    ("riak_kv_wm_raw", "/riak"),
    ("riak_kv_wm_stats", "/stats"),
    ("starling_admin", "/admin"),
    ("starling_metrics", "/metrics"),
];

/// `GET /`: HTML by default and for browsers, JSON when asked for, as
/// Riak's `riak_core_wm_urlmap` does.
pub fn root(headers: &HeaderMap) -> Response<ResponseBody> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    match response::negotiate(accept, &["text/html", "application/json"]) {
        Some("text/html") => {
            let mut html = String::from("<html><head><title>Starling</title></head><body><ul>");
            for (name, path) in RESOURCES {
                html.push_str(&format!("<li><a href=\"{path}\">{name}</a></li>"));
            }
            html.push_str("</ul></body></html>");
            response::full(StatusCode::OK, "text/html", html)
        }
        _ => {
            let map: Map<String, Value> = RESOURCES
                .iter()
                .map(|(name, path)| ((*name).to_owned(), Value::from(*path)))
                .collect();
            response::json(StatusCode::OK, &Value::Object(map))
        }
    }
}

/// `GET /ping`.
pub fn ping() -> Response<ResponseBody> {
    response::full(StatusCode::OK, "text/plain", "OK")
}

/// `GET /stats`: this crate's fields, then the backend's over them.
pub async fn stats<B: Backend>(state: &State<B>) -> Response<ResponseBody> {
    let m = &state.metrics;
    let mut fields = json!({
        "riak_kv_version": RIAK_API_LEVEL,
        "starling_version": env!("CARGO_PKG_VERSION"),
        "nodename": "starling@localhost",
        "sys_logical_processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "sys_system_architecture": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        "sys_wordsize": std::mem::size_of::<usize>(),
        "http_uptime_s": state.started.elapsed().as_secs(),
        "http_requests_total": m.requests_total.load(Ordering::Relaxed),
        "http_requests_in_flight": m.requests_in_flight.load(Ordering::Relaxed),
        "http_connections_open": m.connections_open.load(Ordering::Relaxed),
        "http_connections_refused_total": m.connections_refused_total.load(Ordering::Relaxed),
        "http_requests_overloaded_total": m.requests_overloaded_total.load(Ordering::Relaxed),
        "http_requests_unauthorized_total": m.requests_unauthorized_total.load(Ordering::Relaxed),
        "http_tls_handshake_failures_total": m.tls_handshake_failures_total.load(Ordering::Relaxed),
        "http_body_buffer_bytes_in_use": state.body_budget.in_use_bytes(),
        "http_responses_2xx_total": m.responses_2xx.load(Ordering::Relaxed),
        "http_responses_3xx_total": m.responses_3xx.load(Ordering::Relaxed),
        "http_responses_4xx_total": m.responses_4xx.load(Ordering::Relaxed),
        "http_responses_5xx_total": m.responses_5xx.load(Ordering::Relaxed),
    });
    if let Value::Object(map) = &mut fields {
        map.extend(state.backend.stats().await);
    }
    response::json(StatusCode::OK, &fields)
}
