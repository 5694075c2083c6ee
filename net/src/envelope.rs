//! The versioned wire envelope every node-to-node datagram travels in.
//!
//! One envelope is one UDP datagram: a fixed 40-byte header written by hand, then an opaque
//! payload that the consumer (SWIM, Raft, the control plane) encodes with postcard. The layout
//! is the table in `docs/transport.md`; the constants below are its source of truth.
//!
//! ```text
//!  0       4   5   6       8               16              24              32      36      40
//!  +-------+---+---+-------+---------------+---------------+---------------+-------+-------+---
//!  | magic |ver|knd|pay_len|  cluster_id   |    sender     |   receiver    |  seq  | crc32c| payload…
//!  +-------+---+---+-------+---------------+---------------+---------------+-------+-------+---
//! ```
//!
//! All integers are big-endian (network order). The CRC-32C covers bytes `0..36` followed by
//! the payload, i.e. everything but the checksum field itself.
//!
//! Key types: [`Header`] (what the sender fills in), [`Envelope`] (a decoded datagram that
//! borrows its payload from the receive buffer: decoding never allocates), [`Kind`] (stable
//! numeric tags), [`DecodeError`] (one variant per drop reason) and [`DropCounters`].
//!
//! Decoding is total: [`parse`] checks structure and checksum, [`Envelope::accept`] checks
//! that the datagram is meant for this node, [`decode`] does both. Every input either yields
//! an envelope or a typed error; nothing panics, nothing is allocated.

use crate::crc32c::Crc32c;
use crate::NodeId;

/// The first four bytes of every datagram: ASCII "XYLM".
pub const MAGIC: [u8; 4] = *b"XYLM";
/// The protocol version this crate speaks. A receiver rejects any other version: a new
/// layout gets a new number, so old and new nodes never misread each other's bytes.
pub const VERSION: u8 = 1;
/// The version of a *sealed* datagram (`crate::seal`): the same 40-byte header, then an
/// authenticated, encrypted body. A receiver that requires sealing refuses version 1, and a
/// receiver that does not knows nothing of version 2 (`unsupported_version`).
pub const VERSION_SEALED: u8 = 2;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 40;
/// The largest datagram we send or accept, header included.
///
/// Ethernet's 1500-byte MTU minus 20 bytes of IPv4 header and 8 of UDP leaves 1472 bytes for
/// a datagram that needs no IP fragmentation; 1400 keeps 72 bytes of margin for IP options,
/// an encapsulating tunnel, or the record overhead of a later TLS/DTLS layer.
pub const MAX_DATAGRAM_LEN: usize = 1400;
/// The largest payload one envelope carries: `MAX_DATAGRAM_LEN - HEADER_LEN` = 1360 bytes.
pub const MAX_PAYLOAD_LEN: usize = MAX_DATAGRAM_LEN - HEADER_LEN;
/// The receiver id that addresses every node of the cluster. Never a valid sender.
pub const BROADCAST: NodeId = u64::MAX;

// Field offsets inside the header (see the module diagram).
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_KIND: usize = 5;
const OFF_PAYLOAD_LEN: usize = 6;
const OFF_CLUSTER: usize = 8;
const OFF_SENDER: usize = 16;
const OFF_RECEIVER: usize = 24;
const OFF_SEQ: usize = 32;
const OFF_CRC: usize = 36;
/// Offset of the CRC-32C field; the checksum covers `..CHECKSUM_OFFSET` plus the payload.
pub const CHECKSUM_OFFSET: usize = OFF_CRC;

const _: () = assert!(OFF_CRC + 4 == HEADER_LEN);
const _: () = assert!(MAX_PAYLOAD_LEN <= u16::MAX as usize);
const _: () = assert!(
    MAX_DATAGRAM_LEN <= 1472,
    "must fit one unfragmented IPv4 UDP datagram"
);

/// What a datagram carries. The numeric tags are part of the wire format and never change;
/// tag 0 is reserved so that an all-zero buffer is never a valid kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// SWIM failure-detector traffic (ping, ping-req, ack, gossip).
    Swim = 1,
    /// Raft consensus traffic (vote, append, snapshot).
    Raft = 2,
    /// Control plane: service and cell commands forwarded between nodes.
    Control = 3,
    /// A round-trip probe request; the receiver echoes its payload in a [`Kind::ProbePong`].
    ProbePing = 4,
    /// The echo of a [`Kind::ProbePing`], payload byte-for-byte identical.
    ProbePong = 5,
}

impl Kind {
    /// Every kind, in tag order.
    pub const ALL: [Kind; 5] = [
        Kind::Swim,
        Kind::Raft,
        Kind::Control,
        Kind::ProbePing,
        Kind::ProbePong,
    ];
    /// Number of kinds (the length of per-kind counter arrays).
    pub const COUNT: usize = Self::ALL.len();

    /// The stable wire tag.
    pub const fn tag(self) -> u8 {
        self as u8
    }

    /// The kind with wire tag `tag`, if any.
    pub const fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            1 => Some(Kind::Swim),
            2 => Some(Kind::Raft),
            3 => Some(Kind::Control),
            4 => Some(Kind::ProbePing),
            5 => Some(Kind::ProbePong),
            _ => None,
        }
    }

    /// Dense index `0..COUNT`, for per-kind counter arrays.
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// Stable snake_case name, for the shell and the event log.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Swim => "swim",
            Kind::Raft => "raft",
            Kind::Control => "control",
            Kind::ProbePing => "probe_ping",
            Kind::ProbePong => "probe_pong",
        }
    }
}

/// The header fields a sender chooses. Magic, version, payload length and checksum are
/// derived when the envelope is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the payload is.
    pub kind: Kind,
    /// The cluster this datagram belongs to; receivers drop other clusters' traffic.
    pub cluster_id: u64,
    /// The sending node. Never [`BROADCAST`].
    pub sender: NodeId,
    /// The destination node, or [`BROADCAST`].
    pub receiver: NodeId,
    /// Per-sender sequence number (wrapping), for duplicate suppression.
    pub seq: u32,
}

/// The receiving node's identity, against which [`Envelope::accept`] filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalIdentity {
    /// The cluster this node belongs to.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: NodeId,
}

/// A decoded datagram. Borrows its payload from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The header as sent.
    pub header: Header,
    /// The opaque payload, exactly `payload_len` bytes.
    pub payload: &'a [u8],
}

/// Why a datagram was dropped. One variant per counted reason; the checks run in the order
/// the variants are listed, so each datagram is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header, or shorter than the header plus the declared payload.
    Truncated { needed: usize, got: usize },
    /// Longer than [`MAX_DATAGRAM_LEN`], or declaring a payload longer than [`MAX_PAYLOAD_LEN`].
    Oversized { len: usize },
    /// The first four bytes are not [`MAGIC`]: not our protocol at all.
    BadMagic,
    /// Our magic, another protocol version.
    UnsupportedVersion { version: u8 },
    /// More bytes than the header declares.
    TrailingBytes { declared: usize, got: usize },
    /// The CRC-32C does not match: corrupted on the way.
    BadChecksum { carried: u32, computed: u32 },
    /// The checksum is right but the kind tag is not one this version knows.
    UnknownKind { tag: u8 },
    /// The sender field holds [`BROADCAST`], which is only a destination.
    InvalidSender,
    /// Another cluster's traffic (a misconfigured node, or two clusters on one fabric).
    WrongCluster { cluster_id: u64 },
    /// Addressed to another node (the switch flooded it, or a stale peer table).
    NotForMe { receiver: NodeId },
    /// Sent by this very node (a broadcast reflected back to us).
    FromSelf,
}

impl DecodeError {
    /// Number of distinct reasons (the length of [`DropCounters`]' array).
    pub const COUNT: usize = 11;
    /// Stable snake_case names, indexed by [`DecodeError::index`].
    pub const NAMES: [&'static str; Self::COUNT] = [
        "truncated",
        "oversized",
        "bad_magic",
        "unsupported_version",
        "trailing_bytes",
        "bad_checksum",
        "unknown_kind",
        "invalid_sender",
        "wrong_cluster",
        "not_for_me",
        "from_self",
    ];

    /// Dense index `0..COUNT` of this reason.
    pub const fn index(&self) -> usize {
        match self {
            DecodeError::Truncated { .. } => 0,
            DecodeError::Oversized { .. } => 1,
            DecodeError::BadMagic => 2,
            DecodeError::UnsupportedVersion { .. } => 3,
            DecodeError::TrailingBytes { .. } => 4,
            DecodeError::BadChecksum { .. } => 5,
            DecodeError::UnknownKind { .. } => 6,
            DecodeError::InvalidSender => 7,
            DecodeError::WrongCluster { .. } => 8,
            DecodeError::NotForMe { .. } => 9,
            DecodeError::FromSelf => 10,
        }
    }

    /// Stable snake_case name of this reason.
    pub const fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DecodeError::Truncated { needed, got } => {
                write!(f, "truncated: need {needed} bytes, got {got}")
            }
            DecodeError::Oversized { len } => {
                write!(f, "oversized: {len} bytes > {MAX_DATAGRAM_LEN}")
            }
            DecodeError::BadMagic => f.write_str("bad magic"),
            DecodeError::UnsupportedVersion { version } => {
                write!(f, "unsupported version {version}")
            }
            DecodeError::TrailingBytes { declared, got } => {
                write!(f, "trailing bytes: declared {declared}, got {got}")
            }
            DecodeError::BadChecksum { carried, computed } => {
                write!(
                    f,
                    "bad checksum: carried {carried:#010x}, computed {computed:#010x}"
                )
            }
            DecodeError::UnknownKind { tag } => write!(f, "unknown kind tag {tag}"),
            DecodeError::InvalidSender => f.write_str("sender is the broadcast id"),
            DecodeError::WrongCluster { cluster_id } => write!(f, "wrong cluster {cluster_id:#x}"),
            DecodeError::NotForMe { receiver } => write!(f, "addressed to node {receiver}"),
            DecodeError::FromSelf => f.write_str("sent by this node"),
        }
    }
}

/// Drops counted per reason, for the kernel's `net` shell command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    by_reason: [u64; DecodeError::COUNT],
    /// Well-formed datagrams suppressed as duplicates by the transport (not a decode error).
    pub duplicate: u64,
}

impl DropCounters {
    /// All counters at zero.
    pub const fn new() -> Self {
        Self {
            by_reason: [0; DecodeError::COUNT],
            duplicate: 0,
        }
    }

    /// Counts one datagram dropped for `error`'s reason.
    pub fn record(&mut self, error: &DecodeError) {
        let slot = &mut self.by_reason[error.index()];
        *slot = slot.saturating_add(1);
    }

    /// Counts one datagram suppressed as a duplicate.
    pub fn record_duplicate(&mut self) {
        self.duplicate = self.duplicate.saturating_add(1);
    }

    /// How many datagrams were dropped for the reason `error` stands for.
    pub fn count(&self, error: &DecodeError) -> u64 {
        self.by_reason[error.index()]
    }

    /// Decode drops of all reasons plus duplicates.
    pub fn total(&self) -> u64 {
        self.by_reason
            .iter()
            .fold(self.duplicate, |sum, n| sum.saturating_add(*n))
    }

    /// `(reason name, count)` for every reason, duplicates last; zero counts included so the
    /// shell output has a stable shape.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DecodeError::NAMES
            .iter()
            .copied()
            .zip(self.by_reason.iter().copied())
            .chain(core::iter::once(("duplicate", self.duplicate)))
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(raw)
}

/// The CRC-32C of a datagram: header bytes before the checksum field, then the payload.
pub(crate) fn envelope_checksum(header_bytes: &[u8], payload: &[u8]) -> u32 {
    debug_assert!(header_bytes.len() >= OFF_CRC);
    let mut crc = Crc32c::new();
    crc.update(&header_bytes[..OFF_CRC]);
    crc.update(payload);
    crc.finish()
}

/// Checks a datagram's structure and checksum, without regard to who receives it.
///
/// Order: length bounds, magic, version, declared length, checksum, kind, sender. The
/// checksum runs before the kind and address checks so that a corrupted byte anywhere is
/// counted as corruption, never as an unknown kind or a foreign cluster. Cost is bounded by
/// one pass over at most [`MAX_DATAGRAM_LEN`] bytes.
pub fn parse(datagram: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    parse_version(datagram, VERSION)
}

/// [`parse`] for a sealed datagram ([`VERSION_SEALED`]): the payload is the sealed body,
/// still to be opened by `crate::seal`.
pub fn parse_sealed(datagram: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    parse_version(datagram, VERSION_SEALED)
}

fn parse_version(datagram: &[u8], expected: u8) -> Result<Envelope<'_>, DecodeError> {
    let got = datagram.len();
    if got < HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            got,
        });
    }
    if got > MAX_DATAGRAM_LEN {
        return Err(DecodeError::Oversized { len: got });
    }
    if datagram[OFF_MAGIC..OFF_MAGIC + 4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = datagram[OFF_VERSION];
    if version != expected {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let payload_len = usize::from(read_u16(datagram, OFF_PAYLOAD_LEN));
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(DecodeError::Oversized {
            len: HEADER_LEN + payload_len,
        });
    }
    let declared = HEADER_LEN + payload_len;
    if got < declared {
        return Err(DecodeError::Truncated {
            needed: declared,
            got,
        });
    }
    if got > declared {
        return Err(DecodeError::TrailingBytes { declared, got });
    }
    let payload = &datagram[HEADER_LEN..];
    let carried = read_u32(datagram, OFF_CRC);
    let computed = envelope_checksum(datagram, payload);
    if carried != computed {
        return Err(DecodeError::BadChecksum { carried, computed });
    }
    let tag = datagram[OFF_KIND];
    let Some(kind) = Kind::from_tag(tag) else {
        return Err(DecodeError::UnknownKind { tag });
    };
    let sender = read_u64(datagram, OFF_SENDER);
    if sender == BROADCAST {
        return Err(DecodeError::InvalidSender);
    }
    let header = Header {
        kind,
        cluster_id: read_u64(datagram, OFF_CLUSTER),
        sender,
        receiver: read_u64(datagram, OFF_RECEIVER),
        seq: read_u32(datagram, OFF_SEQ),
    };
    debug_assert_eq!(payload.len(), payload_len);
    Ok(Envelope { header, payload })
}

/// [`parse`], then [`Envelope::accept`] for `local`: the one call a receiver makes.
pub fn decode<'a>(datagram: &'a [u8], local: &LocalIdentity) -> Result<Envelope<'a>, DecodeError> {
    let envelope = parse(datagram)?;
    envelope.accept(local)?;
    Ok(envelope)
}

impl Envelope<'_> {
    /// Whether this (well-formed) envelope is meant for `local`: same cluster, addressed to it
    /// or broadcast, and not sent by itself.
    pub fn accept(&self, local: &LocalIdentity) -> Result<(), DecodeError> {
        debug_assert!(
            local.node_id != BROADCAST,
            "a node cannot have the broadcast id"
        );
        let header = &self.header;
        if header.cluster_id != local.cluster_id {
            return Err(DecodeError::WrongCluster {
                cluster_id: header.cluster_id,
            });
        }
        if header.receiver != local.node_id && header.receiver != BROADCAST {
            return Err(DecodeError::NotForMe {
                receiver: header.receiver,
            });
        }
        if header.sender == local.node_id {
            return Err(DecodeError::FromSelf);
        }
        Ok(())
    }

    /// Length of this envelope on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Writes the header for `payload` into `out[..HEADER_LEN]`, checksum included. The payload
/// must already sit at `out[HEADER_LEN..HEADER_LEN + payload_len]`.
///
/// Used by [`crate::transport::encode`], which checks sizes and returns typed errors; this
/// function only asserts them, as the caller has already checked.
pub(crate) fn write_header(header: &Header, payload_len: usize, out: &mut [u8]) {
    write_header_version(header, VERSION, payload_len, out);
}

/// Writes the header with `version` (1 plain, 2 sealed), then the checksum over the
/// `payload_len` bytes already in place after it.
pub(crate) fn write_header_version(
    header: &Header,
    version: u8,
    payload_len: usize,
    out: &mut [u8],
) {
    assert!(
        payload_len <= MAX_PAYLOAD_LEN,
        "payload length checked by the caller"
    );
    assert!(
        out.len() >= HEADER_LEN + payload_len,
        "buffer length checked by the caller"
    );
    assert!(header.sender != BROADCAST, "sender checked by the caller");
    let len_field = u16::try_from(payload_len).unwrap_or(u16::MAX);
    out[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC);
    out[OFF_VERSION] = version;
    out[OFF_KIND] = header.kind.tag();
    out[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 2].copy_from_slice(&len_field.to_be_bytes());
    out[OFF_CLUSTER..OFF_CLUSTER + 8].copy_from_slice(&header.cluster_id.to_be_bytes());
    out[OFF_SENDER..OFF_SENDER + 8].copy_from_slice(&header.sender.to_be_bytes());
    out[OFF_RECEIVER..OFF_RECEIVER + 8].copy_from_slice(&header.receiver.to_be_bytes());
    out[OFF_SEQ..OFF_SEQ + 4].copy_from_slice(&header.seq.to_be_bytes());
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    let crc = envelope_checksum(head, &rest[..payload_len]);
    head[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests;
