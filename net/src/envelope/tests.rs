//! Unit tests of the envelope layout and of every decode rejection.

use super::*;
use crate::transport::encode;
use alloc::vec;
use alloc::vec::Vec;

const LOCAL: LocalIdentity = LocalIdentity {
    cluster_id: 0xC1,
    node_id: 2,
};

fn header(kind: Kind) -> Header {
    Header {
        kind,
        cluster_id: 0xC1,
        sender: 1,
        receiver: 2,
        seq: 7,
    }
}

fn datagram(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let len = encode(header, payload, &mut buf).expect("valid envelope");
    buf.truncate(len);
    buf
}

/// Recomputes the checksum after a test edited header bytes, to reach the checks after it.
fn reseal(buf: &mut [u8]) {
    let (head, payload) = buf.split_at_mut(HEADER_LEN);
    let crc = envelope_checksum(head, payload);
    head[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn layout_is_pinned_by_golden_bytes() {
    let h = Header {
        kind: Kind::Raft,
        cluster_id: 0x0102_0304_0506_0708,
        sender: 9,
        receiver: BROADCAST,
        seq: 0xAABB_CCDD,
    };
    let bytes = datagram(&h, b"hi");
    let mut expected: Vec<u8> = Vec::new();
    expected.extend_from_slice(b"XYLM");
    expected.extend_from_slice(&[1, 2, 0, 2]);
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expected.extend_from_slice(&9u64.to_be_bytes());
    expected.extend_from_slice(&[0xFF; 8]);
    expected.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD]);
    let crc = {
        let mut c = crate::crc32c::Crc32c::new();
        c.update(&expected);
        c.update(b"hi");
        c.finish()
    };
    expected.extend_from_slice(&crc.to_be_bytes());
    expected.extend_from_slice(b"hi");
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), HEADER_LEN + 2);
}

#[test]
fn round_trip_every_kind_and_payload_size_bounds() {
    for kind in Kind::ALL {
        for len in [0, 1, 16, MAX_PAYLOAD_LEN - 1, MAX_PAYLOAD_LEN] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = datagram(&header(kind), &payload);
            let envelope = decode(&bytes, &LOCAL).expect("accepted");
            assert_eq!(envelope.header, header(kind));
            assert_eq!(envelope.payload, &payload[..]);
            assert_eq!(envelope.wire_len(), bytes.len());
        }
    }
}

#[test]
fn kind_tags_are_stable_and_dense() {
    let tags: Vec<u8> = Kind::ALL.iter().map(|k| k.tag()).collect();
    assert_eq!(tags, [1, 2, 3, 4, 5]);
    for (i, kind) in Kind::ALL.iter().enumerate() {
        assert_eq!(kind.index(), i);
        assert_eq!(Kind::from_tag(kind.tag()), Some(*kind));
    }
    assert_eq!(Kind::from_tag(0), None);
    assert!((6..=255).all(|t| Kind::from_tag(t).is_none()));
}

#[test]
fn short_inputs_are_truncated() {
    let bytes = datagram(&header(Kind::Swim), &[0xAB; 100]);
    for len in 0..HEADER_LEN {
        assert_eq!(
            parse(&bytes[..len]),
            Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: len
            })
        );
    }
    for len in HEADER_LEN..bytes.len() {
        assert_eq!(
            parse(&bytes[..len]),
            Err(DecodeError::Truncated {
                needed: bytes.len(),
                got: len
            })
        );
    }
}

#[test]
fn oversized_inputs_and_declarations_are_rejected() {
    let big = vec![0u8; MAX_DATAGRAM_LEN + 1];
    assert_eq!(
        parse(&big),
        Err(DecodeError::Oversized {
            len: MAX_DATAGRAM_LEN + 1
        })
    );
    let mut bytes = datagram(&header(Kind::Swim), &[]);
    bytes[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 2]
        .copy_from_slice(&(MAX_PAYLOAD_LEN as u16 + 1).to_be_bytes());
    assert_eq!(
        parse(&bytes),
        Err(DecodeError::Oversized {
            len: MAX_DATAGRAM_LEN + 1
        })
    );
}

#[test]
fn magic_version_and_trailing_bytes() {
    let good = datagram(&header(Kind::Swim), b"payload");
    let mut bytes = good.clone();
    bytes[0] = b'x';
    assert_eq!(parse(&bytes), Err(DecodeError::BadMagic));
    let mut bytes = good.clone();
    bytes[OFF_VERSION] = 2;
    assert_eq!(
        parse(&bytes),
        Err(DecodeError::UnsupportedVersion { version: 2 })
    );
    let mut bytes = good.clone();
    bytes.push(0);
    assert_eq!(
        parse(&bytes),
        Err(DecodeError::TrailingBytes {
            declared: good.len(),
            got: good.len() + 1
        })
    );
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let good = datagram(&header(Kind::Control), b"some control payload");
    for bit in 0..good.len() * 8 {
        let mut bytes = good.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let err = parse(&bytes).expect_err("a flipped bit must not decode");
        // Flips in the fields checked before the checksum get their own reason; all others
        // are corruption.
        let byte = bit / 8;
        let expected_structural = byte < OFF_CLUSTER && byte != OFF_KIND;
        if !expected_structural {
            assert!(
                matches!(err, DecodeError::BadChecksum { .. }),
                "bit {bit}: {err:?}"
            );
        }
    }
}

#[test]
fn unknown_kind_and_invalid_sender_need_a_valid_checksum() {
    let good = datagram(&header(Kind::Swim), b"x");
    let mut bytes = good.clone();
    bytes[OFF_KIND] = 0;
    assert!(matches!(
        parse(&bytes),
        Err(DecodeError::BadChecksum { .. })
    ));
    reseal(&mut bytes);
    assert_eq!(parse(&bytes), Err(DecodeError::UnknownKind { tag: 0 }));
    let mut bytes = good.clone();
    bytes[OFF_SENDER..OFF_SENDER + 8].copy_from_slice(&BROADCAST.to_be_bytes());
    reseal(&mut bytes);
    assert_eq!(parse(&bytes), Err(DecodeError::InvalidSender));
}

#[test]
fn accept_filters_cluster_receiver_and_self() {
    let mut h = header(Kind::Swim);
    h.cluster_id = 0xC2;
    assert_eq!(
        decode(&datagram(&h, b""), &LOCAL),
        Err(DecodeError::WrongCluster { cluster_id: 0xC2 })
    );
    let mut h = header(Kind::Swim);
    h.receiver = 3;
    assert_eq!(
        decode(&datagram(&h, b""), &LOCAL),
        Err(DecodeError::NotForMe { receiver: 3 })
    );
    h.receiver = BROADCAST;
    assert!(
        decode(&datagram(&h, b""), &LOCAL).is_ok(),
        "broadcast is for everyone"
    );
    h.sender = LOCAL.node_id;
    assert_eq!(
        decode(&datagram(&h, b""), &LOCAL),
        Err(DecodeError::FromSelf)
    );
}

#[test]
fn drop_counters_count_each_reason_and_list_them_all() {
    let errors = [
        DecodeError::Truncated { needed: 40, got: 0 },
        DecodeError::Oversized { len: 2000 },
        DecodeError::BadMagic,
        DecodeError::UnsupportedVersion { version: 9 },
        DecodeError::TrailingBytes {
            declared: 40,
            got: 41,
        },
        DecodeError::BadChecksum {
            carried: 1,
            computed: 2,
        },
        DecodeError::UnknownKind { tag: 0 },
        DecodeError::InvalidSender,
        DecodeError::WrongCluster { cluster_id: 5 },
        DecodeError::NotForMe { receiver: 5 },
        DecodeError::FromSelf,
    ];
    assert_eq!(errors.len(), DecodeError::COUNT);
    let mut counters = DropCounters::new();
    for (i, error) in errors.iter().enumerate() {
        assert_eq!(error.index(), i);
        for _ in 0..=i {
            counters.record(error);
        }
    }
    counters.record_duplicate();
    for (i, error) in errors.iter().enumerate() {
        assert_eq!(counters.count(error), i as u64 + 1, "{}", error.name());
    }
    let listed: Vec<(&str, u64)> = counters.iter().collect();
    assert_eq!(listed.len(), DecodeError::COUNT + 1);
    assert_eq!(listed[0], ("truncated", 1));
    assert_eq!(listed[DecodeError::COUNT], ("duplicate", 1));
    assert_eq!(counters.total(), (1..=11).sum::<u64>() + 1);
}
