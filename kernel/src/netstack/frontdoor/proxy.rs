//! The owner's TCP proxy: connections to `VIP:port` on a node without a local replica are
//! relayed to a replica on another node, kernel to kernel, inside the `net` task.
//!
//! Per owned address with no local replica, [`BACKLOG`] smoltcp sockets listen on
//! `VIP:port`. A connection they accept becomes a [`Pair`]: the client side (the accepted
//! socket) and a backend side, a connection from the node's own address to
//! `backend:port`, where the backend is chosen round-robin over the service's replicas by
//! `xylem::frontdoor::Backends`. A backend that refuses (RST) or does not answer within
//! [`CONNECT_TIMEOUT_US`] is penalised and the next one is tried, up to [`TRIES_MAX`],
//! before the client is reset; client bytes wait in the client socket meanwhile. Then bytes
//! are pumped both ways, bounded by the receiving side's free send buffer (back-pressure is
//! TCP's own window), and a FIN on one side is passed on once its bytes are through. An
//! RST on either side resets the other.
//!
//! Bounds: at most [`PAIRS_MAX`] pairs (a connection accepted beyond that is reset and
//! counted); buffers [`BUFFER_BYTES`] each way per socket, allocated fallibly; listeners
//! drop a half-open handshake after [`HANDSHAKE_TIMEOUT_MS`]; a pair without traffic for
//! [`IDLE_TIMEOUT_US`] is reset; keep-alives find dead peers. Nothing here panics on what
//! a peer sends.

use alloc::vec::Vec;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, Ipv4Address};
use xylem::frontdoor::Backends;

use super::super::{ip_of, Stack};

/// Listening sockets per proxied address.
pub const BACKLOG: usize = 8;
/// Relayed connections at once (node-wide).
pub const PAIRS_MAX: usize = 64;
/// Proxied addresses that may have listeners at once.
const LISTENING_ADDRS_MAX: usize = kcore::frame_filter::EXTRA_ADDRS_MAX;
/// Sockets the proxy may hold at once.
pub const SOCKETS_MAX: usize = PAIRS_MAX * 2 + BACKLOG * LISTENING_ADDRS_MAX;
/// Receive and send buffer of every proxy socket.
pub const BUFFER_BYTES: usize = 8 * 1024;
/// A backend that has not completed the handshake by then is given up on.
pub const CONNECT_TIMEOUT_US: u64 = 250_000;
/// Backends tried per connection before the client is reset.
pub const TRIES_MAX: usize = 3;
/// A pair with no byte either way for this long is reset.
pub const IDLE_TIMEOUT_US: u64 = 120_000_000;
/// smoltcp aborts a handshake (or a stream) whose segments go unanswered this long.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
const KEEP_ALIVE_MS: u64 = 20_000;
const STREAM_TIMEOUT_MS: u64 = 60_000;
/// Bytes moved per step of the pump.
const CHUNK_BYTES: usize = 2048;

/// Proxy counters for the `frontdoor` command.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyCounters {
    pub accepted: u64,
    pub relayed: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Backend attempts that were refused or timed out.
    pub backend_failures: u64,
    /// Clients reset because no backend answered.
    pub no_backend: u64,
    /// Connections reset because [`PAIRS_MAX`] were open.
    pub full: u64,
    /// Pairs reset for idleness.
    pub idle: u64,
    /// Socket buffers the heap could not give.
    pub no_memory: u64,
}

struct Listener {
    ip: [u8; 4],
    port: u16,
    handle: SocketHandle,
}

/// One relayed connection.
pub struct Pair {
    ip: [u8; 4],
    port: u16,
    client: SocketHandle,
    backend: Option<Backend>,
    tried: Vec<u64>,
    last_activity_us: u64,
    /// FIN passed on in each direction.
    fin_up: bool,
    fin_down: bool,
}

struct Backend {
    node: u64,
    handle: SocketHandle,
    local_port: u16,
    /// Set until the handshake completes.
    connect_deadline_us: Option<u64>,
}

/// A socket on its way out: removed once its FIN or RST is through, or at its deadline.
struct Closing {
    handle: SocketHandle,
    deadline_us: u64,
    /// The ephemeral port to give back (0: an accepted socket, no port of its own).
    local_port: u16,
}

/// How long a closing socket may take to finish before it is dropped.
const CLOSING_TIMEOUT_US: u64 = 5_000_000;

/// The proxy's state (listeners, pairs, backend choice, counters).
pub struct Proxy {
    listeners: Vec<Listener>,
    pairs: Vec<Pair>,
    closing: Vec<Closing>,
    backends: Backends,
    pub counters: ProxyCounters,
}

impl Proxy {
    pub fn new() -> Self {
        Self {
            listeners: Vec::new(),
            pairs: Vec::new(),
            closing: Vec::new(),
            backends: Backends::new(),
            counters: ProxyCounters::default(),
        }
    }

    /// Open pairs, listening sockets and closing sockets.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.pairs.len(), self.listeners.len(), self.closing.len())
    }

    /// Whether a new pair fits: its two sockets, counting those still closing.
    fn has_room(&self) -> bool {
        self.pairs.len() * 2 + self.closing.len() + 2 <= PAIRS_MAX * 2
    }

    /// The earliest backend connect or closing deadline.
    pub fn deadline_us(&self) -> Option<u64> {
        let connects = self
            .pairs
            .iter()
            .filter_map(|p| p.backend.as_ref().and_then(|b| b.connect_deadline_us));
        let closing = self.closing.iter().map(|c| c.deadline_us);
        connects.chain(closing).min()
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

fn new_socket() -> Option<tcp::Socket<'static>> {
    let rx = try_zeroed(BUFFER_BYTES)?;
    let tx = try_zeroed(BUFFER_BYTES)?;
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    s.set_nagle_enabled(false);
    s.set_keep_alive(Some(Duration::from_millis(KEEP_ALIVE_MS)));
    s.set_timeout(Some(Duration::from_millis(STREAM_TIMEOUT_MS)));
    Some(s)
}

fn try_zeroed(bytes: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes).ok()?;
    v.resize(bytes, 0);
    Some(v)
}

fn listen_endpoint(ip: [u8; 4], port: u16) -> IpListenEndpoint {
    IpListenEndpoint {
        addr: Some(IpAddress::Ipv4(Ipv4Address::from(ip))),
        port,
    }
}

impl Stack {
    /// Makes the listeners match the plan: [`BACKLOG`] per owned address without a local
    /// replica, none otherwise.
    pub(super) fn proxy_sync_listeners(&mut self) {
        let wanted: Vec<([u8; 4], u16)> = self
            .front
            .plan
            .owned
            .iter()
            .filter(|o| !o.local)
            .map(|o| (o.ip, o.port))
            .collect();
        let mut keep = Vec::new();
        for l in core::mem::take(&mut self.front.proxy.listeners) {
            if wanted.contains(&(l.ip, l.port)) {
                keep.push(l);
            } else {
                drop(self.sockets.remove(l.handle));
            }
        }
        self.front.proxy.listeners = keep;
        for (ip, port) in wanted {
            let have = self
                .front
                .proxy
                .listeners
                .iter()
                .filter(|l| l.ip == ip && l.port == port)
                .count();
            for _ in have..BACKLOG {
                if !self.proxy_add_listener(ip, port) {
                    break;
                }
            }
        }
    }

    fn proxy_add_listener(&mut self, ip: [u8; 4], port: u16) -> bool {
        let Some(mut socket) = new_socket() else {
            self.front.proxy.counters.no_memory += 1;
            return false;
        };
        socket.set_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
        if socket.listen(listen_endpoint(ip, port)).is_err() {
            return false;
        }
        let handle = self.sockets.add(socket);
        self.front
            .proxy
            .listeners
            .push(Listener { ip, port, handle });
        true
    }

    /// The address `ip` is no longer ours: its listeners go, and its relayed connections
    /// are reset (the clients reconnect, to the new owner).
    pub(super) fn proxy_drop_address(&mut self, ip: [u8; 4], now_us: u64) {
        let pairs = core::mem::take(&mut self.front.proxy.pairs);
        for p in pairs {
            if p.ip == ip {
                self.proxy_close_pair(p, true, now_us);
            } else {
                self.front.proxy.pairs.push(p);
            }
        }
    }

    /// One proxy pass: take accepted connections, connect and retry backends, pump bytes,
    /// pass on closes, drop finished pairs.
    pub(super) fn serve_proxy(&mut self, now_us: u64) {
        self.proxy_reap_closing(now_us);
        self.proxy_accept(now_us);
        let pairs = core::mem::take(&mut self.front.proxy.pairs);
        for mut p in pairs {
            if self.proxy_step(&mut p, now_us) {
                self.front.proxy.pairs.push(p);
            } else {
                self.proxy_close_pair(p, false, now_us);
            }
        }
    }

    fn proxy_accept(&mut self, now_us: u64) {
        for i in 0..self.front.proxy.listeners.len() {
            let Listener { ip, port, handle } = self.front.proxy.listeners[i];
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            match socket.state() {
                tcp::State::Listen | tcp::State::SynReceived => continue,
                tcp::State::Closed => {
                    // A handshake reset or timed out: listen again.
                    let _ = socket.listen(listen_endpoint(ip, port));
                    continue;
                }
                _ => {}
            }
            // Established (or already half-closed): it becomes a pair's client side, and a
            // fresh socket listens in its place.
            let Some(mut fresh) = new_socket() else {
                self.front.proxy.counters.no_memory += 1;
                self.sockets.get_mut::<tcp::Socket>(handle).abort();
                continue;
            };
            fresh.set_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)));
            let _ = fresh.listen(listen_endpoint(ip, port));
            let new_handle = self.sockets.add(fresh);
            self.front.proxy.listeners[i].handle = new_handle;
            self.front.proxy.counters.accepted += 1;
            let client = self.sockets.get_mut::<tcp::Socket>(handle);
            client.set_timeout(Some(Duration::from_millis(STREAM_TIMEOUT_MS)));
            if !self.front.proxy.has_room() {
                self.front.proxy.counters.full += 1;
                client.abort();
                self.proxy_reap(handle, 0, now_us);
                continue;
            }
            self.front.proxy.pairs.push(Pair {
                ip,
                port,
                client: handle,
                backend: None,
                tried: Vec::new(),
                last_activity_us: now_us,
                fin_up: false,
                fin_down: false,
            });
        }
    }

    /// Advances one pair; false when it is over.
    fn proxy_step(&mut self, p: &mut Pair, now_us: u64) -> bool {
        let client_state = self.sockets.get::<tcp::Socket>(p.client).state();
        if client_state == tcp::State::Closed {
            // Reset (or timed out) by the client: reset the backend too.
            return false;
        }
        if !self.proxy_ensure_backend(p, now_us) {
            return false;
        }
        let Some(b) = p.backend.as_ref() else {
            return true;
        };
        if b.connect_deadline_us.is_some() {
            return true;
        }
        let (bh, ch) = (b.handle, p.client);
        let up = self.pump(ch, bh);
        let down = self.pump(bh, ch);
        self.front.proxy.counters.bytes_up += up as u64;
        self.front.proxy.counters.bytes_down += down as u64;
        if up + down > 0 {
            p.last_activity_us = now_us;
        }
        if self.sockets.get::<tcp::Socket>(bh).state() == tcp::State::Closed {
            // The backend reset (its cell died mid-connection): the client learns at once.
            return false;
        }
        if !p.fin_up && self.finished_reading(ch) {
            self.sockets.get_mut::<tcp::Socket>(bh).close();
            p.fin_up = true;
        }
        if !p.fin_down && self.finished_reading(bh) {
            self.sockets.get_mut::<tcp::Socket>(ch).close();
            p.fin_down = true;
        }
        if p.fin_up && p.fin_down && self.drained(ch) && self.drained(bh) {
            return false;
        }
        if now_us.saturating_sub(p.last_activity_us) > IDLE_TIMEOUT_US {
            self.front.proxy.counters.idle += 1;
            return false;
        }
        true
    }

    /// Makes sure the pair has a backend connecting or connected; false when every try
    /// failed (the client is then reset).
    fn proxy_ensure_backend(&mut self, p: &mut Pair, now_us: u64) -> bool {
        if let Some(b) = p.backend.as_mut() {
            let state = self.sockets.get::<tcp::Socket>(b.handle).state();
            let Some(deadline) = b.connect_deadline_us else {
                return true;
            };
            match state {
                tcp::State::Established => {
                    b.connect_deadline_us = None;
                    self.front.proxy.backends.succeeded(b.node);
                    self.front.proxy.counters.relayed += 1;
                    return true;
                }
                tcp::State::SynSent if now_us < deadline => return true,
                _ => {
                    // Refused (RST closed it) or no answer in time: next backend.
                    let (node, handle, port) = (b.node, b.handle, b.local_port);
                    self.front.proxy.backends.failed(node, now_us / 1000);
                    self.front.proxy.counters.backend_failures += 1;
                    self.sockets.get_mut::<tcp::Socket>(handle).abort();
                    self.proxy_reap(handle, port, now_us);
                    p.backend = None;
                }
            }
        }
        if p.tried.len() >= TRIES_MAX {
            self.front.proxy.counters.no_backend += 1;
            return false;
        }
        let Some(owned) = self.front.plan.owned.iter().find(|o| o.ip == p.ip) else {
            return false;
        };
        let service = owned.service.clone();
        let nodes = owned.backends.clone();
        let Some(node) = self
            .front
            .proxy
            .backends
            .pick(&service, &nodes, &p.tried, now_us / 1000)
        else {
            self.front.proxy.counters.no_backend += 1;
            return false;
        };
        p.tried.push(node);
        match self.proxy_connect(node, p.port) {
            Some((handle, local_port)) => {
                p.backend = Some(Backend {
                    node,
                    handle,
                    local_port,
                    connect_deadline_us: Some(now_us + CONNECT_TIMEOUT_US),
                });
                true
            }
            None => {
                self.front.proxy.counters.backend_failures += 1;
                // Try another on the next pass (counted in `tried`).
                true
            }
        }
    }

    fn proxy_connect(&mut self, node: u64, port: u16) -> Option<(SocketHandle, u16)> {
        let ip = ip_of(node)?;
        let Some(mut socket) = new_socket() else {
            self.front.proxy.counters.no_memory += 1;
            return None;
        };
        let local_port = self.cells.take_ephemeral_tcp()?;
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.local_ip())),
            port: local_port,
        };
        let remote = IpEndpoint::new(IpAddress::Ipv4(ip), port);
        if socket.connect(self.iface.context(), remote, local).is_err() {
            self.cells.give_back_tcp(local_port);
            return None;
        }
        Some((self.sockets.add(socket), local_port))
    }

    /// Moves what `from` received into `to`'s send buffer, as far as it has room.
    fn pump(&mut self, from: SocketHandle, to: SocketHandle) -> usize {
        let mut moved = 0;
        let mut chunk = [0u8; CHUNK_BYTES];
        loop {
            let dst = self.sockets.get::<tcp::Socket>(to);
            if !dst.may_send() {
                break;
            }
            let room = dst.send_capacity() - dst.send_queue();
            let want = room.min(CHUNK_BYTES);
            if want == 0 {
                break;
            }
            let got = self
                .sockets
                .get_mut::<tcp::Socket>(from)
                .recv_slice(&mut chunk[..want])
                .unwrap_or(0);
            if got == 0 {
                break;
            }
            let sent = self
                .sockets
                .get_mut::<tcp::Socket>(to)
                .send_slice(&chunk[..got])
                .unwrap_or(0);
            debug_assert_eq!(sent, got, "room was checked");
            moved += got;
        }
        moved
    }

    /// The peer sent FIN and we have relayed everything before it.
    fn finished_reading(&self, handle: SocketHandle) -> bool {
        let s = self.sockets.get::<tcp::Socket>(handle);
        !s.may_recv() && s.recv_queue() == 0
    }

    /// Nothing left to send and the connection is closing or closed.
    fn drained(&self, handle: SocketHandle) -> bool {
        let s = self.sockets.get::<tcp::Socket>(handle);
        s.send_queue() == 0
            && matches!(
                s.state(),
                tcp::State::Closed
                    | tcp::State::TimeWait
                    | tcp::State::FinWait2
                    | tcp::State::Closing
                    | tcp::State::LastAck
            )
    }

    /// Ends a pair: graceful pairs close (both sides sent FIN already), the others reset
    /// both sides. Either way the sockets leave once their last segment is out.
    fn proxy_close_pair(&mut self, p: Pair, force: bool, now_us: u64) {
        let graceful = !force && p.fin_up && p.fin_down;
        if !graceful {
            self.sockets.get_mut::<tcp::Socket>(p.client).abort();
        }
        self.proxy_reap(p.client, 0, now_us);
        if let Some(b) = p.backend {
            if !graceful {
                self.sockets.get_mut::<tcp::Socket>(b.handle).abort();
            }
            self.proxy_reap(b.handle, b.local_port, now_us);
        }
    }

    /// Parks a socket until it has nothing left to send (an aborted one sends its RST on
    /// the next poll).
    fn proxy_reap(&mut self, handle: SocketHandle, local_port: u16, now_us: u64) {
        self.front.proxy.closing.push(Closing {
            handle,
            deadline_us: now_us + CLOSING_TIMEOUT_US,
            local_port,
        });
        super::super::kick();
    }

    /// Removes closing sockets that are done (or past their deadline).
    fn proxy_reap_closing(&mut self, now_us: u64) {
        let mut i = 0;
        while i < self.front.proxy.closing.len() {
            let c = &self.front.proxy.closing[i];
            let (handle, local_port) = (c.handle, c.local_port);
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let done = match socket.state() {
                tcp::State::Closed => socket.remote_endpoint().is_none(),
                // The FIN handshake is complete; TIME-WAIT's wait is skipped, as for cells.
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done || now_us >= c.deadline_us {
                self.front.proxy.closing.swap_remove(i);
                drop(self.sockets.remove(handle));
                if local_port != 0 {
                    self.cells.give_back_tcp(local_port);
                }
                continue;
            }
            i += 1;
        }
    }
}
