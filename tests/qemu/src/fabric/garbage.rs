//! Garbage frames: random bytes of random length, shaped so that most of them get past the
//! guest NIC's address filter and into its driver and network stack (the point is to fuzz the
//! receive path, not the NIC's filter).
//!
//! Key types: [`GarbageJob`] (a paced burst aimed at one port) and [`garbage_frame`].
//! Deterministic: the bytes come from the port's own garbage stream of the fabric seed.

use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::mac::{Mac, ETH_HEADER_BYTES};

/// Largest garbage frame: a full Ethernet frame without FCS.
pub const GARBAGE_FRAME_BYTES_MAX: usize = 1514;
/// Injection rates above this are a scenario bug (they would just fill the node's socket).
pub const GARBAGE_RATE_PER_S_MAX: u32 = 100_000;
/// One job never injects more than this many frames.
pub const GARBAGE_JOB_FRAMES_MAX: u64 = 10_000_000;

/// A paced burst of garbage frames to one port, living in the timer queue: each firing injects
/// one frame and re-arms the job `interval_us` later until `remaining` reaches zero.
#[derive(Clone, Debug)]
pub struct GarbageJob {
    pub port: usize,
    pub remaining: u64,
    pub interval_us: u64,
    /// When the next frame is due (microseconds since the fabric started).
    pub due_us: u64,
    /// Distinguishes jobs so `stop_garbage` can cancel them all.
    pub job_id: u64,
}

impl GarbageJob {
    /// A job of `rate_per_s` frames per second for `duration_us`; at least one frame.
    pub fn new(
        port: usize,
        rate_per_s: u32,
        duration_us: u64,
        due_us: u64,
        job_id: u64,
    ) -> GarbageJob {
        assert!(
            rate_per_s > 0 && rate_per_s <= GARBAGE_RATE_PER_S_MAX,
            "rate {rate_per_s}/s"
        );
        let frames = (u128::from(rate_per_s) * u128::from(duration_us) / 1_000_000).max(1);
        assert!(
            frames <= u128::from(GARBAGE_JOB_FRAMES_MAX),
            "garbage job of {frames} frames"
        );
        let interval_us = 1_000_000 / u64::from(rate_per_s);
        GarbageJob {
            port,
            remaining: frames as u64,
            interval_us,
            due_us,
            job_id,
        }
    }
}

/// One garbage frame. The destination is broadcast half the time, the node's own learned MAC
/// (when known, else broadcast) a quarter, and random bytes a quarter. When the frame is long
/// enough for a header, the EtherType is IPv4, ARP or IPv6 three times out of four so the
/// guest's protocol parsers see it too. Lengths run from 1 byte to a full frame.
pub fn garbage_frame(rng: &mut Xoshiro256PlusPlus, node_mac: Option<Mac>) -> Vec<u8> {
    let len = 1 + (rng.next_u64() % GARBAGE_FRAME_BYTES_MAX as u64) as usize;
    let mut frame = vec![0u8; len];
    rng.fill_bytes(&mut frame);
    let shape = rng.next_u64();
    if len >= 6 {
        let dst = match shape % 4 {
            0 | 1 => Some(Mac::BROADCAST),
            2 => Some(node_mac.unwrap_or(Mac::BROADCAST)),
            _ => None,
        };
        if let Some(dst) = dst {
            frame[0..6].copy_from_slice(&dst.0);
        }
    }
    if len >= ETH_HEADER_BYTES {
        let ether_type: Option<u16> = match (shape >> 8) % 4 {
            0 => Some(0x0800),
            1 => Some(0x0806),
            2 => Some(0x86dd),
            _ => None,
        };
        if let Some(t) = ether_type {
            frame[12..14].copy_from_slice(&t.to_be_bytes());
        }
    }
    assert!((1..=GARBAGE_FRAME_BYTES_MAX).contains(&frame.len()));
    frame
}

#[cfg(test)]
mod tests {
    use super::super::rules::{stream_rng, STREAM_GARBAGE};
    use super::*;

    #[test]
    fn frames_are_varied_bounded_and_repeatable() {
        let mut a = stream_rng(3, STREAM_GARBAGE, 1, 0);
        let mut b = stream_rng(3, STREAM_GARBAGE, 1, 0);
        let mac = Mac::for_node(1);
        let (mut broadcast, mut aimed, mut short) = (0, 0, 0);
        for _ in 0..2_000 {
            let f = garbage_frame(&mut a, Some(mac));
            assert_eq!(
                f,
                garbage_frame(&mut b, Some(mac)),
                "same seed, same garbage"
            );
            if f.len() >= 6 && f[0..6] == [0xff; 6] {
                broadcast += 1;
            }
            if f.len() >= 6 && f[0..6] == mac.0 {
                aimed += 1;
            }
            short += usize::from(f.len() < ETH_HEADER_BYTES);
        }
        assert!((800..=1_200).contains(&broadcast), "broadcast {broadcast}");
        assert!((350..=650).contains(&aimed), "aimed {aimed}");
        assert!(short > 0, "some frames should be shorter than a header");
    }

    #[test]
    fn job_pacing() {
        let j = GarbageJob::new(0, 100, 2_000_000, 0, 1);
        assert_eq!((j.remaining, j.interval_us), (200, 10_000));
        assert_eq!(
            GarbageJob::new(0, 1, 10, 0, 1).remaining,
            1,
            "at least one frame"
        );
    }
}
