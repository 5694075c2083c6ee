//! The receive pre-filter: which Ethernet frames the network stack gets to see.
//!
//! The fabric's nemesis floods nodes with garbage frames (random bytes, some with a
//! plausible EtherType) and the stack must drop them cheaply and *count* them. smoltcp
//! drops malformed frames silently, so the driver runs every received frame through
//! [`classify`] first: only well-formed ARP and IPv4 frames addressed to this node (or
//! broadcast) reach smoltcp; everything else is dropped under exactly one [`DropReason`],
//! checked in the order the enum lists them. Layouts: Ethernet II (IEEE 802.3), ARP
//! (RFC 826), IPv4 header and its checksum (RFC 791, RFC 1071).

/// Ethernet header bytes (no VLAN tag, no FCS).
pub const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ARP_LEN: usize = 28;
const IPV4_MIN_HEADER_LEN: usize = 20;
/// Largest frame accepted: 1500-byte MTU plus the Ethernet header.
pub const FRAME_MAX_LEN: usize = 1514;

/// Why a frame was dropped before the stack saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or longer than [`FRAME_MAX_LEN`].
    BadLength,
    /// Unicast to another station's MAC.
    NotOurMac,
    /// Neither ARP nor IPv4.
    BadEtherType,
    /// ARP that is not Ethernet/IPv4 request or reply, or is truncated.
    BadArp,
    /// IPv4 with a bad version, header length, total length or header checksum.
    BadIpv4,
    /// Well-formed, but for another IPv4 address (ARP target or IPv4 destination).
    NotOurIp,
}

impl DropReason {
    /// Every reason, in check order.
    pub const ALL: [DropReason; 6] = [
        DropReason::BadLength,
        DropReason::NotOurMac,
        DropReason::BadEtherType,
        DropReason::BadArp,
        DropReason::BadIpv4,
        DropReason::NotOurIp,
    ];
    /// Number of reasons (for counter arrays).
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index `0..COUNT`.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name the `net` shell command prints.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BadLength => "bad_length",
            DropReason::NotOurMac => "not_our_mac",
            DropReason::BadEtherType => "bad_ethertype",
            DropReason::BadArp => "bad_arp",
            DropReason::BadIpv4 => "bad_ipv4",
            DropReason::NotOurIp => "not_our_ip",
        }
    }
}

/// This node's addresses, as the filter needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddrs {
    pub mac: [u8; 6],
    pub ipv4: [u8; 4],
    /// The subnet's broadcast address (e.g. 169.254.77.255).
    pub ipv4_broadcast: [u8; 4],
    /// Service addresses this node answers for now (the front door's VIPs): the first
    /// `extra_len` entries count.
    pub extra: [[u8; 4]; EXTRA_ADDRS_MAX],
    pub extra_len: usize,
}

/// Most service addresses one node answers for at once (a bound on the filter's work per
/// frame; the front door counts what does not fit).
pub const EXTRA_ADDRS_MAX: usize = 7;

impl LocalAddrs {
    /// Addresses for a node with no service addresses.
    pub const fn new(mac: [u8; 6], ipv4: [u8; 4], ipv4_broadcast: [u8; 4]) -> Self {
        Self {
            mac,
            ipv4,
            ipv4_broadcast,
            extra: [[0; 4]; EXTRA_ADDRS_MAX],
            extra_len: 0,
        }
    }

    /// Whether `ip` is one of this node's unicast addresses (its own or a service's).
    pub fn is_ours(&self, ip: &[u8]) -> bool {
        ip == self.ipv4
            || self.extra[..self.extra_len.min(EXTRA_ADDRS_MAX)]
                .iter()
                .any(|a| ip == a)
    }

    /// Replaces the service addresses (at most [`EXTRA_ADDRS_MAX`]; the rest are ignored).
    pub fn set_extra(&mut self, addrs: &[[u8; 4]]) {
        self.extra_len = addrs.len().min(EXTRA_ADDRS_MAX);
        self.extra[..self.extra_len].copy_from_slice(&addrs[..self.extra_len]);
    }
}

/// Accepts a frame for the stack, or says why not.
pub fn classify(frame: &[u8], local: &LocalAddrs) -> Result<(), DropReason> {
    if frame.len() < ETH_HEADER_LEN || frame.len() > FRAME_MAX_LEN {
        return Err(DropReason::BadLength);
    }
    let dst: [u8; 6] = frame[0..6].try_into().expect("six bytes");
    if dst != local.mac && dst != [0xff; 6] {
        return Err(DropReason::NotOurMac);
    }
    let body = &frame[ETH_HEADER_LEN..];
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_ARP => check_arp(body, local),
        ETHERTYPE_IPV4 => check_ipv4(body, local),
        _ => Err(DropReason::BadEtherType),
    }
}

fn check_arp(arp: &[u8], local: &LocalAddrs) -> Result<(), DropReason> {
    if arp.len() < ARP_LEN {
        return Err(DropReason::BadArp);
    }
    let (htype, ptype) = (
        u16::from_be_bytes([arp[0], arp[1]]),
        u16::from_be_bytes([arp[2], arp[3]]),
    );
    let (hlen, plen, op) = (arp[4], arp[5], u16::from_be_bytes([arp[6], arp[7]]));
    if htype != 1 || ptype != ETHERTYPE_IPV4 || hlen != 6 || plen != 4 || !(op == 1 || op == 2) {
        return Err(DropReason::BadArp);
    }
    if !local.is_ours(&arp[24..28]) {
        return Err(DropReason::NotOurIp);
    }
    Ok(())
}

fn check_ipv4(ip: &[u8], local: &LocalAddrs) -> Result<(), DropReason> {
    if ip.len() < IPV4_MIN_HEADER_LEN || ip[0] >> 4 != 4 {
        return Err(DropReason::BadIpv4);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if header_len < IPV4_MIN_HEADER_LEN || total_len < header_len || total_len > ip.len() {
        return Err(DropReason::BadIpv4);
    }
    if internet_checksum(&ip[..header_len]) != 0 {
        return Err(DropReason::BadIpv4);
    }
    let dst = &ip[16..20];
    if !local.is_ours(dst) && dst != local.ipv4_broadcast && dst != [255; 4] {
        return Err(DropReason::NotOurIp);
    }
    Ok(())
}

/// Bytes of an Ethernet frame carrying one ARP packet.
pub const ARP_FRAME_LEN: usize = ETH_HEADER_LEN + ARP_LEN;

/// A gratuitous ARP announcement (RFC 5227 §2.4): a broadcast ARP request whose sender and
/// target protocol addresses are both `ip`, sent by the node that now answers for `ip`, so
/// every neighbour that caches `ip` re-points it at `mac` without asking.
pub fn announcement(mac: [u8; 6], ip: [u8; 4]) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let arp = &mut f[ETH_HEADER_LEN..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes());
    arp[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&1u16.to_be_bytes());
    arp[8..14].copy_from_slice(&mac);
    arp[14..18].copy_from_slice(&ip);
    // Target hardware address stays zero, as in a request.
    arp[24..28].copy_from_slice(&ip);
    f
}

/// The RFC 1071 ones'-complement sum, folded and complemented: 0 over a header whose
/// checksum field is correct.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const LOCAL: LocalAddrs = LocalAddrs::new(
        [0x52, 0x54, 0, 0, 0, 2],
        [169, 254, 77, 2],
        [169, 254, 77, 255],
    );

    #[test]
    fn an_announcement_is_a_broadcast_request_for_the_address_itself() {
        let vip = [169, 254, 77, 200];
        let f = announcement([0x52, 0x54, 0, 0, 0, 7], vip);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &[0x52, 0x54, 0, 0, 0, 7]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[28..32], &vip, "sender address");
        assert_eq!(&f[38..42], &vip, "target address");
        // A node answering for the address accepts it; the others drop it as not theirs.
        let mut owner = LOCAL;
        owner.set_extra(&[vip]);
        assert_eq!(classify(&f, &owner), Ok(()));
        assert_eq!(classify(&f, &LOCAL), Err(DropReason::NotOurIp));
    }

    #[test]
    fn service_addresses_are_ours_only_while_set() {
        let vip = [169, 254, 77, 200];
        let mut local = LOCAL;
        let arp_frame = eth([0xff; 6], 0x0806, &arp(vip));
        let ip_frame = eth(LOCAL.mac, 0x0800, &ipv4(vip, 8));
        assert_eq!(classify(&arp_frame, &local), Err(DropReason::NotOurIp));
        assert_eq!(classify(&ip_frame, &local), Err(DropReason::NotOurIp));
        local.set_extra(&[[169, 254, 77, 201], vip]);
        assert_eq!(classify(&arp_frame, &local), Ok(()));
        assert_eq!(classify(&ip_frame, &local), Ok(()));
        local.set_extra(&[]);
        assert_eq!(classify(&ip_frame, &local), Err(DropReason::NotOurIp));
        // More than fit: the surplus is ignored, never out of bounds.
        local.set_extra(&[vip; 20]);
        assert_eq!(local.extra_len, EXTRA_ADDRS_MAX);
        assert_eq!(classify(&ip_frame, &local), Ok(()));
    }

    fn eth(dst: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::from(dst);
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn ipv4(dst: [u8; 4], payload_len: usize) -> Vec<u8> {
        let total = (20 + payload_len) as u16;
        let mut h = alloc::vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 169, 254, 77, 1];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&dst);
        let sum = internet_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.resize(20 + payload_len, 0xab);
        h
    }

    fn arp(target: [u8; 4]) -> Vec<u8> {
        let mut a = alloc::vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1, 169, 254, 77, 1]);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target);
        a
    }

    #[test]
    fn accepts_arp_and_ipv4_for_us() {
        assert_eq!(
            classify(&eth([0xff; 6], 0x0806, &arp(LOCAL.ipv4)), &LOCAL),
            Ok(())
        );
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x0800, &ipv4(LOCAL.ipv4, 30)), &LOCAL),
            Ok(())
        );
        assert_eq!(
            classify(
                &eth([0xff; 6], 0x0800, &ipv4(LOCAL.ipv4_broadcast, 0)),
                &LOCAL
            ),
            Ok(())
        );
        // Ethernet padding after the IPv4 datagram is allowed.
        let mut padded = eth(LOCAL.mac, 0x0800, &ipv4(LOCAL.ipv4, 2));
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(classify(&padded, &LOCAL), Ok(()));
    }

    #[test]
    fn each_reason_in_order() {
        assert_eq!(classify(&[0; 13], &LOCAL), Err(DropReason::BadLength));
        assert_eq!(classify(&[0xff; 1515], &LOCAL), Err(DropReason::BadLength));
        assert_eq!(
            classify(
                &eth([0x52, 0x54, 0, 0, 0, 3], 0x0800, &ipv4(LOCAL.ipv4, 0)),
                &LOCAL
            ),
            Err(DropReason::NotOurMac)
        );
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x86dd, &[0; 40]), &LOCAL),
            Err(DropReason::BadEtherType)
        );
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x0806, &arp(LOCAL.ipv4)[..27]), &LOCAL),
            Err(DropReason::BadArp)
        );
        let mut bad_op = arp(LOCAL.ipv4);
        bad_op[7] = 9;
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x0806, &bad_op), &LOCAL),
            Err(DropReason::BadArp)
        );
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x0806, &arp([169, 254, 77, 3])), &LOCAL),
            Err(DropReason::NotOurIp)
        );
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x0800, &ipv4([169, 254, 77, 3], 8)), &LOCAL),
            Err(DropReason::NotOurIp)
        );
    }

    #[test]
    fn ipv4_header_checks() {
        let good = ipv4(LOCAL.ipv4, 8);
        for byte in 0..20 {
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[byte] ^= 1 << bit;
                let verdict = classify(&eth(LOCAL.mac, 0x0800, &flipped), &LOCAL);
                assert!(verdict.is_err(), "flip of byte {byte} bit {bit} accepted");
            }
        }
        let mut short_total = good.clone();
        short_total.truncate(20);
        assert_eq!(
            classify(&eth(LOCAL.mac, 0x0800, &short_total), &LOCAL),
            Err(DropReason::BadIpv4)
        );
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example words sum to 0xddf2 before complement.
        let words = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&words), !0xddf2);
        // Odd lengths pad with a zero byte.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
    }
}
