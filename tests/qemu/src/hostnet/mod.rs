//! The host endpoint: a real TCP/IP stack (smoltcp 0.12, std) on the host, plugged into the
//! fabric as one more switch port with its own MAC and fabric address, so tests and
//! benchmarks talk to cells the way a client on the cluster's network would.
//!
//! Two layers:
//! - [`Endpoint`]: the interface and its sockets with an **explicit poll loop** (no
//!   threads). Single-threaded drivers (the HTTP benchmark) use it directly: they call
//!   [`Endpoint::poll`] and [`Endpoint::wait`] themselves, so nothing else adds latency.
//! - [`HostNet`]: an `Endpoint` behind a mutex with **its own poll thread**, and a small
//!   blocking API for tests: [`HostNet::connect`] gives a [`HostStream`] with `write_all`,
//!   `read` and `read_to_end` under timeouts, `close` (FIN) and `abort` (RST). Many streams
//!   may be open at once; a stream dropped while open is aborted.
//!
//! [`http`] is a minimal HTTP/1.1 client over either layer (requests written by hand,
//! responses parsed with `httparse`).
//!
//! Addresses: the endpoint takes fabric port `id` (a number no node uses, by default
//! [`HOST_ID`]), MAC `52:54:00:00:HI:LO` of that id and IP `169.254.77.<id>/24`, the same
//! scheme as nodes (docs/networking.md). Traffic never leaves the fabric's unix sockets.
//!
//! A later gateway (relaying 127.0.0.1 connections into the fabric) builds on `Endpoint`.

pub mod device;
pub mod http;
pub mod load;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};

use device::PortDevice;

/// The fabric port (and address suffix) the host endpoint uses unless told otherwise.
pub const HOST_ID: u32 = 250;
/// The fabric's /24.
pub const SUBNET: [u8; 3] = [169, 254, 77];
/// Buffers of each host TCP socket.
pub const SOCKET_BUFFER_BYTES: usize = 64 * 1024;
/// Longest the poll thread sleeps without frames (it also wakes for smoltcp's timers).
const POLL_IDLE_MAX: Duration = Duration::from_millis(5);
/// Ephemeral ports for connects.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// The fabric address of node (or port) `id`.
pub fn fabric_ip(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], id as u8)
}

/// The MAC address of port `id`, as the kernel derives a node's.
pub fn fabric_mac(id: u32) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x00, (id >> 8) as u8, id as u8]
}

/// Why a host-side network operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// Attaching to the fabric failed.
    Attach(String),
    /// The peer answered the SYN with RST (nothing listens there).
    Refused,
    /// The connection was reset.
    Reset,
    /// The operation did not finish in time.
    TimedOut(&'static str),
    /// No ephemeral port or socket could be had.
    NoPort,
    /// Writing after the connection stopped accepting data.
    NotWritable,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Attach(why) => write!(f, "cannot attach to the fabric: {why}"),
            NetError::Refused => write!(f, "connection refused"),
            NetError::Reset => write!(f, "connection reset"),
            NetError::TimedOut(what) => write!(f, "timed out {what}"),
            NetError::NoPort => write!(f, "no free ephemeral port"),
            NetError::NotWritable => write!(f, "connection not writable"),
        }
    }
}

impl std::error::Error for NetError {}

/// The interface, its sockets and the fabric port, polled explicitly.
pub struct Endpoint {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: PortDevice,
    next_port: u16,
    ports_in_use: std::collections::BTreeSet<u16>,
    /// The local port of every connected socket (released when it is removed).
    port_of: std::collections::HashMap<SocketHandle, u16>,
    /// Sockets closed by their owner, removed once done (or after their deadline).
    closing: Vec<(SocketHandle, StdInstant)>,
    /// Sockets that exist now (for leak checks).
    pub open_sockets: usize,
}

impl Endpoint {
    /// Attaches to fabric port `id` in `fabric_dir` with address `169.254.77.<id>/24`.
    pub fn attach(fabric_dir: &Path, id: u32) -> Result<Endpoint, NetError> {
        let mut device =
            PortDevice::attach(fabric_dir, id).map_err(|e| NetError::Attach(e.to_string()))?;
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(fabric_mac(id))));
        config.random_seed = u64::from(std::process::id()) ^ u64::from(id);
        let mut iface = Interface::new(config, &mut device, Instant::now());
        let ip = fabric_ip(id).octets();
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
                .expect("one address fits");
        });
        Ok(Endpoint {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            next_port: *EPHEMERAL.start(),
            ports_in_use: Default::default(),
            port_of: Default::default(),
            closing: Vec::new(),
            open_sockets: 0,
        })
    }

    /// Moves frames both ways and runs TCP timers; reaps closed sockets. Returns whether
    /// anything changed.
    pub fn poll(&mut self) -> bool {
        let changed = self
            .iface
            .poll(Instant::now(), &mut self.device, &mut self.sockets)
            != smoltcp::iface::PollResult::None;
        self.reap();
        changed
    }

    /// Sleeps until a frame arrives, smoltcp's next timer, or `max`, whichever is first.
    pub fn wait(&mut self, max: Duration) {
        let Endpoint { iface, sockets, .. } = self;
        let delay = iface
            .poll_delay(Instant::now(), sockets)
            .map_or(max, |d| Duration::from_micros(d.total_micros()).min(max));
        if !delay.is_zero() {
            self.device.wait_readable(delay);
        }
    }

    /// Frame counters of the port.
    pub fn device_stats(&self) -> device::DeviceStats {
        self.device.stats
    }

    fn take_port(&mut self) -> Result<u16, NetError> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
            if self.ports_in_use.insert(port) {
                return Ok(port);
            }
        }
        Err(NetError::NoPort)
    }

    /// Starts a TCP connection to `peer`; returns its handle at once (SYN sent on poll).
    pub fn connect(&mut self, peer: SocketAddrV4) -> Result<SocketHandle, NetError> {
        let port = self.take_port()?;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
        );
        socket.set_nagle_enabled(false);
        let ip = peer.ip().octets();
        let remote = IpEndpoint::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), peer.port());
        if socket.connect(self.iface.context(), remote, port).is_err() {
            self.ports_in_use.remove(&port);
            return Err(NetError::Refused);
        }
        self.open_sockets += 1;
        let handle = self.sockets.add(socket);
        self.port_of.insert(handle, port);
        Ok(handle)
    }

    /// The TCP socket behind `handle`.
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Closes `handle` gracefully (FIN); it is removed once closed, or aborted after
    /// `linger`.
    pub fn close(&mut self, handle: SocketHandle, linger: Duration) {
        self.tcp(handle).close();
        self.closing.push((handle, StdInstant::now() + linger));
    }

    /// Aborts `handle` (RST); it is removed once the RST is out.
    pub fn abort(&mut self, handle: SocketHandle) {
        self.tcp(handle).abort();
        self.closing.push((handle, StdInstant::now()));
    }

    fn reap(&mut self) {
        let now = StdInstant::now();
        let mut index = 0;
        while index < self.closing.len() {
            let (handle, deadline) = self.closing[index];
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let done = match socket.state() {
                tcp::State::Closed => socket.remote_endpoint().is_none(),
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done {
                self.closing.swap_remove(index);
                self.sockets.remove(handle);
                if let Some(port) = self.port_of.remove(&handle) {
                    self.ports_in_use.remove(&port);
                }
                self.open_sockets -= 1;
                continue;
            }
            if now >= deadline && socket.state() != tcp::State::Closed {
                socket.abort();
            }
            index += 1;
        }
    }

    /// Sockets closed by their owner and not yet gone.
    pub fn closing(&self) -> usize {
        self.closing.len()
    }
}

/// Shared state of a [`HostNet`]: the endpoint, and a condition notified after every poll.
struct Shared {
    endpoint: Mutex<Endpoint>,
    polled: Condvar,
    stop: AtomicBool,
}

/// An [`Endpoint`] with its own poll thread and a blocking API. Cloning shares it.
#[derive(Clone)]
pub struct HostNet {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl HostNet {
    /// Attaches to fabric port `id` and starts the poll thread.
    pub fn start(fabric_dir: &Path, id: u32) -> Result<HostNet, NetError> {
        let endpoint = Endpoint::attach(fabric_dir, id)?;
        let shared = Arc::new(Shared {
            endpoint: Mutex::new(endpoint),
            polled: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("hostnet-{id}"))
            .spawn(move || poll_loop(&for_thread))
            .map_err(|e| NetError::Attach(e.to_string()))?;
        Ok(HostNet {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Endpoint> {
        self.shared
            .endpoint
            .lock()
            .expect("hostnet endpoint poisoned")
    }

    /// Runs `f` on the endpoint, then polls so what it queued goes out now.
    pub fn with<R>(&self, f: impl FnOnce(&mut Endpoint) -> R) -> R {
        let mut endpoint = self.lock();
        let result = f(&mut endpoint);
        endpoint.poll();
        result
    }

    /// Waits (polling continues in the thread) until `ready` returns `Some`, or `timeout`.
    fn wait_for<R>(
        &self,
        timeout: Duration,
        what: &'static str,
        mut ready: impl FnMut(&mut Endpoint) -> Option<R>,
    ) -> Result<R, NetError> {
        let deadline = StdInstant::now() + timeout;
        let mut endpoint = self.lock();
        loop {
            if let Some(result) = ready(&mut endpoint) {
                endpoint.poll();
                return Ok(result);
            }
            let now = StdInstant::now();
            if now >= deadline {
                return Err(NetError::TimedOut(what));
            }
            endpoint = self
                .shared
                .polled
                .wait_timeout(endpoint, deadline - now)
                .expect("hostnet endpoint poisoned")
                .0;
        }
    }

    /// Connects to `peer` within `timeout`.
    pub fn connect(&self, peer: SocketAddrV4, timeout: Duration) -> Result<HostStream, NetError> {
        let handle = self.with(|e| e.connect(peer))?;
        let outcome = self.wait_for(timeout, "connecting", |e| match e.tcp(handle).state() {
            tcp::State::SynSent | tcp::State::SynReceived => None,
            tcp::State::Closed => Some(Err(NetError::Refused)),
            _ => Some(Ok(())),
        });
        match outcome {
            Ok(Ok(())) => Ok(HostStream {
                net: self.clone(),
                handle: Some(handle),
            }),
            Ok(Err(err)) | Err(err) => {
                self.with(|e| e.abort(handle));
                Err(err)
            }
        }
    }

    /// Sockets that exist now and sockets still closing (for leak checks).
    pub fn socket_counts(&self) -> (usize, usize) {
        let endpoint = self.lock();
        (endpoint.open_sockets, endpoint.closing())
    }

    /// Stops the poll thread (also done when the last clone drops).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.lock().expect("poisoned").take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        // The thread holds one reference to `shared`; this is the last user handle.
        if Arc::strong_count(&self.thread) == 1 {
            self.stop();
        }
    }
}

fn poll_loop(shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let (delay, fd) = {
            let mut guard = shared.endpoint.lock().expect("hostnet endpoint poisoned");
            let endpoint = &mut *guard;
            endpoint.poll();
            let delay = endpoint
                .iface
                .poll_delay(Instant::now(), &endpoint.sockets)
                .map_or(POLL_IDLE_MAX, |d| {
                    Duration::from_micros(d.total_micros()).min(POLL_IDLE_MAX)
                });
            (delay, endpoint.device.raw_fd())
        };
        shared.polled.notify_all();
        // Wait outside the lock so the blocking API can work meanwhile.
        if !delay.is_zero() {
            device::wait_fd(fd, delay);
        }
    }
}

/// One TCP connection of a [`HostNet`]. Dropped while open, it is aborted (RST).
pub struct HostStream {
    net: HostNet,
    handle: Option<SocketHandle>,
}

impl HostStream {
    fn handle(&self) -> SocketHandle {
        self.handle.expect("stream used after close")
    }

    /// Writes all of `data` within `timeout`.
    pub fn write_all(&mut self, data: &[u8], timeout: Duration) -> Result<(), NetError> {
        let handle = self.handle();
        let mut sent = 0;
        while sent < data.len() {
            let step = self.net.wait_for(timeout, "writing", |e| {
                let socket = e.tcp(handle);
                if !socket.may_send() {
                    return Some(Err(NetError::NotWritable));
                }
                match socket.send_slice(&data[sent..]) {
                    Ok(0) => None,
                    Ok(n) => Some(Ok(n)),
                    Err(_) => Some(Err(NetError::NotWritable)),
                }
            })??;
            sent += step;
        }
        Ok(())
    }

    /// Reads what has arrived (waiting up to `timeout` for at least one byte); `Ok(0)` at
    /// the end of the stream.
    pub fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, NetError> {
        let handle = self.handle();
        self.net.wait_for(timeout, "reading", |e| {
            let socket = e.tcp(handle);
            match socket.recv_slice(buf) {
                Ok(0) if socket.may_recv() => None,
                Ok(n) => Some(Ok(n)),
                Err(tcp::RecvError::Finished) => Some(Ok(0)),
                Err(tcp::RecvError::InvalidState) => Some(Err(NetError::Reset)),
            }
        })?
    }

    /// Reads until the peer closes, within `timeout` in total (at most `limit` bytes).
    pub fn read_to_end(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>, NetError> {
        let deadline = StdInstant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(StdInstant::now());
            match self.read(&mut buf, left)? {
                0 => return Ok(out),
                n if out.len() + n > limit => return Err(NetError::TimedOut("reading: too long")),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Whether the peer has closed its side (a read would return 0) or reset.
    pub fn peer_closed(&self) -> bool {
        let handle = self.handle();
        self.net.with(|e| !e.tcp(handle).may_recv())
    }

    /// Closes gracefully (FIN); the endpoint finishes the close in the background.
    pub fn close(mut self) {
        if let Some(handle) = self.handle.take() {
            self.net.with(|e| e.close(handle, Duration::from_secs(2)));
        }
    }

    /// Resets the connection (RST).
    pub fn abort(mut self) {
        if let Some(handle) = self.handle.take() {
            self.net.with(|e| e.abort(handle));
        }
    }
}

impl Drop for HostStream {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.net.with(|e| e.abort(handle));
        }
    }
}

/// `169.254.77.<id>:port` as a socket address.
pub fn node_addr(id: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(fabric_ip(id), port)
}

/// The smoltcp form of a std address (for tests that use `Endpoint` directly).
pub fn to_endpoint(addr: SocketAddrV4) -> IpEndpoint {
    let ip: Ipv4Address = Ipv4Address::from(addr.ip().octets());
    IpEndpoint::new(IpAddress::Ipv4(ip), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::{Fabric, FabricConfig};

    /// A server endpoint in a thread: `backlog` sockets listening on `port`; a connection
    /// that ends (peer FIN or RST) is closed and its socket listens again.
    fn serve(dir: std::path::PathBuf, id: u32, port: u16, backlog: usize, stop: Arc<AtomicBool>) {
        let mut server = Endpoint::attach(&dir, id).unwrap();
        let handles: Vec<SocketHandle> = (0..backlog)
            .map(|_| {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 4096]),
                    tcp::SocketBuffer::new(vec![0; 4096]),
                );
                s.listen(port).unwrap();
                server.sockets.add(s)
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            server.poll();
            for &h in &handles {
                let s = server.tcp(h);
                let _ = s.recv(|b| (b.len(), ()));
                match s.state() {
                    tcp::State::CloseWait => s.close(),
                    tcp::State::Closed | tcp::State::TimeWait => {
                        s.abort();
                        let _ = s.listen(port);
                    }
                    _ => {}
                }
            }
            server.wait(Duration::from_millis(2));
        }
    }

    #[test]
    fn many_connections_between_two_endpoints() {
        let dir = std::env::temp_dir().join(format!("xylem-hostnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fabric = Fabric::start(FabricConfig::new(&dir, &[250, 251], 3)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (dir, stop) = (dir.clone(), Arc::clone(&stop));
            std::thread::spawn(move || serve(dir, 251, 80, 16, stop))
        };
        let client = HostNet::start(&dir, 250).unwrap();
        let failures = std::sync::Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 400 {
                        return;
                    }
                    // The test server (like smoltcp listeners in the kernel) has no SYN
                    // queue: with every backlog socket busy a SYN is refused, and a client
                    // tries again, as real clients do.
                    let mut tries = 0;
                    let outcome = loop {
                        match client.connect(node_addr(251, 80), Duration::from_secs(5)) {
                            Err(NetError::Refused) if tries < 50 => {
                                tries += 1;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            other => break other,
                        }
                    };
                    match outcome {
                        Ok(stream) if i.is_multiple_of(2) => stream.close(),
                        Ok(stream) => stream.abort(),
                        Err(e) => failures.lock().unwrap().push(format!("{i}: {e}")),
                    }
                });
            }
        });
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        drop(fabric);
        let failures = failures.into_inner().unwrap();
        assert!(
            failures.is_empty(),
            "{} failures, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while client.socket_counts() != (0, 0) && StdInstant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(client.socket_counts(), (0, 0), "host sockets left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
