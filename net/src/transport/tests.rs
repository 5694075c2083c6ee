//! Unit tests of encoding errors, the endpoint's receive path and per-kind dispatch.

use super::*;
use crate::envelope::MAX_DATAGRAM_LEN;
use crate::probe::{ProbeConfig, Prober};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Deserialize;

const CLUSTER: u64 = 0xFEED;

fn endpoint(node_id: NodeId) -> Endpoint {
    Endpoint::new(TransportConfig::new(CLUSTER, node_id), 0)
}

/// Records which handler ran, to check dispatch calls exactly one.
#[derive(Default)]
struct Recorder {
    calls: Vec<(&'static str, u64)>,
}

impl Handler for Recorder {
    type Output = Kind;
    fn on_swim(&mut self, e: &Envelope<'_>) -> Kind {
        self.calls.push(("swim", e.header.sender));
        Kind::Swim
    }
    fn on_raft(&mut self, e: &Envelope<'_>) -> Kind {
        self.calls.push(("raft", e.header.sender));
        Kind::Raft
    }
    fn on_control(&mut self, e: &Envelope<'_>) -> Kind {
        self.calls.push(("control", e.header.sender));
        Kind::Control
    }
    fn on_probe_ping(&mut self, e: &Envelope<'_>) -> Kind {
        self.calls.push(("probe_ping", e.header.sender));
        Kind::ProbePing
    }
    fn on_probe_pong(&mut self, e: &Envelope<'_>) -> Kind {
        self.calls.push(("probe_pong", e.header.sender));
        Kind::ProbePong
    }
}

#[test]
fn payload_too_large_and_small_buffer_are_errors() {
    let header = endpoint(1).next_header(Kind::Raft, 2);
    let mut buf = vec![0u8; 4096];
    let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
    assert_eq!(
        encode(&header, &big, &mut buf),
        Err(EncodeError::PayloadTooLarge {
            len: MAX_PAYLOAD_LEN + 1,
            max: MAX_PAYLOAD_LEN
        })
    );
    let mut small = [0u8; HEADER_LEN + 3];
    assert_eq!(
        encode(&header, b"four", &mut small),
        Err(EncodeError::BufferTooSmall {
            needed: 44,
            got: 43
        })
    );
    let mut bad = header;
    bad.sender = BROADCAST;
    assert_eq!(encode(&bad, b"", &mut buf), Err(EncodeError::InvalidSender));
}

#[derive(Debug, PartialEq, serde::Serialize, Deserialize)]
struct Vote {
    term: u64,
    candidate: u64,
    note: String,
}

#[test]
fn postcard_payload_round_trips_without_heap_on_encode() {
    let mut a = endpoint(1);
    let mut b = endpoint(2);
    let vote = Vote {
        term: 42,
        candidate: 1,
        note: "hello".into(),
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    let len = a.encode_postcard(Kind::Raft, 2, &vote, &mut buf).unwrap();
    let envelope = b.receive(&buf[..len]).unwrap();
    assert_eq!(decode_postcard::<Vote>(envelope.payload).unwrap(), vote);
    assert_eq!((a.sent(Kind::Raft), b.received(Kind::Raft)), (1, 1));
}

#[test]
fn postcard_overflow_is_classified() {
    let header = endpoint(1).next_header(Kind::Control, 2);
    let huge = Vote {
        term: 1,
        candidate: 1,
        note: "x".repeat(2000),
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    assert!(matches!(
        encode_postcard(&header, &huge, &mut buf),
        Err(EncodeError::PayloadTooLarge { len, max: MAX_PAYLOAD_LEN }) if len > 2000
    ));
    let small = Vote {
        term: 1,
        candidate: 1,
        note: "x".repeat(100),
    };
    let mut tiny = [0u8; HEADER_LEN + 10];
    assert!(matches!(
        encode_postcard(&header, &small, &mut tiny),
        Err(EncodeError::BufferTooSmall { needed, got: 50 }) if needed > 140
    ));
    let mut short = [0u8; HEADER_LEN - 1];
    assert!(matches!(
        encode_postcard(&header, &small, &mut short),
        Err(EncodeError::BufferTooSmall { .. })
    ));
}

#[test]
fn sequence_numbers_advance_and_duplicates_are_dropped_and_counted() {
    let mut a = Endpoint::new(TransportConfig::new(CLUSTER, 1), u32::MAX);
    let mut b = endpoint(2);
    let mut buf = [0u8; 256];
    let mut frames = Vec::new();
    for _ in 0..3 {
        let len = a.encode(Kind::Swim, 2, b"ping", &mut buf).unwrap();
        frames.push(buf[..len].to_vec());
    }
    let seqs: Vec<u32> = frames
        .iter()
        .map(|f| crate::parse(f).unwrap().header.seq)
        .collect();
    assert_eq!(seqs, [u32::MAX, 0, 1], "the counter wraps");
    for frame in &frames {
        assert!(b.receive(frame).is_ok());
        assert_eq!(
            b.receive(frame),
            Err(ReceiveError::Duplicate {
                sender: 1,
                seq: crate::parse(frame).unwrap().header.seq
            })
        );
    }
    assert_eq!(b.drops().duplicate, 3);
    assert_eq!(b.received(Kind::Swim), 3);
}

#[test]
fn dedup_can_be_turned_off() {
    let mut config = TransportConfig::new(CLUSTER, 2);
    config.dedup = false;
    let mut b = Endpoint::new(config, 0);
    let mut a = endpoint(1);
    let mut buf = [0u8; 128];
    let len = a.encode(Kind::Swim, 2, b"", &mut buf).unwrap();
    assert!(b.receive(&buf[..len]).is_ok());
    assert!(b.receive(&buf[..len]).is_ok());
    assert_eq!(b.drops().total(), 0);
}

#[test]
fn every_rejection_is_counted_under_its_reason() {
    let mut b = endpoint(2);
    let mut other_cluster = Endpoint::new(TransportConfig::new(CLUSTER + 1, 1), 0);
    let mut a = endpoint(1);
    let mut buf = [0u8; 128];
    assert!(matches!(
        b.receive(&[1, 2, 3]),
        Err(ReceiveError::Decode(DecodeError::Truncated { .. }))
    ));
    let len = other_cluster.encode(Kind::Raft, 2, b"", &mut buf).unwrap();
    assert!(matches!(
        b.receive(&buf[..len]),
        Err(ReceiveError::Decode(DecodeError::WrongCluster { .. }))
    ));
    let len = a.encode(Kind::Raft, 3, b"", &mut buf).unwrap();
    assert!(matches!(
        b.receive(&buf[..len]),
        Err(ReceiveError::Decode(DecodeError::NotForMe { receiver: 3 }))
    ));
    let len = a.encode(Kind::Raft, 2, b"abc", &mut buf).unwrap();
    buf[len - 1] ^= 0x40;
    assert!(matches!(
        b.receive(&buf[..len]),
        Err(ReceiveError::Decode(DecodeError::BadChecksum { .. }))
    ));
    let counts: Vec<(&str, u64)> = b.drops().iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        counts,
        [
            ("truncated", 1),
            ("bad_checksum", 1),
            ("wrong_cluster", 1),
            ("not_for_me", 1)
        ]
    );
    assert_eq!(b.drops().total(), 4);
}

#[test]
fn dispatch_calls_exactly_one_handler_per_kind() {
    let mut a = endpoint(1);
    let mut b = endpoint(2);
    let mut recorder = Recorder::default();
    let mut buf = [0u8; 128];
    for kind in Kind::ALL {
        let len = a.encode(kind, BROADCAST, b"p", &mut buf).unwrap();
        assert_eq!(b.receive_and_dispatch(&buf[..len], &mut recorder), Ok(kind));
    }
    let names: Vec<&str> = recorder.calls.iter().map(|(n, _)| *n).collect();
    let expected: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, expected);
    assert!(recorder.calls.iter().all(|(_, sender)| *sender == 1));
}

#[test]
fn probe_ping_pong_over_two_endpoints_measures_rtt() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let mut a = endpoint(1);
    let mut b = endpoint(2);
    let mut prober = Prober::new(ProbeConfig::default());
    let mut ping_buf = [0u8; MAX_DATAGRAM_LEN];
    let mut pong_buf = [0u8; MAX_DATAGRAM_LEN];
    for round in 0..10u64 {
        let sent_us = 1_000 * round;
        let probe = prober.start(2, sent_us, &mut rng).unwrap();
        // Pad the ping to 256 payload bytes, as a size-sweeping bench would.
        let mut payload = [0u8; 256];
        probe.write(&mut payload);
        let len = a
            .encode(Kind::ProbePing, 2, &payload, &mut ping_buf)
            .unwrap();
        let ping = b.receive(&ping_buf[..len]).unwrap();
        let pong_len = b.encode_pong(&ping, &mut pong_buf).unwrap();
        assert_eq!(pong_len, len, "the echo has the ping's size");
        let pong = a.receive(&pong_buf[..pong_len]).unwrap();
        assert_eq!(pong.header.kind, Kind::ProbePong);
        assert_eq!(
            prober.on_pong(pong.header.sender, pong.payload, sent_us + 50 + round),
            Ok(50 + round)
        );
    }
    let summary = prober.stats().summary();
    assert_eq!(
        (summary.count, summary.min_us, summary.max_us),
        (10, 50, 59)
    );
}
