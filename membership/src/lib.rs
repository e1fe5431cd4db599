//! Cluster membership for Starling: SWIM with the Lifeguard extensions, as
//! a sans-IO state machine.
//!
//! # What it does
//!
//! Each node runs one [`Swim`]. It probes one member per probe interval
//! (round-robin over a shuffled list), asks `indirect_checks` others to
//! probe for it when a direct ack does not come (ping-req, with nacks),
//! suspects members that stay silent, declares them dead when the
//! suspicion timeout runs out, and spreads every change by piggy-backing it
//! on its datagrams and by gossip rounds. A periodic push-pull over a
//! reliable stream exchanges full state with a random member, and a
//! reconnect round push-pulls with a random dead member (or a seed, when
//! alone), which is how partitions heal and restarted nodes come back.
//!
//! Lifeguard: the local health multiplier ([`Swim::health_score`]) slows
//! this node's probing when it looks like the slow one; the suspicion
//! timeout starts long and shrinks with independent confirmations; indirect
//! probers nack; a probe of a suspect carries the suspicion (buddy system).
//!
//! # What it does not do
//!
//! No sockets, no clocks, no threads, no async: it knows nothing of tokio
//! or quinn (`cargo tree -p membership` shows neither). Time is a [`Time`]
//! passed in, randomness an RNG passed to [`Swim::new`]. It does not decide
//! ring ownership: a dead member is still a member; [`RingState`] in each
//! member's [`Meta`] is only carried.
//!
//! # Driving it
//!
//! ```text
//! let mut swim = Swim::new(config, id, meta, incarnation, StdRng::from_os_rng(), now())?;
//! swim.join(now(), &seeds);
//! loop {
//!     // inputs, each followed by draining poll_output():
//!     //   datagram from addr     -> swim.handle_datagram(now(), addr, &bytes)
//!     //   push-pull stream in    -> reply = swim.handle_stream_request(now(), addr, &bytes)?,
//!     //                             write reply on the same stream
//!     //   timer fired            -> swim.handle_timer(now(), timer)
//!     while let Some(out) = swim.poll_output() {
//!         match out {
//!             Output::Datagram { to, addr, bytes } => send a QUIC datagram,
//!             Output::PushPull { to, addr, bytes } => open a stream, write bytes, read the
//!                 reply (at most wire::STREAM_BYTES_MAX), then
//!                 swim.handle_stream_reply(now(), addr, &reply) (failures: just drop),
//!             Output::Timer { at, timer } => sleep until `at`, then handle_timer(timer),
//!             Output::Event(e) => update routing (Up / Suspect / Dead / Left / MetaChanged),
//!         }
//!     }
//! }
//! // shutdown: swim.leave(now()), keep driving until pending_broadcasts() == 0
//! // or a few gossip intervals have passed.
//! ```
//!
//! `now()` is `Time::from_duration(start.elapsed())` for one `Instant`
//! `start` taken at process start. Timers are never cancelled; the state
//! machine ignores stale ones. Errors from `handle_*` are peers' bad bytes:
//! count and drop them.
//!
//! # Identity and incarnations
//!
//! A member is its [`NodeId`]; its address is metadata, so a node back on a
//! new address is the same member. Only a member raises its own incarnation
//! (refuting a suspicion, or announcing new metadata with
//! [`Swim::set_meta`]). A restarted node may start at incarnation 0: the
//! first peer that tells it it is dead, suspect or known at a higher
//! incarnation makes it announce itself one above. Peers can hold it dead at
//! different incarnations (an update it made just before a crash may have
//! reached only some), so a member answers a ping from a member it holds
//! dead or left with that death leading the ack, and the pinger refutes
//! above it too. Updates jumping more than
//! `Config::incarnation_jump_max` above the incarnation known for a live
//! member are ignored (see that field for the exact rule).
//!
//! # The simulator
//!
//! [`sim`] runs hundreds of nodes in one process on virtual time with loss,
//! delay, partitions, crashes, restarts and stalls, deterministically from a
//! seed; the tests and the `swim_figures` example are built on it.

mod awareness;
mod broadcast;
pub mod config;
pub mod member;
pub mod sim;
pub mod suspicion;
pub mod swim;
pub mod time;
pub mod wire;

pub use broadcast::retransmit_limit;
pub use config::{Config, ConfigError};
pub use member::{
    Incarnation, META_STRING_BYTES_MAX, Member, MemberState, Meta, MetaError, NodeId, RingState,
};
pub use swim::{Event, NewError, Output, Stats, Swim, Timer};
pub use time::Time;
pub use wire::WireError;
