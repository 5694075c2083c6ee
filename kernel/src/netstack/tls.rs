//! Mutual-TLS sessions between nodes, over smoltcp TCP on port [`TLS_PORT`] (issue #15.2).
//!
//! Each pair of nodes holds one session: the node with the lower id dials, the higher id
//! accepts. When a handshake completes, both ends install the datagram keys it yields into
//! the transport's keyring (`transport::Service::install_keys`): from then on every
//! datagram between the two is sealed with them. The TCP connection stays open, idle, as
//! the session's carrier:
//!
//! - it has TCP keep-alive ([`KEEPALIVE_MS`]) and no timeout, so a partition never ends a
//!   session, but a restarted peer answers the next keep-alive with a reset;
//! - when it closes or resets, the keys it installed are forgotten (if they are still the
//!   current ones) and the dialler reconnects with backoff — a restarted node is heard again
//!   only after a new handshake, under new keys;
//! - a newer session with the same peer replaces the older one (its keys, then its socket);
//! - the peer never sends a byte after the handshake; one that arrives is a refusal (a TLS
//!   1.3 client finishes before the server has checked the client's certificate).
//!
//! Who may connect: an acceptor takes a connection only from the address of a configured
//! peer with a lower id, and the handshake then requires that peer's certificate (name and
//! id) from the cluster CA. Everything else is refused and counted ([`Counters`]), with the
//! last reason kept for the `trust` shell command.
//!
//! Work split: the `net` task moves bytes between sockets and per-link buffers and notices
//! state changes (all under the stack lock, quick); the `tls` task runs the handshakes'
//! cryptography ([`trust::Session::advance`]) outside any lock, at normal priority, so a
//! handshake never masks interrupts or starves the reactor for its milliseconds of
//! arithmetic. A link's session is moved out to the `tls` task and back; a generation number
//! discards results for a link that was reset meanwhile.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use ::trust::identity::PeerName;
use ::trust::session::{Established, Session, SessionError};
use kcore::run_queue::Priority;
use net::NodeId;
use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::IpAddress;

use crate::sched::{self, wait::WaitQueue};
use crate::{cluster, identity, node, time};

/// The TCP port every node accepts sessions on.
pub const TLS_PORT: u16 = 7401;
/// Keep-alive period of an established session's connection.
pub const KEEPALIVE_MS: u64 = 300;
/// A handshake (TCP connect included) that takes longer is abandoned.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// A TCP connect not answered this fast is retried (after the backoff). The first SYN to a
/// peer whose MAC is not in the ARP cache yet is dropped by smoltcp while it asks, and
/// smoltcp would retransmit only after its 1 s initial RTO; a fabric round trip is a few ms.
pub const CONNECT_RETRY_MS: u64 = 250;
/// First and last reconnect delay of a dialler (doubling in between).
pub const BACKOFF_MIN_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 1_000;
/// Listening sockets beyond one per lower-id peer (a restarted peer's new connection
/// arrives while the old one is still open).
pub(super) const SPARE_LISTENERS: usize = 2;
const SOCKET_BUF_BYTES: usize = 8 * 1024;
const FIRST_LOCAL_PORT: u16 = 49_152;
/// Handshake durations kept for `trust` and the benchmark.
const HANDSHAKES_KEPT: usize = 32;

/// Why a connection or session was refused (the reasons `trust` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A connection from an address that is not a configured lower-id peer.
    UnknownPeer,
    /// The TLS handshake failed (certificate not from the cluster CA, expired, protocol).
    Handshake,
    /// The certificate is from the cluster CA but names another node than the address.
    Identity,
    /// The handshake took longer than [`HANDSHAKE_TIMEOUT_MS`].
    Timeout,
    /// The peer refused us after our side had finished.
    ByPeer,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::UnknownPeer,
        Refusal::Handshake,
        Refusal::Identity,
        Refusal::Timeout,
        Refusal::ByPeer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::UnknownPeer => "unknown_peer",
            Refusal::Handshake => "handshake",
            Refusal::Identity => "identity",
            Refusal::Timeout => "timeout",
            Refusal::ByPeer => "by_peer",
        }
    }
}

/// Session counters for `trust` and `members`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub established: u64,
    pub refused: [u64; Refusal::ALL.len()],
    /// Established sessions whose connection later closed (peer restart, refusal).
    pub closed: u64,
    /// (when, peer address id, reason, detail) of the last refusal.
    pub last_refusal: Option<(u64, u64, Refusal, String)>,
}

impl Counters {
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Dialler waiting to (re)connect.
    Idle { retry_at_ms: u64 },
    /// Acceptor waiting for a connection.
    Listening,
    /// TCP connecting (dialler).
    Connecting,
    /// Handshake running.
    Handshaking,
    /// Keys installed.
    Established { key_id: u32 },
}

struct Link {
    socket: SocketHandle,
    dialer: bool,
    /// The peer (dialler: always; acceptor: once a connection came from a known address).
    peer: Option<PeerName>,
    state: State,
    /// The handshake; `None` while the `tls` task holds it, before it exists, after it ends.
    session: Option<Box<Session>>,
    /// The `tls` task holds this link's session.
    busy: bool,
    /// Set when the session must be created (by the `tls` task: it draws randomness).
    start: bool,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    started_ms: u64,
    generation: u64,
    backoff_ms: u64,
}

/// Work the `tls` task takes out of the stack.
pub(crate) struct Job {
    index: usize,
    generation: u64,
    peer: PeerName,
    dialer: bool,
    session: Option<Box<Session>>,
    input: Vec<u8>,
}

/// What the `tls` task brings back.
pub(crate) struct JobResult {
    index: usize,
    generation: u64,
    session: Option<Box<Session>>,
    output: Vec<u8>,
    outcome: Result<Option<Established>, SessionError>,
}

/// Every session link of this node.
pub struct Manager {
    links: Vec<Link>,
    next_local_port: u16,
    next_generation: u64,
    pub counters: Counters,
    handshake_ms: VecDeque<u64>,
}

fn new_socket() -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF_BYTES]);
    let tx = tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF_BYTES]);
    tcp::Socket::new(rx, tx)
}

fn now_ms() -> u64 {
    time::now_us() / 1000
}

impl Manager {
    /// Sockets for every configured peer: a dialler per higher-id peer, listeners for the
    /// lower-id ones. Empty unless this node seals its datagrams.
    pub(super) fn new(sockets: &mut SocketSet<'static>) -> Manager {
        let mut manager = Manager {
            links: Vec::new(),
            next_local_port: FIRST_LOCAL_PORT,
            next_generation: 1,
            counters: Counters::default(),
            handshake_ms: VecDeque::new(),
        };
        if !identity::sealed() {
            return manager;
        }
        let me = node::config().id;
        let mut lower = 0;
        for peer in cluster::peers::get().iter().filter(|p| p.id != me) {
            if peer.id > me {
                let socket = sockets.add(new_socket());
                manager.links.push(Link::new(
                    socket,
                    true,
                    Some(PeerName::new(peer.id, &peer.name)),
                ));
            } else {
                lower += 1;
            }
        }
        if lower > 0 {
            for _ in 0..lower + SPARE_LISTENERS {
                let mut socket = new_socket();
                socket.listen(TLS_PORT).expect("a fresh TCP socket listens");
                let handle = sockets.add(socket);
                manager.links.push(Link::new(handle, false, None));
            }
        }
        manager
    }

    /// Handshake durations (ms, TCP established to keys installed) of the recent sessions
    /// this node dialled, oldest first.
    pub fn handshake_ms(&self) -> impl Iterator<Item = u64> + '_ {
        self.handshake_ms.iter().copied()
    }

    /// (peer, state name, key id) per link, for `trust`.
    pub fn links(&self) -> Vec<(Option<PeerName>, bool, &'static str, Option<u32>)> {
        self.links
            .iter()
            .map(|l| {
                let (name, key) = match l.state {
                    State::Idle { .. } => ("idle", None),
                    State::Listening => ("listening", None),
                    State::Connecting => ("connecting", None),
                    State::Handshaking => ("handshaking", None),
                    State::Established { key_id } => ("established", Some(key_id)),
                };
                (l.peer.clone(), l.dialer, name, key)
            })
            .collect()
    }

    fn refuse(&mut self, addr_id: u64, why: Refusal, detail: String) {
        self.counters.refused[why as usize] += 1;
        log::warn!("tls: refused node-{addr_id}: {} ({detail})", why.name());
        self.counters.last_refusal = Some((time::now_us(), addr_id, why, detail));
    }

    /// One `net` pass over the links (under the stack lock). Returns whether the `tls` task
    /// has work, and the earliest time a link needs another pass.
    pub(super) fn service(
        &mut self,
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        keyring: &mut super::transport::Service,
    ) -> (bool, Option<u64>) {
        let now = now_ms();
        let mut work = false;
        let mut deadline: Option<u64> = None;
        for index in 0..self.links.len() {
            self.service_link(index, now, cx, sockets, keyring);
            let link = &self.links[index];
            work |=
                !link.busy && (link.start || (!link.inbox.is_empty() && link.session.is_some()));
            let next = match link.state {
                State::Idle { retry_at_ms } => Some(retry_at_ms),
                State::Connecting => Some(link.started_ms + CONNECT_RETRY_MS),
                State::Handshaking => Some(link.started_ms + HANDSHAKE_TIMEOUT_MS),
                _ => None,
            };
            deadline = match (deadline, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        (work, deadline.map(|ms| ms * 1000))
    }

    fn service_link(
        &mut self,
        index: usize,
        now: u64,
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        transport: &mut super::transport::Service,
    ) {
        let handle = self.links[index].socket;
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        let state = self.links[index].state;
        match state {
            State::Idle { retry_at_ms } if now >= retry_at_ms => {
                let peer = self.links[index]
                    .peer
                    .clone()
                    .expect("a dialler knows its peer");
                let Some(ip) = super::ip_of(peer.id) else {
                    return;
                };
                let local = self.next_local_port;
                self.next_local_port = if local == u16::MAX {
                    FIRST_LOCAL_PORT
                } else {
                    local + 1
                };
                socket.abort();
                socket.set_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
                socket.set_keep_alive(None);
                match socket.connect(cx, (IpAddress::Ipv4(ip), TLS_PORT), local) {
                    Ok(()) => {
                        let link = &mut self.links[index];
                        link.reset(now, self.next_generation);
                        self.next_generation += 1;
                        link.state = State::Connecting;
                    }
                    Err(_) => self.links[index].backoff(now),
                }
            }
            State::Idle { .. } => {}
            State::Listening => {
                if !socket.is_active() {
                    return;
                }
                let addr_id = socket
                    .remote_endpoint()
                    .and_then(|ep| match ep.addr {
                        IpAddress::Ipv4(ip) => super::id_of(ip),
                    })
                    .unwrap_or(0);
                let me = node::config().id;
                let peer = cluster::peers::get()
                    .iter()
                    .find(|p| p.id == addr_id && p.id < me)
                    .map(|p| PeerName::new(p.id, &p.name));
                match peer {
                    Some(peer) => {
                        socket.set_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
                        let link = &mut self.links[index];
                        link.reset(now, self.next_generation);
                        self.next_generation += 1;
                        link.peer = Some(peer);
                        link.state = State::Handshaking;
                        link.start = true;
                    }
                    None => {
                        socket.abort();
                        self.relisten(index, sockets);
                        self.refuse(addr_id, Refusal::UnknownPeer, "not a lower-id peer".into());
                    }
                }
            }
            State::Connecting => {
                if socket.state() == tcp::State::Established {
                    let link = &mut self.links[index];
                    link.state = State::Handshaking;
                    link.start = true;
                    // The handshake's own clock (and timeout) starts now.
                    link.started_ms = now;
                } else if !socket.is_open()
                    || now >= self.links[index].started_ms + HANDSHAKE_TIMEOUT_MS
                {
                    // Refused or unreachable: not a refusal of trust, just retry later.
                    socket.abort();
                    self.links[index].backoff(now);
                }
            }
            State::Handshaking | State::Established { .. } => {
                self.pump(index, now, sockets, transport);
            }
        }
    }

    /// Moves bytes between a connected socket and the link's buffers; notices closure.
    fn pump(
        &mut self,
        index: usize,
        now: u64,
        sockets: &mut SocketSet<'static>,
        transport: &mut super::transport::Service,
    ) {
        let handle = self.links[index].socket;
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        let link = &mut self.links[index];
        while socket.can_recv() && link.inbox.len() < ::trust::session::INCOMING_BYTES_MAX {
            let mut chunk = [0u8; 1024];
            match socket.recv_slice(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => link.inbox.extend_from_slice(&chunk[..n]),
            }
        }
        if !link.outbox.is_empty() && socket.can_send() {
            if let Ok(sent) = socket.send_slice(&link.outbox) {
                link.outbox.drain(..sent);
            }
        }
        let established = matches!(link.state, State::Established { .. });
        let addr_id = link.peer.as_ref().map_or(0, |p| p.id);
        if established && !link.inbox.is_empty() {
            // The peer never speaks after the handshake unless it refused us.
            socket.abort();
            self.end(index, now, sockets, transport);
            self.refuse(addr_id, Refusal::ByPeer, "bytes after the handshake".into());
            return;
        }
        let alive = socket.is_open() && socket.state() != tcp::State::CloseWait;
        let timed_out = !established
            && now >= self.links[index].started_ms + HANDSHAKE_TIMEOUT_MS
            && !self.links[index].busy;
        if !alive || timed_out {
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            socket.abort();
            if established {
                self.counters.closed += 1;
            } else if timed_out {
                self.refuse(addr_id, Refusal::Timeout, "handshake too slow".into());
            } else {
                // The peer gave up mid-handshake: it refused our certificate (its alert is
                // the last thing it sent), or it died.
                self.refuse(
                    addr_id,
                    Refusal::Handshake,
                    "connection closed during the handshake".into(),
                );
            }
            self.end(index, now, sockets, transport);
        }
    }

    /// Ends a link's connection: forgets its keys if still current, then backs off
    /// (dialler) or listens again (acceptor).
    fn end(
        &mut self,
        index: usize,
        now: u64,
        sockets: &mut SocketSet<'static>,
        transport: &mut super::transport::Service,
    ) {
        let link = &mut self.links[index];
        if let (State::Established { key_id }, Some(peer)) = (link.state, &link.peer) {
            transport.forget_keys(peer.id, key_id);
        }
        if link.dialer {
            link.backoff(now);
        } else {
            self.relisten(index, sockets);
        }
    }

    fn relisten(&mut self, index: usize, sockets: &mut SocketSet<'static>) {
        let link = &mut self.links[index];
        let socket = sockets.get_mut::<tcp::Socket>(link.socket);
        socket.abort();
        socket.set_timeout(None);
        socket.set_keep_alive(None);
        // A socket that was just aborted listens again (smoltcp: Closed -> Listen).
        let _ = socket.listen(TLS_PORT);
        link.reset(0, self.next_generation);
        self.next_generation += 1;
        link.peer = None;
        link.state = State::Listening;
    }

    /// The next handshake step for the `tls` task, if any (the session moves out).
    pub(super) fn take_job(&mut self) -> Option<Job> {
        let index = self.links.iter().position(|l| {
            !l.busy
                && matches!(l.state, State::Handshaking)
                && (l.start || (!l.inbox.is_empty() && l.session.is_some()))
        })?;
        let link = &mut self.links[index];
        link.busy = true;
        link.start = false;
        Some(Job {
            index,
            generation: link.generation,
            peer: link
                .peer
                .clone()
                .expect("a handshaking link knows its peer"),
            dialer: link.dialer,
            session: link.session.take(),
            input: core::mem::take(&mut link.inbox),
        })
    }

    /// Takes a finished step back: outgoing bytes, and on success the keys.
    pub(super) fn finish_job(
        &mut self,
        result: JobResult,
        sockets: &mut SocketSet<'static>,
        transport: &mut super::transport::Service,
    ) {
        let now = now_ms();
        let Some(link) = self.links.get_mut(result.index) else {
            return;
        };
        if link.generation != result.generation {
            return; // The link was reset while the step ran.
        }
        link.busy = false;
        link.outbox.extend_from_slice(&result.output);
        let addr_id = link.peer.as_ref().map_or(0, |p| p.id);
        match result.outcome {
            Ok(None) => link.session = result.session,
            Ok(Some(established)) => {
                let key_id = established.keys.key_id;
                let peer = established.peer.id;
                link.state = State::Established { key_id };
                link.backoff_ms = 0;
                let socket = sockets.get_mut::<tcp::Socket>(link.socket);
                socket.set_timeout(None);
                socket.set_keep_alive(Some(Duration::from_millis(KEEPALIVE_MS)));
                if link.dialer {
                    if self.handshake_ms.len() == HANDSHAKES_KEPT {
                        self.handshake_ms.pop_front();
                    }
                    self.handshake_ms
                        .push_back(now.saturating_sub(link.started_ms));
                }
                self.counters.established += 1;
                transport.install_keys(peer, &established.keys, now);
                log::info!("tls: session with node {peer} established (key {key_id:#010x})");
                self.retire_older(result.index, peer, sockets);
            }
            Err(err) => {
                let why = match err {
                    SessionError::PeerIdentity(_) => Refusal::Identity,
                    SessionError::RefusedByPeer | SessionError::Closed => Refusal::ByPeer,
                    _ => Refusal::Handshake,
                };
                let detail = alloc::format!("{err}");
                let socket = sockets.get_mut::<tcp::Socket>(link.socket);
                // Let the alert rustls wrote (if any) go before the connection ends.
                if !link.outbox.is_empty() && socket.can_send() {
                    let _ = socket.send_slice(&link.outbox);
                }
                socket.close();
                let dialer = link.dialer;
                if dialer {
                    link.backoff(now);
                } else {
                    self.relisten(result.index, sockets);
                }
                self.refuse(addr_id, why, detail);
            }
        }
    }

    /// Aborts other established links with `peer` (a newer session replaced them).
    fn retire_older(&mut self, keep: usize, peer: NodeId, sockets: &mut SocketSet<'static>) {
        for index in 0..self.links.len() {
            let link = &self.links[index];
            let same = index != keep && link.peer.as_ref().is_some_and(|p| p.id == peer);
            if same && matches!(link.state, State::Established { .. } | State::Handshaking) {
                if link.dialer {
                    // Never happens (one dialler per peer), but keep the rule total.
                    let socket = sockets.get_mut::<tcp::Socket>(link.socket);
                    socket.abort();
                    self.links[index].backoff(now_ms());
                } else {
                    self.relisten(index, sockets);
                }
                self.counters.closed += 1;
            }
        }
    }
}

impl Link {
    fn new(socket: SocketHandle, dialer: bool, peer: Option<PeerName>) -> Link {
        Link {
            socket,
            dialer,
            peer,
            state: if dialer {
                State::Idle { retry_at_ms: 0 }
            } else {
                State::Listening
            },
            session: None,
            busy: false,
            start: false,
            inbox: Vec::new(),
            outbox: Vec::new(),
            started_ms: 0,
            generation: 0,
            backoff_ms: 0,
        }
    }

    fn reset(&mut self, now: u64, generation: u64) {
        self.session = None;
        self.busy = false;
        self.start = false;
        self.inbox.clear();
        self.outbox.clear();
        self.started_ms = now;
        self.generation = generation;
    }

    fn backoff(&mut self, now: u64) {
        self.backoff_ms = (self.backoff_ms * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        self.reset(now, self.generation.wrapping_add(1 << 32));
        self.state = State::Idle {
            retry_at_ms: now + self.backoff_ms,
        };
    }
}

/// Runs one handshake step (in the `tls` task, outside every lock).
fn run(job: Job) -> JobResult {
    let configs = identity::configs().expect("links exist only in sealed mode");
    let mut session = match job.session {
        Some(session) => session,
        None => {
            let created = if job.dialer {
                Session::client(configs, job.peer.clone())
            } else {
                Session::server(configs, job.peer.clone())
            };
            match created {
                Ok(session) => Box::new(session),
                Err(err) => {
                    return JobResult {
                        index: job.index,
                        generation: job.generation,
                        session: None,
                        output: Vec::new(),
                        outcome: Err(err),
                    }
                }
            }
        }
    };
    let outcome = session.receive(&job.input).and_then(|()| session.advance());
    let output = session.outgoing().to_vec();
    session.consume_outgoing(output.len());
    JobResult {
        index: job.index,
        generation: job.generation,
        session: Some(session),
        output,
        outcome,
    }
}

static TLS_WAIT: WaitQueue = WaitQueue::new();
static TLS_WORK: AtomicBool = AtomicBool::new(false);

/// Wakes the `tls` task (from the `net` task).
pub(super) fn wake() {
    TLS_WORK.store(true, Ordering::Release);
    TLS_WAIT.wake_one();
}

/// Starts the `tls` task when this node seals its datagrams.
pub(super) fn start() -> Result<(), sched::SpawnError> {
    if identity::sealed() {
        sched::spawn("tls", Priority::NORMAL, tls_task)?;
    }
    Ok(())
}

fn tls_task() {
    loop {
        TLS_WAIT.wait_until(|| TLS_WORK.swap(false, Ordering::AcqRel));
        while let Some(job) = super::with_stack(|s| s.tls.take_job()).flatten() {
            let result = run(job);
            super::with_stack(|s| s.finish_tls_job(result));
            super::kick();
        }
    }
}
