//! Sealed datagrams: every envelope between two nodes authenticated (and encrypted) with keys
//! derived from that pair's mutual-TLS session, with a replay window (issue #15.3).
//!
//! The TLS session itself lives in the `trust` crate and the kernel's session manager; this
//! module only sees its result, a [`SessionKeys`] (one key per direction and a key id, both
//! derived from the session's secrets), installed per peer in a [`Keyring`].
//!
//! Layout of a sealed datagram (version [`VERSION_SEALED`] of the envelope):
//!
//! ```text
//!  0                                      40        44                52            len-16   len
//!  +--------------------------------------+---------+-----------------+---------------+------+
//!  | envelope header (version 2, crc32c)  | key_id  | counter (u64 BE)| ciphertext    | tag  |
//!  +--------------------------------------+---------+-----------------+---------------+------+
//! ```
//!
//! - AEAD: ChaCha20-Poly1305 (RFC 8439) — no AES hardware and no SSE in the kernel, and the
//!   same primitive as the TLS suite, so one soft implementation serves both.
//! - Nonce: four zero bytes, then `counter`. Each direction of each session has its own key,
//!   and `counter` only increases under a key, so a nonce never repeats under a key.
//! - Associated data: header bytes `0..36` (magic through `seq`: kind, cluster, sender,
//!   receiver are all bound to the tag) and `key_id || counter`. The CRC-32C is computed last,
//!   over everything, and still drops corrupted frames before any cryptography runs.
//! - Receive order ([`Keyring::open`]): envelope structure and checksum; addressee; key by
//!   (claimed sender, key id) — an unknown pair is `no_key`; replay window (counter too old
//!   or seen: `replayed`); tag (`bad_tag`); only then is the window advanced and the
//!   plaintext handed on. A datagram that fails any step is dropped, counted, and never
//!   parsed further.
//! - Replay window: RFC 4303 §3.4.3 style, [`WINDOW_BITS`] counters wide, per key.
//! - Re-key: a new session installs new keys; the previous receive key stays valid for
//!   [`KeyringConfig::grace_ms`] so datagrams in flight during the switch still open, then
//!   it is gone. Send always uses the newest key.
//!
//! Everything here is sans-IO: time is an argument, keys are given, nothing is global.

use alloc::collections::BTreeMap;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use crate::envelope::{
    parse_sealed, write_header_version, DecodeError, Envelope, Header, LocalIdentity, BROADCAST,
    CHECKSUM_OFFSET, HEADER_LEN, MAX_PAYLOAD_LEN, VERSION_SEALED,
};
use crate::NodeId;

/// Bytes of one direction's key.
pub const KEY_BYTES: usize = 32;
/// `key_id` (4) + `counter` (8) before the ciphertext.
pub const SEAL_PREFIX_BYTES: usize = 12;
/// The Poly1305 tag after the ciphertext.
pub const TAG_BYTES: usize = 16;
/// What sealing adds to a payload.
pub const SEAL_OVERHEAD_BYTES: usize = SEAL_PREFIX_BYTES + TAG_BYTES;
/// The largest payload a sealed datagram carries (1332 bytes).
pub const MAX_SEALED_PAYLOAD_LEN: usize = MAX_PAYLOAD_LEN - SEAL_OVERHEAD_BYTES;
/// Width of the replay window, in counters.
pub const WINDOW_BITS: u64 = 1024;
const WINDOW_WORDS: usize = (WINDOW_BITS / 64) as usize;

/// The keys one TLS session gives a pair of nodes, as seen from one side.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Names the session on the wire (both sides derive the same value).
    pub key_id: u32,
    /// Seals what this node sends to the peer.
    pub send: [u8; KEY_BYTES],
    /// Opens what the peer sends to this node.
    pub receive: [u8; KEY_BYTES],
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        write!(f, "SessionKeys {{ key_id: {:#010x}, .. }}", self.key_id)
    }
}

/// Why a datagram could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError {
    /// No session with this peer yet: nothing may be sent to it.
    NoSession { peer: NodeId },
    /// Sealed datagrams are unicast (each pair has its own keys).
    Broadcast,
    /// The payload exceeds [`MAX_SEALED_PAYLOAD_LEN`].
    PayloadTooLarge { len: usize },
    /// The caller's buffer is too small.
    BufferTooSmall { needed: usize },
    /// The send counter of this session is spent (2^64 datagrams): wait for a new session.
    CounterExhausted,
    /// The cipher refused (cannot happen for in-range lengths).
    Cipher,
}

/// Why a sealed datagram was dropped. Each drop is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The envelope itself is malformed, or not for us (counted by the endpoint).
    Decode(DecodeError),
    /// A plain (version 1) datagram where sealing is required.
    Unsealed,
    /// Shorter than key id + counter + tag.
    Short,
    /// No key for (claimed sender, key id): no session, an old session, or a forger.
    NoKey,
    /// The counter is older than the window or was already accepted.
    Replayed,
    /// The tag does not verify: forged, corrupted, or sealed under another key.
    BadTag,
}

impl OpenError {
    /// Reasons counted by the keyring, in [`SealCounters::iter`] order.
    pub const NAMES: [&'static str; 5] = ["unsealed", "short", "no_key", "replayed", "bad_tag"];

    fn index(self) -> Option<usize> {
        match self {
            OpenError::Decode(_) => None,
            OpenError::Unsealed => Some(0),
            OpenError::Short => Some(1),
            OpenError::NoKey => Some(2),
            OpenError::Replayed => Some(3),
            OpenError::BadTag => Some(4),
        }
    }
}

/// What the keyring counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealCounters {
    dropped: [u64; OpenError::NAMES.len()],
    /// Datagrams sealed.
    pub sealed: u64,
    /// Datagrams opened (authenticated and fresh).
    pub opened: u64,
    /// Sends refused because no session with the peer exists yet.
    pub no_session: u64,
    /// Sessions installed (first ones and re-keys).
    pub installs: u64,
    /// Installs that replaced an existing session (re-keys).
    pub rekeys: u64,
}

impl SealCounters {
    /// Counts one dropped datagram.
    pub fn record(&mut self, why: OpenError) {
        if let Some(i) = why.index() {
            self.dropped[i] = self.dropped[i].saturating_add(1);
        }
    }

    /// Drops for one reason.
    pub fn dropped(&self, why: OpenError) -> u64 {
        why.index().map_or(0, |i| self.dropped[i])
    }

    /// Every datagram that failed authentication or freshness.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// (reason, count), stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OpenError::NAMES
            .iter()
            .copied()
            .zip(self.dropped.iter().copied())
    }
}

/// A sliding window of accepted counters (RFC 4303 §3.4.3, RFC 6479's bitmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// One past the highest accepted counter (0: nothing accepted yet).
    top: u64,
    /// Bit `c % WINDOW_BITS` is set when counter `c` (within the window) was accepted.
    bits: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    /// Whether `counter` may be accepted (not older than the window, not seen).
    pub fn check(&self, counter: u64) -> Result<(), OpenError> {
        if counter >= self.top {
            return Ok(());
        }
        if self.top - counter > WINDOW_BITS {
            return Err(OpenError::Replayed);
        }
        let (word, bit) = Self::slot(counter);
        if self.bits[word] & (1 << bit) != 0 {
            Err(OpenError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records an authenticated `counter` (call only after [`ReplayWindow::check`] passed
    /// and the tag verified).
    pub fn accept(&mut self, counter: u64) {
        debug_assert!(self.check(counter).is_ok());
        if counter >= self.top {
            // Slide: clear the bits of every counter the window moves past.
            let advance = counter + 1 - self.top;
            if advance >= WINDOW_BITS {
                self.bits = [0; WINDOW_WORDS];
            } else {
                for c in self.top..=counter {
                    let (word, bit) = Self::slot(c);
                    self.bits[word] &= !(1 << bit);
                }
            }
            self.top = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] |= 1 << bit;
    }

    fn slot(counter: u64) -> (usize, u32) {
        let i = counter % WINDOW_BITS;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

/// One session's keys in use.
struct Active {
    key_id: u32,
    send: ChaCha20Poly1305,
    receive: ChaCha20Poly1305,
    send_counter: u64,
    window: ReplayWindow,
}

impl Active {
    fn new(keys: &SessionKeys) -> Active {
        Active {
            key_id: keys.key_id,
            send: ChaCha20Poly1305::new(Key::from_slice(&keys.send)),
            receive: ChaCha20Poly1305::new(Key::from_slice(&keys.receive)),
            send_counter: 0,
            window: ReplayWindow::default(),
        }
    }
}

struct PeerKeys {
    current: Active,
    /// The session `current` replaced, still opening until the deadline (ms).
    previous: Option<(Active, u64)>,
}

/// Keyring settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyringConfig {
    /// Most peers with keys (bounds the map; the configured cluster is smaller). Default 64.
    pub peers_max: usize,
    /// How long a replaced session's receive key still opens datagrams. Default 2000 ms.
    pub grace_ms: u64,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        KeyringConfig {
            peers_max: 64,
            grace_ms: 2000,
        }
    }
}

/// Why a session could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// [`KeyringConfig::peers_max`] peers already have keys.
    Full,
    /// The peer is this node or the broadcast id.
    BadPeer,
}

/// Per-peer session keys, send counters, replay windows, and the counters `net` shows.
pub struct Keyring {
    config: KeyringConfig,
    local: NodeId,
    peers: BTreeMap<NodeId, PeerKeys>,
    counters: SealCounters,
}

impl Keyring {
    /// An empty keyring for node `local`.
    pub fn new(local: NodeId, config: KeyringConfig) -> Keyring {
        assert!(config.peers_max > 0, "a keyring holds at least one peer");
        assert!(local != BROADCAST, "the broadcast id is not a node");
        Keyring {
            config,
            local,
            peers: BTreeMap::new(),
            counters: SealCounters::default(),
        }
    }

    /// Installs a new session with `peer` (its first, or a re-key). The session it replaces
    /// keeps opening datagrams for the grace period.
    pub fn install(
        &mut self,
        peer: NodeId,
        keys: &SessionKeys,
        now_ms: u64,
    ) -> Result<(), InstallError> {
        if peer == self.local || peer == BROADCAST {
            return Err(InstallError::BadPeer);
        }
        let active = Active::new(keys);
        match self.peers.get_mut(&peer) {
            Some(entry) => {
                let old = core::mem::replace(&mut entry.current, active);
                entry.previous = Some((old, now_ms.saturating_add(self.config.grace_ms)));
                self.counters.rekeys += 1;
            }
            None => {
                if self.peers.len() >= self.config.peers_max {
                    return Err(InstallError::Full);
                }
                self.peers.insert(
                    peer,
                    PeerKeys {
                        current: active,
                        previous: None,
                    },
                );
            }
        }
        self.counters.installs += 1;
        Ok(())
    }

    /// Forgets every key of `peer` (its session was refused or it left).
    pub fn forget(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// Whether datagrams to `peer` can be sealed.
    pub fn has_session(&self, peer: NodeId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// The key id of `peer`'s current session.
    pub fn key_id(&self, peer: NodeId) -> Option<u32> {
        self.peers.get(&peer).map(|p| p.current.key_id)
    }

    /// Peers with a session, in id order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// The counters.
    pub fn counters(&self) -> &SealCounters {
        &self.counters
    }

    /// Counts a plain datagram refused because sealing is required.
    pub fn record_unsealed(&mut self) {
        self.counters.record(OpenError::Unsealed);
    }

    /// Seals `payload` for `header.receiver` into `buf`; returns the datagram length.
    pub fn seal(
        &mut self,
        header: &Header,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, SealError> {
        if header.receiver == BROADCAST {
            return Err(SealError::Broadcast);
        }
        if payload.len() > MAX_SEALED_PAYLOAD_LEN {
            return Err(SealError::PayloadTooLarge { len: payload.len() });
        }
        let body_len = SEAL_OVERHEAD_BYTES + payload.len();
        let needed = HEADER_LEN + body_len;
        if buf.len() < needed {
            return Err(SealError::BufferTooSmall { needed });
        }
        let Some(peer) = self.peers.get_mut(&header.receiver) else {
            self.counters.no_session += 1;
            return Err(SealError::NoSession {
                peer: header.receiver,
            });
        };
        let active = &mut peer.current;
        let counter = active.send_counter;
        active.send_counter = counter.checked_add(1).ok_or(SealError::CounterExhausted)?;
        // Header fields first (the checksum is fixed up at the end), then the prefix.
        write_header_version(header, VERSION_SEALED, body_len, buf);
        let (head, body) = buf.split_at_mut(HEADER_LEN);
        body[..4].copy_from_slice(&active.key_id.to_be_bytes());
        body[4..12].copy_from_slice(&counter.to_be_bytes());
        let (prefix, rest) = body.split_at_mut(SEAL_PREFIX_BYTES);
        let (text, tail) = rest.split_at_mut(payload.len());
        text.copy_from_slice(payload);
        let aad = associated_data(head, prefix);
        let tag = active
            .send
            .encrypt_in_place_detached(&nonce(counter), &aad, text)
            .map_err(|_| SealError::Cipher)?;
        tail[..TAG_BYTES].copy_from_slice(&tag);
        write_header_version(header, VERSION_SEALED, body_len, buf);
        self.counters.sealed += 1;
        Ok(needed)
    }

    /// Checks and opens a sealed datagram into `out` (module docs, "Receive order"). Drops
    /// are counted here, except `Decode`, which the caller's endpoint counts.
    pub fn open<'o>(
        &mut self,
        datagram: &[u8],
        local: &LocalIdentity,
        now_ms: u64,
        out: &'o mut [u8],
    ) -> Result<Envelope<'o>, OpenError> {
        let envelope = parse_sealed(datagram).map_err(OpenError::Decode)?;
        envelope.accept(local).map_err(OpenError::Decode)?;
        let result = self.open_body(&envelope, datagram, now_ms, out);
        match result {
            Ok(len) => {
                self.counters.opened += 1;
                Ok(Envelope {
                    header: envelope.header,
                    payload: &out[..len],
                })
            }
            Err(why) => {
                self.counters.record(why);
                Err(why)
            }
        }
    }

    fn open_body(
        &mut self,
        envelope: &Envelope<'_>,
        datagram: &[u8],
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<usize, OpenError> {
        let body = envelope.payload;
        if body.len() < SEAL_OVERHEAD_BYTES {
            return Err(OpenError::Short);
        }
        let key_id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&body[4..12]);
        let counter = u64::from_be_bytes(raw);
        let text_len = body.len() - SEAL_OVERHEAD_BYTES;
        if out.len() < text_len {
            return Err(OpenError::Short);
        }
        let peer = self
            .peers
            .get_mut(&envelope.header.sender)
            .ok_or(OpenError::NoKey)?;
        if peer
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now_ms >= *until)
        {
            peer.previous = None;
        }
        let active = if peer.current.key_id == key_id {
            &mut peer.current
        } else {
            match &mut peer.previous {
                Some((old, _)) if old.key_id == key_id => old,
                _ => return Err(OpenError::NoKey),
            }
        };
        active.window.check(counter)?;
        let aad = associated_data(&datagram[..HEADER_LEN], &body[..SEAL_PREFIX_BYTES]);
        let text = &mut out[..text_len];
        text.copy_from_slice(&body[SEAL_PREFIX_BYTES..SEAL_PREFIX_BYTES + text_len]);
        let tag = Tag::from_slice(&body[SEAL_PREFIX_BYTES + text_len..]);
        active
            .receive
            .decrypt_in_place_detached(&nonce(counter), &aad, text, tag)
            .map_err(|_| OpenError::BadTag)?;
        active.window.accept(counter);
        Ok(text_len)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    *Nonce::from_slice(&bytes)
}

/// Header bytes up to the checksum, then key id and counter.
fn associated_data(head: &[u8], prefix: &[u8]) -> [u8; CHECKSUM_OFFSET + SEAL_PREFIX_BYTES] {
    let mut aad = [0u8; CHECKSUM_OFFSET + SEAL_PREFIX_BYTES];
    aad[..CHECKSUM_OFFSET].copy_from_slice(&head[..CHECKSUM_OFFSET]);
    aad[CHECKSUM_OFFSET..].copy_from_slice(&prefix[..SEAL_PREFIX_BYTES]);
    aad
}

#[cfg(test)]
mod tests;
