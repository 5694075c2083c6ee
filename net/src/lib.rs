//! The node transport: the wire envelope every node-to-node datagram travels in, and the
//! sans-IO helpers the kernel's UDP service uses to send and receive it.
//!
//! Modules, bottom up:
//! - [`crc32c`]: the envelope checksum (CRC-32C, RFC 3720 appendix B.4).
//! - [`envelope`]: the fixed 40-byte header, [`Kind`], total decoding into a borrowed
//!   [`Envelope`], [`DecodeError`] and [`DropCounters`].
//! - [`dedup`]: per-sender duplicate suppression (RFC 4303-style sliding window).
//! - [`transport`]: [`encode`] into a caller buffer, the [`Endpoint`] that receives, filters
//!   and counts, and [`dispatch`] to one [`Handler`] method per kind.
//! - [`probe`]: ping/pong RTT probes and statistics for the `transport_rtt_us` benchmark.
//! - [`seal`]: sealed datagrams — ChaCha20-Poly1305 under per-pair keys from the mutual-TLS
//!   session, with a replay window ([`seal::Keyring`]).
//!
//! Neighbours: the kernel owns the UDP socket (smoltcp over virtio-net) and the clock and
//! drives this crate; `membership` (SWIM, Raft) and `xylem` produce and consume the postcard
//! payloads. Layout, limits and drop reasons are documented in `docs/transport.md`.
//!
//! Architecture invariant: this crate never touches a device, a clock or a global; decoding
//! never panics and never allocates.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod crc32c;
pub mod dedup;
pub mod envelope;
pub mod probe;
pub mod seal;
pub mod transport;

/// A node's numeric identity (the same type as `membership::NodeId`).
pub type NodeId = u64;

pub use envelope::{
    decode, parse, parse_sealed, DecodeError, DropCounters, Envelope, Header, Kind, LocalIdentity,
    BROADCAST, HEADER_LEN, MAGIC, MAX_DATAGRAM_LEN, MAX_PAYLOAD_LEN, VERSION, VERSION_SEALED,
};
pub use probe::{ProbeConfig, ProbeError, ProbePayload, Prober, RttStats, RttSummary};
pub use transport::{
    decode_postcard, dispatch, encode, encode_postcard, EncodeError, Endpoint, Handler,
    ReceiveError, TransportConfig,
};
