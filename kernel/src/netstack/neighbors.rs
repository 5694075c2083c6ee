//! Static neighbours on the fabric: every configured peer's MAC address is known from its
//! id (`mac_of`, docs/networking.md), so the kernel tells smoltcp up front instead of
//! leaving it to ARP.
//!
//! Why: smoltcp resolves addresses with one ARP request per second *for the whole
//! neighbour cache*, and keeps a datagram at the head of its socket's queue until its
//! neighbour answers. A node that boots (or reboots) while a peer is dead spends that one
//! request per second on the dead peer forever, so the live peers behind it are never
//! resolved and everything it sends to them waits in the queue: after a double failure a
//! restarted node could hear its surviving peer but never answer it, and each kept the
//! other `down` (issue #11). Seeding the cache with the peers' fixed addresses, and
//! refreshing it before smoltcp's 60 s entry lifetime runs out, removes ARP from the
//! cluster's path entirely; a dead peer's datagrams simply leave and are lost on the fabric.
//!
//! How: an ARP *reply* from the peer, addressed to us, is fed to smoltcp's ingress through a
//! one-frame device; smoltcp fills its cache from any ARP packet aimed at it and answers
//! nothing to a reply.

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Ipv4Address,
};

/// How often the entries are refreshed (smoltcp keeps one for 60 s).
pub const REFRESH_US: u64 = 20_000_000;
/// Ethernet header plus an Ethernet/IPv4 ARP packet.
const FRAME_BYTES: usize = 14 + 28;

/// A device that receives one prepared frame and transmits nothing.
struct OneFrame {
    frame: Option<[u8; FRAME_BYTES]>,
}

struct Rx([u8; FRAME_BYTES]);
struct Sink;

impl phy::Device for OneFrame {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Sink;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Rx, Sink)> {
        self.frame.take().map(|frame| (Rx(frame), Sink))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Sink> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Sink {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Nothing is sent: smoltcp answers a reply with nothing, and this is never called
        // for our frames; should it be, the bytes go nowhere.
        let mut scratch = [0u8; 1514];
        f(&mut scratch[..len.min(1514)])
    }
}

/// The ARP reply "`peer_ip` is at `peer_mac`", sent to us.
fn arp_reply(
    local: (EthernetAddress, Ipv4Address),
    peer: (EthernetAddress, Ipv4Address),
) -> [u8; FRAME_BYTES] {
    let mut bytes = [0u8; FRAME_BYTES];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    EthernetRepr {
        src_addr: peer.0,
        dst_addr: local.0,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut frame);
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: peer.0,
        source_protocol_addr: peer.1,
        target_hardware_addr: local.0,
        target_protocol_addr: local.1,
    };
    debug_assert_eq!(repr.buffer_len(), FRAME_BYTES - 14);
    repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    bytes
}

/// Fills smoltcp's neighbour cache with each `(mac, ip)` in `peers`.
pub fn seed(
    iface: &mut Interface,
    sockets: &mut SocketSet<'_>,
    now: Instant,
    local: (EthernetAddress, Ipv4Address),
    peers: impl Iterator<Item = (EthernetAddress, Ipv4Address)>,
) {
    for peer in peers {
        let mut device = OneFrame {
            frame: Some(arp_reply(local, peer)),
        };
        let _ = iface.poll_ingress_single(now, &mut device, sockets);
        debug_assert!(device.frame.is_none(), "the seed frame was not taken");
    }
}
