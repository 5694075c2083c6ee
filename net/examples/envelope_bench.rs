//! Micro-benchmark of the envelope codec on the host:
//! `cargo run -p net --release --example envelope_bench`.
//!
//! Prints, per payload size, the cost of `Endpoint::encode` and of `Endpoint::receive`
//! (decode + checksum + filters + duplicate window), as `METRIC` lines.

use std::hint::black_box;
use std::time::Instant;

use net::{Endpoint, Kind, TransportConfig, MAX_DATAGRAM_LEN, MAX_PAYLOAD_LEN};

const ROUNDS: u32 = 200_000;

fn main() {
    let mut sender = Endpoint::new(TransportConfig::new(7, 1), 0);
    let mut config = TransportConfig::new(7, 2);
    config.dedup = false; // every round re-receives the same bytes
    let mut receiver = Endpoint::new(config, 0);
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    for payload_len in [0usize, 64, 512, MAX_PAYLOAD_LEN] {
        let payload = vec![0xA5u8; payload_len];
        let started = Instant::now();
        let mut len = 0;
        for _ in 0..ROUNDS {
            len = sender
                .encode(Kind::Raft, 2, black_box(&payload), &mut buf)
                .unwrap();
        }
        let encode_ns = started.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let envelope = receiver.receive(black_box(&buf[..len])).unwrap();
            black_box(envelope.payload);
        }
        let decode_ns = started.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("METRIC envelope_encode_ns_{len}b {encode_ns:.0} ns");
        println!("METRIC envelope_receive_ns_{len}b {decode_ns:.0} ns");
    }
}
