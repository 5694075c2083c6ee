//! DNS on UDP port 53 of every node: `A <service>.xylem` → the service's address.
//!
//! The answering logic (and its garbage tests) is `kcore::dns`; this file owns the smoltcp
//! UDP socket and moves at most [`PER_PASS_MAX`] datagrams per `net` pass, so a flood of
//! queries cannot hold the stack.

use alloc::vec;
use kcore::dns::{self, Replied, Silent};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;

use super::super::Stack;

/// Datagrams handled per `net` pass.
pub const PER_PASS_MAX: usize = 16;
const PACKETS: usize = 8;
const BUFFER_BYTES: usize = 4096;

/// Counters for the `frontdoor` command.
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsCounters {
    pub answers: u64,
    pub nxdomain: u64,
    pub nodata: u64,
    pub formerr: u64,
    pub notimp: u64,
    /// Datagrams given no reply (too short or long, a response).
    pub ignored: u64,
    /// Replies the socket had no room for.
    pub send_failed: u64,
}

/// The DNS socket and its counters.
pub struct Dns {
    handle: SocketHandle,
    pub counters: DnsCounters,
}

impl Dns {
    /// Binds a new socket on port 53 in `sockets`.
    pub fn bind(sockets: &mut smoltcp::iface::SocketSet<'static>) -> Dns {
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; PACKETS],
                vec![0; BUFFER_BYTES],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; PACKETS],
                vec![0; BUFFER_BYTES],
            ),
        );
        socket.bind(dns::PORT).expect("port 53 is free at boot");
        Dns {
            handle: sockets.add(socket),
            counters: DnsCounters::default(),
        }
    }
}

impl Stack {
    /// Answers waiting queries.
    pub(super) fn serve_dns(&mut self) {
        let handle = self.front.dns.handle;
        let mut query = [0u8; dns::QUERY_BYTES_MAX + 1];
        for _ in 0..PER_PASS_MAX {
            let socket = self.sockets.get_mut::<udp::Socket>(handle);
            let (len, meta) = match socket.recv_slice(&mut query) {
                Ok(got) => got,
                // Longer than any query we answer: already dequeued, ignored.
                Err(udp::RecvError::Truncated) => {
                    self.front.dns.counters.ignored += 1;
                    continue;
                }
                Err(udp::RecvError::Exhausted) => break,
            };
            let names = &self.front.plan().names;
            let lookup = |s: &str| names.iter().find(|(n, _)| n == s).map(|(_, ip)| *ip);
            let outcome = dns::respond(&query[..len], lookup);
            let c = &mut self.front.dns.counters;
            let reply = match outcome {
                Ok((bytes, kind)) => {
                    match kind {
                        Replied::Answer => c.answers += 1,
                        Replied::NxDomain => c.nxdomain += 1,
                        Replied::NoData => c.nodata += 1,
                        Replied::FormErr => c.formerr += 1,
                        Replied::NotImp => c.notimp += 1,
                    }
                    bytes
                }
                Err(Silent::TooShort | Silent::TooLong | Silent::NotAQuery | Silent::Encode) => {
                    c.ignored += 1;
                    continue;
                }
            };
            let socket = self.sockets.get_mut::<udp::Socket>(handle);
            if socket.send_slice(&reply, meta.endpoint).is_err() {
                self.front.dns.counters.send_failed += 1;
            }
        }
    }
}
