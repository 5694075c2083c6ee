//! MAC addresses and the learning table of the switch (IEEE 802.1D transparent bridging,
//! reduced to what a one-segment lab needs: learn, forward, flood; no ageing, no spanning tree
//! since the fabric is a single switch and cannot loop).
//!
//! Key types: [`Mac`], [`MacTable`] (bounded source-MAC -> port map), [`Egress`] (where a frame
//! goes). Pure: no sockets.

use std::collections::BTreeMap;
use std::fmt;

use super::NodeId;

/// Bytes of an Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HEADER_BYTES: usize = 14;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The conventional per-node address the fabric suggests for node `id`: QEMU's
    /// 52:54:00 prefix (locally administered, unicast) followed by the id.
    pub fn for_node(id: NodeId) -> Mac {
        let b = id.to_be_bytes();
        let mac = Mac([0x52, 0x54, 0x00, b[1], b[2], b[3]]);
        assert!(!mac.is_group());
        mac
    }

    /// Group (multicast or broadcast) addresses have the I/G bit, bit 0 of the first octet.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Destination address of a frame; the caller checked the frame holds a header.
    pub fn dst_of(frame: &[u8]) -> Mac {
        assert!(frame.len() >= ETH_HEADER_BYTES);
        Mac(frame[0..6].try_into().expect("6 bytes"))
    }

    /// Source address of a frame; the caller checked the frame holds a header.
    pub fn src_of(frame: &[u8]) -> Mac {
        assert!(frame.len() >= ETH_HEADER_BYTES);
        Mac(frame[6..12].try_into().expect("6 bytes"))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Where the switch sends a frame that arrived on some port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// The destination was learned on this port.
    Unicast(usize),
    /// Broadcast, multicast or unknown destination: every port but the ingress one.
    Flood,
    /// The destination lives on the ingress port itself: nothing to do.
    Filter,
}

/// Bounded map from source MAC to the port it was last seen on.
pub struct MacTable {
    ports: BTreeMap<Mac, usize>,
    entries_max: usize,
    /// Source addresses not learned because the table was full.
    pub overflows: u64,
}

impl MacTable {
    pub fn new(entries_max: usize) -> MacTable {
        assert!(entries_max > 0);
        MacTable {
            ports: BTreeMap::new(),
            entries_max,
            overflows: 0,
        }
    }

    /// Learn that `src` lives behind `port`. Group and all-zero sources are never learned (a
    /// forged broadcast source must not capture broadcast traffic). A station that moves is
    /// re-learned on its new port.
    pub fn learn(&mut self, src: Mac, port: usize) {
        if src.is_group() || src.0 == [0; 6] {
            return;
        }
        if let Some(p) = self.ports.get_mut(&src) {
            *p = port;
        } else if self.ports.len() < self.entries_max {
            self.ports.insert(src, port);
        } else {
            self.overflows += 1;
        }
        assert!(self.ports.len() <= self.entries_max);
    }

    pub fn lookup(&self, mac: Mac) -> Option<usize> {
        self.ports.get(&mac).copied()
    }

    /// Forwarding decision for a frame to `dst` that arrived on `ingress`.
    pub fn egress(&self, ingress: usize, dst: Mac) -> Egress {
        if dst.is_group() {
            return Egress::Flood;
        }
        match self.lookup(dst) {
            Some(p) if p == ingress => Egress::Filter,
            Some(p) => Egress::Unicast(p),
            None => Egress::Flood,
        }
    }

    /// Some unicast address learned on `port`, lowest first (used to aim garbage at a NIC).
    pub fn any_on_port(&self, port: usize) -> Option<Mac> {
        self.ports.iter().find(|(_, &p)| p == port).map(|(m, _)| *m)
    }

    /// Snapshot of the table, in address order.
    pub fn entries(&self) -> Vec<(Mac, usize)> {
        self.ports.iter().map(|(m, p)| (*m, *p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_forwards_filters_and_floods() {
        let mut t = MacTable::new(8);
        let (a, b) = (Mac::for_node(1), Mac::for_node(2));
        assert_eq!(t.egress(0, b), Egress::Flood, "unknown destination floods");
        t.learn(a, 0);
        t.learn(b, 1);
        assert_eq!(t.egress(0, b), Egress::Unicast(1));
        assert_eq!(t.egress(1, a), Egress::Unicast(0));
        assert_eq!(t.egress(1, b), Egress::Filter);
        assert_eq!(t.egress(0, Mac::BROADCAST), Egress::Flood);
        assert_eq!(t.egress(0, Mac([0x33, 0x33, 0, 0, 0, 1])), Egress::Flood);
        t.learn(b, 2); // the station moved
        assert_eq!(t.egress(0, b), Egress::Unicast(2));
    }

    #[test]
    fn never_learns_group_sources_and_stays_bounded() {
        let mut t = MacTable::new(2);
        t.learn(Mac::BROADCAST, 0);
        t.learn(Mac([0; 6]), 0);
        assert!(t.entries().is_empty());
        for id in 1..=5 {
            t.learn(Mac::for_node(id), 0);
        }
        assert_eq!(t.entries().len(), 2);
        assert_eq!(t.overflows, 3);
    }

    #[test]
    fn display_and_node_macs() {
        assert_eq!(Mac::for_node(0x0102).to_string(), "52:54:00:00:01:02");
        assert!(Mac::BROADCAST.is_group());
        let frame = [[0xffu8; 6], Mac::for_node(7).0, [0x08, 0x06, 0, 0, 0, 0]].concat();
        assert_eq!(Mac::dst_of(&frame), Mac::BROADCAST);
        assert_eq!(Mac::src_of(&frame), Mac::for_node(7));
    }
}
