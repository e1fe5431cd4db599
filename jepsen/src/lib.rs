//! Starling's partition-testing harness, built on Jepsen's ideas.
//!
//! A test runs real `starling` processes, one per Linux network namespace,
//! joined by a bridge in a namespace of the harness's own ([`net`]). Clients
//! run a workload against them ([`workload`], over HTTP only, [`client`])
//! while a nemesis injects faults on a seeded schedule ([`nemesis`]:
//! partitions and packet loss as nftables rules between node addresses
//! ([`nft`]), SIGKILL with restarts and SIGSTOP pauses of processes
//! ([`db`])). Every operation is recorded as invoke/ok/fail/info
//! ([`history`]); after a final heal, checkers judge the history and the
//! replicas' own copies ([`checker`]). [`report`] draws plots and a
//! timeline; [`run`] ties it together.
//!
//! Boundary: the harness never links the node crate. It knows Starling
//! only through its HTTP API and its command line, as a user would.
//!
//! Invariants: a write is never retried; an operation whose effect is not
//! known is `info`, never `ok` or `fail`; a run that cannot decide says
//! `unknown`, never `valid`; everything a run creates carries its run id
//! and is removed by its `Drop` guards or by `jepsen cleanup`.

pub mod checker;
pub mod client;
pub mod db;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod nft;
pub mod report;
pub mod run;
pub mod workload;
