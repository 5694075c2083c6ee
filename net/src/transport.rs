//! Sans-IO helpers for the kernel's UDP service: encode into a caller buffer, receive with
//! filtering, duplicate suppression and counting, and dispatch one handler per kind.
//!
//! The kernel owns the socket (smoltcp) and the clock; this module owns the bytes. Handling
//! order for one received datagram, as [`Endpoint::receive`] runs it:
//!
//! 1. [`decode`]: structure, checksum, kind, cluster, addressee (drop reasons in
//!    [`DecodeError`], each counted in [`DropCounters`]).
//! 2. Duplicate suppression per `(sender, seq)` ([`DupFilter`]), counted as `duplicate`.
//! 3. Per-kind receive counter, then the caller passes the envelope to [`dispatch`], which
//!    calls exactly one [`Handler`] method for its kind.
//!
//! Sending: [`encode`] (or [`Endpoint::encode`], which also assigns the sequence number)
//! writes header + payload into a buffer the caller owns; an oversized payload is an
//! [`EncodeError`], never a panic. Payloads are usually postcard ([`encode_postcard`],
//! [`decode_postcard`]), serialised straight into the datagram buffer without allocating.

use serde::{de::DeserializeOwned, Serialize};

use crate::dedup::{DupFilter, Verdict};
use crate::envelope::{
    decode, parse, write_header, DecodeError, DropCounters, Envelope, Header, Kind, LocalIdentity,
    BROADCAST, HEADER_LEN, MAX_PAYLOAD_LEN,
};
use crate::seal::{Keyring, OpenError, SealError};
use crate::NodeId;

/// Offset of the version byte (after the 4-byte magic).
const VERSION_OFFSET: usize = 4;

/// Why an envelope could not be written. Operating errors, returned, never panicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload exceeds [`MAX_PAYLOAD_LEN`]; the consumer must split or shrink it.
    PayloadTooLarge { len: usize, max: usize },
    /// The caller's buffer cannot hold header + payload.
    BufferTooSmall { needed: usize, got: usize },
    /// The header names [`BROADCAST`] as sender.
    InvalidSender,
    /// postcard could not serialise the payload value (other than for lack of room).
    Serialize(postcard::Error),
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::PayloadTooLarge { len, max } => {
                write!(f, "payload of {len} bytes > {max}")
            }
            EncodeError::BufferTooSmall { needed, got } => {
                write!(f, "buffer of {got} bytes < {needed}")
            }
            EncodeError::InvalidSender => f.write_str("sender is the broadcast id"),
            EncodeError::Serialize(e) => write!(f, "postcard: {e}"),
        }
    }
}

/// Writes `header` and `payload` into `buf`; returns the datagram length.
pub fn encode(header: &Header, payload: &[u8], buf: &mut [u8]) -> Result<usize, EncodeError> {
    check_header(header)?;
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(EncodeError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    let needed = HEADER_LEN + payload.len();
    if buf.len() < needed {
        return Err(EncodeError::BufferTooSmall {
            needed,
            got: buf.len(),
        });
    }
    buf[HEADER_LEN..needed].copy_from_slice(payload);
    write_header(header, payload.len(), buf);
    debug_assert_eq!(
        parse(&buf[..needed]).map(|e| e.header),
        Ok(*header),
        "encode/parse pair"
    );
    Ok(needed)
}

/// Serialises `value` with postcard directly after the header in `buf`, then writes the
/// header; returns the datagram length. No allocation.
pub fn encode_postcard<T: Serialize + ?Sized>(
    header: &Header,
    value: &T,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    check_header(header)?;
    if buf.len() < HEADER_LEN {
        return Err(EncodeError::BufferTooSmall {
            needed: HEADER_LEN,
            got: buf.len(),
        });
    }
    let room = (buf.len() - HEADER_LEN).min(MAX_PAYLOAD_LEN);
    let payload_len = match postcard::to_slice(value, &mut buf[HEADER_LEN..HEADER_LEN + room]) {
        Ok(written) => written.len(),
        Err(postcard::Error::SerializeBufferFull) => return Err(overflow_error(value, buf.len())),
        Err(e) => return Err(EncodeError::Serialize(e)),
    };
    assert!(payload_len <= room);
    write_header(header, payload_len, buf);
    Ok(HEADER_LEN + payload_len)
}

/// Tells "payload too large for any datagram" from "buffer too small for this payload".
fn overflow_error<T: Serialize + ?Sized>(value: &T, buf_len: usize) -> EncodeError {
    // Only on the error path: a second, counting-only serialisation pass.
    match postcard::experimental::serialized_size(value) {
        Ok(len) if len > MAX_PAYLOAD_LEN => EncodeError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD_LEN,
        },
        Ok(len) => EncodeError::BufferTooSmall {
            needed: HEADER_LEN + len,
            got: buf_len,
        },
        Err(e) => EncodeError::Serialize(e),
    }
}

fn check_header(header: &Header) -> Result<(), EncodeError> {
    if header.sender == BROADCAST {
        return Err(EncodeError::InvalidSender);
    }
    Ok(())
}

/// Deserialises a postcard payload. Borrowed types are not supported on purpose: the value
/// must outlive the receive buffer. Bounded by the payload length (at most 1360 bytes).
pub fn decode_postcard<T: DeserializeOwned>(payload: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(payload)
}

/// One handler per message kind; [`dispatch`] calls exactly one of them.
pub trait Handler {
    /// What every handler returns (often `()` or a list of actions).
    type Output;
    /// SWIM traffic.
    fn on_swim(&mut self, envelope: &Envelope<'_>) -> Self::Output;
    /// Raft traffic.
    fn on_raft(&mut self, envelope: &Envelope<'_>) -> Self::Output;
    /// Control-plane traffic.
    fn on_control(&mut self, envelope: &Envelope<'_>) -> Self::Output;
    /// An RTT probe to answer (see [`Endpoint::encode_pong`]).
    fn on_probe_ping(&mut self, envelope: &Envelope<'_>) -> Self::Output;
    /// The answer to one of our probes (see [`crate::probe::Prober::on_pong`]).
    fn on_probe_pong(&mut self, envelope: &Envelope<'_>) -> Self::Output;
}

/// Calls the handler method for `envelope`'s kind.
pub fn dispatch<H: Handler + ?Sized>(envelope: &Envelope<'_>, handler: &mut H) -> H::Output {
    match envelope.header.kind {
        Kind::Swim => handler.on_swim(envelope),
        Kind::Raft => handler.on_raft(envelope),
        Kind::Control => handler.on_control(envelope),
        Kind::ProbePing => handler.on_probe_ping(envelope),
        Kind::ProbePong => handler.on_probe_pong(envelope),
    }
}

/// Why [`Endpoint::receive`] dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveError {
    /// Rejected by the decoder.
    Decode(DecodeError),
    /// Well-formed, but this `(sender, seq)` was already delivered.
    Duplicate { sender: NodeId, seq: u32 },
}

/// Transport settings, one per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The cluster this node belongs to. No default: it comes from fw_cfg.
    pub cluster_id: u64,
    /// This node's id. No default: it comes from fw_cfg. Must not be [`BROADCAST`].
    pub node_id: NodeId,
    /// Drop datagrams whose `(sender, seq)` was already seen. Default `true`.
    pub dedup: bool,
    /// Senders the duplicate filter remembers (least recently used evicted). Default 64.
    pub dedup_peers_max: usize,
}

impl TransportConfig {
    /// The documented defaults for a node `node_id` of cluster `cluster_id`.
    pub const fn new(cluster_id: u64, node_id: NodeId) -> Self {
        Self {
            cluster_id,
            node_id,
            dedup: true,
            dedup_peers_max: 64,
        }
    }
}

/// One node's end of the transport: identity, outgoing sequence numbers, duplicate filter and
/// the counters the `net` shell command prints.
#[derive(Clone, Debug)]
pub struct Endpoint {
    config: TransportConfig,
    next_seq: u32,
    dedup: DupFilter,
    drops: DropCounters,
    received: [u64; Kind::COUNT],
    sent: [u64; Kind::COUNT],
}

impl Endpoint {
    /// An endpoint for `config`. `initial_seq` should be random (from the kernel's seeded
    /// generator) so that a rebooted node does not reuse its last life's numbers.
    pub fn new(config: TransportConfig, initial_seq: u32) -> Self {
        assert!(
            config.node_id != BROADCAST,
            "the broadcast id is not a node id"
        );
        assert!(config.dedup_peers_max > 0);
        Self {
            config,
            next_seq: initial_seq,
            dedup: DupFilter::new(config.dedup_peers_max),
            drops: DropCounters::new(),
            received: [0; Kind::COUNT],
            sent: [0; Kind::COUNT],
        }
    }

    /// This node's identity.
    pub fn local(&self) -> LocalIdentity {
        LocalIdentity {
            cluster_id: self.config.cluster_id,
            node_id: self.config.node_id,
        }
    }

    /// The header of the next datagram to `receiver` (does not consume a sequence number).
    pub fn next_header(&self, kind: Kind, receiver: NodeId) -> Header {
        Header {
            kind,
            cluster_id: self.config.cluster_id,
            sender: self.config.node_id,
            receiver,
            seq: self.next_seq,
        }
    }

    /// Encodes a datagram to `receiver` ([`BROADCAST`] for all) with the next sequence number.
    pub fn encode(
        &mut self,
        kind: Kind,
        receiver: NodeId,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let header = self.next_header(kind, receiver);
        let len = encode(&header, payload, buf)?;
        self.after_send(kind);
        Ok(len)
    }

    /// Like [`Endpoint::encode`] with a postcard-serialised payload.
    pub fn encode_postcard<T: Serialize + ?Sized>(
        &mut self,
        kind: Kind,
        receiver: NodeId,
        value: &T,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let header = self.next_header(kind, receiver);
        let len = encode_postcard(&header, value, buf)?;
        self.after_send(kind);
        Ok(len)
    }

    /// Encodes the answer to a probe ping: a pong to its sender echoing its payload verbatim.
    pub fn encode_pong(
        &mut self,
        ping: &Envelope<'_>,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        assert_eq!(
            ping.header.kind,
            Kind::ProbePing,
            "only pings are answered with pongs"
        );
        self.encode(Kind::ProbePong, ping.header.sender, ping.payload, buf)
    }

    fn after_send(&mut self, kind: Kind) {
        self.next_seq = self.next_seq.wrapping_add(1);
        let slot = &mut self.sent[kind.index()];
        *slot = slot.saturating_add(1);
    }

    /// Decodes, filters and counts one received datagram. Every rejection is counted in
    /// [`Endpoint::drops`] before it is returned.
    pub fn receive<'a>(&mut self, datagram: &'a [u8]) -> Result<Envelope<'a>, ReceiveError> {
        let envelope = match decode(datagram, &self.local()) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.drops.record(&error);
                return Err(ReceiveError::Decode(error));
            }
        };
        let header = envelope.header;
        if self.config.dedup && self.dedup.observe(header.sender, header.seq) == Verdict::Duplicate
        {
            self.drops.record_duplicate();
            return Err(ReceiveError::Duplicate {
                sender: header.sender,
                seq: header.seq,
            });
        }
        let slot = &mut self.received[header.kind.index()];
        *slot = slot.saturating_add(1);
        debug_assert!(header.cluster_id == self.config.cluster_id);
        Ok(envelope)
    }

    /// [`Endpoint::receive`], then [`dispatch`] to `handler` if accepted.
    pub fn receive_and_dispatch<H: Handler + ?Sized>(
        &mut self,
        datagram: &[u8],
        handler: &mut H,
    ) -> Result<H::Output, ReceiveError> {
        let envelope = self.receive(datagram)?;
        Ok(dispatch(&envelope, handler))
    }

    /// Seals a datagram to `receiver` with the next sequence number (`crate::seal`): only
    /// possible once a session with `receiver` exists in `keyring`.
    pub fn encode_sealed(
        &mut self,
        kind: Kind,
        receiver: NodeId,
        payload: &[u8],
        keyring: &mut Keyring,
        buf: &mut [u8],
    ) -> Result<usize, SealError> {
        let header = self.next_header(kind, receiver);
        let len = keyring.seal(&header, payload, buf)?;
        self.after_send(kind);
        Ok(len)
    }

    /// Receives a datagram where sealing is required: a plain one is dropped (`unsealed`),
    /// a sealed one must open under `keyring` (authentic, fresh) before anything reads its
    /// payload, which is decrypted into `out`. Envelope errors are counted in
    /// [`Endpoint::drops`], sealing errors in the keyring. The replay window replaces the
    /// duplicate filter here: only authenticated datagrams may move it.
    pub fn receive_sealed<'o>(
        &mut self,
        datagram: &[u8],
        keyring: &mut Keyring,
        now_ms: u64,
        out: &'o mut [u8],
    ) -> Result<Envelope<'o>, OpenError> {
        if datagram.len() > VERSION_OFFSET && datagram[VERSION_OFFSET] == crate::VERSION {
            keyring.record_unsealed();
            return Err(OpenError::Unsealed);
        }
        let local = self.local();
        match keyring.open(datagram, &local, now_ms, out) {
            Ok(envelope) => {
                let slot = &mut self.received[envelope.header.kind.index()];
                *slot = slot.saturating_add(1);
                Ok(envelope)
            }
            Err(OpenError::Decode(error)) => {
                self.drops.record(&error);
                Err(OpenError::Decode(error))
            }
            Err(other) => Err(other),
        }
    }

    /// Drops per reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Datagrams of `kind` accepted.
    pub fn received(&self, kind: Kind) -> u64 {
        self.received[kind.index()]
    }

    /// Datagrams of `kind` encoded.
    pub fn sent(&self, kind: Kind) -> u64 {
        self.sent[kind.index()]
    }

    /// Senders evicted from the duplicate filter so far.
    pub fn dedup_evictions(&self) -> u64 {
        self.dedup.evictions
    }
}

#[cfg(test)]
mod tests;
