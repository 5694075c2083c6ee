//! Sockets for cells, on the kernel's one smoltcp interface.
//!
//! A [`CellSocket`] is the object behind one cell descriptor. It owns its smoltcp sockets
//! (handles into the stack's `SocketSet`) and their buffers, and gives them back when it is
//! closed or dropped (STYLE.md §17), so "every socket is freed when the cell ends, however
//! it ends" holds by construction: the cell's descriptor table drops its sockets with it.
//!
//! Kinds and states:
//! - TCP, fresh or bound: no smoltcp socket yet (a bound port is reserved in [`Ports`]).
//! - TCP listener: `backlog` smoltcp sockets all listening on the port. smoltcp hands an
//!   incoming SYN to the first one in `Listen`; `accept` takes an established one out and
//!   puts a fresh listening socket in its place. With every backlog socket busy, a new SYN
//!   finds no listener and smoltcp answers RST (the client sees "connection refused").
//! - TCP stream (connected or accepted): one smoltcp socket.
//! - UDP: one smoltcp socket, bound on `bind` or on the first `send_to`.
//!
//! Closing: a stream is closed gracefully (FIN) unless unread data is left (then RST, as
//! Linux does); its smoltcp socket moves to the stack's **linger list** and the `net` task
//! removes it once the close is done (CLOSED with the RST sent, or TIME-WAIT, whose 10 s
//! wait is skipped to bound memory) or after [`LINGER_TIMEOUT_US`] (then it is aborted).
//! The linger list holds at most [`LINGER_MAX`] sockets; beyond that a close aborts at once.
//!
//! Bounds: every socket's buffers come from the kernel heap and are charged to a node-wide
//! budget ([`Budget`], a quarter of the heap) until the smoltcp socket is removed; a socket
//! that would exceed it fails with `ENOBUFS`. Per-cell limits (descriptors, memory) are the
//! cell layer's (`cells::io`). All buffer allocations are fallible.
//!
//! Readiness: [`CellSocket::readiness`] computes `poll` events; [`CellSocket::register`]
//! parks a waker (`sched::waker`, heap-free) in the smoltcp sockets, which smoltcp wakes on
//! data, space and state changes during the `net` task's poll.
//!
//! Errors are `cell::abi::Errno` values (Linux numbering); nothing here panics on input.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use cell::abi::{self, Errno, Shutdown, SockAddrV4, SocketKind, POLLERR, POLLHUP, POLLIN, POLLOUT};
use core::task::Waker;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, Ipv4Address};

use super::{Stack, STACK};

/// Receive buffer of one TCP stream.
pub const TCP_RX_BYTES: usize = 8 * 1024;
/// Send buffer of one TCP stream.
pub const TCP_TX_BYTES: usize = 8 * 1024;
/// Heap bytes one TCP smoltcp socket costs (its two buffers).
pub const TCP_SOCKET_BYTES: usize = TCP_RX_BYTES + TCP_TX_BYTES;
/// Datagrams each UDP buffer holds.
pub const UDP_PACKETS: usize = 4;
/// Payload bytes of each UDP buffer.
pub const UDP_BUFFER_BYTES: usize = UDP_PACKETS * abi::MAX_DATAGRAM_LEN as usize;
/// Heap bytes one UDP socket costs (payload buffers; metadata is small and not counted).
pub const UDP_SOCKET_BYTES: usize = 2 * UDP_BUFFER_BYTES;
/// How long a `connect` waits for the peer before `ETIMEDOUT`.
pub const CONNECT_TIMEOUT_US: u64 = 10_000_000;
/// Idle time after which an established stream sends keep-alive probes.
pub const KEEP_ALIVE_MS: u64 = 20_000;
/// Unanswered time after which smoltcp aborts a stream (a vanished peer: half-open).
pub const STREAM_TIMEOUT_MS: u64 = 60_000;
/// Longest a closed stream may take to finish its close before it is aborted.
pub const LINGER_TIMEOUT_US: u64 = 10_000_000;
/// Most closing streams the stack keeps finishing at once.
pub const LINGER_MAX: usize = 256;
/// Ephemeral ports for `connect` and port-0 binds.
pub const EPHEMERAL_PORTS: core::ops::RangeInclusive<u16> = 49152..=65535;

/// The node-wide budget of socket buffer bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    pub max_bytes: usize,
    pub used_bytes: usize,
    /// Sockets refused because the budget was spent.
    pub refused: u64,
}

/// Counters for the `net` command and the leak tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketCounters {
    /// smoltcp sockets created for cells.
    pub created: u64,
    /// smoltcp sockets removed (the difference is what is alive now).
    pub removed: u64,
    /// Streams closed with a FIN and left to finish.
    pub lingered: u64,
    /// Streams aborted (RST): unread data, linger list full, linger timeout, listener close.
    pub aborted: u64,
    /// Connections accepted.
    pub accepted: u64,
}

/// Ports cells hold, per protocol, and the ephemeral cursor.
#[derive(Default)]
pub struct Ports {
    tcp: BTreeSet<u16>,
    udp: BTreeSet<u16>,
    next_ephemeral: u16,
    /// Service ports (docs/front-door.md): TCP ports several cells may bind at once, like
    /// SO_REUSEPORT, so two replicas of one service can run on one node (after a failover)
    /// and both listen. Each port belongs to one service cluster-wide (`Expose` refuses a
    /// port another service has), so sharing never mixes services.
    shared: BTreeSet<u16>,
    /// Holders of each shared port now.
    shared_holders: BTreeMap<u16, u32>,
}

/// A socket that was closed and is finishing (FIN exchange or RST) in the `net` task.
struct Linger {
    handle: SocketHandle,
    deadline_us: u64,
    /// Local port to release from [`Ports`] once removed (0: none, e.g. accepted streams).
    port: u16,
}

/// The cells' part of the stack: budget, ports, closing sockets, counters.
pub struct CellNet {
    pub budget: Budget,
    pub counters: SocketCounters,
    ports: Ports,
    lingering: Vec<Linger>,
}

impl CellNet {
    /// With a budget of `max_bytes`; the transport's UDP port is reserved.
    pub fn new(max_bytes: usize, reserved_udp: &[u16]) -> CellNet {
        let mut ports = Ports {
            next_ephemeral: *EPHEMERAL_PORTS.start(),
            ..Ports::default()
        };
        ports.udp.extend(reserved_udp.iter().copied());
        // The linger list's room is taken once (a close under memory pressure must not need
        // an allocation; if it did not fit, closes abort instead of lingering).
        let mut lingering = Vec::new();
        let _ = lingering.try_reserve_exact(LINGER_MAX);
        CellNet {
            budget: Budget {
                max_bytes,
                ..Budget::default()
            },
            counters: SocketCounters::default(),
            ports,
            lingering,
        }
    }

    /// The most smoltcp sockets cells may hold at once: the budget over the smallest
    /// socket. The stack's socket table is sized for this, so it never grows.
    pub fn sockets_max(&self) -> usize {
        self.budget.max_bytes / UDP_SOCKET_BYTES.min(TCP_SOCKET_BYTES)
    }

    /// An ephemeral TCP port for a kernel connection (the front door's proxy), from the
    /// same pool as the cells', so the two never collide.
    pub fn take_ephemeral_tcp(&mut self) -> Option<u16> {
        self.ports.take(Proto::Tcp, 0).ok()
    }

    /// The service ports several cells may listen on at once (see [`Ports`]).
    pub fn set_shared_tcp_ports(&mut self, ports: &[u16]) {
        self.ports.shared = ports.iter().copied().collect();
    }

    /// Gives back a port from [`CellNet::take_ephemeral_tcp`].
    pub fn give_back_tcp(&mut self, port: u16) {
        self.ports.give_back(Proto::Tcp, port);
    }

    /// Closing sockets not yet removed.
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    /// The earliest linger deadline (for the `net` task's timer).
    pub fn deadline_us(&self) -> Option<u64> {
        self.lingering.iter().map(|l| l.deadline_us).min()
    }
}

/// The protocol a port belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Ports {
    fn set(&mut self, proto: Proto) -> &mut BTreeSet<u16> {
        match proto {
            Proto::Tcp => &mut self.tcp,
            Proto::Udp => &mut self.udp,
        }
    }

    /// Takes `port`, or an ephemeral one for 0.
    fn take(&mut self, proto: Proto, port: u16) -> Result<u16, Errno> {
        if proto == Proto::Tcp
            && port != 0
            && self.shared.contains(&port)
            && !self.tcp.contains(&port)
        {
            *self.shared_holders.entry(port).or_insert(0) += 1;
            return Ok(port);
        }
        if proto == Proto::Tcp && self.shared_holders.contains_key(&port) {
            return Err(Errno::EADDRINUSE);
        }
        if port != 0 {
            return if self.set(proto).insert(port) {
                Ok(port)
            } else {
                Err(Errno::EADDRINUSE)
            };
        }
        let span = u32::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        for _ in 0..span {
            let candidate = self.next_ephemeral;
            self.next_ephemeral = if candidate == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                candidate + 1
            };
            let shared_held = proto == Proto::Tcp && self.shared_holders.contains_key(&candidate);
            if !shared_held && self.set(proto).insert(candidate) {
                return Ok(candidate);
            }
        }
        Err(Errno::EADDRNOTAVAIL)
    }

    fn give_back(&mut self, proto: Proto, port: u16) {
        if proto == Proto::Tcp {
            if let Some(n) = self.shared_holders.get_mut(&port) {
                *n -= 1;
                if *n == 0 {
                    self.shared_holders.remove(&port);
                }
                return;
            }
        }
        if port != 0 {
            let held = self.set(proto).remove(&port);
            debug_assert!(held, "{proto:?} port {port} released twice");
        }
    }
}

/// A heap buffer of `bytes` zeroes, or `ENOBUFS` if the heap cannot give it.
fn try_buffer(bytes: usize) -> Result<Vec<u8>, Errno> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(bytes)
        .map_err(|_| Errno::ENOBUFS)?;
    buffer.resize(bytes, 0);
    Ok(buffer)
}

fn try_meta<T: Clone>(value: T, count: usize) -> Result<Vec<T>, Errno> {
    let mut meta = Vec::new();
    meta.try_reserve_exact(count).map_err(|_| Errno::ENOBUFS)?;
    meta.resize(count, value);
    Ok(meta)
}

impl Stack {
    /// How many TCP sockets are in each state (the `net` command shows the non-zero ones).
    pub fn tcp_states(&self) -> alloc::vec::Vec<(&'static str, u32)> {
        let mut counts: alloc::vec::Vec<(&'static str, u32)> = alloc::vec::Vec::new();
        for item in self.sockets.iter() {
            if let smoltcp::socket::Socket::Tcp(socket) = &item.1 {
                let name = state_name(socket.state());
                match counts.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((name, 1)),
                }
            }
        }
        counts
    }

    fn charge(&mut self, bytes: usize) -> Result<(), Errno> {
        let alive = self.cells.counters.created - self.cells.counters.removed;
        let full = alive as usize >= self.cells.sockets_max();
        let budget = &mut self.cells.budget;
        if full || budget.used_bytes + bytes > budget.max_bytes {
            budget.refused += 1;
            return Err(Errno::ENOBUFS);
        }
        budget.used_bytes += bytes;
        Ok(())
    }

    fn uncharge(&mut self, bytes: usize) {
        debug_assert!(self.cells.budget.used_bytes >= bytes);
        self.cells.budget.used_bytes -= bytes;
    }

    /// A new TCP smoltcp socket with the cell defaults, charged to the budget.
    fn new_tcp(&mut self) -> Result<SocketHandle, Errno> {
        self.charge(TCP_SOCKET_BYTES)?;
        let buffers = try_buffer(TCP_RX_BYTES).and_then(|rx| Ok((rx, try_buffer(TCP_TX_BYTES)?)));
        let (rx, tx) = match buffers {
            Ok(pair) => pair,
            Err(errno) => {
                self.uncharge(TCP_SOCKET_BYTES);
                return Err(errno);
            }
        };
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
        socket.set_nagle_enabled(false);
        socket.set_keep_alive(Some(Duration::from_millis(KEEP_ALIVE_MS)));
        socket.set_timeout(Some(Duration::from_millis(STREAM_TIMEOUT_MS)));
        self.cells.counters.created += 1;
        Ok(self.sockets.add(socket))
    }

    /// A new UDP smoltcp socket, charged to the budget.
    fn new_udp(&mut self) -> Result<SocketHandle, Errno> {
        self.charge(UDP_SOCKET_BYTES)?;
        let parts = (|| {
            Ok::<_, Errno>((
                try_meta(udp::PacketMetadata::EMPTY, UDP_PACKETS)?,
                try_buffer(UDP_BUFFER_BYTES)?,
                try_meta(udp::PacketMetadata::EMPTY, UDP_PACKETS)?,
                try_buffer(UDP_BUFFER_BYTES)?,
            ))
        })();
        let (rx_meta, rx, tx_meta, tx) = match parts {
            Ok(parts) => parts,
            Err(errno) => {
                self.uncharge(UDP_SOCKET_BYTES);
                return Err(errno);
            }
        };
        let socket = udp::Socket::new(
            udp::PacketBuffer::new(rx_meta, rx),
            udp::PacketBuffer::new(tx_meta, tx),
        );
        self.cells.counters.created += 1;
        Ok(self.sockets.add(socket))
    }

    /// Removes a smoltcp socket that is done, and returns its bytes to the budget.
    fn remove_socket(&mut self, handle: SocketHandle, bytes: usize) {
        drop(self.sockets.remove(handle));
        self.uncharge(bytes);
        self.cells.counters.removed += 1;
    }

    fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    fn udp_socket(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(handle)
    }

    pub(super) fn local_ip(&self) -> Ipv4Address {
        Ipv4Address::from(self.device.local.ipv4)
    }

    /// Closes a stream for good: FIN (graceful) or RST (`abort`), then lingers until done.
    fn close_stream(&mut self, handle: SocketHandle, port: u16, abort: bool, now_us: u64) {
        let lingering_full = self.cells.lingering.len() >= LINGER_MAX
            || self.cells.lingering.try_reserve(1).is_err();
        let socket = self.tcp(handle);
        let unread = socket.recv_queue() > 0;
        if abort || unread || lingering_full {
            socket.abort();
            self.cells.counters.aborted += 1;
        } else {
            socket.close();
            self.cells.counters.lingered += 1;
        }
        if lingering_full {
            // No room to wait for the RST to go out: it is dropped with the socket, and the
            // peer learns of the close from its own next segment (answered with RST).
            self.remove_socket(handle, TCP_SOCKET_BYTES);
            self.cells.ports.give_back(Proto::Tcp, port);
            return;
        }
        self.cells.lingering.push(Linger {
            handle,
            deadline_us: now_us + LINGER_TIMEOUT_US,
            port,
        });
        super::kick();
    }

    /// Removes closing sockets that are done; aborts those past their deadline. Called by
    /// the `net` task after each poll.
    pub(super) fn reap_lingering(&mut self, now_us: u64) {
        let mut index = 0;
        while index < self.cells.lingering.len() {
            let Linger {
                handle,
                deadline_us,
                port,
            } = self.cells.lingering[index];
            let socket = self.tcp(handle);
            let done = match socket.state() {
                // Closed with nothing left to send (the RST, if any, went out).
                tcp::State::Closed => socket.remote_endpoint().is_none(),
                // The FIN handshake is complete; skip TIME-WAIT's 10 s (see module docs).
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done {
                self.cells.lingering.swap_remove(index);
                self.remove_socket(handle, TCP_SOCKET_BYTES);
                self.cells.ports.give_back(Proto::Tcp, port);
                continue;
            }
            if now_us >= deadline_us && socket.state() != tcp::State::Closed {
                socket.abort();
                self.cells.counters.aborted += 1;
            }
            index += 1;
        }
    }
}

/// What a [`CellSocket`] is now.
enum State {
    /// TCP, not yet listening or connected; `port` is bound (0 = not bound).
    TcpFresh { port: u16 },
    /// TCP listener on `port` with its backlog sockets.
    TcpListen {
        port: u16,
        backlog: Vec<SocketHandle>,
        wanted: usize,
    },
    /// A TCP stream. `port` is released with it (0 for accepted streams, whose port is the
    /// listener's). `connect_deadline_us` is set while a connect is in progress.
    TcpStream {
        handle: SocketHandle,
        port: u16,
        connect_deadline_us: Option<u64>,
        failed: Option<Errno>,
        shut_read: bool,
        shut_write: bool,
    },
    /// UDP; `port` 0 until bound.
    Udp { handle: SocketHandle, port: u16 },
    /// Released (only transiently, inside `release`).
    Gone,
}

/// The object behind one cell socket descriptor. See the module docs.
pub struct CellSocket {
    state: State,
    nonblocking: bool,
}

fn state_name(state: tcp::State) -> &'static str {
    match state {
        tcp::State::Closed => "closed",
        tcp::State::Listen => "listen",
        tcp::State::SynSent => "syn-sent",
        tcp::State::SynReceived => "syn-received",
        tcp::State::Established => "established",
        tcp::State::FinWait1 => "fin-wait-1",
        tcp::State::FinWait2 => "fin-wait-2",
        tcp::State::CloseWait => "close-wait",
        tcp::State::Closing => "closing",
        tcp::State::LastAck => "last-ack",
        tcp::State::TimeWait => "time-wait",
    }
}

/// Backlog sockets whose connection was reset before `accept` took it listen again, so the
/// backlog keeps its size without waiting for the next `accept`.
fn relisten_reset(stack: &mut Stack, backlog: &[SocketHandle], port: u16) {
    for &handle in backlog {
        let socket = stack.tcp(handle);
        if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
            let _ = socket.listen(IpListenEndpoint::from(port));
        }
    }
}

/// Whether an accepted-or-connected smoltcp socket has a connection ready for `accept`.
fn acceptable(state: tcp::State) -> bool {
    !matches!(
        state,
        tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
    )
}

fn endpoint_of(addr: SockAddrV4) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(addr.ip)), addr.port)
}

fn addr_of(endpoint: IpEndpoint) -> SockAddrV4 {
    let IpAddress::Ipv4(ip) = endpoint.addr;
    SockAddrV4::new(ip.octets(), endpoint.port)
}

impl CellSocket {
    /// A new socket of `kind`. UDP allocates its buffers now; TCP on `listen`/`connect`.
    pub fn open(stack: &mut Stack, kind: SocketKind, nonblocking: bool) -> Result<Self, Errno> {
        let state = match kind {
            SocketKind::Tcp => State::TcpFresh { port: 0 },
            SocketKind::Udp => State::Udp {
                handle: stack.new_udp()?,
                port: 0,
            },
        };
        Ok(CellSocket { state, nonblocking })
    }

    /// Whether calls that would block return `EAGAIN` instead.
    pub fn nonblocking(&self) -> bool {
        self.nonblocking
    }

    /// Sets [`CellSocket::nonblocking`].
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Heap bytes this socket's buffers hold (what the cell is charged).
    pub fn bytes(&self) -> usize {
        match &self.state {
            State::TcpFresh { .. } | State::Gone => 0,
            State::TcpListen { backlog, .. } => backlog.len() * TCP_SOCKET_BYTES,
            State::TcpStream { .. } => TCP_SOCKET_BYTES,
            State::Udp { .. } => UDP_SOCKET_BYTES,
        }
    }

    /// The bytes a `listen` with `backlog` would hold, or an `accept` (one stream): for the
    /// cell's memory check before the call.
    pub fn listen_bytes(backlog: u64) -> usize {
        usize::try_from(backlog).unwrap_or(usize::MAX) * TCP_SOCKET_BYTES
    }

    /// `bind`: reserve a local port (0 = ephemeral). The address must be unspecified or
    /// this node's.
    pub fn bind(&mut self, stack: &mut Stack, addr: SockAddrV4) -> Result<(), Errno> {
        if !addr.is_unspecified() && addr.ip != stack.local_ip().octets() {
            return Err(Errno::EADDRNOTAVAIL);
        }
        match &mut self.state {
            State::TcpFresh { port } if *port == 0 => {
                *port = stack.cells.ports.take(Proto::Tcp, addr.port)?;
                Ok(())
            }
            State::Udp { handle, port } if *port == 0 => {
                let taken = stack.cells.ports.take(Proto::Udp, addr.port)?;
                let socket = stack.sockets.get_mut::<udp::Socket>(*handle);
                if socket.bind(taken).is_err() {
                    stack.cells.ports.give_back(Proto::Udp, taken);
                    return Err(Errno::EINVAL);
                }
                *port = taken;
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// `listen`: turn a bound TCP socket into a listener with `backlog` sockets.
    pub fn listen(&mut self, stack: &mut Stack, backlog: u64) -> Result<(), Errno> {
        if backlog == 0 || backlog > abi::MAX_BACKLOG {
            return Err(Errno::EINVAL);
        }
        let port = match self.state {
            State::TcpFresh { port: 0 } => return Err(Errno::EINVAL),
            State::TcpFresh { port } => port,
            State::TcpListen { .. } | State::TcpStream { .. } => return Err(Errno::EISCONN),
            State::Udp { .. } => return Err(Errno::EOPNOTSUPP),
            State::Gone => return Err(Errno::EBADF),
        };
        let wanted = backlog as usize;
        let mut handles = Vec::new();
        handles
            .try_reserve_exact(wanted)
            .map_err(|_| Errno::ENOBUFS)?;
        self.state = State::TcpListen {
            port,
            backlog: handles,
            wanted,
        };
        // At least one listening socket, or the listen fails (and the socket stays bound).
        self.refill(stack);
        match &self.state {
            State::TcpListen { backlog, .. } if !backlog.is_empty() => Ok(()),
            _ => {
                self.state = State::TcpFresh { port };
                Err(Errno::ENOBUFS)
            }
        }
    }

    /// Tops the listener's backlog up to its size (after accepts, or when memory was short).
    fn refill(&mut self, stack: &mut Stack) {
        let State::TcpListen {
            port,
            backlog,
            wanted,
        } = &mut self.state
        else {
            return;
        };
        while backlog.len() < *wanted {
            let Ok(handle) = stack.new_tcp() else { return };
            let listening = stack.tcp(handle).listen(IpListenEndpoint::from(*port));
            debug_assert!(listening.is_ok(), "a fresh socket listens");
            backlog.push(handle);
        }
    }

    /// The port this socket accepts connections on, if it is a listener that still takes
    /// new ones (not stopped by [`CellSocket::stop_listening`]).
    pub fn listening_port(&self) -> Option<u16> {
        match self.state {
            State::TcpListen { port, wanted, .. } if wanted > 0 => Some(port),
            _ => None,
        }
    }

    /// Stops taking new connections on a listener (the first half of a graceful stop: the
    /// control plane moved the cell's slot away and no proxy sends it new connections): its
    /// backlog sockets still in `Listen` are removed and none come back, so a SYN finds
    /// another cell's listener on a shared service port, or none. Connections already past
    /// the handshake stay for `accept`; the cell's other sockets are untouched. The port
    /// stays held until the socket is released. Not a listener: nothing happens.
    pub fn stop_listening(&mut self, stack: &mut Stack) {
        let State::TcpListen {
            backlog, wanted, ..
        } = &mut self.state
        else {
            return;
        };
        *wanted = 0;
        backlog.retain(|&handle| {
            if stack.tcp(handle).state() == tcp::State::Listen {
                stack.remove_socket(handle, TCP_SOCKET_BYTES);
                false
            } else {
                true
            }
        });
    }

    /// `accept`: take one established connection. `EAGAIN` if none is ready.
    pub fn accept(&mut self, stack: &mut Stack) -> Result<CellSocket, Errno> {
        let State::TcpListen {
            port,
            backlog,
            wanted,
        } = &mut self.state
        else {
            return Err(Errno::EINVAL);
        };
        let port = *port;
        // A stopped listener (wanted 0) never listens again.
        if *wanted > 0 {
            relisten_reset(stack, backlog, port);
        }
        let index = backlog
            .iter()
            .position(|&h| acceptable(stack.tcp(h).state()))
            .ok_or(Errno::EAGAIN)?;
        let handle = backlog.remove(index);
        stack.cells.counters.accepted += 1;
        self.refill(stack);
        Ok(CellSocket {
            state: State::TcpStream {
                handle,
                port: 0,
                connect_deadline_us: None,
                failed: None,
                shut_read: false,
                shut_write: false,
            },
            nonblocking: false,
        })
    }

    /// `connect`: start connecting to `peer`. Returns `EINPROGRESS` once started; the
    /// caller then waits with [`CellSocket::connect_result`].
    pub fn connect(
        &mut self,
        stack: &mut Stack,
        peer: SockAddrV4,
        now_us: u64,
    ) -> Result<(), Errno> {
        let bound = match self.state {
            State::TcpFresh { port } => port,
            State::TcpStream {
                connect_deadline_us: Some(_),
                ..
            } => return Err(Errno::EALREADY),
            State::TcpStream { .. } | State::TcpListen { .. } => return Err(Errno::EISCONN),
            State::Udp { .. } => return Err(Errno::EOPNOTSUPP),
            State::Gone => return Err(Errno::EBADF),
        };
        let ip = Ipv4Address::from(peer.ip);
        if peer.port == 0 || peer.is_unspecified() {
            return Err(Errno::EINVAL);
        }
        if super::id_of(ip).is_none() {
            return Err(Errno::ENETUNREACH);
        }
        let port = match bound {
            0 => stack.cells.ports.take(Proto::Tcp, 0)?,
            bound => bound,
        };
        let handle = match stack.new_tcp() {
            Ok(handle) => handle,
            Err(errno) => {
                if bound == 0 {
                    stack.cells.ports.give_back(Proto::Tcp, port);
                }
                return Err(errno);
            }
        };
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(stack.local_ip())),
            port,
        };
        let started = {
            let Stack { iface, sockets, .. } = stack;
            sockets.get_mut::<tcp::Socket>(handle).connect(
                iface.context(),
                endpoint_of(peer),
                local,
            )
        };
        if started.is_err() {
            stack.remove_socket(handle, TCP_SOCKET_BYTES);
            stack.cells.ports.give_back(Proto::Tcp, port);
            return Err(Errno::EINVAL);
        }
        self.state = State::TcpStream {
            handle,
            port,
            connect_deadline_us: Some(now_us + CONNECT_TIMEOUT_US),
            failed: None,
            shut_read: false,
            shut_write: false,
        };
        super::kick();
        Err(Errno::EINPROGRESS)
    }

    /// The outcome of a connect in progress: `Ok` once established, `EAGAIN` while it is
    /// still going, the failure otherwise (`ECONNREFUSED`, `ETIMEDOUT`). Once known, a
    /// failure sticks (later calls return it too).
    pub fn connect_result(&mut self, stack: &mut Stack, now_us: u64) -> Result<(), Errno> {
        let State::TcpStream {
            handle,
            connect_deadline_us,
            failed,
            ..
        } = &mut self.state
        else {
            return Err(Errno::ENOTCONN);
        };
        if let Some(errno) = *failed {
            return Err(errno);
        }
        let Some(deadline) = *connect_deadline_us else {
            return Ok(());
        };
        let socket = stack.sockets.get_mut::<tcp::Socket>(*handle);
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived if now_us >= deadline => {
                socket.abort();
                *failed = Some(Errno::ETIMEDOUT);
            }
            tcp::State::SynSent | tcp::State::SynReceived => return Err(Errno::EAGAIN),
            // Refused (RST to our SYN) or gone before we saw it established.
            tcp::State::Closed => *failed = Some(Errno::ECONNREFUSED),
            _ => {
                *connect_deadline_us = None;
                return Ok(());
            }
        }
        Err(failed.unwrap_or(Errno::ECONNREFUSED))
    }

    /// The connect deadline, if a connect is in progress (for `poll`'s wake-up).
    pub fn connect_deadline_us(&self) -> Option<u64> {
        match self.state {
            State::TcpStream {
                connect_deadline_us,
                failed: None,
                ..
            } => connect_deadline_us,
            _ => None,
        }
    }

    fn stream(&mut self) -> Result<(SocketHandle, &mut bool, &mut bool), Errno> {
        match &mut self.state {
            State::TcpStream {
                handle,
                connect_deadline_us: None,
                shut_read,
                shut_write,
                ..
            } => Ok((*handle, shut_read, shut_write)),
            State::TcpStream { .. } | State::TcpFresh { .. } | State::TcpListen { .. } => {
                Err(Errno::ENOTCONN)
            }
            State::Udp { .. } => Err(Errno::EOPNOTSUPP),
            State::Gone => Err(Errno::EBADF),
        }
    }

    /// `read`: hands the received bytes (up to `max` in total, in at most two contiguous
    /// pieces) to `sink`, which copies them out and returns how many it took. 0 = end of
    /// stream; `EAGAIN` = nothing yet; `ECONNRESET` after a reset.
    pub fn read(
        &mut self,
        stack: &mut Stack,
        max: usize,
        mut sink: impl FnMut(&[u8]) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        let (handle, shut_read, _) = self.stream()?;
        if *shut_read {
            return Ok(0);
        }
        let socket = stack.tcp(handle);
        let before = socket.recv_queue();
        let mut total = 0usize;
        while total < max {
            let step = socket.recv(|bytes| {
                let take = bytes.len().min(max - total);
                match sink(&bytes[..take]) {
                    Ok(n) => (n, Ok(n)),
                    Err(errno) => (0, Err(errno)),
                }
            });
            match step {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => total += n,
                Ok(Err(errno)) if total == 0 => return Err(errno),
                Ok(Err(_)) => break,
                Err(tcp::RecvError::Finished) if total == 0 => return Ok(0),
                Err(tcp::RecvError::InvalidState) if total == 0 => return Err(Errno::ECONNRESET),
                Err(_) => break,
            }
        }
        if total == 0 {
            return Err(Errno::EAGAIN);
        }
        // Draining a buffer that was half full or more opens the window enough to say so.
        if before * 2 >= TCP_RX_BYTES {
            super::kick();
        }
        Ok(total)
    }

    /// `write`: queues bytes that `source` fills into the send buffer (up to `max`).
    /// `EAGAIN` = buffer full; `EPIPE` after `shutdown(Write)`; `ECONNRESET` if the
    /// connection is gone.
    pub fn write(
        &mut self,
        stack: &mut Stack,
        max: usize,
        mut source: impl FnMut(&mut [u8], usize) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        let (handle, _, shut_write) = self.stream()?;
        if *shut_write {
            return Err(Errno::EPIPE);
        }
        let socket = stack.tcp(handle);
        if !socket.may_send() {
            return Err(match socket.state() {
                tcp::State::Closed | tcp::State::TimeWait => Errno::ECONNRESET,
                _ => Errno::EPIPE,
            });
        }
        let mut total = 0usize;
        while total < max {
            let offset = total;
            let step = socket.send(|space| {
                let take = space.len().min(max - offset);
                match source(&mut space[..take], offset) {
                    Ok(n) => (n, Ok(n)),
                    Err(errno) => (0, Err(errno)),
                }
            });
            match step {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => total += n,
                Ok(Err(errno)) if total == 0 => return Err(errno),
                _ => break,
            }
        }
        if total == 0 {
            return Err(Errno::EAGAIN);
        }
        super::kick();
        Ok(total)
    }

    /// `shutdown`.
    pub fn shutdown(&mut self, stack: &mut Stack, how: Shutdown) -> Result<(), Errno> {
        let (handle, shut_read, shut_write) = self.stream()?;
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            *shut_read = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) && !*shut_write {
            *shut_write = true;
            stack.tcp(handle).close();
            super::kick();
        }
        Ok(())
    }

    /// `send_to`: one datagram of `data` to `peer`; binds an ephemeral port first if the
    /// socket is not bound.
    pub fn send_to(
        &mut self,
        stack: &mut Stack,
        data: &[u8],
        peer: SockAddrV4,
    ) -> Result<usize, Errno> {
        let State::Udp { handle, port } = &mut self.state else {
            return Err(Errno::EOPNOTSUPP);
        };
        if data.len() > abi::MAX_DATAGRAM_LEN as usize {
            return Err(Errno::EMSGSIZE);
        }
        if peer.port == 0 || peer.is_unspecified() {
            return Err(Errno::EINVAL);
        }
        let broadcast = peer.ip == [super::SUBNET[0], super::SUBNET[1], super::SUBNET[2], 255];
        if super::id_of(Ipv4Address::from(peer.ip)).is_none() && !broadcast {
            return Err(Errno::ENETUNREACH);
        }
        let handle = *handle;
        if *port == 0 {
            let taken = stack.cells.ports.take(Proto::Udp, 0)?;
            if stack.udp_socket(handle).bind(taken).is_err() {
                stack.cells.ports.give_back(Proto::Udp, taken);
                return Err(Errno::EINVAL);
            }
            *port = taken;
        }
        match stack.udp_socket(handle).send_slice(data, endpoint_of(peer)) {
            Ok(()) => {
                super::kick();
                Ok(data.len())
            }
            Err(udp::SendError::BufferFull) => Err(Errno::EAGAIN),
            Err(udp::SendError::Unaddressable) => Err(Errno::EINVAL),
        }
    }

    /// `recv_from`: one datagram into `sink` (which takes at most `cap` bytes; the rest of a
    /// longer datagram is dropped, as on Linux). Returns the bytes taken and the sender.
    pub fn recv_from(
        &mut self,
        stack: &mut Stack,
        cap: usize,
        sink: impl FnOnce(&[u8]) -> Result<(), Errno>,
    ) -> Result<(usize, SockAddrV4), Errno> {
        let State::Udp { handle, port } = &self.state else {
            return Err(Errno::EOPNOTSUPP);
        };
        if *port == 0 {
            return Err(Errno::EINVAL);
        }
        let socket = stack.udp_socket(*handle);
        let (bytes, meta) = socket.peek().map_err(|_| Errno::EAGAIN)?;
        let take = bytes.len().min(cap);
        let from = addr_of(meta.endpoint);
        sink(&bytes[..take])?;
        let _ = socket.recv();
        Ok((take, from))
    }

    /// The local or peer address.
    pub fn address(&self, stack: &mut Stack, peer: bool) -> Result<SockAddrV4, Errno> {
        let ip = stack.local_ip().octets();
        match (&self.state, peer) {
            (State::TcpFresh { port }, false) => Ok(SockAddrV4::new(ip, *port)),
            (State::TcpListen { port, .. }, false) => Ok(SockAddrV4::new(ip, *port)),
            (State::Udp { port, .. }, false) => Ok(SockAddrV4::new(ip, *port)),
            (State::TcpStream { handle, .. }, _) => {
                let socket = stack.tcp(*handle);
                let endpoint = if peer {
                    socket.remote_endpoint()
                } else {
                    socket.local_endpoint()
                };
                endpoint.map(addr_of).ok_or(Errno::ENOTCONN)
            }
            (State::Gone, _) => Err(Errno::EBADF),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// Nagle off (`true`) or on, for a stream.
    pub fn set_nodelay(&mut self, stack: &mut Stack, on: bool) -> Result<(), Errno> {
        match &self.state {
            State::TcpStream { handle, .. } => {
                stack.tcp(*handle).set_nagle_enabled(!on);
                Ok(())
            }
            State::Udp { .. } => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// The `poll` events that hold now (a subset of `POLLIN | POLLOUT`, plus `POLLERR`
    /// and `POLLHUP` whatever was asked).
    pub fn readiness(&mut self, stack: &mut Stack, now_us: u64) -> u16 {
        if let State::TcpStream {
            connect_deadline_us: Some(_),
            ..
        } = self.state
        {
            return match self.connect_result(stack, now_us) {
                Ok(()) => self.readiness(stack, now_us),
                Err(Errno::EAGAIN) => 0,
                Err(_) => POLLERR | POLLHUP | POLLOUT,
            };
        }
        match &self.state {
            State::TcpFresh { .. } => POLLHUP,
            State::TcpListen {
                backlog,
                port,
                wanted,
            } => {
                if *wanted > 0 {
                    relisten_reset(stack, backlog, *port);
                }
                if backlog.iter().any(|&h| acceptable(stack.tcp(h).state())) {
                    POLLIN
                } else {
                    0
                }
            }
            State::TcpStream {
                handle,
                failed,
                shut_read,
                ..
            } => {
                let socket = stack.tcp(*handle);
                let mut events = 0;
                if socket.can_recv() || !socket.may_recv() || *shut_read {
                    events |= POLLIN;
                }
                if socket.can_send() {
                    events |= POLLOUT;
                }
                if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                    events |= POLLHUP;
                }
                if failed.is_some() {
                    events |= POLLERR;
                }
                events
            }
            State::Udp { handle, .. } => {
                let socket = stack.udp_socket(*handle);
                let mut events = 0;
                if socket.can_recv() {
                    events |= POLLIN;
                }
                if socket.can_send() {
                    events |= POLLOUT;
                }
                events
            }
            State::Gone => POLLHUP,
        }
    }

    /// Parks `waker` in the smoltcp sockets behind this descriptor for `events`.
    pub fn register(&self, stack: &mut Stack, events: u16, waker: &Waker) {
        let recv = events & POLLIN != 0;
        let send = events & POLLOUT != 0;
        match &self.state {
            State::TcpListen { backlog, .. } => {
                for &handle in backlog {
                    stack.tcp(handle).register_recv_waker(waker);
                }
            }
            State::TcpStream { handle, .. } => {
                let socket = stack.tcp(*handle);
                // State changes wake both; data wakes recv, space wakes send.
                if recv {
                    socket.register_recv_waker(waker);
                }
                if send || !recv {
                    socket.register_send_waker(waker);
                }
            }
            State::Udp { handle, .. } => {
                let socket = stack.udp_socket(*handle);
                if recv {
                    socket.register_recv_waker(waker);
                }
                if send {
                    socket.register_send_waker(waker);
                }
            }
            State::TcpFresh { .. } | State::Gone => {}
        }
    }

    /// Gives everything back: streams close (FIN, or RST with unread data) and linger;
    /// listeners abort their pending connections; ports are released.
    pub fn release(mut self, stack: &mut Stack, now_us: u64) {
        self.release_in(stack, now_us);
    }

    fn release_in(&mut self, stack: &mut Stack, now_us: u64) {
        match core::mem::replace(&mut self.state, State::Gone) {
            State::TcpFresh { port } => stack.cells.ports.give_back(Proto::Tcp, port),
            State::TcpListen { port, backlog, .. } => {
                for handle in backlog {
                    if stack.tcp(handle).state() == tcp::State::Listen {
                        stack.remove_socket(handle, TCP_SOCKET_BYTES);
                    } else {
                        stack.close_stream(handle, 0, true, now_us);
                    }
                }
                stack.cells.ports.give_back(Proto::Tcp, port);
            }
            State::TcpStream { handle, port, .. } => {
                stack.close_stream(handle, port, false, now_us)
            }
            State::Udp { handle, port } => {
                stack.remove_socket(handle, UDP_SOCKET_BYTES);
                stack.cells.ports.give_back(Proto::Udp, port);
            }
            State::Gone => {}
        }
    }
}

impl Drop for CellSocket {
    fn drop(&mut self) {
        if matches!(self.state, State::Gone) {
            return;
        }
        // Dropped with its cell (or its descriptor table): release through the stack. The
        // stack lock is never held where a CellSocket is dropped; if it were, this single CPU
        // would deadlock, so that broken invariant is a panic instead.
        crate::arch::cpu::without_interrupts(|| {
            let mut guard = STACK
                .try_lock()
                .expect("a cell socket was dropped while the network stack was locked");
            if let Some(stack) = guard.as_mut() {
                self.release_in(stack, crate::time::now_us());
            }
        });
    }
}
