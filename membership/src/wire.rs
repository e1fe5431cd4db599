//! The wire format: a version byte followed by a postcard-encoded body.
//!
//! Datagrams (`Packet`) carry one SWIM message plus as many piggy-backed
//! membership updates as fit under the configured size. Streams
//! (`StreamPacket`) carry push-pull full-state exchanges.
//!
//! A datagram is assembled by hand from pre-encoded updates so the size can
//! be bounded without re-encoding; the bytes are exactly what postcard
//! produces for `Packet` (a struct is its fields in order, a `Vec` is a
//! varint length and its elements), which a unit test checks.
//!
//! Invariant: decoding never panics. Garbage, truncation, an unknown version
//! or out-of-range metadata is a [`WireError`]. This module does not apply
//! anything: it only turns bytes into values and back.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::member::{Incarnation, Member, MemberState, Meta, NodeId};

/// The only wire version this build speaks. Bump it on any incompatible
/// change of the types below.
pub const WIRE_VERSION: u8 = 1;

/// Largest datagram accepted, whatever the configured send size.
pub const DATAGRAM_BYTES_MAX: usize = 65_535;

/// Largest push-pull stream message accepted. A driver should stop reading
/// a stream beyond this many bytes. Ten thousand members with maximal
/// metadata stay below it.
pub const STREAM_BYTES_MAX: usize = 8 << 20;

/// Worst case for the varint update count written into a packet.
const COUNT_BYTES_MAX: usize = 3;

/// Why bytes from a peer were rejected. None of these is fatal: the driver
/// should count it and drop the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Zero bytes.
    #[error("empty message")]
    Empty,
    /// The sender speaks a wire version this build does not know: probably
    /// a rolling upgrade across an incompatible change.
    #[error("unsupported wire version {0}, this build speaks {WIRE_VERSION}")]
    UnsupportedVersion(u8),
    /// Longer than [`DATAGRAM_BYTES_MAX`] or [`STREAM_BYTES_MAX`].
    #[error("message of {len_bytes} bytes exceeds the limit of {max_bytes}")]
    TooLarge {
        /// Size received.
        len_bytes: usize,
        /// Limit for this kind of message.
        max_bytes: usize,
    },
    /// The body does not decode (garbage or truncation).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body decoded but left bytes unread.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A field decoded but is out of its allowed range (metadata too long,
    /// too many members, a reply where a request belongs).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// The SWIM message a datagram carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Are you alive? `target` lets a node that took over an old address
    /// ignore a ping meant for its predecessor.
    Ping { seq: u32, target: NodeId },
    /// Answer to the ping with this sequence number.
    Ack { seq: u32 },
    /// Sent by an indirect prober: "I am alive, but the target did not
    /// answer me in time either".
    Nack { seq: u32 },
    /// Please probe `target` for me and relay its ack (and a nack after
    /// `nack_after_ms` if it stays silent; 0 asks for no nack).
    PingReq {
        seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
        nack_after_ms: u32,
    },
    /// Nothing but piggy-backed updates.
    Gossip,
}

/// A membership update, piggy-backed on datagrams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Update {
    Alive {
        member: NodeId,
        incarnation: Incarnation,
        meta: Meta,
    },
    Suspect {
        member: NodeId,
        incarnation: Incarnation,
        from: NodeId,
    },
    Dead {
        member: NodeId,
        incarnation: Incarnation,
        from: NodeId,
    },
    Left {
        member: NodeId,
        incarnation: Incarnation,
    },
}

impl Update {
    pub(crate) fn member(&self) -> NodeId {
        match self {
            Update::Alive { member, .. }
            | Update::Suspect { member, .. }
            | Update::Dead { member, .. }
            | Update::Left { member, .. } => *member,
        }
    }
}

/// A datagram body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Packet {
    pub from: NodeId,
    pub msg: Message,
    pub updates: Vec<Update>,
}

/// One member in a push-pull exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: NodeId,
    pub incarnation: Incarnation,
    pub state: MemberState,
    pub meta: Meta,
}

impl From<&Member> for Record {
    fn from(m: &Member) -> Self {
        Record {
            id: m.id,
            incarnation: m.incarnation,
            state: m.state,
            meta: m.meta.clone(),
        }
    }
}

/// A push-pull stream body: the sender's full member table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamPacket {
    pub from: NodeId,
    /// True when the sender is joining (first contact with a seed).
    pub join: bool,
    /// True for the answer to a push-pull request.
    pub reply: bool,
    pub members: Vec<Record>,
}

/// Postcard bytes of one update, to be passed to [`assemble_packet`].
pub(crate) fn encode_update(update: &Update) -> Vec<u8> {
    postcard::to_stdvec(update).expect("encoding to a Vec cannot fail")
}

/// The bytes every packet starts with: version, sender, message.
pub(crate) fn encode_header(from: NodeId, msg: &Message) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    out.extend(postcard::to_stdvec(&from).expect("encoding to a Vec cannot fail"));
    out.extend(postcard::to_stdvec(msg).expect("encoding to a Vec cannot fail"));
    out
}

/// Bytes left for updates in a packet whose header is `header_len` long.
pub(crate) fn update_budget(header_len: usize, size_max: usize) -> usize {
    size_max.saturating_sub(header_len + COUNT_BYTES_MAX)
}

/// Header + varint count + updates: the postcard encoding of a [`Packet`].
pub(crate) fn assemble_packet(mut header: Vec<u8>, updates: &[Vec<u8>]) -> Vec<u8> {
    let mut count = updates.len();
    loop {
        let byte = (count & 0x7f) as u8;
        count >>= 7;
        if count == 0 {
            header.push(byte);
            break;
        }
        header.push(byte | 0x80);
    }
    for u in updates {
        header.extend_from_slice(u);
    }
    header
}

fn body(bytes: &[u8], max_bytes: usize) -> Result<&[u8], WireError> {
    let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if bytes.len() > max_bytes {
        return Err(WireError::TooLarge {
            len_bytes: bytes.len(),
            max_bytes,
        });
    }
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    Ok(rest)
}

fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Decodes and validates a datagram.
pub(crate) fn decode_packet(bytes: &[u8]) -> Result<Packet, WireError> {
    let packet: Packet = decode_exact(body(bytes, DATAGRAM_BYTES_MAX)?)?;
    for update in &packet.updates {
        if let Update::Alive { meta, .. } = update {
            meta.validate()
                .map_err(|_| WireError::Invalid("metadata string too long"))?;
        }
    }
    Ok(packet)
}

/// Encodes a push-pull stream message.
pub(crate) fn encode_stream(packet: &StreamPacket) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    out.extend(postcard::to_stdvec(packet).expect("encoding to a Vec cannot fail"));
    out
}

/// Decodes and validates a push-pull stream message.
pub(crate) fn decode_stream(bytes: &[u8], members_max: usize) -> Result<StreamPacket, WireError> {
    let packet: StreamPacket = decode_exact(body(bytes, STREAM_BYTES_MAX)?)?;
    if packet.members.len() > members_max.saturating_add(1) {
        return Err(WireError::Invalid("more members than members_max"));
    }
    for record in &packet.members {
        record
            .meta
            .validate()
            .map_err(|_| WireError::Invalid("metadata string too long"))?;
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::member::RingState;

    fn meta() -> Meta {
        Meta {
            addr: "10.0.0.1:7946".parse().unwrap(),
            http_addr: "10.0.0.1:8098".into(),
            zone: "a".into(),
            ring: RingState::Member,
        }
    }

    fn updates(n: usize) -> Vec<Update> {
        (0..n)
            .map(|i| Update::Alive {
                member: NodeId(i as u128 * 7919),
                incarnation: i as u64,
                meta: meta(),
            })
            .collect()
    }

    #[test]
    fn assembled_packet_is_postcard_encoding() {
        for n in [0, 1, 5, 130] {
            let packet = Packet {
                from: NodeId(u128::MAX - 3),
                msg: Message::PingReq {
                    seq: 77,
                    target: NodeId(9),
                    target_addr: "[::1]:7946".parse().unwrap(),
                    nack_after_ms: 350,
                },
                updates: updates(n),
            };
            let encoded: Vec<Vec<u8>> = packet.updates.iter().map(encode_update).collect();
            let bytes = assemble_packet(encode_header(packet.from, &packet.msg), &encoded);
            let mut expected = vec![WIRE_VERSION];
            expected.extend(postcard::to_stdvec(&packet).unwrap());
            assert_eq!(bytes, expected);
            assert_eq!(decode_packet(&bytes).unwrap(), packet);
        }
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert_eq!(decode_packet(&[]), Err(WireError::Empty));
        assert_eq!(
            decode_packet(&[9, 0]),
            Err(WireError::UnsupportedVersion(9))
        );
        let bytes = assemble_packet(encode_header(NodeId(1), &Message::Gossip), &[]);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_packet(&trailing), Err(WireError::TrailingBytes(1)));
        assert!(matches!(
            decode_packet(&bytes[..bytes.len() - 1]),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_long_metadata() {
        let mut long = meta();
        long.zone = "z".repeat(1000);
        let update = encode_update(&Update::Alive {
            member: NodeId(1),
            incarnation: 1,
            meta: long,
        });
        let bytes = assemble_packet(encode_header(NodeId(2), &Message::Gossip), &[update]);
        assert!(matches!(decode_packet(&bytes), Err(WireError::Invalid(_))));
    }

    #[test]
    fn stream_round_trip_and_limits() {
        let packet = StreamPacket {
            from: NodeId(3),
            join: true,
            reply: false,
            members: (0..4)
                .map(|i| Record {
                    id: NodeId(i),
                    incarnation: 2,
                    state: MemberState::Suspect,
                    meta: meta(),
                })
                .collect(),
        };
        let bytes = encode_stream(&packet);
        assert_eq!(decode_stream(&bytes, 10).unwrap(), packet);
        assert!(matches!(
            decode_stream(&bytes, 2),
            Err(WireError::Invalid(_))
        ));
    }
}
