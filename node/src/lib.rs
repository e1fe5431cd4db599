//! The Starling node: configuration, the glue between the HTTP API and the
//! store, and process life-cycle (start, signals, graceful shutdown).
//!
//! Boundary: this crate owns I/O and wiring. Storage semantics live in
//! `storage`, the HTTP surface in `http-api`; the node decides where requests
//! go and how long they may take.

pub mod aae;
pub mod admin;
pub mod applier;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod console;
pub mod coordinator;
pub mod dev;
pub mod handoff;
pub mod lane;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod reaper;
pub mod ring;
pub mod rpc;
pub mod security;
pub mod server;
pub mod tls;
pub mod transport;
