//! ICMP echo (`ping`): one outstanding echo request at a time, driven by the `net` task.
//!
//! A client (the shell) calls [`ping_once`]: it queues an echo request on the ICMP socket
//! and blocks; the `net` task matches the reply (ident + sequence number) or notices the
//! timeout, records the outcome, and wakes the client. The RTT is measured in the `net`
//! task right after smoltcp delivered the reply, not when the client gets to run.
//! Answering other nodes' echo requests is smoltcp's job (it replies by itself).

use alloc::vec;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};

/// Echo payload bytes (like the classic 56-byte ping).
pub const PAYLOAD_BYTES: usize = 56;
/// The identifier our echo requests carry.
const IDENT: u16 = 0x5859;
const SOCKET_PACKETS: usize = 8;

/// How one echo ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply { seq: u16, rtt_us: u64, bytes: usize },
    Timeout { seq: u16 },
}

/// Why a ping could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingError {
    /// The node has no network.
    NoNetwork,
    /// Another ping is still outstanding.
    Busy,
    /// The ICMP socket refused the request (buffer full or no route).
    SendFailed,
}

struct Outstanding {
    target: Ipv4Address,
    seq: u16,
    sent_us: u64,
    deadline_us: u64,
}

/// The ping state inside the stack.
pub struct Pinger {
    outstanding: Option<Outstanding>,
    outcome: Option<Outcome>,
}

pub(super) fn new_socket() -> icmp::Socket<'static> {
    let rx = icmp::PacketBuffer::new(
        vec![icmp::PacketMetadata::EMPTY; SOCKET_PACKETS],
        vec![0; SOCKET_PACKETS * 256],
    );
    let tx = icmp::PacketBuffer::new(
        vec![icmp::PacketMetadata::EMPTY; SOCKET_PACKETS],
        vec![0; SOCKET_PACKETS * 256],
    );
    let mut socket = icmp::Socket::new(rx, tx);
    socket
        .bind(icmp::Endpoint::Ident(IDENT))
        .expect("a fresh ICMP socket binds");
    socket
}

impl Pinger {
    pub(super) fn new() -> Pinger {
        Pinger {
            outstanding: None,
            outcome: None,
        }
    }

    fn send(
        &mut self,
        socket: &mut icmp::Socket,
        target: Ipv4Address,
        seq: u16,
        now_us: u64,
        timeout_us: u64,
    ) -> Result<(), PingError> {
        if self.outstanding.is_some() {
            return Err(PingError::Busy);
        }
        let data = [0xa5u8; PAYLOAD_BYTES];
        let repr = Icmpv4Repr::EchoRequest {
            ident: IDENT,
            seq_no: seq,
            data: &data,
        };
        let buf = socket
            .send(repr.buffer_len(), IpAddress::Ipv4(target))
            .map_err(|_| PingError::SendFailed)?;
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(buf),
            &ChecksumCapabilities::default(),
        );
        self.outcome = None;
        self.outstanding = Some(Outstanding {
            target,
            seq,
            sent_us: now_us,
            deadline_us: now_us + timeout_us,
        });
        Ok(())
    }

    /// Takes replies off the socket and notices the timeout.
    pub(super) fn service(&mut self, socket: &mut icmp::Socket, now_us: u64) {
        while let Ok((bytes, from)) = socket.recv() {
            let Some(out) = &self.outstanding else {
                continue;
            };
            let Ok(packet) = Icmpv4Packet::new_checked(bytes) else {
                continue;
            };
            let Ok(Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            }) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default())
            else {
                continue;
            };
            if ident == IDENT && seq_no == out.seq && from == IpAddress::Ipv4(out.target) {
                let rtt_us = now_us.saturating_sub(out.sent_us);
                self.outcome = Some(Outcome::Reply {
                    seq: seq_no,
                    rtt_us,
                    bytes: data.len(),
                });
                self.outstanding = None;
            }
        }
        if let Some(out) = &self.outstanding {
            if now_us >= out.deadline_us {
                self.outcome = Some(Outcome::Timeout { seq: out.seq });
                self.outstanding = None;
            }
        }
    }

    /// When the outstanding echo times out.
    pub(super) fn deadline_us(&self) -> Option<u64> {
        self.outstanding.as_ref().map(|o| o.deadline_us)
    }
}

/// Sends one echo request to `target` and waits for the reply or `timeout_us`.
pub fn ping_once(target: Ipv4Address, seq: u16, timeout_us: u64) -> Result<Outcome, PingError> {
    let now_us = crate::time::now_us();
    super::with_stack(|s| {
        let (pinger, socket) = s.ping_parts();
        pinger.send(socket, target, seq, now_us, timeout_us)
    })
    .ok_or(PingError::NoNetwork)??;
    super::kick();
    Ok(super::wait_for(|s| s.pinger.outcome.take()))
}
