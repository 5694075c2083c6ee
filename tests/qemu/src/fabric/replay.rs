//! Recording frames off the wire and putting them back (issue #15: a node replaying captured
//! datagrams must change nothing), and hand-made frames for forgery tests.
//!
//! - [`Nemesis::start_recording`] / [`Nemesis::stop_recording`]: every frame a node sends
//!   (as it entered the fabric, before any fault) is kept in memory with its ingress port, up
//!   to a bound; [`Recorded`] is what comes back.
//! - [`Nemesis::replay`]: each recorded frame is delivered again to where the switch sent it
//!   (the port its destination MAC is learned on, or every other port for a broadcast),
//!   straight onto the wire: partitions, loss and delay do not apply.
//! - [`Nemesis::inject`]: arbitrary frames onto one node's wire, the way a rogue host on the
//!   same segment would send them.
//! - [`udp_frame`]: Ethernet + IPv4 + UDP around a payload (IPv4 header checksum computed, UDP
//!   checksum zero, which IPv4 allows), for forging transport datagrams.
//!
//! Injected and replayed frames are counted per port in `PortStats::injected`.

use super::mac::Mac;
use super::switch::State;
use super::{Nemesis, NodeId};

/// One frame as a node sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The node whose port it entered on.
    pub from: NodeId,
    pub frame: Vec<u8>,
}

/// Recording in progress.
pub(super) struct Recorder {
    pub frames: Vec<(usize, Vec<u8>)>,
    pub max: usize,
    pub dropped: u64,
}

impl Recorder {
    pub fn record(&mut self, ingress: usize, frame: &[u8]) {
        if self.frames.len() < self.max {
            self.frames.push((ingress, frame.to_vec()));
        } else {
            self.dropped += 1;
        }
    }
}

impl State {
    /// Delivers `frame` straight to port `to` (no faults), counted as injected.
    pub(super) fn inject_to(&mut self, to: usize, frame: Vec<u8>) {
        self.ports[to].stats.injected += 1;
        self.deliver_direct(to, frame);
    }

    /// Delivers a recorded frame where the switch would send it now (no faults).
    pub(super) fn replay_frame(&mut self, ingress: usize, frame: &[u8]) {
        if frame.len() < super::mac::ETH_HEADER_BYTES {
            return;
        }
        match self.macs.egress(ingress, Mac::dst_of(frame)) {
            super::mac::Egress::Filter => {}
            super::mac::Egress::Unicast(to) => self.inject_to(to, frame.to_vec()),
            super::mac::Egress::Flood => {
                for to in (0..self.ports.len()).filter(|&q| q != ingress) {
                    self.inject_to(to, frame.to_vec());
                }
            }
        }
    }
}

impl Nemesis {
    /// Starts keeping every frame nodes send (at most `max_frames`; later ones are counted
    /// and dropped from the recording, not from the wire).
    pub fn start_recording(&self, max_frames: usize) {
        self.shared.lock().recorder = Some(Recorder {
            frames: Vec::new(),
            max: max_frames,
            dropped: 0,
        });
    }

    /// Stops recording; returns the frames in arrival order.
    pub fn stop_recording(&self) -> Vec<Recorded> {
        let mut state = self.shared.lock();
        let Some(recorder) = state.recorder.take() else {
            return Vec::new();
        };
        recorder
            .frames
            .into_iter()
            .map(|(port, frame)| Recorded {
                from: state.ports[port].node,
                frame,
            })
            .collect()
    }

    /// Delivers recorded frames again (module docs).
    pub fn replay(&self, frames: &[Recorded]) {
        let mut state = self.shared.lock();
        for r in frames {
            let ingress = state.rules.port(r.from);
            state.replay_frame(ingress, &r.frame);
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Puts `frames` onto node `to`'s wire.
    pub fn inject(&self, to: NodeId, frames: &[Vec<u8>]) {
        let mut state = self.shared.lock();
        let port = state.rules.port(to);
        for frame in frames {
            state.inject_to(port, frame.clone());
        }
        drop(state);
        self.shared.wake.notify_one();
    }
}

/// An Ethernet II + IPv4 + UDP frame carrying `payload`.
pub fn udp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&dst_ip);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_has_a_valid_ip_checksum() {
        let f = udp_frame(
            Mac([2, 0, 0, 0, 0, 1]),
            Mac([2, 0, 0, 0, 0, 2]),
            [169, 254, 77, 1],
            [169, 254, 77, 2],
            (7400, 7400),
            b"hello",
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        let ip = &f[14..34];
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff);
        assert_eq!(&f[f.len() - 5..], b"hello");
    }
}
