//! The node transport service: one UDP socket on port [`PORT`], every datagram one
//! envelope of the `net` crate (docs/transport.md).
//!
//! Sending: kernel consumers call [`send`] (kind, destination node, payload); the envelope
//! is encoded straight into the socket's buffer and the `net` task is kicked.
//!
//! Receiving, in the `net` task: `Endpoint::receive` checks and counts; then, by kind,
//! - `ProbePing` is answered at once with a `ProbePong` (so RTT probes measure the
//!   transport, not the reactor's queue);
//! - `ProbePong` goes to the running `netbench`, if any;
//! - `Swim`, `Raft`, `Control` are copied into that kind's **inbox** — a bounded ring of
//!   preallocated buffers ([`INBOX_SLOTS`] per kind; overflow counted, never allocated) —
//!   and an `EventKind::Message { kind, from }` is pushed on the event queue. The reactor,
//!   on that event, calls [`deliver`], which drains the inbox into the consumer registered
//!   with [`set_consumer`] (SWIM, Raft, control plane), or counts the message unclaimed.
//!
//! The event queue therefore never carries payloads and stays allocation-free.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use net::seal::{Keyring, KeyringConfig, SealError, SessionKeys};
use net::{
    Endpoint, Kind, NodeId, ProbeConfig, ProbePayload, Prober, RttSummary, TransportConfig,
    BROADCAST, MAX_DATAGRAM_LEN, MAX_PAYLOAD_LEN,
};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, Ipv4Address};
use spin::{Mutex, Once};

use crate::arch::cpu::without_interrupts;
use crate::events::{self, EventKind};
use crate::node;

/// The transport's UDP port.
pub const PORT: u16 = 7400;
/// Messages each inbox holds before it counts overflow.
pub const INBOX_SLOTS: usize = 32;
/// Kinds that go through an inbox to a consumer.
pub const INBOX_KINDS: [Kind; 3] = [Kind::Swim, Kind::Raft, Kind::Control];
/// Default cluster id when the node config has no `cluster` key.
pub const DEFAULT_CLUSTER_ID: u64 = 1;
const SOCKET_PACKETS: usize = 32;
/// Receive scratch: any UDP payload that fits one Ethernet frame.
const RX_SCRATCH_BYTES: usize = 1472;

/// A consumer of one message kind: (sender, payload).
pub type Consumer = fn(NodeId, &[u8]);

/// Why a send failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    NoNetwork,
    /// The destination has no fabric address.
    BadDestination(NodeId),
    Encode(net::EncodeError),
    /// The socket's send buffer is full.
    SocketFull,
    /// Datagrams are sealed and no session with this peer exists yet.
    NoSession(NodeId),
    /// Sealing failed (payload too large for a sealed datagram…).
    Seal(SealError),
}

pub(super) fn new_socket() -> udp::Socket<'static> {
    let rx = udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; SOCKET_PACKETS],
        vec![0; SOCKET_PACKETS * MAX_DATAGRAM_LEN],
    );
    let tx = udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; SOCKET_PACKETS],
        vec![0; SOCKET_PACKETS * MAX_DATAGRAM_LEN],
    );
    let mut socket = udp::Socket::new(rx, tx);
    socket.bind(PORT).expect("a fresh UDP socket binds");
    socket
}

/// The cluster id from the node config (`cluster=N`), or the default.
pub fn cluster_id() -> u64 {
    match node::extra("cluster").map(|v| v.parse::<u64>()) {
        None => DEFAULT_CLUSTER_ID,
        Some(Ok(id)) => id,
        Some(Err(_)) => {
            log::error!("net: config key cluster is not a number; using {DEFAULT_CLUSTER_ID}");
            DEFAULT_CLUSTER_ID
        }
    }
}

/// The transport's state inside the stack.
pub struct Service {
    endpoint: Endpoint,
    /// Whether datagrams are sealed (`identity::sealed`), and the session keys if so.
    sealed: bool,
    keyring: Keyring,
    /// Opened (or copied) payload of the datagram being handled.
    open_buf: [u8; MAX_DATAGRAM_LEN],
    rng: Xoshiro256PlusPlus,
    rx_buf: [u8; RX_SCRATCH_BYTES],
    tx_buf: [u8; MAX_DATAGRAM_LEN],
    bench: Option<Bench>,
    report: Option<BenchReport>,
    pub pongs_sent: u64,
    pub send_errors: u64,
}

impl Service {
    pub(super) fn new(node_id: NodeId) -> Service {
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(crate::arch::cpu::rdtsc() ^ node_id.rotate_left(32));
        let initial_seq = rng.next_u32();
        Service {
            endpoint: Endpoint::new(TransportConfig::new(cluster_id(), node_id), initial_seq),
            sealed: crate::identity::sealed(),
            keyring: Keyring::new(node_id, KeyringConfig::default()),
            open_buf: [0; MAX_DATAGRAM_LEN],
            rng,
            rx_buf: [0; RX_SCRATCH_BYTES],
            tx_buf: [0; MAX_DATAGRAM_LEN],
            bench: None,
            report: None,
            pongs_sent: 0,
            send_errors: 0,
        }
    }

    /// The endpoint, for counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The keyring (sessions, seal counters).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Installs the keys of a new session with `peer` (`netstack::tls`).
    pub(super) fn install_keys(&mut self, peer: NodeId, keys: &SessionKeys, now_ms: u64) {
        if let Err(err) = self.keyring.install(peer, keys, now_ms) {
            log::error!("transport: cannot install keys for node {peer}: {err:?}");
        }
    }

    /// Forgets `peer`'s keys if `key_id` is still its current session.
    pub(super) fn forget_keys(&mut self, peer: NodeId, key_id: u32) {
        if self.keyring.key_id(peer) == Some(key_id) {
            self.keyring.forget(peer);
        }
    }

    fn send_to(
        &mut self,
        udp: &mut udp::Socket,
        kind: Kind,
        to: NodeId,
        payload: &[u8],
    ) -> Result<(), SendError> {
        if self.sealed && to == BROADCAST {
            // Each pair has its own keys: a broadcast is one sealed datagram per session.
            let peers: Vec<NodeId> = self.keyring.peers().collect();
            let mut result = Ok(());
            for peer in peers {
                if let Err(err) = self.send_to(udp, kind, peer, payload) {
                    result = Err(err);
                }
            }
            return result;
        }
        let ip = if to == BROADCAST {
            Ipv4Address::new(super::SUBNET[0], super::SUBNET[1], super::SUBNET[2], 255)
        } else {
            super::ip_of(to).ok_or(SendError::BadDestination(to))?
        };
        let len = if self.sealed {
            self.endpoint
                .encode_sealed(kind, to, payload, &mut self.keyring, &mut self.tx_buf)
                .map_err(|e| match e {
                    SealError::NoSession { peer } => SendError::NoSession(peer),
                    other => SendError::Seal(other),
                })?
        } else {
            self.endpoint
                .encode(kind, to, payload, &mut self.tx_buf)
                .map_err(SendError::Encode)?
        };
        udp.send_slice(&self.tx_buf[..len], (IpAddress::Ipv4(ip), PORT))
            .map_err(|_| {
                self.send_errors += 1;
                SendError::SocketFull
            })
    }

    /// Receives every waiting datagram, then advances a running benchmark.
    pub(super) fn service(&mut self, udp: &mut udp::Socket, now_us: u64) {
        while let Ok((data, _meta)) = udp.recv() {
            let len = data.len().min(RX_SCRATCH_BYTES);
            self.rx_buf[..len].copy_from_slice(&data[..len]);
            self.on_datagram(udp, len, now_us);
        }
        self.step_bench(udp, now_us);
    }

    /// Checks one datagram (sealed: authentic and fresh, or dropped and counted before any
    /// byte of it is parsed further), then hands it on by kind.
    fn on_datagram(&mut self, udp: &mut udp::Socket, len: usize, now_us: u64) {
        let (from, kind, payload_len) = if self.sealed {
            match self.endpoint.receive_sealed(
                &self.rx_buf[..len],
                &mut self.keyring,
                now_us / 1000,
                &mut self.open_buf,
            ) {
                Ok(envelope) => (
                    envelope.header.sender,
                    envelope.header.kind,
                    envelope.payload.len(),
                ),
                Err(_) => return,
            }
        } else {
            let Ok(envelope) = self.endpoint.receive(&self.rx_buf[..len]) else {
                return;
            };
            let n = envelope.payload.len();
            self.open_buf[..n].copy_from_slice(envelope.payload);
            (envelope.header.sender, envelope.header.kind, n)
        };
        match kind {
            Kind::ProbePing => {
                // The pong echoes the ping's payload; copy it out of the receive scratch.
                let mut echo = [0u8; MAX_PAYLOAD_LEN];
                echo[..payload_len].copy_from_slice(&self.open_buf[..payload_len]);
                match self.send_to(udp, Kind::ProbePong, from, &echo[..payload_len]) {
                    Ok(()) => self.pongs_sent += 1,
                    Err(_) => self.send_errors += 1,
                }
            }
            Kind::ProbePong => {
                if let Some(bench) = &mut self.bench {
                    bench.on_pong(from, &self.open_buf[..payload_len], now_us);
                }
            }
            kind @ (Kind::Swim | Kind::Raft | Kind::Control) => {
                if inbox_push(kind, from, &self.open_buf[..payload_len]) {
                    events::push(EventKind::Message { kind, from });
                }
            }
        }
    }

    /// When the benchmark's outstanding probe times out.
    pub(super) fn deadline_us(&self) -> Option<u64> {
        self.bench.as_ref().and_then(|b| b.deadline_us)
    }
}

// ---------------------------------------------------------------------------------------
// Inboxes

struct Slot {
    from: NodeId,
    len: usize,
    bytes: Box<[u8]>,
}

/// One kind's bounded ring of preallocated message buffers, and its counters.
struct Inbox {
    slots: Vec<Slot>,
    head: usize,
    len: usize,
    queued: u64,
    overflowed: u64,
    delivered: u64,
    unclaimed: u64,
    last_from: NodeId,
    last_preview: [u8; PREVIEW_BYTES],
    last_len: usize,
}

const PREVIEW_BYTES: usize = 32;

impl Inbox {
    fn new() -> Inbox {
        let slots = (0..INBOX_SLOTS)
            .map(|_| Slot {
                from: 0,
                len: 0,
                bytes: vec![0u8; MAX_PAYLOAD_LEN].into_boxed_slice(),
            })
            .collect();
        Inbox {
            slots,
            head: 0,
            len: 0,
            queued: 0,
            overflowed: 0,
            delivered: 0,
            unclaimed: 0,
            last_from: 0,
            last_preview: [0; PREVIEW_BYTES],
            last_len: 0,
        }
    }
}

static INBOXES: Mutex<Option<[Inbox; 3]>> = Mutex::new(None);
static CONSUMERS: [Once<Consumer>; 3] = [const { Once::new() }; 3];

fn inbox_index(kind: Kind) -> usize {
    let index = INBOX_KINDS
        .iter()
        .position(|k| *k == kind)
        .expect("only inbox kinds have inboxes");
    debug_assert!(index < INBOX_KINDS.len());
    index
}

/// Allocates the inboxes (once, before the `net` task runs).
pub(super) fn init_inboxes() {
    without_interrupts(|| {
        let mut inboxes = INBOXES.lock();
        if inboxes.is_none() {
            *inboxes = Some([Inbox::new(), Inbox::new(), Inbox::new()]);
        }
    });
}

/// Copies a message into its inbox; false (and counted) when the inbox is full.
fn inbox_push(kind: Kind, from: NodeId, payload: &[u8]) -> bool {
    assert!(
        payload.len() <= MAX_PAYLOAD_LEN,
        "the endpoint accepted an oversized payload"
    );
    without_interrupts(|| {
        let mut guard = INBOXES.lock();
        let inbox = &mut guard.as_mut().expect("inboxes exist while net runs")[inbox_index(kind)];
        if inbox.len == INBOX_SLOTS {
            inbox.overflowed += 1;
            return false;
        }
        let tail = (inbox.head + inbox.len) % INBOX_SLOTS;
        let slot = &mut inbox.slots[tail];
        slot.from = from;
        slot.len = payload.len();
        slot.bytes[..payload.len()].copy_from_slice(payload);
        inbox.len += 1;
        inbox.queued += 1;
        true
    })
}

/// Pops the oldest message of `kind` into `out`: (sender, length).
fn inbox_pop(kind: Kind, out: &mut [u8; MAX_PAYLOAD_LEN]) -> Option<(NodeId, usize)> {
    without_interrupts(|| {
        let mut guard = INBOXES.lock();
        let inbox = &mut guard.as_mut()?[inbox_index(kind)];
        if inbox.len == 0 {
            return None;
        }
        let slot = &inbox.slots[inbox.head];
        let (from, len) = (slot.from, slot.len);
        out[..len].copy_from_slice(&slot.bytes[..len]);
        let preview = len.min(PREVIEW_BYTES);
        inbox.last_preview[..preview].copy_from_slice(&slot.bytes[..preview]);
        (inbox.last_from, inbox.last_len) = (from, len);
        inbox.head = (inbox.head + 1) % INBOX_SLOTS;
        inbox.len -= 1;
        Some((from, len))
    })
}

/// Registers the consumer of `kind` (SWIM, Raft or Control); the first one stays.
pub fn set_consumer(kind: Kind, consumer: Consumer) {
    CONSUMERS[inbox_index(kind)].call_once(|| consumer);
}

/// The reactor's handler for `EventKind::Message`: hands every queued message of `kind` to
/// its consumer (outside any lock), or counts it unclaimed when there is none.
pub fn deliver(kind: Kind) {
    let mut buf = [0u8; MAX_PAYLOAD_LEN];
    while let Some((from, len)) = inbox_pop(kind, &mut buf) {
        let consumer = CONSUMERS[inbox_index(kind)].get();
        if let Some(consumer) = consumer {
            consumer(from, &buf[..len]);
        }
        without_interrupts(|| {
            if let Some(inboxes) = INBOXES.lock().as_mut() {
                let inbox = &mut inboxes[inbox_index(kind)];
                if consumer.is_some() {
                    inbox.delivered += 1;
                } else {
                    inbox.unclaimed += 1;
                }
            }
        });
    }
}

/// One inbox's counters and its last message, for `net`.
#[derive(Clone, Debug)]
pub struct InboxStats {
    pub kind: Kind,
    pub queued: u64,
    pub pending: usize,
    pub overflowed: u64,
    pub delivered: u64,
    pub unclaimed: u64,
    /// (sender, total length, first bytes) of the last message taken.
    pub last: Option<(NodeId, usize, Vec<u8>)>,
}

/// Every inbox's counters.
pub fn inbox_stats() -> Vec<InboxStats> {
    without_interrupts(|| {
        let guard = INBOXES.lock();
        let Some(inboxes) = guard.as_ref() else {
            return Vec::new();
        };
        INBOX_KINDS
            .iter()
            .zip(inboxes.iter())
            .map(|(kind, i)| InboxStats {
                kind: *kind,
                queued: i.queued,
                pending: i.len,
                overflowed: i.overflowed,
                delivered: i.delivered,
                unclaimed: i.unclaimed,
                last: (i.last_from != 0).then(|| {
                    (
                        i.last_from,
                        i.last_len,
                        i.last_preview[..i.last_len.min(PREVIEW_BYTES)].to_vec(),
                    )
                }),
            })
            .collect()
    })
}

/// Sends one envelope of `kind` to node `to` (or `net::BROADCAST`).
pub fn send(kind: Kind, to: NodeId, payload: &[u8]) -> Result<(), SendError> {
    super::with_stack(|s| {
        let (service, udp) = s.transport_parts();
        service.send_to(udp, kind, to, payload)
    })
    .ok_or(SendError::NoNetwork)??;
    super::kick();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RTT benchmark (`netbench`)

/// How a benchmark runs.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    pub peer: NodeId,
    /// Probes that must complete (answered or given up).
    pub count: u32,
    /// How long one probe waits for its pong.
    pub timeout_us: u64,
    /// Sends per probe before it is given up (1 = no retry).
    pub tries_max: u32,
}

/// What a benchmark measured.
#[derive(Clone, Copy, Debug)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub answered: u32,
    pub given_up: u32,
    /// Probes re-sent after a timeout.
    pub retries: u32,
    pub rtt: RttSummary,
}

struct Bench {
    config: BenchConfig,
    prober: Prober,
    answered: u32,
    given_up: u32,
    retries: u32,
    tries_left: u32,
    /// Set while a probe is outstanding.
    deadline_us: Option<u64>,
}

impl Bench {
    fn on_pong(&mut self, from: NodeId, payload: &[u8], now_us: u64) {
        if self.prober.on_pong(from, payload, now_us).is_ok() {
            self.answered += 1;
            self.tries_left = self.config.tries_max;
            self.deadline_us = None;
        }
    }

    fn finished(&self) -> bool {
        self.answered + self.given_up >= self.config.count
    }
}

impl Service {
    fn step_bench(&mut self, udp: &mut udp::Socket, now_us: u64) {
        let Some(bench) = &mut self.bench else { return };
        if bench.deadline_us.is_some_and(|d| now_us >= d) {
            bench.prober.expire(now_us);
            bench.deadline_us = None;
            bench.tries_left -= 1;
            if bench.tries_left == 0 {
                bench.given_up += 1;
                bench.tries_left = bench.config.tries_max;
            } else {
                bench.retries += 1;
            }
        }
        if bench.finished() {
            let b = self.bench.take().expect("checked above");
            let rtt = b.prober.stats().summary();
            self.report = Some(BenchReport {
                config: b.config,
                answered: b.answered,
                given_up: b.given_up,
                retries: b.retries,
                rtt,
            });
            return;
        }
        if bench.deadline_us.is_none() {
            let peer = bench.config.peer;
            let Ok(probe) = bench.prober.start(peer, now_us, &mut self.rng) else {
                return;
            };
            bench.deadline_us = Some(now_us + bench.config.timeout_us);
            self.send_probe(udp, peer, probe);
        }
    }

    fn send_probe(&mut self, udp: &mut udp::Socket, peer: NodeId, probe: ProbePayload) {
        let mut payload = [0u8; net::probe::PROBE_PAYLOAD_LEN];
        let n = probe.write(&mut payload);
        // A failed send is a lost probe: the timeout retries it.
        let _ = self.send_to(udp, Kind::ProbePing, peer, &payload[..n]);
    }
}

/// Why a benchmark could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchError {
    NoNetwork,
    /// Another benchmark is running.
    Busy,
}

/// Runs a probe benchmark to completion and returns its report (blocks the caller).
pub fn bench(config: BenchConfig) -> Result<BenchReport, BenchError> {
    assert!(
        config.count > 0 && config.tries_max > 0 && config.timeout_us > 0,
        "bad bench config {config:?}"
    );
    super::with_stack(|s| {
        if s.transport.bench.is_some() {
            return Err(BenchError::Busy);
        }
        let probe_config = ProbeConfig {
            outstanding_max: 1,
            samples_max: 4096,
            timeout_us: config.timeout_us,
        };
        s.transport.report = None;
        s.transport.bench = Some(Bench {
            config,
            prober: Prober::new(probe_config),
            answered: 0,
            given_up: 0,
            retries: 0,
            tries_left: config.tries_max,
            deadline_us: None,
        });
        Ok(())
    })
    .ok_or(BenchError::NoNetwork)??;
    super::kick();
    Ok(super::wait_for(|s| s.transport.report.take()))
}
