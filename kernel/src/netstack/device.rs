//! The smoltcp `Device` over the virtio-net card, with the receive pre-filter and counters.
//!
//! Every received frame first goes through `kcore::frame_filter::classify`; only
//! well-formed ARP/IPv4 frames for this node reach smoltcp, and each dropped frame is
//! counted under one reason (the `net` command prints them). A poll takes at most
//! [`RX_BUDGET`] frames, so a flood of garbage cannot keep the network task (which holds
//! the stack with interrupts masked) busy for long: the task yields and comes back.

use kcore::frame_filter::{self, DropReason, LocalAddrs};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::drivers::virtio::net::NetDevice;

/// Most frames one poll takes from the card.
pub const RX_BUDGET: u32 = 64;
/// The IP MTU we advertise (standard Ethernet).
const MTU_BYTES: usize = 1500;

/// Frame and byte counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Sends the card refused.
    pub tx_errors: u64,
    /// Frames dropped by the pre-filter, per [`DropReason`].
    pub rx_dropped: [u64; DropReason::COUNT],
}

impl Counters {
    /// All frames dropped by the pre-filter.
    pub fn rx_dropped_total(&self) -> u64 {
        self.rx_dropped.iter().sum()
    }
}

/// The card, the filter's view of our addresses, and the counters.
pub struct Device {
    pub nic: NetDevice,
    pub local: LocalAddrs,
    pub counters: Counters,
    /// Frames taken in the current poll (reset by [`Device::start_poll`]).
    taken: u32,
}

impl Device {
    pub fn new(nic: NetDevice, local: LocalAddrs) -> Device {
        Device {
            nic,
            local,
            counters: Counters::default(),
            taken: 0,
        }
    }

    /// Resets the per-poll receive budget.
    pub fn start_poll(&mut self) {
        self.taken = 0;
    }

    /// Whether the last poll stopped because the budget ran out (more frames may wait).
    pub fn budget_exhausted(&self) -> bool {
        self.taken >= RX_BUDGET
    }
}

/// A received frame, already copied out of the card's buffer.
pub struct RxToken {
    frame: [u8; frame_filter::FRAME_MAX_LEN],
    len: usize,
}

/// Permission to send one frame.
pub struct TxToken<'a> {
    device: &'a mut Device,
}

impl phy::Device for Device {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken, TxToken<'_>)> {
        while self.taken < RX_BUDGET {
            let buffer = self.nic.receive()?;
            self.taken += 1;
            let packet = buffer.packet();
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += packet.len() as u64;
            let verdict = frame_filter::classify(packet, &self.local);
            let token = verdict.is_ok().then(|| {
                let mut rx = RxToken {
                    frame: [0; frame_filter::FRAME_MAX_LEN],
                    len: packet.len(),
                };
                rx.frame[..packet.len()].copy_from_slice(packet);
                rx
            });
            self.nic.recycle(buffer);
            match (verdict, token) {
                (Ok(()), Some(rx)) => return Some((rx, TxToken { device: self })),
                (Err(reason), _) => self.counters.rx_dropped[reason.index()] += 1,
                (Ok(()), None) => unreachable!("accepted frames always get a token"),
            }
        }
        None
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        self.nic.can_send().then_some(TxToken { device: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU_BYTES + frame_filter::ETH_HEADER_LEN;
        caps.max_burst_size = Some(1);
        caps
    }
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.frame[..self.len])
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        assert!(
            len <= frame_filter::FRAME_MAX_LEN,
            "smoltcp built a {len}-byte frame"
        );
        let mut frame = [0u8; frame_filter::FRAME_MAX_LEN];
        let result = f(&mut frame[..len]);
        match self.device.nic.send(&frame[..len]) {
            Ok(()) => {
                self.device.counters.tx_frames += 1;
                self.device.counters.tx_bytes += len as u64;
            }
            Err(_) => self.device.counters.tx_errors += 1,
        }
        result
    }
}
