//! The host gateway: a TCP listener on 127.0.0.1 whose connections are relayed to a
//! service's address on the fabric, like a router in front of a real cluster
//! (`cargo xtask run --expose web:8080`, the demo, `bench service-failover`).
//!
//! The gateway is one more switch port with its own MAC and address (a [`HostNet`]). It
//! learns the service's address by asking a node's DNS (`<service>.xylem`, UDP 53), asking
//! again until the service exists, and then relays each loopback connection to
//! `address:port` over its own smoltcp TCP. Nothing here knows which node owns the address:
//! ARP does (and gratuitous ARP moves it, `device::learn_announcement`).
//!
//! Per connection: [`CONNECT_TRIES`] connects of [`CONNECT_TIMEOUT`] each (a SYN sent to an
//! owner that just died is answered by nobody until the new owner's announcement arrives;
//! a proxy retrying its upstream connect is what nginx or HAProxy do too), then bytes both
//! ways until both sides closed. A failed connect closes the client's connection without a
//! byte (the client sees an empty reply). At most [`RELAYS_MAX`] relays at once; loopback
//! only.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{HostNet, HostStream, NetError};

/// Connect attempts per client connection.
pub const CONNECT_TRIES: usize = 3;
/// Each attempt's timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);
/// Relays at once; beyond that a connection is closed at once.
pub const RELAYS_MAX: usize = 128;
/// How long a relay waits on one side before looking at the other.
const TURN: Duration = Duration::from_millis(2);
/// A relay with no byte either way for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// Gateway counters.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub accepted: AtomicU64,
    pub relayed: AtomicU64,
    pub connect_failures: AtomicU64,
    pub refused_busy: AtomicU64,
    pub active: AtomicUsize,
}

/// What to relay to: a service resolved through a node's DNS.
#[derive(Clone, Debug)]
pub struct Target {
    pub service: String,
    pub port: u16,
    /// Nodes whose DNS is asked, in turn.
    pub dns_servers: Vec<Ipv4Addr>,
}

/// A running gateway; stops when dropped.
pub struct Gateway {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub listen: SocketAddrV4,
    pub stats: Arc<GatewayStats>,
    address: Arc<Mutex<Option<Ipv4Addr>>>,
}

impl Gateway {
    /// Listens on `listen` (must be a loopback address) and relays to `target` through
    /// `net`.
    pub fn start(net: HostNet, listen: SocketAddrV4, target: Target) -> std::io::Result<Gateway> {
        if !listen.ip().is_loopback() {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                "the gateway listens on loopback only",
            ));
        }
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let listen = match listener.local_addr()? {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(GatewayStats::default());
        let address = Arc::new(Mutex::new(None));
        let thread = {
            let (stop, stats, address) = (stop.clone(), stats.clone(), address.clone());
            std::thread::Builder::new()
                .name("gateway".into())
                .spawn(move || accept_loop(listener, net, target, stop, stats, address))?
        };
        Ok(Gateway {
            stop,
            thread: Some(thread),
            listen,
            stats,
            address,
        })
    }

    /// The service address learnt from DNS, once known.
    pub fn address(&self) -> Option<Ipv4Addr> {
        *self.address.lock().expect("poisoned")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    net: HostNet,
    target: Target,
    stop: Arc<AtomicBool>,
    stats: Arc<GatewayStats>,
    address: Arc<Mutex<Option<Ipv4Addr>>>,
) {
    let mut next_server = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if address.lock().expect("poisoned").is_none() && !target.dns_servers.is_empty() {
            let server = target.dns_servers[next_server % target.dns_servers.len()];
            next_server += 1;
            let name = format!("{}.xylem", target.service);
            if let Ok(Some(ip)) = net.resolve(server, &name, Duration::from_millis(300)) {
                *address.lock().expect("poisoned") = Some(ip);
            }
        }
        match listener.accept() {
            Ok((client, _)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let ip = *address.lock().expect("poisoned");
                let Some(ip) = ip else {
                    // Not resolved yet: nothing to relay to.
                    drop(client);
                    continue;
                };
                if stats.active.load(Ordering::Relaxed) >= RELAYS_MAX {
                    stats.refused_busy.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                stats.active.fetch_add(1, Ordering::Relaxed);
                let (net, mine, stop) = (net.clone(), stats.clone(), stop.clone());
                let upstream = SocketAddrV4::new(ip, target.port);
                let spawned = std::thread::Builder::new()
                    .name("gateway-relay".into())
                    .spawn(move || {
                        relay(client, &net, upstream, &mine, &stop);
                        mine.active.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    stats.active.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn connect(net: &HostNet, upstream: SocketAddrV4, stats: &GatewayStats) -> Option<HostStream> {
    for _ in 0..CONNECT_TRIES {
        match net.connect(upstream, CONNECT_TIMEOUT) {
            Ok(s) => return Some(s),
            Err(NetError::Refused) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    None
}

fn relay(
    mut client: TcpStream,
    net: &HostNet,
    upstream: SocketAddrV4,
    stats: &GatewayStats,
    stop: &AtomicBool,
) {
    let Some(mut up) = connect(net, upstream, stats) else {
        return;
    };
    stats.relayed.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    if client.set_read_timeout(Some(TURN)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let (mut client_done, mut up_done) = (false, false);
    let mut idle_since = std::time::Instant::now();
    while !(client_done && up_done) && !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        if !client_done {
            match client.read(&mut buf) {
                Ok(0) => {
                    client_done = true;
                    up.shutdown_write();
                }
                Ok(n) => {
                    if up.write_all(&buf[..n], Duration::from_secs(5)).is_err() {
                        break;
                    }
                    moved = true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        if !up_done {
            match up.read(&mut buf, TURN) {
                Ok(0) => {
                    up_done = true;
                    let _ = client.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    moved = true;
                }
                Err(NetError::TimedOut(_)) => {}
                Err(_) => break,
            }
        }
        if moved {
            idle_since = std::time::Instant::now();
        } else if idle_since.elapsed() > IDLE {
            break;
        }
    }
    if client_done && up_done {
        up.close();
    } else {
        // Reset upstream; the client's socket closes when dropped.
        up.abort();
    }
}
